/**
 * Licenses and payloads of key injection, after ST's Secure Secret Provisioning (SSP, AN5510):
 * the HSM encrypts a fresh payload key to one chip, the payload (the OEM secrets) under that
 * key, and binds both to the product, the chip and the HSM's production counter.
 *
 *   license = "FGL1" | u8 version (1) | u8 len | product ID | u8 len | chip ID | u32 counter
 *             | ephemeral P-256 public key (65, uncompressed)          <- all of this is AAD
 *             | IV (12) | AES-256-GCM(KEK, payload key (32)) | tag (16)
 *   KEK     = HKDF-SHA-256(ikm = ECDH(ephemeral, chip key).x, salt = ephemeral public key,
 *                          info = "fleetguard/ssp/v1/kek" | SHA-256(header))       (RFC 5869)
 *   payload = "FGP1" | IV (12) | AES-256-GCM(payload key, secrets) | tag (16),
 *             AAD = SHA-256(license)                                      (NIST SP 800-38D)
 *
 * Every license byte is either authenticated data, key-agreement input or GCM ciphertext/tag,
 * so changing any byte makes the chip refuse it; the payload is bound to its license. A chip
 * refuses a license naming another chip before it does any cryptography.
 */
import { createCipheriv, createDecipheriv, createECDH, createHash, hkdfSync, randomBytes } from "node:crypto";
import { invalid } from "../../core/errors";
import { StationError, Status } from "../../core/station/frame";

const LICENSE_MAGIC = Buffer.from("FGL1");
const PAYLOAD_MAGIC = Buffer.from("FGP1");
const KEK_INFO = Buffer.from("fleetguard/ssp/v1/kek");

export interface LicenseFields {
  productId: string;
  chipId: string;
  counter: number;
}

export interface Sealed {
  license: Buffer;
  payload: Buffer;
}

function header(f: LicenseFields, ephPub: Buffer): Buffer {
  const p = Buffer.from(f.productId, "utf8");
  const c = Buffer.from(f.chipId, "utf8");
  if (p.length < 1 || p.length > 64) throw invalid("productId", f.productId, "1..64 bytes");
  if (c.length < 1 || c.length > 64) throw invalid("chipId", f.chipId, "1..64 bytes");
  if (!Number.isInteger(f.counter) || f.counter < 0 || f.counter > 0xffffffff)
    throw invalid("counter", f.counter, "a u32");
  const ctr = Buffer.alloc(4);
  ctr.writeUInt32BE(f.counter);
  return Buffer.concat([
    LICENSE_MAGIC,
    Buffer.from([1, p.length]),
    p,
    Buffer.from([c.length]),
    c,
    ctr,
    ephPub,
  ]);
}

function kek(shared: Buffer, ephPub: Buffer, head: Buffer): Buffer {
  const info = Buffer.concat([KEK_INFO, createHash("sha256").update(head).digest()]);
  return Buffer.from(hkdfSync("sha256", shared, ephPub, info, 32));
}

function gcmSeal(key: Buffer, plain: Uint8Array, aad: Uint8Array): Buffer {
  const iv = randomBytes(12);
  const c = createCipheriv("aes-256-gcm", key, iv);
  c.setAAD(aad);
  const ct = Buffer.concat([c.update(plain), c.final()]);
  return Buffer.concat([iv, ct, c.getAuthTag()]);
}

function gcmOpen(key: Buffer, sealed: Buffer, aad: Uint8Array, what: string): Buffer {
  if (sealed.length < 28)
    throw new StationError(Status.BAD_REQUEST, `${what}: got ${sealed.length} bytes, want >= 28`);
  const d = createDecipheriv("aes-256-gcm", key, sealed.subarray(0, 12));
  d.setAAD(aad);
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  try {
    return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]);
  } catch {
    throw new StationError(
      Status.BAD_SIGNATURE,
      `${what}: authentication failed, want an untampered ${what}`,
    );
  }
}

/** HSM side: encrypt `secrets` to the chip whose public point is `chipPoint`. */
export function seal(f: LicenseFields, chipPoint: Buffer, secrets: Uint8Array): Sealed {
  const eph = createECDH("prime256v1");
  const ephPub = eph.generateKeys();
  const head = header(f, ephPub);
  const shared = eph.computeSecret(chipPoint);
  const k = kek(shared, ephPub, head);
  const payloadKey = randomBytes(32);
  const license = Buffer.concat([head, gcmSeal(k, payloadKey, head)]);
  const payload = Buffer.concat([
    PAYLOAD_MAGIC,
    gcmSeal(payloadKey, secrets, createHash("sha256").update(license).digest()),
  ]);
  for (const b of [shared, k, payloadKey]) b.fill(0);
  return { license, payload };
}

/** Parse a license's clear fields (no authentication: use `open` for that). */
export function parseLicense(license: Uint8Array): LicenseFields & { headerLength: number } {
  const b = Buffer.from(license.buffer, license.byteOffset, license.length);
  const bad = (want: string): never => {
    throw new StationError(Status.BAD_REQUEST, `license: got a malformed license, want ${want}`);
  };
  if (b.length < 8 || !b.subarray(0, 4).equals(LICENSE_MAGIC)) bad('magic "FGL1"');
  if (b[4] !== 1) bad("version 1");
  let p = 5;
  const pl = b[p++]!;
  if (pl < 1 || p + pl >= b.length) bad("a product ID");
  const productId = b.subarray(p, p + pl).toString("utf8");
  p += pl;
  const cl = b[p++]!;
  if (cl < 1 || p + cl + 4 + 65 + 12 + 32 + 16 !== b.length) bad("a chip ID and the fixed-size tail");
  const chipId = b.subarray(p, p + cl).toString("utf8");
  p += cl;
  const counter = b.readUInt32BE(p);
  return { productId, chipId, counter, headerLength: p + 4 + 65 };
}

/**
 * Chip side: check the license is for `chipId`, agree the KEK with the chip's private scalar,
 * unwrap the payload key and decrypt the payload. Throws StationError BAD_REQUEST (format),
 * BAD_SIGNATURE (another chip's license, any authentication failure).
 */
export function open(
  license: Uint8Array,
  payload: Uint8Array,
  chipId: string,
  chipScalar: Buffer,
): LicenseFields & { secrets: Buffer } {
  const lic = Buffer.from(license.buffer, license.byteOffset, license.length);
  const pay = Buffer.from(payload.buffer, payload.byteOffset, payload.length);
  const f = parseLicense(lic);
  if (f.chipId !== chipId)
    throw new StationError(
      Status.BAD_SIGNATURE,
      "license.chipId: got a license for another chip, want this chip's",
    );
  const head = lic.subarray(0, f.headerLength);
  const ephPub = head.subarray(head.length - 65);
  const ecdh = createECDH("prime256v1");
  ecdh.setPrivateKey(chipScalar);
  let shared: Buffer;
  try {
    shared = ecdh.computeSecret(ephPub);
  } catch {
    throw new StationError(
      Status.BAD_SIGNATURE,
      "license.ephemeralKey: got a point not on P-256, want a valid key",
    );
  }
  const k = kek(shared, Buffer.from(ephPub), head);
  const payloadKey = gcmOpen(k, lic.subarray(f.headerLength), head, "license");
  if (pay.length < 4 || !pay.subarray(0, 4).equals(PAYLOAD_MAGIC))
    throw new StationError(Status.BAD_SIGNATURE, 'payload: got a malformed payload, want magic "FGP1"');
  const secrets = gcmOpen(payloadKey, pay.subarray(4), createHash("sha256").update(lic).digest(), "payload");
  for (const b of [shared, k, payloadKey]) b.fill(0);
  return { productId: f.productId, chipId: f.chipId, counter: f.counter, secrets };
}
