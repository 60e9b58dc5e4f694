import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { catalog } from "../../policies/checks/index";
import { DOC, renderDoc } from "../../policies/gen-docs";

describe("docs/policy.md", () => {
  it("has a catalog table generated from the checks' current metadata (run npm run gen:policy-docs)", () => {
    const doc = readFileSync(DOC, "utf8");
    expect(doc).toBe(renderDoc(doc));
    for (const c of catalog) expect(doc).toContain(`| ${c.id} | ${c.title.replace(/\|/g, "\\|")} |`);
  });
});
