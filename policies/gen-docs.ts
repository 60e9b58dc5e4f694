/**
 * Regenerates the check catalog table in docs/policy.md (between the GENERATED markers) from the checks'
 * own metadata, so the documentation cannot drift from the code. Run `npm run gen:policy-docs`;
 * test/policies/docs.test.ts fails when the table is stale.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { defaultEnforcement } from "./check";
import { catalog } from "./checks/index";

export const DOC = join(__dirname, "..", "docs", "policy.md");
export const BEGIN = "<!-- BEGIN GENERATED CATALOG: npm run gen:policy-docs -->";
export const END = "<!-- END GENERATED CATALOG -->";

const cell = (s: string) => s.replace(/\|/g, "\\|");

export function renderCatalog(): string {
  const rows = [
    "| Id | Check | Severity (default enforcement) | Reads | ETSI EN 303 645 | NIST IR 8259A | IEC 62443-4-2 | AWS IoT Device Defender |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const c of catalog) {
    rows.push(
      `| ${c.id} | ${cell(c.title)} | ${c.severity} (${defaultEnforcement(c.severity)}) | ${c.appliesTo.join(", ")} | ${(c.standards.etsiEn303645 ?? []).join(", ")} | ${(c.standards.nistIr8259a ?? []).join(", ")} | ${(c.standards.iec62443_4_2 ?? []).join(", ")} | ${(c.standards.awsDeviceDefender ?? []).join(", ")} |`,
    );
  }
  rows.push("", "Why each check exists:", "");
  for (const c of catalog) rows.push(`- **${c.id}** ${cell(c.title)}: ${c.rationale}`);
  return rows.join("\n");
}

/** The document with its generated region replaced. */
export function renderDoc(current: string): string {
  const a = current.indexOf(BEGIN);
  const b = current.indexOf(END);
  if (a < 0 || b < a) throw new Error(`docs/policy.md: want the markers ${BEGIN} ... ${END}`);
  return `${current.slice(0, a + BEGIN.length)}\n${renderCatalog()}\n${current.slice(b)}`;
}

if (require.main === module) {
  writeFileSync(DOC, renderDoc(readFileSync(DOC, "utf8")));
  console.log(`wrote ${DOC}`);
}
