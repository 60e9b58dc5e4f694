/**
 * The CrossGuard pack with the real engine: `pulumi preview --policy-pack policies/pack` on a program
 * with a CaHierarchy and a device batch. A 10-year device certificate under a 2-year policy is refused
 * naming FG-CERT-001; a 2-year one passes; the advisory finding (hub logging off) is shown and does not
 * block. The engine comes from FLEETGUARD_PULUMI_BIN_DIR, default the checkout's .cache/pulumi.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCommand } from "../helpers/proc";

const REPO = join(__dirname, "..", "..");
const PROGRAM = join(__dirname, "fixtures", "policy-program");
const PACK = join(REPO, "policies", "pack");
/** `pulumi config set` writes the stack's config beside the program; it belongs to the throwaway backend. */
const STACK_CONFIG = join(PROGRAM, "Pulumi.policy.yaml");

function binDir(): string {
  if (process.env.FLEETGUARD_PULUMI_BIN_DIR) return process.env.FLEETGUARD_PULUMI_BIN_DIR;
  const version = require(join(REPO, "package.json")).dependencies["@pulumi/pulumi"] as string;
  const versioned = join(REPO, ".cache", "pulumi", version, "bin");
  return existsSync(join(versioned, "pulumi")) ? versioned : join(REPO, ".cache", "pulumi", "bin");
}

describe("CrossGuard pack with the real Pulumi engine", () => {
  const bin = binDir();
  let state: string;
  let env: NodeJS.ProcessEnv;

  const pulumi = async (args: string[]) => {
    const r = await runCommand(
      join(bin, "pulumi"),
      [...args, "--non-interactive", "--cwd", PROGRAM, "--stack", "policy"],
      { env },
    );
    return { code: r.status, out: `${r.stdout}\n${r.stderr}` };
  };

  beforeAll(async () => {
    expect(
      existsSync(join(bin, "pulumi")),
      `no pulumi in ${bin}: run npm run setup or set FLEETGUARD_PULUMI_BIN_DIR`,
    ).toBe(true);
    rmSync(STACK_CONFIG, { force: true }); // left by an interrupted run: its salt belongs to another backend
    state = mkdtempSync(join(tmpdir(), "fleetguard-pack-"));
    env = {
      ...process.env,
      PATH: `${bin}:${process.env.PATH}`,
      PULUMI_BACKEND_URL: `file://${state}`,
      PULUMI_CONFIG_PASSPHRASE: "policy-pack-test",
      PULUMI_HOME: join(state, ".pulumi-home"),
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DIY_BACKEND_NO_LEGACY_WARNING: "true",
      NO_COLOR: "1",
      FLEETGUARD_POLICY: "test/integration/fixtures/policy-program/policy.yaml",
      // the pack's clock: keeps the test policy's waiver (expiring 2027-06-30) valid whenever this runs
      FLEETGUARD_NOW: "2026-12-01T00:00:00Z",
    };
    const init = await pulumi(["stack", "init"]);
    expect(init.code, init.out).toBe(0);
  });

  afterAll(() => {
    if (state) rmSync(state, { recursive: true, force: true });
    rmSync(STACK_CONFIG, { force: true });
  });

  it("refuses a 10-year device certificate under a 2-year policy, naming the check", async () => {
    expect((await pulumi(["config", "set", "fleetguard:deviceValidityDays", "3650"])).code).toBe(0);
    const r = await pulumi(["preview", "--policy-pack", PACK]);
    expect(r.code, r.out).not.toBe(0);
    expect(r.out).toContain("FG-CERT-001");
    expect(r.out).toMatch(
      /batch:gw-2026: profile\.validityDays: got 3650, policy 'two-year-devices' allows at most 730 for device/,
    );
    expect(r.out).toMatch(/mandatory/);
  });

  it("passes a 2-year device certificate; the advisory finding is shown and does not block", async () => {
    expect((await pulumi(["config", "set", "fleetguard:deviceValidityDays", "730"])).code).toBe(0);
    const r = await pulumi(["preview", "--policy-pack", PACK]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).not.toContain("FG-CERT-001 batch:");
    expect(r.out).toContain("FG-HUB-003");
    expect(r.out).toMatch(/aws-logging: declared logging: got DISABLED/);
    expect(r.out).toMatch(/advisory/);
  });

  it("fails closed when the fleet policy file is invalid, with the located error", async () => {
    const saved = env.FLEETGUARD_POLICY;
    env.FLEETGUARD_POLICY = "test/cli/fixtures/check/line/three-problems.yaml";
    try {
      const r = await pulumi(["preview", "--policy-pack", PACK]);
      expect(r.code, r.out).not.toBe(0);
      expect(r.out).toContain("three-problems.yaml:10:5: spec.keys.devce: unknown key");
    } finally {
      env.FLEETGUARD_POLICY = saved;
    }
  });
});
