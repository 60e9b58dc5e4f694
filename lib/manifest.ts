/**
 * "fleetguard/manifest": readers (and the writer) of signed device manifests, the Trust&GO-style
 * files a hub bulk-imports (docs/manifests.md). Needs no Pulumi.
 */
export * from "../core/manifest/index";
