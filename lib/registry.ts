/**
 * "fleetguard/registry": the device registry (SQLite file or PostgreSQL URL), the source of
 * truth for per-device records and their tamper-evident audit log. Needs no Pulumi.
 */
export { type OpenOptions, openRegistry, parseLocation, type RegistryKind } from "../core/registry/index";
export * from "../core/registry/types";
