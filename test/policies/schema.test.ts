import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { checkIds } from "../../policies/checks/index";
import { renderTypes } from "../../policies/schema/gen-types";
import { loadSchema, SourceFile, validateAgainstSchema } from "../../policies/source";

type Node = Record<string, unknown>;

function walk(node: unknown, path: string, visit: (n: Node, path: string) => void): void {
  if (Array.isArray(node)) {
    for (const [i, x] of node.entries()) walk(x, `${path}[${i}]`, visit);
  } else if (node && typeof node === "object") {
    visit(node as Node, path);
    for (const [k, v] of Object.entries(node)) walk(v, `${path}/${k}`, visit);
  }
}

describe("policy and fleet schemas", () => {
  it("generated TypeScript types are up to date (run npm run gen:policy-types)", async () => {
    for (const [path, text] of await renderTypes()) {
      expect(readFileSync(path, "utf8"), path).toBe(text);
      expect(text.split("\n")[0]).toMatch(/^\/\/ GENERATED FILE/);
    }
  });

  it("close every object: unknown keys are errors (the only open map is an IAM Condition block)", () => {
    for (const name of ["fleet-policy", "fleet"] as const) {
      const open: string[] = [];
      walk(loadSchema(name), name, (n, path) => {
        if (n.type === "object" && n.additionalProperties === undefined) open.push(path);
      });
      expect(open).toEqual(name === "fleet" ? ["fleet/$defs/IotPolicyStatement/properties/Condition"] : []);
    }
  });

  it("tie every tightening direction to a catalog check, so a waiver can name what it loosens", () => {
    const schema = loadSchema("fleet-policy");
    const untied: string[] = [];
    const unknown: string[] = [];
    walk(schema, "", (n, path) => {
      if (typeof n["x-check"] === "string" && !checkIds.has(n["x-check"] as string))
        unknown.push(`${path}: ${n["x-check"]}`);
    });
    // Directed leaves must sit under an x-check (enforcement levels name their check by key).
    const defs = schema.$defs as Record<string, Node>;
    const visit = (n: Node | undefined, check: string | undefined, path: string) => {
      if (!n) return;
      if (typeof n.$ref === "string") {
        const { $ref, ...rest } = n;
        n = { ...defs[($ref as string).replace("#/$defs/", "")], ...rest };
      }
      const c = (n["x-check"] as string | undefined) ?? check;
      const t = n["x-tighten"];
      if (t && t !== "none" && !c && !path.includes("enforcement")) untied.push(path);
      for (const [k, v] of Object.entries((n.properties as Record<string, Node>) ?? {}))
        visit(v, c, `${path}.${k}`);
    };
    visit(defs.PolicySpec, undefined, "spec");
    expect(unknown).toEqual([]);
    expect(untied).toEqual([]);
  });

  it("reports every error of a file in one pass, each at its line and column", () => {
    const src = new SourceFile(
      "p.yaml",
      [
        "apiVersion: fleetguard.io/v2", // 1: const
        "kind: FleetPolicy",
        "metadata:",
        "  name: Bad Name", // 4: pattern
        "spec:",
        "  validty: {}", // 6: unknown key
        "  rotation:",
        "    maxWaveFraction: 2", // 8: maximum
        "  waivers:",
        "    - check: FG-CERT-001", // 10
        "      reason: short", // 11: minLength
        "      expires: 31/12/2027", // 12: pattern
        "  enforcement:",
        "    FG-CERT-001: sometimes", // 14: enum
        "    not-a-check: advisory", // 15: propertyNames
      ].join("\n"),
    );
    const ds = validateAgainstSchema(src, "fleet-policy");
    const at = ds.map((d) => `${d.line}:${d.column} ${d.path}`);
    expect(at).toEqual([
      "1:13 apiVersion",
      "4:9 metadata.name",
      "6:3 spec.validty",
      "8:22 spec.rotation.maxWaveFraction",
      "11:15 spec.waivers[0].reason",
      "12:16 spec.waivers[0].expires",
      "14:18 spec.enforcement.FG-CERT-001",
      "15:5 spec.enforcement.not-a-check",
    ]);
    expect(ds.find((d) => d.path === "spec.validty")!.message).toContain('did you mean "validity"?');
    expect(ds.find((d) => d.path === "spec.waivers[0].expires")!.message).toBe(
      'got string "31/12/2027", want a date YYYY-MM-DD',
    );
    expect(ds.find((d) => d.path === "spec.rotation.maxWaveFraction")!.message).toBe(
      "got integer 2, want <= 1",
    );
    expect(ds.find((d) => d.path === "apiVersion")!.message).toBe(
      'got string "fleetguard.io/v2", want "fleetguard.io/v1"',
    );
    expect(ds.every((d) => d.kind === "input")).toBe(true);
  });

  it("reports a missing required key at its parent and a duplicate key as a YAML error", () => {
    let ds = validateAgainstSchema(
      new SourceFile(
        "p.yaml",
        "apiVersion: fleetguard.io/v1\nkind: FleetPolicy\nmetadata:\n  owner: x\nspec: {}\n",
      ),
      "fleet-policy",
    );
    expect(ds.map((d) => `${d.line} ${d.path} ${d.message}`)).toEqual([
      '4 metadata.name missing required key "name"',
    ]);
    ds = validateAgainstSchema(
      new SourceFile("p.yaml", "kind: FleetPolicy\nkind: FleetPolicy\n"),
      "fleet-policy",
    );
    expect(ds[0]!.line).toBe(2);
    expect(ds[0]!.message).toMatch(/unique/i);
  });

  it("never echoes key material in a message", () => {
    const src = new SourceFile(
      "p.yaml",
      "apiVersion: fleetguard.io/v1\nkind: FleetPolicy\nmetadata: { name: x }\nspec:\n  rotation:\n    maxWaveFraction: '-----BEGIN PRIVATE KEY-----abc'\n",
    );
    const ds = validateAgainstSchema(src, "fleet-policy");
    expect(ds[0]!.message).toContain("<redacted key material>");
    expect(ds[0]!.message).not.toContain("abc");
  });
});
