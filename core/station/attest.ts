/**
 * Device attestation messages: what a device signs when a station sends it a nonce, and how
 * the station checks it. The signed bytes are domain separated, so an attestation signature
 * can never be replayed as a signature over anything else the identity key signs (a CSR, a
 * future protocol message), and bind the device ID and key epoch (ECDSA P-256 with SHA-256,
 * FIPS 186-5; DER signature, RFC 3279):
 *
 *   "fleetguard/attest/v1" 0x00 | u8 len | device ID | u32 epoch | u8 len | nonce
 */
import { createPublicKey, type KeyObject, verify } from "node:crypto";
import { invalid } from "../errors";
import { DEVICE_ID_MAX, NONCE_MAX, NONCE_MIN } from "./messages";

export const ATTEST_DOMAIN = Buffer.from("fleetguard/attest/v1\0", "latin1");

export function attestationMessage(device: string, epoch: number, nonce: Uint8Array): Buffer {
  const id = Buffer.from(device, "utf8");
  if (id.length === 0 || id.length > DEVICE_ID_MAX)
    throw invalid("device", device, `1..${DEVICE_ID_MAX} bytes`);
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) throw invalid("epoch", epoch, "a u32");
  if (nonce.length < NONCE_MIN || nonce.length > NONCE_MAX)
    throw invalid("nonce", nonce, `${NONCE_MIN}..${NONCE_MAX} bytes`);
  const out = Buffer.allocUnsafe(ATTEST_DOMAIN.length + 1 + id.length + 4 + 1 + nonce.length);
  let p = ATTEST_DOMAIN.copy(out, 0);
  out[p++] = id.length;
  p += id.copy(out, p);
  out.writeUInt32BE(epoch, p);
  p += 4;
  out[p++] = nonce.length;
  out.set(nonce, p);
  return out;
}

// P-256 SubjectPublicKeyInfo with an uncompressed point: a fixed 26-byte prefix + 65 bytes.
const P256_SPKI_PREFIX = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex");

/**
 * Recently imported keys by their point: a renewal checks a device's CSR and then, a round trip
 * later, its attestation against the same recorded key (core/enroll/renew.ts), and an import costs
 * as much as a signature check. Public keys only; bounded (a wave of 1,024 devices, 4 in flight).
 */
const IMPORTED_MAX = 4096;
const imported = new Map<string, KeyObject>();

/**
 * Import a P-256 SubjectPublicKeyInfo. Goes through JWK, which OpenSSL 3 imports about twice
 * as fast as SPKI DER; anything that is not a plain uncompressed P-256 SPKI is refused. The same
 * key asked for again soon after is the same KeyObject (a least-recently-used memo).
 */
export function importP256Spki(spki: Uint8Array): KeyObject {
  const b = Buffer.from(spki.buffer, spki.byteOffset, spki.length);
  if (b.length !== 91 || !b.subarray(0, 26).equals(P256_SPKI_PREFIX) || b[26] !== 4)
    throw invalid("publicKey", spki, "a P-256 SubjectPublicKeyInfo with an uncompressed point (91 bytes)");
  const point = b.toString("latin1", 27, 91);
  const hit = imported.get(point);
  if (hit) {
    imported.delete(point);
    imported.set(point, hit);
    return hit;
  }
  const key = importJwk(b);
  imported.set(point, key);
  if (imported.size > IMPORTED_MAX) imported.delete(imported.keys().next().value!);
  return key;
}

/** importP256Spki without the memo: a fresh import every time (benchmarks of what an import costs). */
export function importP256SpkiFresh(spki: Uint8Array): KeyObject {
  const b = Buffer.from(spki.buffer, spki.byteOffset, spki.length);
  if (b.length !== 91 || !b.subarray(0, 26).equals(P256_SPKI_PREFIX) || b[26] !== 4)
    throw invalid("publicKey", spki, "a P-256 SubjectPublicKeyInfo with an uncompressed point (91 bytes)");
  return importJwk(b);
}

function importJwk(b: Buffer): KeyObject {
  return createPublicKey({
    key: {
      kty: "EC",
      crv: "P-256",
      x: b.subarray(27, 59).toString("base64url"),
      y: b.subarray(59, 91).toString("base64url"),
    },
    format: "jwk",
  });
}

/** True if `signature` is the device's attestation of `nonce` under `publicKey`. */
export function verifyAttestation(
  publicKey: KeyObject | Uint8Array,
  device: string,
  epoch: number,
  nonce: Uint8Array,
  signature: Uint8Array,
): boolean {
  const key = publicKey instanceof Uint8Array ? importP256Spki(publicKey) : publicKey;
  try {
    return verify("sha256", attestationMessage(device, epoch, nonce), key, signature);
  } catch {
    return false; // malformed DER signature
  }
}
