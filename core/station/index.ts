/**
 * The station client library: everything the identity core needs to drive devices over the
 * fleetguard station protocol (framing, typed messages, client with pooling, pipelining,
 * timeouts, retries and backpressure, and the checks a station applies to device answers).
 */
export { ATTEST_DOMAIN, attestationMessage, importP256Spki, verifyAttestation } from "./attest";
export {
  type BatchItem,
  type BatchOptions,
  type CallOptions,
  StationClient,
  type StationClientOptions,
} from "./client";
export { type ParsedCsr, parseCsr, verifyCsr } from "./csr";
export { Op, StationError, Status, statusName } from "./frame";
export type * from "./messages";
