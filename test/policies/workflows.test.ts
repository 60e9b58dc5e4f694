import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseDocument } from "yaml";

const DIR = join(__dirname, "../../examples/github");

interface Step {
  name?: string;
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
  if?: string;
  id?: string;
}
interface Job {
  "runs-on": string;
  steps: Step[];
  "timeout-minutes"?: number;
}
interface Workflow {
  name: string;
  on: Record<string, unknown>;
  permissions?: Record<string, string>;
  jobs: Record<string, Job>;
}

function load(file: string): Workflow {
  const doc = parseDocument(readFileSync(join(DIR, file), "utf8"), { prettyErrors: false });
  expect(doc.errors.map((e) => e.message)).toEqual([]);
  return doc.toJS() as Workflow;
}

/** What GitHub requires of every workflow: name, triggers, jobs with runs-on and well-formed steps. */
function assertWorkflowShape(w: Workflow): void {
  expect(typeof w.name).toBe("string");
  expect(Object.keys(w.on).length).toBeGreaterThan(0);
  expect(Object.keys(w.jobs).length).toBeGreaterThan(0);
  for (const [id, job] of Object.entries(w.jobs)) {
    expect(id).toMatch(/^[A-Za-z_][A-Za-z0-9_-]*$/);
    expect(typeof job["runs-on"]).toBe("string");
    expect(Array.isArray(job.steps) && job.steps.length > 0).toBe(true);
    for (const s of job.steps) {
      // exactly one of uses/run
      expect(Number(s.uses !== undefined) + Number(s.run !== undefined), JSON.stringify(s)).toBe(1);
      if (s.uses) expect(s.uses).toMatch(/^[\w.-]+\/[\w.-]+@v\d+$/);
      for (const k of Object.keys(s))
        expect([
          "name",
          "uses",
          "run",
          "with",
          "if",
          "id",
          "env",
          "shell",
          "continue-on-error",
          "timeout-minutes",
          "working-directory",
        ]).toContain(k);
    }
  }
}

describe("example GitHub workflows", () => {
  it("policy review: runs on pull requests, reviews against the base, posts the report and fails on violations", () => {
    const w = load("policy-review.yml");
    assertWorkflowShape(w);
    expect(w.on.pull_request).toBeDefined();
    expect(w.permissions).toMatchObject({ "pull-requests": "write", contents: "read" });
    const steps = w.jobs.review!.steps;
    const checkout = steps.find((s) => s.uses?.startsWith("actions/checkout@"))!;
    expect(checkout.with?.["fetch-depth"]).toBe(0); // git show <base>:<path> needs the base commit
    const review = steps.find((s) => s.id === "review")!;
    expect(review.run).toMatch(
      /npx tsx cli\/fleet\.ts policy review --base "origin\/\$\{\{ github\.base_ref \}\}" --out policy-review\.md/,
    );
    const comment = steps.find((s) => s.uses?.startsWith("actions/github-script@"))!;
    expect(String(comment.with?.script)).toContain("policy-review.md");
    expect(String(comment.with?.script)).toMatch(/createComment|updateComment/);
    const gate = steps[steps.length - 1]!;
    expect(gate.if).toContain("steps.review.outputs.exit-code != '0'");
    // the order matters: review before comment before gate
    expect(steps.indexOf(review)).toBeLessThan(steps.indexOf(comment));
    expect(steps.indexOf(comment)).toBeLessThan(steps.indexOf(gate));
  });

  it("nightly rotation: scheduled, serialized, runs pulumi up under the policy pack", () => {
    const w = load("nightly-rotate.yml");
    assertWorkflowShape(w);
    const schedule = w.on.schedule as Array<{ cron: string }>;
    expect(schedule[0]!.cron.split(" ")).toHaveLength(5);
    expect(w.on.workflow_dispatch).toBeDefined();
    const job = w.jobs.rotate!;
    // the job's own env (the policy pack's folder, the stack) expanded, as the runner's shell does
    const env = (job as unknown as { env?: Record<string, string> }).env ?? {};
    const runs = job.steps.map((s) =>
      (s.run ?? "").replace(/"?\$\{?([A-Z_]+)\}?"?/g, (m, k: string) => env[k] ?? m),
    );
    const up = runs.findIndex((r) => /^pulumi up .*--policy-pack policies\/pack/.test(r));
    expect(up).toBeGreaterThan(0);
    const gate = runs.findIndex((r) => r.includes("fleet.ts policy check"));
    const setup = runs.indexOf("npm run setup");
    expect(gate).toBeGreaterThanOrEqual(0);
    expect(setup).toBeGreaterThanOrEqual(0);
    expect(gate).toBeLessThan(up);
    expect(setup).toBeLessThan(up);
    // the convergence check right after the up: the same stack, program and policy pack, no changes
    // allowed (RotationSchedule's bake keeps it green on nights with waves left)
    const confirm = runs[up + 1]!;
    expect(confirm).toMatch(/^pulumi preview .*--expect-no-changes/);
    const target = (r: string) =>
      ["--stack", "--cwd", "--policy-pack"].map((f) => new RegExp(`${f} (\\S+)`).exec(r)?.[1]);
    expect(target(confirm)).toEqual(target(runs[up]!));
    expect(target(confirm).every((x) => x !== undefined)).toBe(true);
    expect(job.steps[up + 1]!.name).toMatch(/^Confirm convergence/);
    expect(job["timeout-minutes"]).toBeGreaterThan(0);
    expect(
      (w as unknown as { concurrency: { "cancel-in-progress": boolean } }).concurrency["cancel-in-progress"],
    ).toBe(false);
  });
});
