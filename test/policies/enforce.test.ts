import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FleetError } from "../../core/errors";
import { enforceAtConstruction } from "../../policies/engine";
import { loadPolicy } from "../../policies/layering";

const ROOT = join(__dirname, "../..");
const NOW = new Date("2026-12-01T00:00:00Z");
const cas = [
  {
    name: "root",
    role: "root" as const,
    algorithm: "ecdsa-p384",
    validityDays: 7300,
    pathLen: 1,
    keyUsage: ["keyCertSign" as const, "cRLSign" as const],
  },
  {
    name: "line-a",
    role: "issuing" as const,
    parent: "root",
    algorithm: "ecdsa-p256",
    validityDays: 1825,
    pathLen: 0,
    crlIntervalHours: 24,
  },
];
const batch = (validityDays: number) => ({
  id: "gw-2026",
  issuingCa: "line-a",
  identitySource: "puf" as const,
  count: 100,
  puf: { keyFailureRate: 1e-9 },
  profile: { algorithm: "ecdsa-p256", validityDays },
});

describe("enforceAtConstruction (what components call before creating anything)", () => {
  it("throws POLICY_VIOLATION naming each mandatory check and its message", () => {
    let err: unknown;
    try {
      enforceAtConstruction(
        join(ROOT, "policies/examples/sensor-line.yaml"),
        { cas, batches: [batch(3650)] },
        { now: NOW },
      );
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FleetError);
    const fe = err as FleetError;
    expect(fe.code).toBe("POLICY_VIOLATION");
    expect(fe.message).toContain("policy 'sensor-line' refuses this declaration");
    expect(fe.message).toContain(
      "FG-CERT-001 batch:gw-2026: profile.validityDays: got 3650, policy 'sensor-line' allows at most 730 for device",
    );
    expect(fe.message).toContain("FG-CA-001 batch:gw-2026");
  });

  it("returns the evaluation (advisories included) for a compliant declaration", () => {
    const policy = loadPolicy(join(ROOT, "policies/examples/sensor-line.yaml"), { now: NOW }).policy!;
    const ev = enforceAtConstruction(
      policy,
      {
        cas,
        batches: [batch(700)],
        rotation: [{ name: "r", batches: ["gw-2026"], waveFraction: 0.5, renewBeforeDays: 60 }],
      },
      { now: NOW },
    );
    expect(ev.blocking).toEqual([]);
    expect(ev.advisory.map((f) => f.checkId)).toEqual(["FG-ROT-001"]);
  });

  it("refuses an invalid policy file with INVALID_INPUT and its located errors", () => {
    expect(() =>
      enforceAtConstruction(join(ROOT, "test/cli/fixtures/check/line/three-problems.yaml"), { cas }),
    ).toThrow(
      expect.objectContaining({
        code: "INVALID_INPUT",
        message: expect.stringMatching(/three-problems\.yaml:10:5: spec\.keys\.devce/),
      }),
    );
  });

  it("refuses a policy whose waiver has expired with POLICY_VIOLATION", () => {
    expect(() =>
      enforceAtConstruction(
        join(ROOT, "test/cli/fixtures/check/line/expired-waiver.yaml"),
        { cas },
        { now: NOW },
      ),
    ).toThrow(
      expect.objectContaining({
        code: "POLICY_VIOLATION",
        message: expect.stringContaining("expired on 2026-06-30"),
      }),
    );
  });
});
