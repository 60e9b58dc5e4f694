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
 * extendedKeyUsage of manifest-signer certificates (docs/pki-interop.md): fleetguard's UUID
 * 10863cc0-a424-465a-9f43-fe4250dbbfa0 under Microsoft's GUID arc 1.2.840.113556.1.8000.2554, whose
 * allocations are implicit (the UUID split into 16- and 24-bit arcs, so no registration is needed).
 * Every arc is below 2^24: Go's crypto/x509 refuses a certificate with any EKU arc of 2^31 or more,
 * which the same UUID under 2.25 (one 128-bit arc) was. Not id-kp-codeSigning: firmware-update
 * verifiers trust code-signing certificates, and a manifest signer must not be able to sign
 * firmware. Not id-kp-documentSigning (RFC 9336): that is for content shown to people, and a
 * manifest is read by machines (hubs, bulk registration).
 */
export const MANIFEST_SIGNER_EKU =
  "1.2.840.113556.1.8000.2554.4230.15552.42020.18010.40771.16663120.14401440";

/**
 * The same UUID as a 2.25 OID (ITU-T X.667), which signers before issue 9 wrote. The verifier still
 * accepts it so that manifests exported earlier verify while their signer certificates are valid
 * (30 days by default); signers never write it.
 */
export const LEGACY_MANIFEST_SIGNER_EKU = "2.25.21964647918785137885206035534542782368";

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
