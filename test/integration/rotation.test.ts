/**
 * RotationSchedule on the real engine (issue 12, points 1-2): a batch enrolled by `pulumi up`,
 * the schedule's clock (config fleetguard:now) and the farm's devices moved past the renew
 * window, `pulumi preview` says the plan in words, `pulumi up` renews one wave per run, the
 * nightly workflow's convergence check (`pulumi preview --expect-no-changes` right after the up)
 * passes with waves left, because a wave bakes (default 20 h) before the next is due, and says when
 * it is; once the bake is over the next up renews the next wave; once everything is renewed a
 * preview shows no changes without a refresh. The renewed certificates
 * are verified by OpenSSL at the schedule's clock, and the superseded ones are refused with the
 * published CRL (at the wall clock, when both the old certificate and the CRL are current).
 * The farm runs in this process (its devices must check validity at the same clock as the
 * schedule); the Pulumi providers reach it over TCP.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openRegistry } from "../../core/registry";
import { StationClient } from "../../core/station/client";
import { toPem } from "../../core/x509/pem";
import { type RunningFarm, startFarm } from "../../devices/farm/serve";
import { openssl } from "../helpers/openssl";
import { PulumiStack, REPO } from "../helpers/pulumi";

const DAY = 86_400_000;
const HOUR = 3_600_000;
const minute = (t: number) => `${new Date(t).toISOString().slice(0, 16)}Z`;
const COUNT = 40;
const work = fs.mkdtempSync(path.join(os.tmpdir(), "fg-rotation-"));
const stack = new PulumiStack(
  path.join(REPO, "test", "integration", "fixtures", "rotation-program"),
  "it-rotation",
);
let farm: RunningFarm;
let clock: number | undefined; // undefined: the wall clock
const POLICY = path.join(REPO, "policies", "baseline.yaml");

type Cas = Record<string, { certificatePem: string }>;

async function registry<T>(f: (r: Awaited<ReturnType<typeof openRegistry>>) => Promise<T>): Promise<T> {
  const r = await openRegistry(path.join(work, "registry.db"));
  try {
    return await f(r);
  } finally {
    await r.close();
  }
}

function verifyAt(rootPem: string, issuingPem: string, leaf: Buffer, crl: string | undefined, at: number) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "fg-rotation-verify-"));
  try {
    fs.writeFileSync(path.join(d, "root.pem"), rootPem);
    fs.writeFileSync(path.join(d, "iss.pem"), issuingPem);
    fs.writeFileSync(path.join(d, "leaf.pem"), toPem("CERTIFICATE", leaf));
    const args = ["verify", "-x509_strict", "-attime", String(Math.floor(at / 1000))];
    if (crl) {
      fs.writeFileSync(path.join(d, "crl.pem"), crl);
      args.push("-crl_check", "-CRLfile", path.join(d, "crl.pem"));
    }
    return openssl([
      ...args,
      "-CAfile",
      path.join(d, "root.pem"),
      "-untrusted",
      path.join(d, "iss.pem"),
      path.join(d, "leaf.pem"),
    ]);
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
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
  await stack.setConfig("fleetguard:policy", POLICY);
  await stack.setConfig("fleetguard:rotation", { maxFailureFraction: 0.05 });
}, 300_000);

afterAll(async () => {
  await farm?.close();
  stack.cleanup();
  fs.rmSync(work, { recursive: true, force: true });
});

describe("RotationSchedule with the real engine", () => {
  let cas: Cas;
  let before: Map<string, string>;

  it("enroll: the schedule has nothing due and a second preview shows no changes", async () => {
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(up.stdout).toMatch(/nightly-lot created/);
    cas = (await stack.outputs()).cas as Cas;
    const same = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(same.status, same.stdout).toBe(0);
    expect(same.stdout).toMatch(
      /rotation nightly: renew 0 certificates of lot, re-key 0, CA rollover: none, next due \d{4}-\d\d-\d\d/,
    );
    before = await registry(
      async (r) => new Map((await r.listDevices("lot")).map((d) => [d.deviceId, d.certSerial!])),
    );
    expect(before.size).toBe(COUNT);
  }, 600_000);

  it("the clock past the renew window: preview says the plan in words, up renews one wave, the convergence preview passes with waves left", async () => {
    clock = Date.now() + 250 * DAY;
    await stack.setConfig("fleetguard:now", new Date(clock).toISOString());
    const pv = await stack.run(["preview"]);
    expect(pv.stdout).toContain(
      "rotation nightly: renew 40 certificates of lot (wave 1 of 4), re-key 0, CA rollover: none",
    );
    const steps = await stack.previewSteps();
    expect(steps.filter((s) => s.op !== "same").map((s) => s.urn.split("::").pop())).toEqual(["nightly-lot"]);
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(up.stdout).toMatch(
      /rotation nightly: batch lot: 10 renewed, 0 re-keyed, 0 interrupted finished, 0 failed \(1 wave\)/,
    );
    // the workflow's "Confirm convergence" step, right after the up: the wave bakes, nothing is due
    // until its bake is over, and the plan says when the next wave is
    const same = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(same.status, same.stdout).toBe(0);
    expect(same.stdout).toContain(
      `rotation nightly: renew 30 certificates of lot (3 waves left, the next due after ${minute(clock + 20 * HOUR)}: the last wave bakes 20 h), re-key 0, CA rollover: none`,
    );
    const plan = ((await stack.outputs()).plans as Record<string, { nextWaveAt?: string }>).lot!;
    expect(plan.nextWaveAt).toBe(new Date(clock + 20 * HOUR).toISOString());
  }, 600_000);

  it("after the bake: the next up renews the next wave, and the convergence preview passes again", async () => {
    // just short of the bake: still nothing to do
    clock = clock! + 20 * HOUR - 60_000;
    await stack.setConfig("fleetguard:now", new Date(clock).toISOString());
    const early = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(early.status, early.stdout).toBe(0);
    clock = clock! + 60_000;
    await stack.setConfig("fleetguard:now", new Date(clock).toISOString());
    const pv = await stack.run(["preview"]);
    expect(pv.stdout).toContain("rotation nightly: renew 30 certificates of lot (wave 1 of 3)");
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(up.stdout).toMatch(/rotation nightly: batch lot: 10 renewed, 0 re-keyed, 0 interrupted finished/);
    const same = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(same.status, same.stdout).toBe(0);
    expect(same.stdout).toContain(
      `rotation nightly: renew 20 certificates of lot (2 waves left, the next due after ${minute(clock + 20 * HOUR)}`,
    );
  }, 600_000);

  it("more waves per run finish the batch; then a preview without refresh shows no changes", async () => {
    clock = clock! + DAY; // the next night
    await stack.setConfig("fleetguard:now", new Date(clock).toISOString());
    await stack.setConfig("fleetguard:rotation", { maxFailureFraction: 0.05, wavesPerRun: 3 });
    await stack.run(["up", "--yes", "--skip-preview"]);
    const same = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(same.status, same.stdout).toBe(0);
    expect(same.stdout).toMatch(
      /rotation nightly: renew 0 certificates of lot, re-key 0, CA rollover: none, next due/,
    );

    // every device holds its renewed certificate, one live each, the old ones superseded and on the CRL
    const st = new StationClient({ port: farm.port });
    try {
      await registry(async (r) => {
        const devs = await r.listDevices("lot");
        const status = await st.statusBatch(devs.map((d) => d.deviceId));
        // the issuing CA's one CRL (the root's is in the same folder), named by its fingerprint
        const [anyCert] = await r.certificates({ batch: "lot", limit: 1 });
        const crlFile = path.join(work, "crl", `${anyCert!.issuer}.crl.pem`);
        const crl = fs.existsSync(crlFile) ? fs.readFileSync(crlFile, "utf8") : undefined;
        expect(crl).toBeDefined();
        for (const [i, d] of devs.entries()) {
          expect(d.state).toBe("active");
          expect(d.certSerial).not.toBe(before.get(d.deviceId));
          const live = await r.certificates({ deviceId: d.deviceId, status: ["live"] });
          expect(live.map((c) => c.serial)).toEqual([d.certSerial]);
          const s = status[i]!;
          expect(s.ok && s.value.chain[0]!.equals(live[0]!.der)).toBe(true);
          const old = (await r.certificates({ deviceId: d.deviceId })).find(
            (c) => c.serial === before.get(d.deviceId),
          )!;
          expect(old).toMatchObject({ status: "revoked", revocationReason: "superseded" });
          if (i < 3) {
            const ok = verifyAt(
              cas.root!.certificatePem,
              cas.line!.certificatePem,
              live[0]!.der,
              undefined, // the CRL is signed by the wall clock: expired at the schedule's
              clock!,
            );
            expect(ok.status, ok.out).toBe(0);
            const refused = verifyAt(
              cas.root!.certificatePem,
              cas.line!.certificatePem,
              old.der,
              crl,
              Date.now(),
            );
            expect(refused.out).toMatch(/certificate revoked/);
          }
        }
        expect((await r.verify({ batch: "lot" })).ok).toBe(true);
      });
    } finally {
      await st.close();
    }
  }, 600_000);
});
