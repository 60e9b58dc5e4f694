import { describe, expect, it } from "vitest";
import { fleet } from "./policy-helpers";

const F = "test/cli/fixtures/check";
const noStackTrace = (s: string) => expect(s).not.toMatch(/^\s+at .+\(.*:\d+:\d+\)$/m);

describe("fleet policy check", () => {
  it("reports a typo, a wrong type and an unwaived loosening in one run, with their lines, exit 2 (npx tsx)", () => {
    const r = fleet(["policy", "check", "--policy", `${F}/line/three-problems.yaml`], { viaNpx: true });
    expect(r.code).toBe(2);
    const file = `${F}/line/three-problems.yaml`;
    expect(r.stdout).toContain(`${file}:10:5: spec.keys.devce: unknown key "devce" (did you mean "device"?)`);
    expect(r.stdout).toContain(
      `${file}:14:15: spec.validity.maxDays.device: got 3650, loosens 'baseline' (at most 825)`,
    );
    expect(r.stdout).toContain("unless an unscoped waiver for FG-CERT-001 (reason, expiry) allows it");
    expect(r.stdout).toContain(
      `${file}:15:19: spec.validity.caMarginDays: got string "thirty", want integer`,
    );
    expect(r.stdout).toContain("summary: 2 input error(s), 1 policy violation(s)");
    noStackTrace(r.stdout + r.stderr);
  });

  it("exits 1 for a well-formed policy whose only problem is an unwaived loosening, and notes the waived one", () => {
    const r = fleet(["policy", "check", "--policy", `${F}/line/loosening-only.yaml`, "--now", "2026-12-01"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      ":9:26: spec.identity.injected.requireHsmCounter: got false, loosens 'baseline' (requires true)",
    );
    expect(r.stdout).toContain(
      "note: spec.rotation.maxWaveFraction: got 0.5, loosens 'baseline' (at most 0.25) (allowed by waiver for FG-ROT-001 until 2027-03-31)",
    );
    expect(r.stdout).not.toContain("is valid");
  });

  it("treats an expired waiver as a violation, and the loosening it covered as unwaived", () => {
    const r = fleet(["policy", "check", "--policy", `${F}/line/expired-waiver.yaml`, "--now", "2026-12-01"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      ":13:16: spec.waivers[0].expires: waiver for FG-CERT-001 expired on 2026-06-30 (today is 2026-12-01)",
    );
    expect(r.stdout).toContain(":9:15: spec.validity.maxDays.device: got 1095, loosens 'baseline'");
    // the same waiver before its expiry day (inclusive) grants the loosening
    const before = fleet([
      "policy",
      "check",
      "--policy",
      `${F}/line/expired-waiver.yaml`,
      "--now",
      "2026-06-30T23:00:00Z",
    ]);
    expect(before.code).toBe(0);
  });

  it("reports a YAML syntax error with its position, exit 2", () => {
    const r = fleet(["policy", "check", "--policy", `${F}/line/syntax-error.yaml`]);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/syntax-error\.yaml:8:\d+: \(yaml\): /);
    noStackTrace(r.stdout + r.stderr);
  });

  it("evaluates a fleet: mandatory findings exit 1 and name the check, advisory ones are shown", () => {
    const r = fleet(["policy", "check", "--fleet", `${F}/violating-fleet.yaml`, "--now", "2026-12-01"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      "FAIL   FG-CERT-001 [mandatory] batch:gw-2026: profile.validityDays: got 3650, policy 'baseline' allows at most 825 for device",
    );
    expect(r.stdout).toContain("WARN   FG-HUB-003 [advisory] aws-logging");
    expect(r.stdout).toContain("2 mandatory finding(s), 2 advisory finding(s)");
  });

  it("reports schema and reference errors of a fleet file together, exit 2", () => {
    const r = fleet(["policy", "check", "--fleet", `${F}/bad-fleet.yaml`]);
    expect(r.code).toBe(2);
    expect(r.stdout).toContain('bad-fleet.yaml:7:44: spec.cas[0].algorithm: got string "ecdsa-p385"');
    expect(r.stdout).toContain(
      "bad-fleet.yaml:9:28: spec.batches[0].issuingCa: got nowhere, want one of the declared CAs (root)",
    );
  });

  it("passes the repository's own fleet.yaml and example policies (exit 0)", () => {
    let r = fleet(["policy", "check", "--now", "2026-12-01"]);
    expect(r.stdout).toContain("fleet.yaml under baseline");
    expect(r.code).toBe(0);
    r = fleet([
      "policy",
      "check",
      "--policy",
      "policies/baseline.yaml",
      "--policy",
      "policies/examples/sensor-line.yaml",
      "--policy",
      "policies/examples/gateway-line.yaml",
      "--now",
      "2026-12-01",
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("policy 'gateway-line' is valid (gateway-line <- baseline)");
  });

  it("exits 2 on usage errors: unknown command, unknown option, bad --now, missing file", () => {
    expect(fleet(["policy", "frobnicate"]).code).toBe(2);
    const opt = fleet(["policy", "check", "--polcy", "x.yaml"]);
    expect(opt.code).toBe(2);
    expect(opt.stderr).toContain("--polcy");
    const now = fleet(["policy", "check", "--now", "yesterday"]);
    expect(now.code).toBe(2);
    expect(now.stderr).toContain('--now: got "yesterday"');
    const missing = fleet(["policy", "check", "--policy", "no/such/policy.yaml"]);
    expect(missing.code).toBe(2);
    expect(missing.stdout).toContain("no/such/policy.yaml:1:1: (file): cannot read the policy file");
    noStackTrace(opt.stderr + now.stderr + missing.stdout + missing.stderr);
  });

  it("lists the catalog", () => {
    const r = fleet(["policy", "list"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^FG-KEY-002\s+critical\s+RSA keys free of the ROCA fingerprint/m);
    const j = fleet(["policy", "list", "--json"]);
    expect(j.code).toBe(0);
    const doc = JSON.parse(j.stdout) as Array<{
      id: string;
      severity: string;
      title: string;
      standards: object;
    }>;
    expect(doc.find((c) => c.id === "FG-KEY-002")).toMatchObject({ severity: "critical" });
    expect(doc.length).toBe(r.stdout.trim().split("\n").length);
  });
});
