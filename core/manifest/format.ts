/**
 * The signed device manifest format, after Microchip's Trust&GO manifests: a JSON array of
 * per-device entries, each a JWS in flattened JSON serialization (RFC 7515 7.2.2) whose payload
 * names the device and carries its identity public key as a JWK Set (RFC 7517 5) with the
 * certificate chain in `x5c` (RFC 7517 4.7). docs/manifests.md describes it with an example.
 */
import * as crypto from "node:crypto";
import { canonicalJson } from "../canonical";
import type { PublicJwk } from "./jwk";

export const MANIFEST_VERSION = 1;

/**
 * extendedKeyUsage of manifest-signer certificates: a UUID-derived OID (ITU-T X.667, arc 2.25,
 * no registration needed). Not id-kp-codeSigning: a code-signing certificate is trusted by
 * firmware-update verifiers, and a manifest signer must not be able to sign firmware (nor a
 * code-signing certificate sign manifests). A dedicated purpose keeps the two keys apart.
 */
export const MANIFEST_SIGNER_EKU = "2.25.21964647918785137885206035534542782368";

export const JWS_ALGS = ["ES256", "ES384", "EdDSA"] as const;
export type JwsAlg = (typeof JWS_ALGS)[number];

/** One device as the producer knows it. */
export interface DeviceManifestInput {
  deviceId: string;
  model: string;
  batch: string;
  /** the device identity public key, SubjectPublicKeyInfo DER (P-256; P-384 and Ed25519 accepted) */
  publicKeySpki: Uint8Array;
  /** DER certificates, leaf first, up to but excluding the root */
  chain: Uint8Array[];
  issuedAt: Date | string;
}

export interface ManifestKey extends PublicJwk {
  /** RFC 7638 thumbprint of the key */
  kid: string;
  /** standard base64 (not base64url) DER certificates, leaf first, root excluded (RFC 7517 4.7) */
  x5c: string[];
  "x5t#S256": string;
}

export interface ManifestPayload {
  version: number;
  model: string;
  uniqueId: string;
  batch: string;
  publicKeySet: { keys: ManifestKey[] };
  issuedAt: string;
}

export interface ProtectedHeader {
  alg: JwsAlg;
  /** RFC 7638 thumbprint of the signer's public key */
  kid: string;
  /** SHA-256 thumbprint of the signer certificate */
  "x5t#S256": string;
}

/** One manifest entry: a flattened JWS (RFC 7515 7.2.2) with the device ID unprotected. */
export interface ManifestEntry {
  payload: string;
  protected: string;
  header: { uniqueId: string };
  signature: string;
}

/**
 * SHA-256 over the canonical JSON of the entry list (core/canonical: keys sorted, no
 * whitespace), fed one entry at a time so a 100,000-entry manifest is never held as one string.
 * Equal to sha256(canonicalJson(entries)); independent of key order and formatting.
 */
export class ManifestDigest {
  private readonly h = crypto.createHash("sha256").update("[");
  private n = 0;

  add(entry: unknown): void {
    this.h.update(this.n++ === 0 ? canonicalJson(entry) : `,${canonicalJson(entry)}`);
  }

  get count(): number {
    return this.n;
  }

  /** hex digest; the object cannot be used after this */
  digest(): string {
    return this.h.update("]").digest("hex");
  }
}

export function manifestDigest(entries: Iterable<unknown>): string {
  const d = new ManifestDigest();
  for (const e of entries) d.add(e);
  return d.digest();
}
