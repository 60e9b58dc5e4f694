import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { hasRocaFingerprint, primorial, ROCA_PRIMES } from "../../policies/roca";
import { parseCertificate } from "../../policies/x509";

const modPow = (b: bigint, e: bigint, m: bigint) => {
  let r = 1n;
  for (b %= m; e > 0n; e >>= 1n, b = (b * b) % m) if (e & 1n) r = (r * b) % m;
  return r;
};

describe("ROCA fingerprint", () => {
  it("flags any product of two numbers of RSALib's form k*M + 65537^a mod M", () => {
    const M = primorial(39); // the 512-bit parameter set: small and fast
    for (let i = 1n; i <= 20n; i++) {
      const p = (1000003n + i) * M + modPow(65537n, 17n * i, M);
      const q = (7000001n + 3n * i) * M + modPow(65537n, 101n + i, M);
      expect(hasRocaFingerprint(p * q)).toBe(true);
    }
  });

  it("does not flag keys from OpenSSL's generator (20 fresh RSA-1024 keys)", () => {
    for (let i = 0; i < 20; i++) {
      const { publicKey } = generateKeyPairSync("rsa", { modulusLength: 1024 });
      const n = BigInt(
        `0x${Buffer.from(publicKey.export({ format: "jwk" }).n!, "base64url").toString("hex")}`,
      );
      expect(hasRocaFingerprint(n)).toBe(false);
    }
  });

  it("clears a modulus that leaves the subgroup modulo a single prime", () => {
    const M = primorial(39);
    const n = (5n * M + modPow(65537n, 9n, M)) * (11n * M + modPow(65537n, 4n, M));
    expect(hasRocaFingerprint(n)).toBe(true);
    // move n off the subgroup modulo 11 only (CRT: add a multiple of M/11 that changes n mod 11)
    const other = ROCA_PRIMES.filter((p) => p !== 11).reduce((a, p) => a * BigInt(p), 1n);
    let m = n;
    do m += other;
    while (hasRocaFingerprint(m));
    expect(ROCA_PRIMES.filter((p) => p !== 11).every((p) => m % BigInt(p) === n % BigInt(p))).toBe(true);
  });

  it("reads the modulus of the committed fixture certificate and flags it, and not its sibling", () => {
    const dir = join(__dirname, "fixtures/certs");
    const roca = parseCertificate({
      id: "r",
      role: "device",
      pem: readFileSync(join(dir, "device-roca.pem"), "utf8"),
    });
    const ok = parseCertificate({
      id: "o",
      role: "device",
      pem: readFileSync(join(dir, "device-rsa.pem"), "utf8"),
    });
    expect(roca.key.bits).toBe(2048);
    expect(hasRocaFingerprint(roca.key.modulus!)).toBe(true);
    expect(hasRocaFingerprint(ok.key.modulus!)).toBe(false);
  });

  it("rejects a non-positive modulus", () => {
    expect(() => hasRocaFingerprint(0n)).toThrow(/modulus/);
  });
});
