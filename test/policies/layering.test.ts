import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { diffPolicies, loadPolicy } from "../../policies/layering";

const NOW = new Date("2026-12-01T12:00:00Z");

const BASE = `apiVersion: fleetguard.io/v1
kind: FleetPolicy
metadata: { name: base }
spec:
  identity: { allowedSources: [puf, injected], injected: { requireHsmCounter: true } }
  keys:
    device: { ecdsa: { minBits: 256 }, rsa: { minBits: 2048 }, ed25519: {} }
  validity: { maxDays: { device: 825 }, caMarginDays: 30 }
  hubs: { aws: { allowWildcardActions: false, minLogLevel: WARN } }
  enforcement: { FG-LIFE-002: mandatory }
`;

function child(spec: string, extra = ""): string {
  return `apiVersion: fleetguard.io/v1\nkind: FleetPolicy\nmetadata: { name: line, extends: base.yaml${extra} }\nspec:\n${spec}`;
}

function load(files: Record<string, string>, entry = "line.yaml", now = NOW) {
  return loadPolicy(entry, {
    now,
    readFile: (p) =>
      files[p] ??
      (() => {
        throw new Error("ENOENT");
      })(),
  });
}

describe("layering: product lines may only tighten the baseline", () => {
  it("accepts tightening in every direction and merges it over the baseline", () => {
    const r = load({
      "base.yaml": BASE,
      "line.yaml": child(
        "  identity: { allowedSources: [puf] }\n  keys: { device: { ecdsa: { minBits: 384 } } }\n  validity: { maxDays: { device: 365 }, caMarginDays: 60 }\n  hubs: { aws: { minLogLevel: DEBUG } }\n  enforcement: { FG-HUB-003: advisory }\n",
      ),
    });
    expect(r.diagnostics).toEqual([]);
    const s = r.policy!.spec;
    expect(s.identity).toEqual({ allowedSources: ["puf"], injected: { requireHsmCounter: true } });
    // x-merge replace: the line's device rule replaces the baseline's (rsa and ed25519 dropped)
    expect(s.keys!.device).toEqual({ ecdsa: { minBits: 384 } });
    expect(s.validity).toEqual({ maxDays: { device: 365 }, caMarginDays: 60 });
    expect(s.hubs!.aws).toEqual({ allowWildcardActions: false, minLogLevel: "DEBUG" });
    expect(r.policy!.chain.map((c) => c.name)).toEqual(["base", "line"]);
  });

  it("reports each kind of loosening at its line, naming the check a waiver would need", () => {
    const line = child(
      [
        "  identity:",
        "    allowedSources: [puf, injected]", // equal: fine
        "    injected: { requireHsmCounter: false }", // line 7: true -> false
        "  keys:",
        "    device: { ecdsa: { minBits: 256 }, rsa: { minBits: 2048 }, ed25519: {} }", // equal
        "  validity:",
        "    maxDays: { device: 900 }", // line 11: max
        "    caMarginDays: 10", // line 12: min
        "  hubs:",
        "    aws: { allowWildcardActions: true, minLogLevel: ERROR }", // line 14: false -> true, order
        "  enforcement:",
        "    FG-LIFE-002: advisory", // line 16: order, keyed by check
        "",
      ].join("\n"),
    );
    const r = load({ "base.yaml": BASE, "line.yaml": line });
    expect(r.policy).toBeDefined();
    const got = r.diagnostics.map(
      (d) => `${d.line} ${d.path} ${d.kind} ${/waiver for (FG-[A-Z]+-\d+)/.exec(d.message)?.[1]}`,
    );
    expect(got).toEqual([
      "7 spec.identity.injected.requireHsmCounter violation FG-ID-001",
      "11 spec.validity.maxDays.device violation FG-CERT-001",
      "12 spec.validity.caMarginDays violation FG-CA-001",
      "14 spec.hubs.aws.allowWildcardActions violation FG-HUB-001",
      "14 spec.hubs.aws.minLogLevel violation FG-HUB-003",
      "16 spec.enforcement.FG-LIFE-002 violation FG-LIFE-002",
    ]);
  });

  it("reports an added algorithm or identity source as a loosening", () => {
    const r = load({
      "base.yaml": BASE.replace("ed25519: {} }", "}").replace("[puf, injected]", "[puf]"),
      "line.yaml": child(
        "  identity: { allowedSources: [puf, injected] }\n  keys: { device: { ed25519: {} } }\n",
      ),
    });
    expect(r.diagnostics.map((d) => `${d.path}: ${d.message.split(";")[0]}`)).toEqual([
      "spec.identity.allowedSources: adds [injected], loosens 'base' (allows only [puf])",
      "spec.keys.device.ed25519: adds ed25519, loosens 'base' (allows only ecdsa, rsa)",
    ]);
  });

  it("lets an unexpired, unscoped waiver for the check grant a loosening, and records it", () => {
    const waiver = (expires: string, scope = "") =>
      `  validity: { maxDays: { device: 1095 } }\n  waivers:\n    - { check: FG-CERT-001, reason: legacy gateways renew only by cable, expires: "${expires}"${scope} }\n`;
    let r = load({ "base.yaml": BASE, "line.yaml": child(waiver("2026-12-01")) });
    expect(r.diagnostics).toEqual([]);
    expect(r.granted).toEqual([
      expect.objectContaining({
        check: "FG-CERT-001",
        path: "spec.validity.maxDays.device",
        expires: "2026-12-01",
      }),
    ]);
    expect(r.policy!.spec.validity!.maxDays!.device).toBe(1095);
    // a day later the waiver has expired: two violations, the expiry and the now-unwaived loosening
    r = load({ "base.yaml": BASE, "line.yaml": child(waiver("2026-11-30")) });
    expect(r.diagnostics.map((d) => d.path)).toEqual([
      "spec.validity.maxDays.device",
      "spec.waivers[0].expires",
    ]);
    expect(r.diagnostics[1]!.message).toContain("expired on 2026-11-30 (today is 2026-12-01)");
    // a scoped waiver covers findings, never a loosening of the whole policy
    r = load({ "base.yaml": BASE, "line.yaml": child(waiver("2027-01-01", ", scope: [batch:gw]")) });
    expect(r.diagnostics).toHaveLength(1);
    expect(r.diagnostics[0]!.message).toContain("a scoped waiver covers findings, not loosenings");
    // a waiver for another check grants nothing
    r = load({
      "base.yaml": BASE,
      "line.yaml": child(waiver("2027-01-01").replace("FG-CERT-001", "FG-CA-001")),
    });
    expect(r.diagnostics.map((d) => d.path)).toEqual(["spec.validity.maxDays.device"]);
  });

  it("rejects waivers for unknown checks and impossible dates as input errors", () => {
    const r = load({
      "base.yaml": BASE,
      "line.yaml": child(
        '  waivers:\n    - { check: FG-NOPE-001, reason: because I said so, expires: "2027-01-01" }\n    - { check: FG-CERT-001, reason: because I said so, expires: "2027-02-30" }\n',
      ),
    });
    expect(r.policy).toBeUndefined();
    expect(r.diagnostics.map((d) => `${d.kind} ${d.path}`)).toEqual([
      "input spec.waivers[0].check",
      "input spec.waivers[1].expires",
    ]);
  });

  it("resolves multi-level chains and checks each level against its parent", () => {
    const mid = child("  validity: { maxDays: { device: 500 } }\n").replace("name: line", "name: mid");
    const leaf = child("  validity: { maxDays: { device: 600 } }\n")
      .replace("name: line", "name: leaf")
      .replace("base.yaml", "mid.yaml");
    const r = load({ "base.yaml": BASE, "mid.yaml": mid, "leaf.yaml": leaf }, "leaf.yaml");
    expect(r.policy!.chain.map((c) => c.name)).toEqual(["base", "mid", "leaf"]);
    expect(r.diagnostics.map((d) => `${d.file} ${d.message.split(";")[0]}`)).toEqual([
      "leaf.yaml got 600, loosens 'mid' (at most 500)",
    ]);
  });

  it("reports a missing parent and an extends cycle at metadata.extends", () => {
    let r = load({ "line.yaml": child("  rotation: { maxWaveFraction: 0.1 }\n") });
    expect(r.diagnostics.map((d) => `${d.line} ${d.path}`)).toEqual(["3 metadata.extends"]);
    r = load(
      {
        "a.yaml": child("  {}\n").replace("name: line", "name: a").replace("base.yaml", "b.yaml"),
        "b.yaml": child("  {}\n").replace("name: line", "name: b").replace("base.yaml", "a.yaml"),
      },
      "a.yaml",
    );
    expect(r.policy).toBeUndefined();
    expect(r.diagnostics.some((d) => /cycle: a\.yaml -> b\.yaml -> a\.yaml/.test(d.message))).toBe(true);
  });

  it("property: a max field is a loosening exactly when the child exceeds the base", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 36500 }), fc.integer({ min: 1, max: 36500 }), (b, c) => {
        const r = load({
          "base.yaml": BASE.replace("device: 825", `device: ${b}`),
          "line.yaml": child(`  validity: { maxDays: { device: ${c} } }\n`),
        });
        return (r.diagnostics.length === 1) === c > b && r.diagnostics.length <= 1;
      }),
      { numRuns: 200 },
    );
  });
});

describe("diffPolicies", () => {
  it("classifies changes as tightened or loosened from the schema annotations", () => {
    const base = load({ "base.yaml": BASE }, "base.yaml").policy!.spec;
    const head = {
      ...base,
      validity: { maxDays: { device: 365 } },
      keys: { device: { ecdsa: { minBits: 256 as const }, rsa: { minBits: 2048 }, ed25519: {} } },
      hubs: { aws: { allowWildcardActions: true, minLogLevel: "WARN" as const } },
    };
    const d = diffPolicies(base, head);
    expect(d.map((c) => `${c.path} ${c.direction} ${c.check}`)).toEqual([
      "spec.hubs.aws.allowWildcardActions loosened FG-HUB-001",
      "spec.validity.caMarginDays loosened FG-CA-001",
      "spec.validity.maxDays.device tightened FG-CERT-001",
    ]);
  });
});
