/**
 * Crash safety of a renewal (issue 12, point 8) with the real engine: `pulumi up` (engine,
 * language host and the rotation provider: the whole process group) killed by SIGKILL in the
 * middle of a renewal wave, then the documented recovery (docs/batches.md: scripts/recover-stack)
 * and `pulumi up` again: the rerun finishes the killed wave (the waves are read from the registry,
 * so the wave's bake does not hold back the devices it had not reached). Afterwards every device
 * has exactly one live certificate, the renewed one, and holds it; every superseded certificate is revoked; nothing was issued twice (two
 * certificates per device in all); a preview shows no changes. The same for a re-key killed
 * mid-wave: every device ends on its next epoch's key and attests with it. And for a CA rollover
 * killed mid-wave: every device ends on a certificate of the successor CA, every certificate of
 * the predecessor is revoked and on the predecessor's CRL. And for a root rollover killed mid-wave:
 * every device under the new tree, trusting both roots. The farm runs in this process on
 * the schedule's clock (test/integration/rotation.test.ts).
 */

import { spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crlEntriesOf, crlFilesOf } from "../../core/enroll/crl";
import { openRegistry } from "../../core/registry";
import { verifyAttestation } from "../../core/station/attest";
import { StationClient } from "../../core/station/client";
import { type RunningFarm, startFarm } from "../../devices/farm/serve";
import { runCommand } from "../helpers/proc";
import { PulumiStack, REPO } from "../helpers/pulumi";

const DAY = 86_400_000;
const COUNT = 1200;
const work = fs.mkdtempSync(path.join(os.tmpdir(), "fg-rotation-k9-"));
const stack = new PulumiStack(
  path.join(REPO, "test", "integration", "fixtures", "rotation-program"),
  "it-rot-k9",
);
let farm: RunningFarm;
let clock: number | undefined;

async function registry<T>(f: (r: Awaited<ReturnType<typeof openRegistry>>) => Promise<T>): Promise<T> {
  const r = await openRegistry(path.join(work, "registry.db"));
  try {
    return await f(r);
  } finally {
    await r.close();
  }
}

beforeAll(async () => {
  farm = await startFarm({ stateDir: path.join(work, "farm"), count: COUNT, workers: 0, log: () => {} });
  (farm.farm.agent as unknown as { clock: () => Date }).clock = () => new Date(clock ?? Date.now());
  await stack.init();
  await stack.setConfig("fleetguard:count", String(COUNT));
  await stack.setConfig("fleetguard:stationPort", String(farm.port));
  await stack.setConfig("fleetguard:registry", path.join(work, "registry.db"));
  await stack.setConfig("fleetguard:crlDir", path.join(work, "crl"));
  await stack.setConfig("fleetguard:rotation", {
    maxWaveFraction: 1,
    maxFailureFraction: 0.05,
    maxKeyAgeDays: 300,
  });
  await stack.run(["up", "--yes", "--skip-preview"]);
}, 600_000);

afterAll(async () => {
  await farm?.close();
  stack.cleanup();
  fs.rmSync(work, { recursive: true, force: true });
});

/** `pulumi up` killed by SIGKILL (whole process group) once new certificates are recorded; recover-stack; up again. */
async function killMidWaveAndRecover(): Promise<{ superseded: number; active: number }> {
  const child = spawn(
    "pulumi",
    ["up", "--yes", "--skip-preview", "--non-interactive", "--stack", stack.stack, "--cwd", stack.programDir],
    { env: stack.env, detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
  // wait until new certificates of the wave are recorded (old ones still live), then kill everything
  const t0 = Date.now();
  for (;;) {
    const c = await registry((r) => r.counts("lot")).catch(() => undefined);
    if (c && c.issued + c.installed > 0) break;
    if (Date.now() - t0 > 240_000) throw new Error(`no renewal under way: ${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  process.kill(-child.pid!, "SIGKILL");
  await exited;
  const mid = await registry(async (r) => ({
    counts: await r.counts("lot"),
    superseded: (await r.certificates({ batch: "lot", status: ["revoked"] })).length,
  }));

  const rec = await runCommand(
    "bash",
    [path.join(REPO, "scripts", "recover-stack"), stack.stack, "--cwd", stack.programDir],
    {
      env: stack.env,
    },
  );
  expect(rec.status, rec.stderr).toBe(0);
  await stack.run(["up", "--yes", "--skip-preview"]);
  const again = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
  expect(again.status, again.stdout).toBe(0);
  return { superseded: mid.superseded, active: mid.counts.active };
}

/**
 * After a CA rollover killed mid-wave and converged: `total` certificates in all (nothing issued
 * twice), one live per device and it is `to`'s and the device holds it (and trusts exactly
 * `anchors`, when given), the `old` certificates of `from` all revoked and on `from`'s own CRL,
 * the registry's audit chain intact.
 */
async function expectMoved(o: { from: string; to: string; total: number; old: number; anchors?: string[] }) {
  const st = new StationClient({ port: farm.port });
  try {
    await registry(async (r) => {
      const devs = await r.listDevices("lot");
      const all = await r.certificates({ batch: "lot", limit: 1_000_000 });
      expect(all).toHaveLength(o.total);
      const live = all.filter((c) => c.status === "live");
      expect(live).toHaveLength(COUNT);
      expect(live.every((c) => c.issuer === o.to)).toBe(true);
      const liveOf = new Map(live.map((c) => [c.deviceId, c]));
      for (let i = 0; i < devs.length; i += 1000) {
        const part = devs.slice(i, i + 1000);
        const status = await st.statusBatch(part.map((d) => d.deviceId));
        for (const [j, d] of part.entries()) {
          expect(d.state).toBe("active");
          expect(liveOf.get(d.deviceId)?.serial).toBe(d.certSerial);
          const s = status[j]!;
          expect(s.ok && s.value.chain[0]!.equals(liveOf.get(d.deviceId)!.der)).toBe(true);
          if (o.anchors && s.ok)
            expect(s.value.trustAnchors.map((a) => a.toString("hex")).sort()).toEqual(o.anchors);
        }
      }
      // every certificate of the predecessor is revoked, and listed on the predecessor's own CRL
      const old = all.filter((c) => c.issuer === o.from);
      expect(old).toHaveLength(o.old);
      expect(old.every((c) => c.status === "revoked")).toBe(true);
      const listed = new Set(
        crlEntriesOf(fs.readFileSync(crlFilesOf(path.join(work, "crl"), o.from).der)).map((e) => e.serial),
      );
      for (const c of old) expect(listed.has(c.serial)).toBe(true);
      expect((await r.verify({ batch: "lot" })).ok).toBe(true);
    });
  } finally {
    await st.close();
  }
}

describe("a rotation survives kill -9", () => {
  it("of pulumi up mid-wave: recover-stack, up again, converged", async () => {
    const before = await registry(
      async (r) => new Map((await r.listDevices("lot")).map((d) => [d.deviceId, d.certSerial!])),
    );
    clock = Date.now() + 250 * DAY;
    await stack.setConfig("fleetguard:now", new Date(clock).toISOString());
    const mid = await killMidWaveAndRecover();
    expect(mid.superseded).toBeLessThan(COUNT); // killed mid-wave
    expect(mid.active).toBeLessThan(COUNT);

    const st = new StationClient({ port: farm.port });
    try {
      await registry(async (r) => {
        const devs = await r.listDevices("lot");
        expect(devs).toHaveLength(COUNT);
        const status = [];
        for (let i = 0; i < devs.length; i += 1000)
          status.push(...(await st.statusBatch(devs.slice(i, i + 1000).map((d) => d.deviceId))));
        const all = await r.certificates({ batch: "lot", limit: 1_000_000 });
        expect(all).toHaveLength(2 * COUNT); // nothing issued twice
        const live = all.filter((c) => c.status === "live");
        expect(live).toHaveLength(COUNT);
        for (const c of all.filter((x) => x.status === "revoked"))
          expect(c.revocationReason).toBe("superseded");
        const liveOf = new Map(live.map((c) => [c.deviceId, c]));
        for (const [i, d] of devs.entries()) {
          expect(d.state).toBe("active");
          expect(d.certSerial).not.toBe(before.get(d.deviceId));
          expect(liveOf.get(d.deviceId)?.serial).toBe(d.certSerial);
          const s = status[i]!;
          expect(s.ok && s.value.chain[0]!.equals(liveOf.get(d.deviceId)!.der)).toBe(true);
        }
        expect((await r.verify({ batch: "lot" })).ok).toBe(true);
      });
    } finally {
      await st.close();
    }
  }, 900_000);
  it("of pulumi up mid re-key: recover-stack, up again, every device on its next epoch's key", async () => {
    const before = await registry(
      async (r) => new Map((await r.listDevices("lot")).map((d) => [d.deviceId, d])),
    );
    clock = Date.now() + 301 * DAY; // the keys (first certified at enrollment) pass maxKeyAgeDays 300
    await stack.setConfig("fleetguard:now", new Date(clock).toISOString());
    const pv = await stack.run(["preview"]);
    expect(pv.stdout).toContain(
      `rotation nightly: renew 0 certificates of lot, re-key ${COUNT.toLocaleString("en-US")} (wave 1 of 1)`,
    );
    const mid = await killMidWaveAndRecover();
    expect(mid.active).toBeLessThan(COUNT);
    const st = new StationClient({ port: farm.port });
    try {
      await registry(async (r) => {
        const devs = await r.listDevices("lot");
        const all = await r.certificates({ batch: "lot", limit: 1_000_000 });
        expect(all).toHaveLength(3 * COUNT); // nothing issued twice
        const nonce = Buffer.alloc(32, 9);
        for (let i = 0; i < devs.length; i += 1000) {
          const part = devs.slice(i, i + 1000);
          const att = await st.attestBatch(part.map((d) => ({ device: d.deviceId, nonce })));
          for (const [j, d] of part.entries()) {
            const old = before.get(d.deviceId)!;
            expect(d.state).toBe("active");
            expect(d.epoch).toBe(old.epoch! + 1);
            expect(d.publicKey!.equals(old.publicKey!)).toBe(false);
            const a = att[j]!;
            expect(
              a.ok && verifyAttestation(d.publicKey!, d.deviceId, d.epoch!, nonce, a.value.signature),
            ).toBe(true);
          }
        }
        expect(all.filter((c) => c.status === "live")).toHaveLength(COUNT);
        expect((await r.verify({ batch: "lot" })).ok).toBe(true);
      });
    } finally {
      await st.close();
    }
  }, 900_000);
  it("of pulumi up mid CA rollover: recover-stack, up again, every device under the successor, the predecessor's certificates on its CRL", async () => {
    const before = (await stack.outputs()).cas as Record<string, { fingerprintSha256: string }>;
    const g1 = before.line!.fingerprintSha256;
    // the next night: the re-key's wave (the whole lot, maxWaveFraction 1) has baked
    clock = clock! + DAY;
    await stack.setConfig("fleetguard:now", new Date(clock).toISOString());
    await stack.setConfig("fleetguard:generation", "2");
    const mid = await killMidWaveAndRecover();
    expect(mid.active).toBeLessThan(COUNT);
    const cas = (await stack.outputs()).cas as Record<string, { fingerprintSha256: string }>;
    expect(cas["line@g1"]!.fingerprintSha256).toBe(g1);
    const g2 = cas.line!.fingerprintSha256;
    expect(g2).not.toBe(g1);
    await expectMoved({ from: g1, to: g2, total: 4 * COUNT, old: 3 * COUNT });
    const pv = await stack.run(["preview"]);
    expect(pv.stdout).toMatch(/CA rollover: complete, every device under generation 2/);
  }, 900_000);
  it("of pulumi up mid root rollover: recover-stack, up again, every device under the new tree and trusting both roots", async () => {
    // after the issuing rollover above: the root's generation 2 makes the issuing CA's effective
    // generation 3 (line-g3 under root-g2), its predecessor line-g2 under the old root
    const before = (await stack.outputs()).cas as Record<
      string,
      { fingerprintSha256: string; certificatePem: string }
    >;
    const g2 = before.line!.fingerprintSha256;
    const r1 = before.root!.certificatePem;
    // the next night: the issuing rollover's wave (the whole lot) has baked
    clock = clock! + DAY;
    await stack.setConfig("fleetguard:now", new Date(clock).toISOString());
    await stack.setConfig("fleetguard:rootGeneration", "2");
    const mid = await killMidWaveAndRecover();
    expect(mid.active).toBeLessThan(COUNT);
    const cas = (await stack.outputs()).cas as Record<
      string,
      { fingerprintSha256: string; certificatePem: string; generation?: number }
    >;
    expect(cas["line@g2"]!.fingerprintSha256).toBe(g2);
    expect(cas.line!.generation).toBe(3);
    const g3 = cas.line!.fingerprintSha256;
    const anchorOf = (pem: string) =>
      crypto.createHash("sha256").update(new crypto.X509Certificate(pem).raw).digest("hex");
    const both = [anchorOf(r1), anchorOf(cas.root!.certificatePem)].sort();
    await expectMoved({ from: g2, to: g3, total: 5 * COUNT, old: COUNT, anchors: both });
    const pv = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(pv.status, pv.stdout).toBe(0);
  }, 900_000);
});
