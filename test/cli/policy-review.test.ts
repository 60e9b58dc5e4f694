import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fleet } from "./policy-helpers";

const FIX = join(__dirname, "fixtures/review");
const GOLDEN = join(FIX, "expected.md");
let repo: string;

const git = (...args: string[]) => execFileSync("git", args, { cwd: repo, encoding: "utf8" });

beforeAll(() => {
  repo = mkdtempSync(join(tmpdir(), "fleet-review-"));
  git("init", "-q", "-b", "main");
  git("config", "user.email", "review@test.invalid");
  git("config", "user.name", "review test");
  cpSync(join(FIX, "base"), repo, { recursive: true });
  git("add", "-A");
  git("commit", "-q", "-m", "base fleet");
  git("checkout", "-q", "-b", "feature");
  cpSync(join(FIX, "head"), repo, { recursive: true });
  git("commit", "-q", "-am", "shorter device validity, smaller waves, P-384 for issuing-us, one more batch");
});

afterAll(() => rmSync(repo, { recursive: true, force: true }));

/** Commit ids differ per run: replace them so the report can be compared with the golden file. */
const normalize = (md: string) => md.replace(/\(([0-9a-f]{7})(,|\))/g, "(<sha>$2");

describe("fleet policy review on a two-commit repository", () => {
  it("writes the golden Markdown report and exits 1 for the new mandatory violations", () => {
    const r = fleet(
      [
        "policy",
        "review",
        "--base",
        "main",
        "--fleet",
        "fleet.yaml",
        "--out",
        "report.md",
        "--now",
        "2026-12-01",
      ],
      {
        cwd: repo,
      },
    );
    expect(r.stderr).toBe("");
    expect(r.code).toBe(1);
    const md = normalize(readFileSync(join(repo, "report.md"), "utf8"));
    if (process.env.UPDATE_GOLDEN) writeFileSync(GOLDEN, md);
    expect(md).toBe(readFileSync(GOLDEN, "utf8"));
  });

  it("reports blast-radius numbers that match the fleet declared in the repository", () => {
    const r = fleet(["policy", "review", "--base", "main", "--fleet", "fleet.yaml", "--now", "2026-12-01"], {
      cwd: repo,
    });
    const md = r.stdout;
    // th-sensor-eu-2026a and th-sensor-eu-2026b (730 days) exceed the new 365-day maximum: their
    // components refuse them at construction, so the next `up` fails (it re-issues nothing)
    expect(md).toMatch(
      /\| policy spec\.validity\.maxDays\.device 730 → 365 \| `pulumi up` fails: the policy refuses the declaration at construction \(FG-CERT-001\)[^|]*\(its 35,000 device\(s\) stay as they are\) \| {2}\| `th-sensor-eu-2026a`, `th-sensor-eu-2026b` \| 0 \|/,
    );
    expect(md).not.toContain("re-issued at the next run");
    // issuing-us changes algorithm: replaced, and its 8,000 devices re-issued
    expect(md).toMatch(
      /\| CA `issuing-us`: algorithm ecdsa-p256 → ecdsa-p384 \| .* \| `issuing-us` \| `air-sensor-us-2026a` \| 8,000 \|/,
    );
    expect(md).toMatch(
      /\| batch `th-sensor-eu-2026c` added \| devices enrolled \| {2}\| `th-sensor-eu-2026c` \| 5,000 \|/,
    );
    // waves: the schedule covers the three original batches (43,000 devices), 10% -> 5%
    expect(md).toContain("waves of at most 2,150 devices (was 4,300)");
    expect(md).toContain(
      "**At the next run:** `pulumi up` fails: the declaration or the policy must change before this merges.",
    );
    expect(md).toContain("| `spec.validity.maxDays.device` | 730 | 365 | tightened | FG-CERT-001 |");
    // two mandatory FG-CERT-001 findings (the 730-day batches) and one advisory FG-ROT-001 (waves now too large)
    expect(md).toMatch(/### Newly failing \(3\)/);
    expect(md).toContain("2 mandatory violation(s)");
  });

  it("is clean (exit 0) for a compliant fleet compared with itself", () => {
    git("checkout", "-q", "main");
    let r: ReturnType<typeof fleet>;
    try {
      r = fleet(["policy", "review", "--base", "HEAD", "--fleet", "fleet.yaml", "--now", "2026-12-01"], {
        cwd: repo,
      });
    } finally {
      git("checkout", "-q", "feature");
    }
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("**Result: no mandatory violations at HEAD.**");
    expect(r.stdout).toContain("No change to the effective policy.");
    expect(r.stdout).toContain("Nothing is re-issued");
  });

  it("exits 2 for a base ref that does not exist or a missing --base", () => {
    let r = fleet(["policy", "review", "--base", "no-such-branch"], { cwd: repo });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--base: got "no-such-branch", want a git ref');
    r = fleet(["policy", "review"], { cwd: repo });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--base GIT-REF is required");
  });
});
