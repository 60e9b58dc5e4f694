import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";

// style.md: imports go one way; core/ never imports a @pulumi package, devices/ never imports components/providers.
function tsFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? tsFiles(p) : e.name.endsWith(".ts") ? [p] : [];
  });
}
const root = path.join(__dirname, "..", "..");
const importsOf = (file: string) =>
  [...fs.readFileSync(file, "utf8").matchAll(/(?:from\s+|require\(|import\()\s*["']([^"']+)["']/g)].map(
    (m) => m[1]!,
  );

describe("layering", () => {
  it("core/ imports no @pulumi package and nothing above it", () => {
    const offenders = tsFiles(path.join(root, "core")).flatMap((f) =>
      importsOf(f)
        .filter((i) => i.startsWith("@pulumi/") || /\.\.\/(components|providers|cli|policies)\b/.test(i))
        .map((i) => `${path.relative(root, f)} imports ${i}`),
    );
    expect(offenders).toEqual([]);
  });
  it("the check itself catches an offender", () => {
    expect(importsOf(__filename).length).toBeGreaterThan(0);
    const sample = 'import * as pulumi from "@pulumi/pulumi";';
    expect(
      [...sample.matchAll(/(?:from\s+|require\(|import\()\s*["']([^"']+)["']/g)].map((m) => m[1]),
    ).toEqual(["@pulumi/pulumi"]);
  });
});
