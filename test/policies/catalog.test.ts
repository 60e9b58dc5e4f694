import { readdirSync } from "node:fs";
import { basename, join } from "node:path";
import { describe, expect, it } from "vitest";
import type { Check } from "../../policies/check";
import { catalog } from "../../policies/checks/index";
import { evaluate } from "../../policies/engine";
import { expectedSubjects, FIXTURE_NOW, hasFixture, runFixture } from "./harness";

const checksDir = join(__dirname, "../../policies/checks");

function checkFiles(): Array<{ area: string; id: string; path: string }> {
  const out: Array<{ area: string; id: string; path: string }> = [];
  for (const area of readdirSync(checksDir, { withFileTypes: true })) {
    if (!area.isDirectory()) continue;
    for (const f of readdirSync(join(checksDir, area.name)))
      if (f.endsWith(".ts"))
        out.push({ area: area.name, id: basename(f, ".ts"), path: join(checksDir, area.name, f) });
  }
  return out;
}

describe("check catalog", () => {
  it("lists exactly the check files, each exporting a check whose id matches its file name", async () => {
    const files = checkFiles();
    expect(files.map((f) => f.id).sort()).toEqual(catalog.map((c) => c.id).sort());
    for (const f of files) {
      const mod = (await import(f.path)) as { check: Check };
      expect(mod.check.id, f.path).toBe(f.id);
      expect(catalog).toContain(mod.check);
    }
  });

  it("gives every check a title, severity, rationale, standards and context parts", () => {
    for (const c of catalog) {
      expect(c.title.length, c.id).toBeGreaterThan(10);
      expect(c.rationale.length, c.id).toBeGreaterThan(40);
      expect(["critical", "high", "medium", "low"]).toContain(c.severity);
      expect(c.standards.etsiEn303645?.length, c.id).toBeGreaterThan(0);
      expect(c.standards.nistIr8259a?.length, c.id).toBeGreaterThan(0);
      expect(
        c.standards.iec62443_4_2?.every((r) => /^CR \d+\.\d+$/.test(r)),
        c.id,
      ).toBe(true);
      expect(c.appliesTo.length, c.id).toBeGreaterThan(0);
    }
  });

  it("covers every check the issue names, with the matching Device Defender audit checks", () => {
    const dd = new Set(catalog.flatMap((c) => c.standards.awsDeviceDefender ?? []));
    for (const name of [
      "CA_CERTIFICATE_EXPIRING_CHECK",
      "DEVICE_CERTIFICATE_EXPIRING_CHECK",
      "DEVICE_CERTIFICATE_AGE_CHECK",
      "DEVICE_CERTIFICATE_KEY_QUALITY_CHECK",
      "DEVICE_CERTIFICATE_SHARED_CHECK",
      "REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK",
      "REVOKED_CA_CERTIFICATE_STILL_ACTIVE_CHECK",
      "INTERMEDIATE_CA_REVOKED_FOR_ACTIVE_DEVICE_CERTIFICATES_CHECK",
      "IOT_POLICY_OVERLY_PERMISSIVE_CHECK",
      "IOT_POLICY_POTENTIAL_MISCONFIGURATION_CHECK",
      "LOGGING_DISABLED_CHECK",
    ])
      expect(dd, name).toContain(name);
    const titles = catalog.map((c) => c.title.toLowerCase()).join("\n");
    for (const words of [
      "algorithm and size",
      "roca",
      "public key shared",
      "validity",
      "outlives",
      "pathlen",
      "unique",
      "identity source",
      "revoked",
      "overly permissive",
      "wildcards in deny",
      "logging",
    ])
      expect(titles, words).toContain(words);
  });

  it("has a pass and a fail fixture for every check", () => {
    const missing = catalog.flatMap((c) =>
      (["pass", "fail"] as const).filter((k) => !hasFixture(c.id, k)).map((k) => `${c.id}/${k}.yaml`),
    );
    expect(missing).toEqual([]);
  });
});

describe("every check through the shared harness", () => {
  for (const c of catalog) {
    it(`${c.id} passes its passing fixture`, () => {
      const run = runFixture(c, "pass");
      expect(run.findings.map((f) => `${f.subject}: ${f.message}`)).toEqual([]);
      expect(run.status).toBe("pass");
    });
    it(`${c.id} fails its failing fixture on the expected subjects`, () => {
      const run = runFixture(c, "fail");
      expect(run.status).toBe("fail");
      expect(run.findings.every((f) => f.code === "VIOLATION" && f.checkId === c.id)).toBe(true);
      const want = expectedSubjects(c.id);
      expect(want, "fail fixture needs an '# expect:' line").toBeDefined();
      expect([...new Set(run.findings.map((f) => f.subject))].sort()).toEqual([...want!].sort());
    });
  }
});

describe("engine", () => {
  const policy = { name: "p", spec: { validity: { maxDays: { device: 100 } } } };
  const fleet = {
    declared: {
      cas: [{ name: "i", role: "issuing" as const, algorithm: "ecdsa-p256", validityDays: 1000 }],
      batches: [
        {
          id: "b",
          issuingCa: "i",
          identitySource: "puf" as const,
          count: 5,
          profile: { algorithm: "ecdsa-p256", validityDays: 400 },
        },
      ],
    },
  };

  it("turns a throwing check into a CHECK_ERROR finding and goes on with the others", () => {
    const boom: Check = {
      ...catalog[0]!,
      id: "FG-TEST-001",
      appliesTo: ["declared.cas"],
      check: () => {
        throw new Error("kaboom");
      },
    };
    const ev = evaluate(policy, fleet, { checks: [boom, ...catalog], now: FIXTURE_NOW });
    const err = ev.runs.find((r) => r.id === "FG-TEST-001")!;
    expect(err.status).toBe("error");
    expect(err.findings[0]).toMatchObject({ code: "CHECK_ERROR", checkId: "FG-TEST-001" });
    expect(err.findings[0]!.message).toContain("kaboom");
    expect(ev.runs).toHaveLength(catalog.length + 1);
    expect(ev.runs.find((r) => r.id === "FG-CERT-001")!.status).toBe("fail");
    expect(ev.blocking.map((f) => f.checkId)).toEqual(expect.arrayContaining(["FG-TEST-001", "FG-CERT-001"]));
  });

  it("turns a malformed deployed certificate into CHECK_ERROR findings, not a crash", () => {
    const bad = {
      ...fleet,
      deployed: {
        certificates: [
          {
            id: "x",
            role: "device" as const,
            pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
          },
        ],
      },
    };
    const ev = evaluate(policy, bad, { now: FIXTURE_NOW });
    const errors = ev.findings.filter((f) => f.code === "CHECK_ERROR");
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]!.message).toContain("certificate x");
  });

  it("applies enforcement overrides and waivers (scoped, unexpired) to findings", () => {
    const spec = {
      validity: { maxDays: { device: 100 } },
      enforcement: { "FG-CERT-001": "advisory" as const },
    };
    let ev = evaluate({ name: "p", spec }, fleet, { now: FIXTURE_NOW });
    expect(ev.advisory.map((f) => f.checkId)).toContain("FG-CERT-001");
    expect(ev.blocking.map((f) => f.checkId)).not.toContain("FG-CERT-001");
    const waivers = [
      {
        check: "FG-CERT-001",
        reason: "legacy devices until the 2027 firmware",
        expires: "2026-12-31",
        scope: ["batch:b"],
        policy: "p",
      },
    ];
    ev = evaluate({ name: "p", spec: { validity: spec.validity }, waivers }, fleet, { now: FIXTURE_NOW });
    const f = ev.findings.find((x) => x.checkId === "FG-CERT-001")!;
    expect(f.waived?.reason).toContain("legacy");
    expect(ev.blocking.map((x) => x.checkId)).not.toContain("FG-CERT-001");
    ev = evaluate({ name: "p", spec: { validity: spec.validity }, waivers }, fleet, {
      now: new Date("2027-01-01T00:00:00Z"),
    });
    expect(ev.blocking.map((x) => x.checkId)).toContain("FG-CERT-001");
  });

  it("skips checks a policy disables and reports them as disabled", () => {
    const ev = evaluate(
      { name: "p", spec: { ...policy.spec, enforcement: { "FG-CERT-001": "disabled" } } },
      fleet,
    );
    expect(ev.runs.find((r) => r.id === "FG-CERT-001")!.status).toBe("disabled");
    expect(ev.findings.some((x) => x.checkId === "FG-CERT-001")).toBe(false);
  });
});
