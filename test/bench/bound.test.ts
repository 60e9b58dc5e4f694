/**
 * The raw-bound pieces do the real work: the SPKI taken from the SEC1 export is the key's,
 * a device certificate from `enrollDevice` verifies with OpenSSL and carries the device's key,
 * and `measureBound` enrolls exactly the devices asked for across worker threads.
 */
import * as crypto from "node:crypto";
import { describe, expect, it } from "vitest";
import { measureBound } from "../../bench/lib/bound";
import { enrollContext, enrollDevice, makeBenchIssuer, p256KeyPair } from "../../bench/lib/enroll";
import { FleetError } from "../../core/errors";
import { toPem } from "../../core/x509/pem";
import { verifyChain } from "../helpers/openssl";

const issuer = makeBenchIssuer();

describe("raw enrollment bound", () => {
  it("p256KeyPair: the SPKI is the public key of the private key", () => {
    for (let i = 0; i < 20; i++) {
      const { privateKey, spki } = p256KeyPair();
      const expected = crypto.createPublicKey(privateKey).export({ type: "spki", format: "der" });
      expect(spki.equals(expected)).toBe(true);
    }
  });

  it("enrollDevice issues a certificate OpenSSL verifies, for the device's key and name", () => {
    const ctx = enrollContext(issuer);
    const a = enrollDevice(ctx, "dev-0000001");
    const b = enrollDevice(ctx, "dev-0000002");
    const pem = toPem("CERTIFICATE", a.certificate);
    const v = verifyChain(issuer.rootCertificatePem, issuer.certificatePem, pem);
    expect(v.ok, v.out).toBe(true);
    const x = new crypto.X509Certificate(pem);
    expect(x.subject).toContain("CN=dev-0000001");
    expect(x.publicKey.export({ type: "spki", format: "der" }).equals(a.spki)).toBe(true);
    expect(x.serialNumber.toLowerCase()).toBe(a.serial.toString("hex"));
    expect(a.spki.equals(b.spki)).toBe(false);
    expect(a.serial.equals(b.serial)).toBe(false);
  });

  it("enrollContext refuses an issuer key that is not the certificate's", () => {
    const other = makeBenchIssuer();
    expect(() => enrollContext({ certificatePem: issuer.certificatePem, keyPem: other.keyPem })).toThrow(
      FleetError,
    );
  });

  it("measureBound enrolls the devices on 1 and 2 worker threads", async () => {
    for (const threads of [1, 2]) {
      const seen: number[] = [];
      const r = await measureBound({
        devices: 2101,
        threads,
        issuer,
        warmup: 5,
        onProgress: (done) => seen.push(done),
      });
      expect(r.threads).toBe(threads);
      expect(r.devices).toBe(2101);
      expect(r.seconds).toBeGreaterThan(0);
      expect(r.perSecond).toBeCloseTo(r.devices / r.seconds, 6);
      // progress every 1,000 devices per worker: counts only grow and stay within the total
      expect(seen.length).toBe(2); // 1 thread: 1000, 2000; 2 threads: 1000 each
      expect(seen.every((d, i) => d <= 2101 && (i === 0 || d >= seen[i - 1]!))).toBe(true);
    }
  });

  it("measureBound refuses bad arguments and reports a failing worker", async () => {
    await expect(measureBound({ devices: 0, threads: 1 })).rejects.toThrow(/devices/);
    await expect(measureBound({ devices: 10, threads: 0 })).rejects.toThrow(/threads/);
    const broken = { ...issuer, keyPem: makeBenchIssuer().keyPem };
    await expect(measureBound({ devices: 10, threads: 2, issuer: broken, warmup: 1 })).rejects.toThrow(
      /bound worker/,
    );
  });
});
