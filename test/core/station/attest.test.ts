import { generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import {
  ATTEST_DOMAIN,
  attestationMessage,
  importP256Spki,
  importP256SpkiFresh,
  verifyAttestation,
} from "../../../core/station/attest";
import { parseCsr, verifyCsr } from "../../../core/station/csr";

describe("attestation messages", () => {
  it("have the documented layout", () => {
    const nonce = Buffer.alloc(16, 0xab);
    const m = attestationMessage("fg100-0000001", 258, nonce);
    expect(m.subarray(0, ATTEST_DOMAIN.length).toString("latin1")).toBe("fleetguard/attest/v1\0");
    const rest = m.subarray(ATTEST_DOMAIN.length);
    expect(rest[0]).toBe(13);
    expect(rest.subarray(1, 14).toString()).toBe("fg100-0000001");
    expect(rest.readUInt32BE(14)).toBe(258);
    expect(rest[18]).toBe(16);
    expect(rest.subarray(19)).toEqual(nonce);
  });
  it("refuse wrong arguments", () => {
    expect(() => attestationMessage("", 0, randomBytes(16))).toThrow(FleetError);
    expect(() => attestationMessage("x".repeat(65), 0, randomBytes(16))).toThrow(/device/);
    expect(() => attestationMessage("d", -1, randomBytes(16))).toThrow(/epoch/);
    expect(() => attestationMessage("d", 2 ** 32, randomBytes(16))).toThrow(/epoch/);
    expect(() => attestationMessage("d", 0, randomBytes(15))).toThrow(/nonce/);
    expect(() => attestationMessage("d", 0, randomBytes(65))).toThrow(/nonce/);
  });
  it("verify only the signature over the exact message; garbage signatures are false, not errors", () => {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const spki = publicKey.export({ type: "spki", format: "der" });
    const nonce = randomBytes(32);
    const sig = sign("sha256", attestationMessage("d", 0, nonce), privateKey);
    expect(verifyAttestation(spki, "d", 0, nonce, sig)).toBe(true);
    expect(verifyAttestation(importP256Spki(spki), "d", 0, nonce, sig)).toBe(true);
    // a signature over the bare nonce (no domain prefix) is not an attestation
    expect(verifyAttestation(spki, "d", 0, nonce, sign("sha256", nonce, privateKey))).toBe(false);
    expect(verifyAttestation(spki, "d", 0, nonce, randomBytes(70))).toBe(false);
  });
  it("import only plain uncompressed P-256 keys", () => {
    const ed = generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "der" });
    const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey.export({
      type: "spki",
      format: "der",
    });
    expect(() => importP256Spki(ed)).toThrow(/P-256/);
    expect(() => importP256Spki(p384)).toThrow(/P-256/);
    const p256 = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
      type: "spki",
      format: "der",
    });
    const offCurve = Buffer.from(p256);
    offCurve[90]! ^= 1;
    expect(() => importP256Spki(offCurve)).toThrow();
  });
});

describe("CSR parsing", () => {
  it("refuses garbage and trailing bytes with INVALID_INPUT", () => {
    for (const b of [
      Buffer.alloc(0),
      Buffer.from("3000", "hex"),
      Buffer.from("30ff00", "hex"),
      randomBytes(40),
    ])
      expect(() => parseCsr(b)).toThrow(FleetError);
    expect(() => verifyCsr(Buffer.from("300100", "hex"))).toThrow(FleetError);
  });
});

describe("layering", () => {
  it("core/station imports nothing from devices/ (the farm imports the codec, not the other way)", () => {
    const dir = join(__dirname, "..", "..", "..", "core", "station");
    const offenders = readdirSync(dir)
      .filter((f) => f.endsWith(".ts"))
      .flatMap((f) =>
        [...readFileSync(join(dir, f), "utf8").matchAll(/from\s+"([^"]+)"/g)]
          .map((m) => m[1]!)
          .filter((i) => i.includes("devices/") || i.startsWith("@pulumi/"))
          .map((i) => `${f} imports ${i}`),
      );
    expect(offenders).toEqual([]);
  });
});

describe("importP256Spki memo", () => {
  it("hands back the same KeyObject for the same key, a fresh import for another; the fresh variant never memoizes", () => {
    const spkiOf = () =>
      generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey.export({
        type: "spki",
        format: "der",
      });
    const a = spkiOf();
    const b = spkiOf();
    const ka = importP256Spki(a);
    expect(importP256Spki(Buffer.from(a))).toBe(ka);
    expect(importP256Spki(b)).not.toBe(ka);
    expect(importP256SpkiFresh(a)).not.toBe(ka);
    expect(importP256SpkiFresh(a).export({ type: "spki", format: "der" }).equals(a)).toBe(true);
    expect(() => importP256SpkiFresh(a.subarray(1))).toThrow(/P-256 SubjectPublicKeyInfo/);
    // bounded: after 4,096 other keys the first one is imported again
    for (let i = 0; i < 4096; i++) importP256Spki(spkiOf());
    expect(importP256Spki(a)).not.toBe(ka);
  });
});
