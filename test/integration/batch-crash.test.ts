/**
 * Crash safety of a batch (issue 5, point 5), with the real engine:
 *  1. SIGKILL of the whole `pulumi up` process group (engine, language host, provider) in the
 *     middle of a batch, then the documented recovery (docs/batches.md: scripts/recover-stack)
 *     and `pulumi up` again;
 *  2. SIGKILL of the device farm in the middle of a batch: the run fails cleanly, the farm
 *     comes back on the same state, and `pulumi up` again converges.
 * Afterwards every device has exactly one live certificate, the one it holds; every certificate
 * a device holds is in the registry; the counts are exact; no pending operation is left.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCommand } from "../helpers/proc";
import type { PulumiStack } from "../helpers/pulumi";
import { REPO } from "../helpers/pulumi";
import {
  batchStack,
  checkInvariants,
  configure,
  FarmProc,
  verifyLeaves,
  withRegistry,
} from "./batch-helpers";

const COUNT = 3000;
const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Start `pulumi up` in its own process group; resolves when it exits. */
function upInBackground(stack: PulumiStack) {
  const child = spawn(
    "pulumi",
    ["up", "--yes", "--skip-preview", "--non-interactive", "--stack", stack.stack, "--cwd", stack.programDir],
    { env: stack.env, detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<{ code: number | null; out: string }>((resolve) =>
    child.on("close", (code) => resolve({ code, out })),
  );
  return { child, exited };
}

/** Wait until the registry shows at least `n` active devices of the batch (the run is mid-way). */
async function waitForActive(work: string, n: number, timeoutMs = 240_000): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (fs.existsSync(path.join(work, "registry.db"))) {
      const active = await withRegistry(work, async (r) => (await r.counts("lot")).active).catch(() => 0);
      if (active >= n) return active;
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`batch did not reach ${n} active devices in time`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function setup(name: string) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `fg-${name}-`));
  const farm = new FarmProc(path.join(work, "farm"), COUNT);
  await farm.start();
  const stack = batchStack(`it-${name}`);
  cleanups.push(async () => {
    await farm.stop().catch(() => undefined);
    stack.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  await stack.init();
  await configure(stack, work, farm.port, { count: COUNT });
  return { work, farm, stack };
}

async function converged(stack: PulumiStack, work: string, farm: FarmProc) {
  const exported = JSON.parse((await stack.run(["stack", "export"])).stdout) as {
    deployment: { pending_operations?: unknown[]; resources: { urn: string }[] };
  };
  expect(exported.deployment.pending_operations ?? []).toHaveLength(0);
  expect(exported.deployment.resources.filter((r) => r.urn.endsWith("::lot-lot"))).toHaveLength(1);
  const { liveDer } = await checkInvariants(work, farm.port, "lot", { active: COUNT });
  const cas = (await stack.outputs()).cas as Record<string, { certificatePem: string }>;
  const sample = liveDer.filter((_, i) => i % 10 === 0);
  expect(verifyLeaves(cas.root!.certificatePem, cas.line!.certificatePem, sample).ok).toBe(sample.length);
  const again = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
  expect(again.status, again.stdout).toBe(0);
}

describe("a batch survives kill -9", () => {
  it("of pulumi up mid-batch: recover-stack, up again, converged", async () => {
    const { work, farm, stack } = await setup("k9-up");
    const up = upInBackground(stack);
    const seen = await waitForActive(work, 600);
    process.kill(-up.child.pid!, "SIGKILL");
    const r = await up.exited;
    expect(r.out).not.toMatch(/Resources:/); // killed before it finished
    const mid = await withRegistry(work, (reg) => reg.counts("lot"));
    expect(mid.active).toBeGreaterThanOrEqual(seen);
    expect(mid.active).toBeLessThan(COUNT);

    const blocked = await stack.run(["up", "--yes", "--skip-preview"], { allowFail: true });
    expect(blocked.status).not.toBe(0);
    const rec = await runCommand(
      "bash",
      [path.join(REPO, "scripts", "recover-stack"), stack.stack, "--cwd", stack.programDir],
      {
        env: stack.env,
      },
    );
    expect(rec.status, rec.stderr).toBe(0);
    // the killed engine's batch provider was still enrolling: recover-stack stops it
    expect(rec.stderr).toMatch(/stopping provider process \d+ left running by the interrupted engine/);
    await stack.run(["up", "--yes", "--skip-preview"]);
    await converged(stack, work, farm);
    // nothing was issued twice: certificates ever issued = devices (no superseded leftovers)
    await withRegistry(work, async (reg) => {
      const all = await reg.certificates({ batch: "lot", limit: 1_000_000 });
      expect(all).toHaveLength(COUNT);
    });
  }, 600_000);

  it("of the device farm mid-batch: the run fails cleanly, the farm restarts, up again, converged", async () => {
    const { work, farm, stack } = await setup("k9-farm");
    const up = upInBackground(stack);
    await waitForActive(work, 600);
    await farm.kill9();
    const r = await up.exited;
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/could not reach|UNAVAILABLE|DISCONNECTED|ECONNREFUSED/);
    await farm.start(); // same state directory, same port
    await stack.run(["up", "--yes", "--skip-preview"]);
    await converged(stack, work, farm);
    await withRegistry(work, async (reg) => {
      const all = await reg.certificates({ batch: "lot", limit: 1_000_000 });
      expect(all).toHaveLength(COUNT);
    });
  }, 600_000);
});
