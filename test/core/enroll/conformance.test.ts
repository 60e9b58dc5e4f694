// Conformance (core/enroll/conformance.ts): does a recorded certificate conform to the batch's
// declaration? Since issue 13 it reads only the TBS, serial and SPKI of the certificate (not every
// extension); its answers must be those of the full parse and rebuild it replaced, here kept as
// the reference and compared on template-issued certificates, other declarations and corrupted DER.
import * as crypto from "node:crypto";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { Conformance } from "../../../core/enroll/conformance";
import {
  compileTemplate,
  deviceNames,
  type IssuerMaterial,
  type ResolvedProfile,
  resolveProfile,
} from "../../../core/enroll/profile";
import type { CertificateRecord } from "../../../core/registry/types";
import { deviceId } from "../../../core/station/ids";
import { randomSerial } from "../../../core/x509/cert";
import { parseCertificate } from "../../../core/x509/parse";
import { hierarchy } from "./helpers";

const profile = resolveProfile({ subject: { organization: "Acme" }, validityDays: 365 });
const withSans = resolveProfile({
  subject: { organization: "Acme" },
  validityDays: 365,
  sans: { dns: ["{deviceId}.devices.example.com"], uri: ["urn:dev:{deviceId}"] },
});

/** The check as it was before issue 13: the full parse, then the template's TBS for the same device. */
function reference(p: ResolvedProfile, issuer: IssuerMaterial, c: CertificateRecord): boolean {
  if (c.issuer !== issuer.fingerprint) return false;
  let captured: Buffer | undefined;
  const signer = {
    algorithm: "ecdsa-p256" as const,
    publicKey: new crypto.X509Certificate(issuer.certificate).publicKey,
    sign: (d: Uint8Array) => {
      captured = Buffer.from(d);
      return Buffer.alloc(0);
    },
  };
  try {
    const t = compileTemplate(p, { ...issuer, key: signer }, new Date(c.notBefore.getTime() + 60_000));
    if (t.notBefore.getTime() !== c.notBefore.getTime() || t.notAfter.getTime() !== c.notAfter.getTime())
      return false;
    const parsed = parseCertificate(c.der);
    const n = deviceNames(p, c.deviceId, "lot", "fg100");
    t.issue(
      parsed.serialBytes,
      n.commonName,
      parsed.spki,
      n.san.uri.length || n.san.dns.length ? n.san : undefined,
    );
    return (captured as Buffer | undefined)?.equals(parsed.tbs) === true;
  } catch {
    return false;
  }
}

let issuer: IssuerMaterial;
let other: IssuerMaterial;
let spki: Buffer;

function record(
  p: ResolvedProfile,
  i: number,
  by = issuer,
  at = new Date("2026-06-01T10:00:00Z"),
): CertificateRecord {
  const t = compileTemplate(p, by, at);
  const id = deviceId("fg100", i);
  const n = deviceNames(p, id, "lot", "fg100");
  const der = t.issue(
    randomSerial(),
    n.commonName,
    spki,
    n.san.uri.length || n.san.dns.length ? n.san : undefined,
  );
  return {
    serial: parseCertificate(der).serialBytes.toString("hex"),
    deviceId: id,
    batch: "lot",
    issuer: by.fingerprint,
    der,
    notBefore: t.notBefore,
    notAfter: t.notAfter,
    issuedAt: at,
    status: "live",
  };
}

describe("Conformance", () => {
  beforeAll(() => {
    issuer = hierarchy("Conf").material;
    other = hierarchy("Other").material;
    spki = crypto
      .generateKeyPairSync("ec", { namedCurve: "P-256" })
      .publicKey.export({ type: "spki", format: "der" }) as Buffer;
  });

  it("a certificate the declaration issues conforms; another profile, issuer, device or validity does not", () => {
    const c = new Conformance(profile, issuer, "lot", "fg100");
    const mine = record(profile, 3);
    expect(c.matches(mine)).toBe(true);
    const ou = record(
      resolveProfile({ subject: { organization: "Acme", organizationalUnit: "B" }, validityDays: 365 }),
      3,
    );
    expect(c.matches(ou)).toBe(false);
    expect(
      c.matches(record(resolveProfile({ subject: { organization: "Acme" }, validityDays: 90 }), 3)),
    ).toBe(false);
    expect(c.matches(record(withSans, 3))).toBe(false);
    expect(c.matches({ ...record(profile, 3, other), issuer: issuer.fingerprint })).toBe(false);
    expect(c.matches({ ...mine, issuer: other.fingerprint })).toBe(false);
    expect(c.matches({ ...mine, deviceId: deviceId("fg100", 4) })).toBe(false);
    expect(c.matches({ ...mine, notAfter: new Date(mine.notAfter.getTime() + 1000) })).toBe(false);
    expect(c.matches({ ...mine, der: Buffer.concat([mine.der, Buffer.from([0])]) })).toBe(false);
    expect(c.matches({ ...mine, der: mine.der.subarray(0, mine.der.length - 1) })).toBe(false);
    const sans = new Conformance(withSans, issuer, "lot", "fg100");
    expect(sans.matches(record(withSans, 5))).toBe(true);
    expect(sans.matches(record(profile, 5))).toBe(false);
  });

  it("answers as the full parse and rebuild did, on any corruption of the certificate's bytes", () => {
    const cases = [record(profile, 1), record(withSans, 2)];
    const checks = [
      new Conformance(profile, issuer, "lot", "fg100"),
      new Conformance(withSans, issuer, "lot", "fg100"),
    ];
    const profiles = [profile, withSans];
    for (let k = 0; k < 2; k++) {
      expect(checks[k]!.matches(cases[k]!)).toBe(true);
      expect(reference(profiles[k]!, issuer, cases[k]!)).toBe(true);
    }
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 }),
        fc.option(fc.nat(), { nil: undefined }),
        (k, flips, cut) => {
          const der = Buffer.from(cases[k]!.der);
          for (const [at, v] of flips) der[at % der.length] = v;
          const bytes = cut === undefined ? der : der.subarray(0, cut % der.length);
          for (let j = 0; j < 2; j++) {
            const rec = { ...cases[k]!, der: bytes };
            expect(checks[j]!.matches(rec)).toBe(reference(profiles[j]!, issuer, rec));
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
