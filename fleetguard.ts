/**
 * The fleetguard package's public API (`import { CaHierarchy } from "fleetguard"`): the Pulumi
 * components a platform team declares its fleet with, the policy engine they are checked
 * against, and the readers of what a deployment leaves behind (the device registry, signed
 * manifests). Subpaths load less: "fleetguard/registry" and "fleetguard/manifest" need no
 * Pulumi, "fleetguard/policies" is the engine alone, "fleetguard/pack" is the CrossGuard pack.
 * The demo program (index.ts) is not part of the package.
 */
export {
  CaHierarchy,
  type CaHierarchyArgs,
  CaHierarchyError,
  type CaOutputs,
  type CaSpec,
  type CaSummary,
  type ChildCaSpec,
  type ExistingRoot,
} from "./components/CaHierarchy";
export {
  type BatchSummaryOutput,
  DeviceIdentityBatch,
  type DeviceIdentityBatchArgs,
} from "./components/DeviceIdentityBatch";
export {
  type AwsHubRegistrationArgs,
  type AzureHubRegistrationArgs,
  type HubArgs,
  HubRegistration,
  type HubRegistrationArgs,
  type HubSummaryOutput,
  type LocalHubArgs,
} from "./components/HubRegistration";
export { FleetError, type FleetErrorCode } from "./core/errors";
// the readers; their full APIs are the "fleetguard/manifest" and "fleetguard/registry" subpaths
export {
  createManifestVerifier,
  type ManifestVerifier,
  readManifest,
  type VerifiedEntry,
  verifyManifest,
} from "./lib/manifest";
export * from "./lib/policies";
export { openRegistry, type Registry } from "./lib/registry";
