// TEMPORARY stand-in for devices/puf while it is being written: same API, trivial model.
import { createHash, createHmac, createPublicKey, hkdfSync, randomBytes } from "node:crypto";
import { FleetError } from "../../../core/errors";
import type { PufApi, PufConditions, PufDevice } from "../../../devices/firmware/identity";
import { deriveRaw, privateKeyObject } from "../../../devices/injection/keys";

const NOMINAL: PufConditions = { temperatureC: 25, voltage: 1.2, ageYears: 0 };

function createPufDevice(seed: Uint8Array, deviceId: string): PufDevice {
  const base = Buffer.from(hkdfSync("sha256", seed, Buffer.from("cells"), Buffer.from(deviceId), 64));
  return {
    deviceId,
    read(c?: PufConditions) {
      const out = Buffer.from(base);
      const ber = c?.berOverride ?? 0;
      if (ber > 0)
        for (let i = 0; i < out.length * 8; i++) if (Math.random() < ber) out[i >> 3]! ^= 1 << (i & 7);
      return out;
    },
  };
}
function enroll(puf: PufDevice) {
  const secret = randomBytes(32);
  const r = createHash("sha256").update(puf.read()).digest();
  const masked = Buffer.alloc(32);
  for (let i = 0; i < 32; i++) masked[i] = secret[i]! ^ r[i]!;
  const tag = createHmac("sha256", secret).update(masked).digest().subarray(0, 16);
  return { helper: Buffer.concat([masked, tag]) };
}
function reconstruct(puf: PufDevice, helper: Uint8Array, c?: PufConditions) {
  const r = createHash("sha256").update(puf.read(c)).digest();
  const secret = Buffer.alloc(32);
  for (let i = 0; i < 32; i++) secret[i] = helper[i]! ^ r[i]!;
  const tag = createHmac("sha256", secret).update(helper.subarray(0, 32)).digest().subarray(0, 16);
  if (!tag.equals(Buffer.from(helper.subarray(32)))) throw new FleetError("UNAVAILABLE", "decode failure");
  return secret;
}
function deriveP256(secret: Uint8Array, context: string) {
  const raw = deriveRaw(secret, "standin", context);
  const privateKey = privateKeyObject(raw);
  return { privateKey, publicKey: createPublicKey(privateKey) };
}
export const standinPuf: PufApi = { NOMINAL, createPufDevice, enroll, reconstruct, deriveP256 };
