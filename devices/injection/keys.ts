/**
 * Deterministic P-256 keys for emulated silicon: the chip key pairs a silicon vendor burns at
 * wafer test and the vendor's own CA key, derived from the farm seed so that a million chips
 * need no storage. Scalar derivation follows FIPS 186-5 A.2.1 (key pair generation using
 * extra random bits): 40 bytes from HKDF-SHA-256 (RFC 5869), d = (c mod (n - 1)) + 1. The
 * public point comes from Node's ECDH (cheap: no key import), the KeyObject, when needed, from
 * a JWK, which OpenSSL 3 imports faster than PKCS#8.
 */
import { createECDH, createPrivateKey, hkdfSync, type KeyObject } from "node:crypto";
import { invalid } from "../../core/errors";

const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
export const P256_SPKI_PREFIX = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex");

export interface RawP256 {
  /** private scalar, 32 bytes big-endian */
  d: Buffer;
  /** uncompressed public point, 65 bytes */
  point: Buffer;
  /** SubjectPublicKeyInfo DER */
  spki: Buffer;
}

export function scalarFrom(ikm: Uint8Array, salt: string, info: string): Buffer {
  if (ikm.length < 16) throw invalid("seed", ikm, "at least 16 bytes");
  const c = Buffer.from(hkdfSync("sha256", ikm, Buffer.from(salt), Buffer.from(info), 40));
  const d = (BigInt(`0x${c.toString("hex")}`) % (N - 1n)) + 1n;
  c.fill(0);
  return Buffer.from(d.toString(16).padStart(64, "0"), "hex");
}

export function rawFromScalar(d: Buffer): RawP256 {
  const ecdh = createECDH("prime256v1");
  ecdh.setPrivateKey(d);
  const point = ecdh.getPublicKey();
  return { d, point, spki: Buffer.concat([P256_SPKI_PREFIX, point]) };
}

export function deriveRaw(ikm: Uint8Array, salt: string, info: string): RawP256 {
  return rawFromScalar(scalarFrom(ikm, salt, info));
}

export function privateKeyObject(raw: RawP256): KeyObject {
  return createPrivateKey({
    key: {
      kty: "EC",
      crv: "P-256",
      d: raw.d.toString("base64url"),
      x: raw.point.subarray(1, 33).toString("base64url"),
      y: raw.point.subarray(33, 65).toString("base64url"),
    },
    format: "jwk",
  });
}

/** The uncompressed point of a P-256 SubjectPublicKeyInfo, or throws. */
export function pointOfSpki(spki: Uint8Array): Buffer {
  const b = Buffer.from(spki.buffer, spki.byteOffset, spki.length);
  if (b.length !== 91 || !b.subarray(0, 26).equals(P256_SPKI_PREFIX) || b[26] !== 4)
    throw invalid("publicKey", b, "a P-256 SubjectPublicKeyInfo (91 bytes, uncompressed point)");
  return Buffer.from(b.subarray(26));
}
