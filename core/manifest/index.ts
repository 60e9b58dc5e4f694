/**
 * Signed device manifests (after Microchip Trust&GO): per-device JWS entries (RFC 7515 7.2.2)
 * carrying the device's identity key as a JWK Set with its certificate chain, signed by a
 * short-lived manifest-signer certificate issued by a fleet CA. See docs/manifests.md.
 */
export { TrustAnchors } from "./chain";
export {
  type DeviceManifestInput,
  JWS_ALGS,
  type JwsAlg,
  LEGACY_MANIFEST_SIGNER_EKU,
  MANIFEST_SIGNER_EKU,
  MANIFEST_VERSION,
  ManifestDigest,
  type ManifestEntry,
  type ManifestKey,
  type ManifestPayload,
  manifestDigest,
  type ProtectedHeader,
} from "./format";
export { certThumbprint, jwkFromSpki, jwkThumbprint, type PublicJwk, spkiFromJwk } from "./jwk";
export {
  buildManifest,
  createManifestSigner,
  type ManifestSigner,
  type ManifestSignerOptions,
  manifestChunks,
  SIGNER_ALGORITHMS,
  type SignerAlgorithm,
  writeManifest,
} from "./signer";
export {
  type CheckResult,
  createManifestVerifier,
  FAILURE_REASONS,
  type FailureReason,
  type ManifestFailure,
  type ManifestVerifier,
  readManifest,
  type VerifiedEntry,
  type VerifyOptions,
  verifyManifest,
  verifyManifestStream,
} from "./verify";
