/** The CA provider's CRUD logic, without the engine: diff semantics and CRL re-signing. */
import { describe, expect, it } from "vitest";
import { check, create, crlDue, diff, read, UNKNOWN, update } from "../../providers/runtime/ca";

const inputs = {
  name: "root",
  role: "root" as const,
  algorithm: "ecdsa-p256" as const,
  subject: { commonName: "Root" },
  validityDays: 365,
  crlIntervalHours: 24,
};

describe("CA provider runtime", () => {
  const { outs } = create(inputs);

  it("reports no change for the same declaration, update for a description, replace for a subject", () => {
    expect(diff("id", outs, inputs)).toMatchObject({ changes: false, replaces: [] });
    expect(diff("id", outs, { ...inputs, description: "d" })).toMatchObject({ changes: true, replaces: [] });
    expect(diff("id", outs, { ...inputs, subject: { commonName: "Other" } }).replaces).toEqual(["subject"]);
    expect(diff("id", outs, { ...inputs, algorithm: "ecdsa-p384" }).replaces).toEqual(["algorithm"]);
  });

  it("keeps a child when its issuer is only updated (unknown cert, same declaration digest)", () => {
    const parent = create({ ...inputs, pathLen: 1 }).outs;
    const issuer = {
      name: "root",
      certificatePem: parent.certificatePem,
      chainPem: parent.chainPem,
      keyPem: parent.keyPem,
    };
    const child = {
      ...inputs,
      name: "iss",
      role: "issuing" as const,
      validityDays: 100,
      issuer,
      issuerDeclaration: "d1",
    };
    const c = create(child).outs;
    const unknownIssuer = { ...issuer, certificatePem: UNKNOWN };
    expect(diff("id", c, { ...child, issuer: unknownIssuer }).replaces).toEqual([]);
    expect(diff("id", c, { ...child, issuer: unknownIssuer, issuerDeclaration: "d2" }).replaces).toEqual([
      "issuer",
    ]);
    const other = create({ ...inputs, pathLen: 1 }).outs;
    expect(
      diff("id", c, { ...child, issuer: { ...issuer, certificatePem: other.certificatePem } }).replaces,
    ).toEqual(["issuer"]);
  });

  it("returns check failures for bad input instead of throwing", () => {
    const r = check({}, { ...inputs, validityDays: -1, algorithm: "nope" as never });
    expect(r.failures.map((f) => f.property)).toEqual(["algorithm", "validityDays"]);
    expect(r.failures[0]!.reason).toMatch(/^algorithm: got "nope", want one of/);
  });

  it("re-signs the CRL with a higher number once half its interval has passed, keeping the key", () => {
    expect(crlDue(outs)).toBe(false);
    const later = new Date(Date.now() + 13 * 3600_000);
    expect(crlDue(outs, later)).toBe(true);
    const stale = { ...outs, crlNextUpdate: new Date(Date.now() + 3600_000).toISOString() };
    expect(diff("id", stale, inputs)).toMatchObject({ changes: true, replaces: [] });
    const u = update("id", stale, inputs).outs as typeof outs;
    expect(u.crlNumber).toBe(outs.crlNumber + 1);
    expect(u.keyPem).toBe(outs.keyPem);
    expect(u.certificatePem).toBe(outs.certificatePem);
    expect(Date.parse(u.crlNextUpdate)).toBeGreaterThan(Date.parse(stale.crlNextUpdate));
  });

  it("refresh returns the state unchanged and refuses a tampered certificate", () => {
    expect(read("id", outs).props).toBe(outs);
    expect(() => read("id", { ...outs, fingerprintSha256: "00" })).toThrow(
      /does not match fingerprintSha256/,
    );
  });
});
