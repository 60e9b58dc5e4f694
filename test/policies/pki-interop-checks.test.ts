/**
 * FG-CA-002 and FG-CA-003 beyond their fixtures: how they are enforced at construction, how the
 * policy's list is read and layered, and what the batch-only context of a DeviceIdentityBatch gives.
 */
import { describe, expect, it } from "vitest";
import { FleetError } from "../../core/errors";
import type { DeclaredBatch, DeclaredCa } from "../../policies/context";
import { enforceAtConstruction, evaluate } from "../../policies/engine";
import { loadPolicy } from "../../policies/layering";
import type { PolicySpec } from "../../policies/schema/fleet-policy.gen";

const NOW = new Date("2026-12-01T00:00:00Z");
const cas: DeclaredCa[] = [
  { name: "root", role: "root", algorithm: "ecdsa-p384", validityDays: 7300, pathLen: 1 },
  {
    name: "issuing-eu",
    role: "issuing",
    parent: "root",
    algorithm: "ecdsa-p256",
    validityDays: 1825,
    pathLen: 0,
    crlIntervalHours: 24,
    nameConstraints: { permitted: ["devices.example.com"] },
  },
];
const batch = (extra: Partial<DeclaredBatch> = {}): DeclaredBatch => ({
  id: "sensors",
  deviceModel: "fg100",
  issuingCa: "issuing-eu",
  identitySource: "puf",
  count: 10,
  puf: { keyFailureRate: 1e-9 },
  profile: { algorithm: "ecdsa-p256", validityDays: 365 },
  ...extra,
});
const policy = (spec: PolicySpec = {}) => ({ name: "p", spec });
const run = (id: string, spec: PolicySpec, batches: DeclaredBatch[], withCas = true) =>
  evaluate(policy(spec), { declared: { ...(withCas ? { cas } : {}), batches } }, { now: NOW }).runs.find(
    (r) => r.id === id,
  )!;

describe("FG-CA-003: mbedTLS under critical name constraints", () => {
  it("is advisory: construction goes on and reports the finding", () => {
    const ev = enforceAtConstruction(
      policy(),
      { cas, batches: [batch({ tlsStack: "mbedtls" })] },
      { now: NOW },
    );
    const f = ev.findings.filter((x) => x.checkId === "FG-CA-003");
    expect(f.map((x) => [x.subject, x.enforcement])).toEqual([["batch:sensors", "advisory"]]);
    expect(f[0]!.message).toMatch(/ca:issuing-eu \(declared\).*Mbed-TLS\/mbedtls#8759/);
  });

  it("a policy can make it mandatory", () => {
    expect(() =>
      enforceAtConstruction(
        policy({ enforcement: { "FG-CA-003": "mandatory" } }),
        { cas, batches: [batch({ tlsStack: "mbedtls" })] },
        { now: NOW },
      ),
    ).toThrow(FleetError);
  });

  it("other stacks, and a batch that names none, are not its business", () => {
    expect(run("FG-CA-003", {}, [batch({ tlsStack: "openssl" }), batch({ id: "b2" })]).status).toBe(
      "not-applicable",
    );
  });

  it("with only the batch known (a DeviceIdentityBatch alone), it passes: the chain is not in view", () => {
    const r = run("FG-CA-003", {}, [batch({ tlsStack: "mbedtls" })], false);
    expect(r.status).toBe("pass");
  });
});

describe("FG-CA-002: extended key usages issuing CAs may issue", () => {
  it("refuses a serverAuth device profile at construction (mandatory)", () => {
    let err: unknown;
    try {
      enforceAtConstruction(
        policy(),
        {
          batches: [
            batch({ profile: { algorithm: "ecdsa-p256", validityDays: 365, extKeyUsage: ["serverAuth"] } }),
          ],
        },
        { now: NOW },
      );
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FleetError);
    expect((err as Error).message).toContain(
      "FG-CA-002 batch:sensors: profile.extKeyUsage: got [serverAuth], want only [clientAuth, manifestSigning]",
    );
  });

  it("reads the policy's list, names and dotted OIDs alike", () => {
    const oid = "1.3.6.1.5.5.7.3.1";
    const b = batch({
      profile: { algorithm: "ecdsa-p256", validityDays: 365, extKeyUsage: ["clientAuth", oid] },
    });
    const allowing = { caConstraints: { issuing: { allowedExtKeyUsages: ["clientAuth", "serverAuth"] } } };
    expect(run("FG-CA-002", allowing, [b]).status).toBe("pass");
    const strict = { caConstraints: { issuing: { allowedExtKeyUsages: ["clientAuth"] } } };
    const r = run("FG-CA-002", strict, [b]);
    expect(r.status).toBe("fail");
    expect(r.findings[0]!.message).toMatch(/got \[clientAuth, serverAuth\].*\[serverAuth\] not allowed/);
  });

  it("a product line that adds a usage to the baseline's list loosens it and names FG-CA-002", () => {
    const files: Record<string, string> = {
      "base.yaml":
        "apiVersion: fleetguard.io/v1\nkind: FleetPolicy\nmetadata: { name: base }\nspec:\n  caConstraints: { issuing: { allowedExtKeyUsages: [clientAuth, manifestSigning] } }\n",
      "line.yaml":
        "apiVersion: fleetguard.io/v1\nkind: FleetPolicy\nmetadata: { name: line, extends: base.yaml }\nspec:\n  caConstraints: { issuing: { allowedExtKeyUsages: [clientAuth, serverAuth] } }\n",
    };
    const r = loadPolicy("line.yaml", {
      now: NOW,
      readFile: (p) => {
        const f = files[p];
        if (f === undefined) throw new Error("ENOENT");
        return f;
      },
    });
    const d = r.diagnostics.map((x) => x.message).join("\n");
    expect(d).toMatch(/adds \[serverAuth\], loosens 'base'/);
    expect(d).toContain("FG-CA-002");
  });

  it("the schema refuses an unknown usage name", () => {
    const r = loadPolicy("p.yaml", {
      now: NOW,
      readFile: () =>
        "apiVersion: fleetguard.io/v1\nkind: FleetPolicy\nmetadata: { name: p }\nspec:\n  caConstraints: { issuing: { allowedExtKeyUsages: [clientAuht] } }\n",
    });
    expect(r.policy).toBeUndefined();
    expect(r.diagnostics.map((x) => `${x.path}: ${x.message}`).join("\n")).toMatch(
      /spec\.caConstraints\.issuing\.allowedExtKeyUsages\[0\]: got string "clientAuht"/,
    );
  });
});
