/**
 * `fleet policy review` of a Pulumi program: a small git repository with a TypeScript program that uses
 * fleetguard's components (by a relative import to this checkout) and a policy; each commit is run in a
 * worktree under Pulumi's mocks, and the report is compared with golden files.
 */
import { execFileSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openRegistry } from "../../core/registry/index";
import { runProgramWithMocks } from "../../policies/declared";
import { loadFleet } from "../../policies/fleet";
import { fleet, ROOT } from "./policy-helpers";

const FIX = join(__dirname, "fixtures/review-program");
let repo: string;
const sha: Record<string, string> = {};

const git = (...args: string[]) => execFileSync("git", args, { cwd: repo, encoding: "utf8" });
const edit = (file: string, from: string, to: string) => {
  const p = join(repo, file);
  const text = readFileSync(p, "utf8");
  if (!text.includes(from)) throw new Error(`${file}: no ${from}`);
  writeFileSync(p, text.replace(from, to));
};

beforeAll(() => {
  repo = mkdtempSync(join(tmpdir(), "fleet-review-program-"));
  git("init", "-q", "-b", "main");
  git("config", "user.email", "review@test.invalid");
  git("config", "user.name", "review test");
  cpSync(join(FIX, "base"), repo, { recursive: true });
  // kept as a template so this checkout's type check does not compile the fixture's imports
  renameSync(join(repo, "index.ts.template"), join(repo, "index.ts"));
  // the worktrees the review makes sit beside this repository in the temp dir: the same relative path
  const fg = relative(repo, ROOT).split("\\").join("/");
  edit("index.ts", 'from "FLEETGUARD/components/CaHierarchy"', `from "${fg}/components/CaHierarchy"`);
  edit(
    "index.ts",
    'from "FLEETGUARD/components/DeviceIdentityBatch"',
    `from "${fg}/components/DeviceIdentityBatch"`,
  );
  git("add", "-A");
  git("commit", "-q", "-m", "plant fleet");
  sha.base = git("rev-parse", "HEAD").trim();
  edit("index.ts", "profile: { validityDays: 365,", "profile: { validityDays: 300,");
  git("commit", "-q", "-am", "lot-a: 300-day device certificates");
  sha.validity = git("rev-parse", "HEAD").trim();
  edit("policies/plant.yaml", "device: 825", "device: 200");
  git("commit", "-q", "-am", "policy: device certificates at most 200 days");
  sha.policy = git("rev-parse", "HEAD").trim();
});

afterAll(() => rmSync(repo, { recursive: true, force: true }));

const normalize = (md: string) => md.replace(/\(([0-9a-f]{7})(,|\))/g, "(<sha>$2");

function golden(name: string, md: string): void {
  const file = join(FIX, name);
  if (process.env.UPDATE_GOLDEN) writeFileSync(file, md);
  expect(md).toBe(readFileSync(file, "utf8"));
}

describe("fleet policy review of a Pulumi program", () => {
  it("reports a batch's validity edited in index.ts as the re-issue the next up does (exit 0)", () => {
    const r = fleet(
      ["policy", "review", "--base", sha.base!, "--head", sha.validity!, "--now", "2026-12-01"],
      { cwd: repo },
    );
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const md = normalize(r.stdout.replaceAll(sha.base!, "<base>").replaceAll(sha.validity!, "<head>"));
    expect(md).toContain("- batch `lot-a`: profile.validityDays 365 → 300");
    // the count comes from the stack config (Pulumi.review.yaml), passed as the engine would
    expect(md).toMatch(
      /\| batch `lot-a`: profile\.validityDays 365 → 300 \| device certificates re-issued \| {2}\| `lot-a` \| 200 \|/,
    );
    expect(md).toContain("this review covers the declarations only");
    golden("expected-validity.md", md);
  });

  it("fails a review that edits only the policy, naming the batch the policy now refuses (exit 1)", () => {
    const r = fleet(
      ["policy", "review", "--base", sha.validity!, "--head", sha.policy!, "--now", "2026-12-01"],
      { cwd: repo },
    );
    expect(r.stderr).toBe("");
    expect(r.code).toBe(1);
    const md = normalize(r.stdout.replaceAll(sha.validity!, "<base>").replaceAll(sha.policy!, "<head>"));
    expect(md).toContain("No change to the declared fleet.");
    expect(md).toContain("| `spec.validity.maxDays.device` | 825 | 200 | tightened | FG-CERT-001 |");
    // lot-a (300 days) breaks the new maximum; lot-b (180 days) does not
    expect(md).toMatch(/\| FG-CERT-001 \| mandatory \| `batch:lot-a` \|/);
    expect(md).not.toMatch(/`batch:lot-b`/);
    expect(md).toMatch(
      /\| policy spec\.validity\.maxDays\.device 825 → 200 \| `pulumi up` fails: the policy refuses the declaration at construction \(FG-CERT-001\)[^|]*\| {2}\| `lot-a` \| 0 \|/,
    );
    expect(md).not.toContain("re-issued at the next run");
    expect(md).toContain("DeviceIdentityBatch 'lot-a': policy 'plant' refuses this declaration");
    golden("expected-policy.md", md);
    // the same review as a document: the refused batch, what stops up, the same exit code
    const j = fleet(
      ["policy", "review", "--base", sha.validity!, "--head", sha.policy!, "--now", "2026-12-01", "--json"],
      { cwd: repo },
    );
    expect(j.code).toBe(1);
    const doc = JSON.parse(j.stdout);
    expect(doc).toMatchObject({ base: { sha: sha.validity }, head: { sha: sha.policy }, exitCode: 1 });
    expect(doc.newlyFailing.map((f: { subject: string }) => f.subject)).toContain("batch:lot-a");
    expect(doc.stops.refusals.length).toBeGreaterThan(0);
    expect(doc.markdown).toBeUndefined();
  });

  it("counts devices from the registry (--registry): re-issue, enroll and decommission what exists now", async () => {
    const loc = join(repo, "..", `${relative(tmpdir(), repo)}-registry.db`);
    const r = await openRegistry(loc);
    try {
      const at = new Date("2026-06-01T00:00:00Z");
      const seed = async (batch: string, active: number, pending: number) => {
        await r.putBatch({ name: batch, model: "th100", source: "puf", spec: "{}" });
        const ids = Array.from({ length: active + pending }, (_, i) => `${batch}-${i}`);
        await r.addDevices(batch, ids);
        await r.apply(
          ids.slice(0, active).flatMap((deviceId, i) => [
            { deviceId, batch, from: "pending", to: "attested", publicKey: Buffer.from(`spki-${deviceId}`) },
            {
              deviceId,
              batch,
              from: "attested",
              to: "issued",
              certificate: {
                serial: `${batch === "lot-a" ? 1 : 2}${String(i).padStart(5, "0")}`,
                deviceId,
                batch,
                issuer: "ab".repeat(32),
                der: Buffer.alloc(64, i),
                notBefore: at,
                notAfter: at,
                issuedAt: at,
              },
            },
            { deviceId, batch, from: "issued", to: "installed" },
            { deviceId, batch, from: "installed", to: "active" },
          ]) as never,
        );
      };
      await seed("lot-a", 120, 30);
      await seed("lot-b", 60, 0);
    } finally {
      await r.close();
    }
    try {
      const res = fleet(
        [
          "policy",
          "review",
          "--base",
          sha.base!,
          "--head",
          sha.validity!,
          "--registry",
          loc,
          "--now",
          "2026-12-01",
        ],
        { cwd: repo },
      );
      expect(res.stderr).toBe("");
      expect(res.code).toBe(0);
      expect(res.stdout).toMatch(/Deployed: registry `[^`]+` \(2 batch\(es\), 210 device record\(s\)\)\./);
      // lot-a: 200 declared, 150 recorded (120 active, 30 pending): 50 new + 30 unfinished enrolled,
      // the 120 certified re-issued with the new validity
      expect(res.stdout).toMatch(
        /\| batch `lot-a`: declared 200, 150 deployed \| devices enrolled \| {2}\| `lot-a` \| 80 \|/,
      );
      expect(res.stdout).toMatch(
        /\| batch `lot-a`: profile\.validityDays 365 → 300 \| device certificates re-issued \| {2}\| `lot-a` \| 120 \|/,
      );
      // lot-b: 50 declared, 60 recorded: 10 decommissioned
      expect(res.stdout).toMatch(
        /\| batch `lot-b`: declared 50, 60 deployed \| devices decommissioned \(certificates revoked\) \| {2}\| `lot-b` \| 10 \|/,
      );
      const missing = fleet(["policy", "review", "--base", sha.base!, "--registry", join(repo, "nope.db")], {
        cwd: repo,
      });
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain("which does not exist");
      expect(existsSync(join(repo, "nope.db"))).toBe(false);
    } finally {
      rmSync(loc, { force: true });
      rmSync(`${loc}-wal`, { force: true });
      rmSync(`${loc}-shm`, { force: true });
    }
  });

  it("reads the deployed side from the stack's state (--stack, the real pulumi CLI)", () => {
    const bin = readdirSync(join(ROOT, ".cache/pulumi"))
      .map((v) => join(ROOT, ".cache/pulumi", v, "bin"))
      .find((d) => existsSync(join(d, "pulumi")));
    expect(bin, "the Pulumi CLI (scripts/setup-pulumi)").toBeDefined();
    const backend = mkdtempSync(join(tmpdir(), "fleet-review-backend-"));
    const saved = { ...process.env };
    Object.assign(process.env, {
      PATH: `${bin}${delimiter}${process.env.PATH}`,
      PULUMI_BACKEND_URL: `file://${backend}`,
      PULUMI_CONFIG_PASSPHRASE: "review-test-only",
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DIY_BACKEND_NO_LEGACY_WARNING: "true",
    });
    const pulumi = (...args: string[]) =>
      execFileSync("pulumi", args, { cwd: repo, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    try {
      pulumi("stack", "init", "review", "--non-interactive");
      // a state as `pulumi up` leaves it: one batch resource with its registry counts as outputs
      const state = JSON.parse(pulumi("stack", "export"));
      const stack = "urn:pulumi:review::plant::pulumi:pulumi:Stack::plant-review";
      const provider = "urn:pulumi:review::plant::pulumi:providers:pulumi-nodejs::default";
      const pid = "00000000-0000-0000-0000-000000000000";
      state.deployment.resources = [
        { urn: stack, custom: false, type: "pulumi:pulumi:Stack" },
        { urn: provider, custom: true, id: pid, type: "pulumi:providers:pulumi-nodejs" },
        {
          urn: "urn:pulumi:review::plant::fleetguard:devices:DeviceIdentityBatch$pulumi-nodejs:dynamic:Resource::lot-a-lot",
          custom: true,
          id: "lot-a",
          type: "pulumi-nodejs:dynamic:Resource",
          parent: stack,
          provider: `${provider}::${pid}`,
          inputs: {},
          outputs: { kind: "fleetguard:batch", name: "lot-a", counts: { active: 190, decommissioned: 5 } },
        },
      ];
      writeFileSync(join(backend, "state.json"), JSON.stringify(state));
      pulumi("stack", "import", "--file", join(backend, "state.json"));
      const res = fleet(
        [
          "policy",
          "review",
          "--base",
          sha.base!,
          "--head",
          sha.validity!,
          "--stack",
          "review",
          "--now",
          "2026-12-01",
        ],
        { cwd: repo },
      );
      expect(res.stderr).toBe("");
      expect(res.code).toBe(0);
      expect(res.stdout).toContain("Deployed: stack `review` (1 batch resource(s)).");
      expect(res.stdout).toMatch(
        /\| batch `lot-a`: declared 200, 190 deployed \| devices enrolled \| {2}\| `lot-a` \| 10 \|/,
      );
      expect(res.stdout).toMatch(
        /\| batch `lot-a`: profile\.validityDays 365 → 300 \| device certificates re-issued \| {2}\| `lot-a` \| 190 \|/,
      );
      // lot-b is declared but not in the stack: all of it is enrolled by the next up
      expect(res.stdout).toMatch(
        /\| batch `lot-b`: declared 50, 0 deployed \| devices enrolled \| {2}\| `lot-b` \| 50 \|/,
      );
      const bad = fleet(["policy", "review", "--base", sha.base!, "--stack", "nope"], { cwd: repo });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain('--stack: got "nope", want a stack `pulumi stack export` can read');
    } finally {
      process.env = saved;
      rmSync(backend, { recursive: true, force: true });
    }
  });

  it("removes the worktrees it made", () => {
    fleet(["policy", "review", "--base", sha.base!, "--now", "2026-12-01"], { cwd: repo });
    expect(git("worktree", "list").trim().split("\n")).toHaveLength(1);
  });

  it("says so when the base has no program, and refuses --fleet with --program", () => {
    git("checkout", "-q", "--orphan", "empty");
    git("rm", "-rfq", ".");
    writeFileSync(join(repo, "README.md"), "nothing yet\n");
    git("add", "README.md");
    git("commit", "-q", "-m", "empty");
    const empty = git("rev-parse", "HEAD").trim();
    git("checkout", "-q", "-f", "main");
    const r = fleet(["policy", "review", "--base", empty, "--now", "2026-12-01"], { cwd: repo });
    expect(r.code).toBe(1); // HEAD (the policy commit) is refused
    expect(r.stdout).toContain("no Pulumi.yaml)");
    expect(r.stdout).toContain("- batch `lot-a` added (200 devices");
    const both = fleet(["policy", "review", "--base", "main", "--fleet", "f.yaml", "--program", "."], {
      cwd: repo,
    });
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("--fleet FILE and --program DIR: got both");
  });
});

describe("the repository's own program under mocks", () => {
  it("declares the reference fleet (Example Devices Ltd, line-a-lot-1) with no error and no refusal", () => {
    const program = runProgramWithMocks({ dir: ROOT });
    expect(program.errors).toEqual([]);
    expect(program.refusals).toEqual([]);
    expect(program.declared.cas?.map((c) => `${c.role}:${c.name}:${c.subject}`)).toEqual([
      "root:root:C=DE, O=Example Devices Ltd, CN=Example Fleet Root CA",
      "intermediate:manufacturing:O=Example Devices Ltd, CN=Example Manufacturing CA",
      "issuing:line-a:O=Example Devices Ltd, OU=Plant 1, CN=Example Line A Issuing CA",
    ]);
    expect(program.declared.batches?.map((b) => [b.id, b.count, b.profile.validityDays])).toEqual([
      ["line-a-lot-1", 1000, 365],
    ]);
    expect(program.components.map((c) => [c.component, c.name, c.policy])).toEqual([
      ["CaHierarchy", "fleet", { file: join(ROOT, "policies/baseline.yaml") }],
      ["DeviceIdentityBatch", "line-a-lot-1", { file: join(ROOT, "policies/baseline.yaml") }],
      ["HubRegistration", "local-hub", { file: join(ROOT, "policies/baseline.yaml") }],
    ]);
  });
});

describe("the repository's own program and fleet.yaml", () => {
  it("declare the same CAs and batches (the review evaluates the program; fleet.yaml must not disagree)", () => {
    const program = runProgramWithMocks({ dir: ROOT });
    expect(program.errors).toEqual([]);
    expect(program.refusals).toEqual([]);
    const file = loadFleet(join(ROOT, "fleet.yaml"));
    expect(file.diagnostics).toEqual([]);
    expect(existsSync(join(ROOT, "index.ts"))).toBe(true);
    expect(file.fleet?.declared.cas).toEqual(program.declared.cas);
    expect(file.fleet?.declared.batches).toEqual(program.declared.batches);
  });
});
