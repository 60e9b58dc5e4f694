import {
  createHash,
  createPublicKey,
  createSign,
  createVerify,
  sign as cryptoSign,
  verify as cryptoVerify,
  hkdfSync,
} from "node:crypto";
import { describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { deriveKeyBytes, deriveP256, epochContext, IDENTITY_CONTEXT, p256Scalar } from "../../../devices/puf";
import { hkdfSha256 } from "../../../devices/puf/hkdf";
import { P256_N } from "../../../devices/puf/keys";
import kat from "./vectors/p256-fips186-5-a21.json";

const hex = (s: string) => Buffer.from(s, "hex");

describe("deriveP256 (FIPS 186-5 A.2.1 over HKDF-SHA-256)", () => {
  it.each(kat.vectors)("known answer: context $context, secret $secret", (v) => {
    const secret = hex(v.secret);
    expect(p256Scalar(secret, v.context).toString(16).padStart(64, "0")).toBe(v.d);
    const { privateKey, publicKey } = deriveP256(secret, v.context);
    const jwk = privateKey.export({ format: "jwk" });
    expect(Buffer.from(jwk.d!, "base64url").toString("hex")).toBe(v.d);
    expect(Buffer.from(jwk.x!, "base64url").toString("hex")).toBe(v.x);
    expect(Buffer.from(jwk.y!, "base64url").toString("hex")).toBe(v.y);
    // The public key agrees with what OpenSSL computes from the private key.
    const fromPriv = createPublicKey(privateKey).export({ format: "der", type: "spki" });
    expect(Buffer.from(publicKey.export({ format: "der", type: "spki" })).equals(Buffer.from(fromPriv))).toBe(
      true,
    );
  });

  it("the scalar is always in [1, n-1] and uses all 320 bits", () => {
    for (const v of kat.vectors) {
      const c = BigInt(`0x${v.hkdf320}`);
      expect(BigInt(`0x${v.d}`)).toBe((c % (P256_N - 1n)) + 1n);
      expect(BigInt(`0x${v.d}`) >= 1n && BigInt(`0x${v.d}`) < P256_N).toBe(true);
    }
  });

  it("identity and epoch keys are independent, deterministic, and sign/verify", () => {
    const secret = new Uint8Array(32).fill(9);
    const contexts = [IDENTITY_CONTEXT, epochContext(0), epochContext(1), epochContext(2)];
    const pubs = contexts.map((c) =>
      Buffer.from(deriveP256(secret, c).publicKey.export({ format: "der", type: "spki" })).toString("hex"),
    );
    expect(new Set(pubs).size).toBe(contexts.length);
    const again = Buffer.from(
      deriveP256(secret, epochContext(1)).publicKey.export({ format: "der", type: "spki" }),
    ).toString("hex");
    expect(again).toBe(pubs[2]);
    const { privateKey, publicKey } = deriveP256(secret, IDENTITY_CONTEXT);
    const msg = Buffer.from("nonce from the verifier");
    const sig = cryptoSign("sha256", msg, privateKey);
    expect(cryptoVerify("sha256", msg, publicKey, sig)).toBe(true);
    const other = deriveP256(secret, epochContext(0)).publicKey;
    expect(cryptoVerify("sha256", msg, other, sig)).toBe(false);
    // createSign/createVerify path too (what older callers use)
    const s2 = createSign("sha256").update(msg).sign(privateKey);
    expect(createVerify("sha256").update(msg).verify(publicKey, s2)).toBe(true);
  });

  it("deriveKeyBytes gives distinct material per context", () => {
    const secret = new Uint8Array(32).fill(1);
    const a = Buffer.from(deriveKeyBytes(secret, "otp-wrap"));
    const b = Buffer.from(deriveKeyBytes(secret, "otp-wrap", 32));
    const c = Buffer.from(deriveKeyBytes(secret, "other"));
    expect(a.equals(b)).toBe(true);
    expect(a.equals(c)).toBe(false);
    expect(deriveKeyBytes(secret, "x", 64).length).toBe(64);
  });

  it("rejects wrong arguments with INVALID_INPUT", () => {
    const secret = new Uint8Array(32);
    const bad: Array<() => unknown> = [
      () => deriveP256(new Uint8Array(8), "identity"),
      () => deriveP256("secret" as unknown as Uint8Array, "identity"),
      () => deriveP256(secret, ""),
      () => deriveP256(secret, "has space"),
      () => deriveP256(secret, 5 as unknown as string),
      () => deriveP256(secret, "x".repeat(129)),
      () => epochContext(-1),
      () => epochContext(1.5),
      () => deriveKeyBytes(secret, "ok", 8),
      () => p256Scalar(new Uint8Array(65), "identity"),
    ];
    for (const f of bad) {
      let err: unknown;
      try {
        f();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FleetError);
      expect((err as FleetError).code).toBe("INVALID_INPUT");
    }
  });
});

describe("HKDF-SHA-256 over HMAC (devices/puf/hkdf.ts)", () => {
  it("matches RFC 5869 test case 1 and crypto.hkdfSync for many lengths and inputs", () => {
    const okm = hkdfSha256(
      Buffer.from("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "hex"),
      Buffer.from("000102030405060708090a0b0c", "hex"),
      Buffer.from("f0f1f2f3f4f5f6f7f8f9", "hex"),
      42,
    );
    expect(okm.toString("hex")).toBe(
      "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    );
    for (const length of [1, 31, 32, 33, 40, 64, 65, 255, 1000]) {
      const ikm = createHash("sha256")
        .update(`ikm${length}`)
        .digest()
        .subarray(0, 1 + (length % 32));
      const salt = length % 3 === 0 ? "" : `salt/${length}`;
      const want = Buffer.from(hkdfSync("sha256", ikm, salt, `info/${length}`, length));
      expect(hkdfSha256(ikm, salt, `info/${length}`, length).equals(want)).toBe(true);
    }
  });
});
