/**
 * Keys from the PUF's stable secret. Every key is HKDF-SHA-256 (RFC 5869) of the secret with
 * a per-purpose context as `info`, so one PUF yields independent keys: the device identity
 * key ("identity"), one key per rotation epoch ("epoch/<n>"), and any other named purpose.
 *
 * P-256 keys follow FIPS 186-5 appendix A.2.1, "ECC Key Pair Generation Using Extra Random
 * Bits": take N + 64 = 320 bits (here from HKDF instead of a DRBG), read them as a big-endian
 * integer c, and set d = (c mod (n - 1)) + 1; the 64 extra bits make the bias of the
 * reduction negligible (< 2^-64). The public point comes from OpenSSL's ECDH scalar
 * multiplication (x, y are required by the JWK import); the private KeyObject is built by JWK
 * import (the fastest import under OpenSSL 3), the public one from it.
 */
import { createECDH, createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { invalid } from "../../core/errors";
import { hkdfSha256 } from "./hkdf";

/** The order n of the P-256 base point. */
export const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
export const IDENTITY_CONTEXT = "identity";
const P256_SALT = "fleetguard/puf/p256/v1";
const KEY_SALT = "fleetguard/puf/key/v1";

/** The HKDF context of rotation epoch n. */
export function epochContext(epoch: number): string {
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw invalid("epoch", epoch, "a non-negative safe integer");
  return `epoch/${epoch}`;
}

function assertSecret(secret: unknown): asserts secret is Uint8Array {
  if (!(secret instanceof Uint8Array) || secret.length < 16 || secret.length > 64)
    throw invalid("secret", secret, "a Uint8Array of 16..64 bytes (the PUF's stable secret)");
}

function assertContext(context: unknown): asserts context is string {
  if (typeof context !== "string" || !/^[\x21-\x7e]{1,128}$/.test(context))
    throw invalid(
      "context",
      context,
      "1..128 printable ASCII characters without spaces, e.g. identity or epoch/3",
    );
}

/** FIPS 186-5 A.2.1 private scalar d in [1, n-1] for a context; exported for known-answer tests. */
export function p256Scalar(secret: Uint8Array, context: string): bigint {
  assertSecret(secret);
  assertContext(context);
  const okm = hkdfSha256(secret, P256_SALT, context, 40);
  const c = BigInt(`0x${okm.toString("hex")}`);
  okm.fill(0);
  return (c % (P256_N - 1n)) + 1n;
}

function b64u(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64url");
}

/** DER SubjectPublicKeyInfo of a P-256 key (id-ecPublicKey, prime256v1), up to the point. */
const P256_SPKI_HEAD = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex");

/**
 * The P-256 key pair for `context` (identity, epoch/<n>, ...) derived from the stable secret,
 * and the public key as DER SubjectPublicKeyInfo (uncompressed point: what
 * publicKey.export({type: "spki", format: "der"}) gives, without the cost of an export).
 */
export function deriveP256(
  secret: Uint8Array,
  context: string,
): { privateKey: KeyObject; publicKey: KeyObject; spki: Buffer } {
  const d = p256Scalar(secret, context);
  const dBuf = Buffer.from(d.toString(16).padStart(64, "0"), "hex");
  const ecdh = createECDH("prime256v1");
  ecdh.setPrivateKey(dBuf);
  const pub = ecdh.getPublicKey();
  const x = b64u(pub.subarray(1, 33));
  const y = b64u(pub.subarray(33, 65));
  const privateKey = createPrivateKey({
    key: { kty: "EC", crv: "P-256", d: b64u(dBuf), x, y },
    format: "jwk",
  });
  // Deriving the public KeyObject from the private one is ~50x cheaper than a second JWK import.
  const publicKey = createPublicKey(privateKey);
  dBuf.fill(0);
  return { privateKey, publicKey, spki: Buffer.concat([P256_SPKI_HEAD, pub]) };
}

/** `length` bytes of symmetric key material for `context` (e.g. an AES key). */
export function deriveKeyBytes(secret: Uint8Array, context: string, length = 32): Uint8Array {
  assertSecret(secret);
  assertContext(context);
  if (!Number.isInteger(length) || length < 16 || length > 255 * 32)
    throw invalid("length", length, "an integer in [16, 8160]");
  const okm = hkdfSha256(secret, KEY_SALT, context, length);
  const out = new Uint8Array(okm);
  okm.fill(0);
  return out;
}
