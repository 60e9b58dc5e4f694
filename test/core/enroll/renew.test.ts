// Renewal and re-key (core/enroll/renew.ts, rekey.ts) against a real device farm (in process,
// over TCP, its devices on the same test clock as the engine) and a real SQLite registry.
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signCommand } from "../../../core/enroll/authorize";
import type { BatchEngine } from "../../../core/enroll/engine";
import { compileTemplate } from "../../../core/enroll/profile";
import {
  describeRotation,
  dueOf,
  hasWork,
  inWindow,
  parseWindow,
  planRotation,
  type RotationPolicy,
  renewAt,
  rotate,
  validatePolicy,
} from "../../../core/enroll/renew";
import { openRegistry } from "../../../core/registry";
import type { Registry, Transition } from "../../../core/registry/types";
import { verifyAttestation } from "../../../core/station/attest";
import { StationClient } from "../../../core/station/client";
import { toPem } from "../../../core/x509/pem";
import { type RunningFarm, startFarm } from "../../../devices/farm/serve";
import { openssl, tmpdir } from "../../helpers/openssl";
import { batchSpec, engineOf, hierarchy } from "./helpers";

const DAY = 86_400_000;
const HOUR = 3_600_000;
const minute = (t: number) => `${new Date(t).toISOString().slice(0, 16)}Z`;
const T0 = Date.parse("2027-01-10T02:00:00Z");
let clock = T0;
const now = () => new Date(clock);

const h = hierarchy("Rotation");
const spec = batchSpec({
  name: "lot-r",
  count: 20,
  profile: batchSpec().profile,
  maxQuarantinedFraction: 0.5,
  maxWaveFraction: 0.25,
});
const POLICY: RotationPolicy = { renewAtFraction: 2 / 3, maxWaveFraction: 0.25, maxFailureFraction: 0.1 };

let dir: string;
let farm: RunningFarm;
let station: StationClient;
let registry: Registry;

/** the farm's devices check validity at the test clock, as the engine issues at it */
function setFarmClock(f: RunningFarm) {
  (f.farm.agent as unknown as { clock: () => Date }).clock = now;
}

const engine = (reg: Registry = registry): BatchEngine => engineOf(reg, station, h.material, spec, { now });
const template = () => compileTemplate(spec.profile, h.material, now(), spec.names);

/** every active device: exactly one live certificate, the one it holds; nothing in between; none superseded live */
async function converged(): Promise<void> {
  const devs = await registry.listDevices(spec.name);
  const st = await station.statusBatch(devs.map((d) => d.deviceId));
  for (const [i, d] of devs.entries()) {
    const live = await registry.certificates({ deviceId: d.deviceId, status: ["live"] });
    if (d.state === "active") {
      expect(live.map((c) => c.serial)).toEqual([d.certSerial]);
      const s = st[i]!;
      expect(s.ok && s.value.chain[0]!.equals(live[0]!.der)).toBe(true);
      expect(s.ok && s.value.epoch).toBe(d.epoch);
    } else {
      expect(["quarantined", "decommissioned", "revoked"]).toContain(d.state);
      expect(live).toHaveLength(0);
    }
  }
}

/** openssl verify of a leaf at the test clock (its validity starts in the future of the wall clock) */
function verifyAt(leaf: Buffer, at: Date) {
  const d = tmpdir("fg-renew-verify-");
  try {
    fs.writeFileSync(path.join(d, "root.pem"), h.rootPem);
    fs.writeFileSync(path.join(d, "iss.pem"), h.issuingPem);
    fs.writeFileSync(path.join(d, "leaf.pem"), toPem("CERTIFICATE", leaf));
    return openssl([
      "verify",
      "-x509_strict",
      "-attime",
      String(Math.floor(at.getTime() / 1000)),
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

function crashing(reg: Registry, when: (t: readonly Transition[]) => boolean): Registry {
  let armed = true;
  return new Proxy(reg, {
    get(t, k) {
      if (k === "apply")
        return async (ts: readonly Transition[], at?: Date) => {
          if (armed && when(ts)) {
            armed = false;
            throw new Error("crash: the process dies before this transaction");
          }
          return t.apply(ts, at);
        };
      const v = (t as unknown as Record<string | symbol, unknown>)[k];
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
}

beforeAll(async () => {
  dir = tmpdir("fg-renew-");
  farm = await startFarm({ stateDir: path.join(dir, "farm"), count: 20, workers: 0 });
  setFarmClock(farm);
  station = new StationClient({ port: farm.port, poolSize: 2, timeoutMs: 20_000 });
  registry = await openRegistry(path.join(dir, "registry.db"));
  const s = await engine().converge();
  expect(s.counts.active).toBe(20);
}, 60_000);

afterAll(async () => {
  await station?.close();
  await farm?.close();
  await registry?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("rotation policy", () => {
  it("renews at 2/3 of the lifetime by default, or days before expiry, whichever comes first", () => {
    const nb = new Date(T0);
    const na = new Date(T0 + 90 * DAY);
    expect(renewAt({ maxWaveFraction: 1, maxFailureFraction: 0 }, nb, na).getTime()).toBe(T0 + 60 * DAY);
    expect(
      renewAt({ renewBeforeDays: 45, maxWaveFraction: 1, maxFailureFraction: 0 }, nb, na).getTime(),
    ).toBe(T0 + 45 * DAY);
    expect(
      renewAt(
        { renewBeforeDays: 10, renewAtFraction: 0.5, maxWaveFraction: 1, maxFailureFraction: 0 },
        nb,
        na,
      ).getTime(),
    ).toBe(T0 + 45 * DAY);
  });
  it("names the field of a bad policy", () => {
    const p = { maxWaveFraction: 1, maxFailureFraction: 0 };
    expect(() => validatePolicy({ ...p, renewAtFraction: 1.5 })).toThrow(/renewAtFraction: got 1.5/);
    expect(() => validatePolicy({ ...p, maxWaveFraction: 0 })).toThrow(/maxWaveFraction: got 0/);
    expect(() => validatePolicy({ ...p, maintenanceWindow: "25:00-01:00" })).toThrow(/maintenanceWindow/);
    expect(() => validatePolicy({ ...p, wavesPerRun: 0 })).toThrow(/wavesPerRun: got 0/);
    expect(() => validatePolicy({ ...p, bakeHours: -1 })).toThrow(
      /bakeHours: got -1, want a number of hours in \[0, 8760\]/,
    );
  });
  it("maintenance windows in UTC, wrapping midnight", () => {
    expect(parseWindow("01:00-05:00")).toEqual({ start: 60, end: 300 });
    expect(inWindow("01:00-05:00", new Date("2027-01-01T02:00:00Z"))).toBe(true);
    expect(inWindow("01:00-05:00", new Date("2027-01-01T05:00:00Z"))).toBe(false);
    expect(inWindow("22:00-02:00", new Date("2027-01-01T23:30:00Z"))).toBe(true);
    expect(inWindow("22:00-02:00", new Date("2027-01-01T03:00:00Z"))).toBe(false);
  });
});

describe("renewal and re-key over a real farm", () => {
  it("nothing due: no work, and the plan says when the next renewal is due", async () => {
    const p = await planRotation(engine(), POLICY, now());
    expect(describeRotation(p)).toBe(
      `renew 0 certificates of lot-r, re-key 0, CA rollover: none, next due ${new Date(T0 - 60_000 + Math.round(365 * DAY * (2 / 3))).toISOString().slice(0, 10)}`,
    );
    const head = await registry.auditHead();
    const r = await rotate(engine(), POLICY, template());
    expect(r).toMatchObject({ renewed: 0, rekeyed: 0, resumed: 0, waves: 0, remaining: 0 });
    expect(await registry.auditHead()).toEqual(head);
  });

  it("outside the maintenance window nothing runs, even when due", async () => {
    clock = T0 + 250 * DAY; // 02:00 UTC
    const p = { ...POLICY, maintenanceWindow: "03:00-05:00" };
    const plan = await planRotation(engine(), p, now());
    expect(plan).toMatchObject({ renew: 20, inWindow: false, thisRun: 0 });
    expect(describeRotation(plan)).toMatch(/waiting for the maintenance window 03:00-05:00 UTC/);
    const r = await rotate(engine(), p, template());
    expect(r).toMatchObject({ outsideWindow: true, renewed: 0, remaining: 20 });
  });

  it("renews certificates due by the clock, one wave of at most maxWaveFraction per run, same key", async () => {
    const before = new Map((await registry.listDevices(spec.name)).map((d) => [d.deviceId, d]));
    expect(describeRotation(await planRotation(engine(), POLICY, now()))).toBe(
      "renew 20 certificates of lot-r (wave 1 of 4), re-key 0, CA rollover: none",
    );
    // station frames of 2 devices, 2 in flight: the wave's parts run concurrently and are counted exactly
    const r = await rotate(
      engineOf(registry, station, h.material, spec, { now, waveSize: 2 }),
      POLICY,
      template(),
    );
    expect(r).toMatchObject({ renewed: 5, rekeyed: 0, failed: 0, waves: 1, remaining: 15 });
    const after = await registry.listDevices(spec.name);
    const renewed = after.filter((d) => d.certSerial !== before.get(d.deviceId)!.certSerial);
    expect(renewed).toHaveLength(5);
    for (const d of renewed) {
      const old = before.get(d.deviceId)!;
      expect(d.publicKey!.equals(old.publicKey!)).toBe(true);
      expect(d.epoch).toBe(old.epoch);
      const certs = await registry.certificates({ deviceId: d.deviceId });
      const prev = certs.find((c) => c.serial === old.certSerial)!;
      expect(prev).toMatchObject({ status: "revoked", revocationReason: "superseded" });
      const cur = certs.find((c) => c.serial === d.certSerial)!;
      expect(cur.notBefore.getTime()).toBe(clock - 60_000);
    }
    // the renewal is in the audit log, with the certificate it replaces
    const rows = await registry.audit({ deviceId: renewed[0]!.deviceId });
    expect(rows.some((a) => a.detail?.rotation === "renew" && a.to === "issued")).toBe(true);
    await converged();
    // OpenSSL accepts the renewed certificates
    const leaves = await Promise.all(
      renewed.map(
        async (d) => (await registry.certificates({ deviceId: d.deviceId, status: ["live"] }))[0]!.der,
      ),
    );
    for (const leaf of leaves) {
      const v = verifyAt(leaf, now());
      expect(v.status, v.out).toBe(0);
    }
    // the wave bakes (default 20 h): a second run at the same clock (the workflow's convergence
    // preview, a rerun the same night) has nothing to do and says when the next wave is due
    const again = await planRotation(engine(), POLICY, now());
    expect(again).toMatchObject({
      renew: 15,
      thisRun: 0,
      bakeHours: 20,
      nextWaveAt: new Date(clock + 20 * HOUR).toISOString(),
    });
    expect(hasWork(again)).toBe(false);
    expect(describeRotation(again)).toBe(
      `renew 15 certificates of lot-r (3 waves left, the next due after ${minute(clock + 20 * HOUR)}: the last wave bakes 20 h), re-key 0, CA rollover: none`,
    );
    const head = await registry.auditHead();
    const r2 = await rotate(engine(), POLICY, template());
    expect(r2).toMatchObject({ renewed: 0, waves: 0, remaining: 15 });
    expect(await registry.auditHead()).toEqual(head);
    // no bake: the next wave is due at once (waves back to back, as before the bake existed)
    expect(await planRotation(engine(), { ...POLICY, bakeHours: 0 }, now())).toMatchObject({
      renew: 15,
      thisRun: 5,
    });
  });

  it("a renewal killed between the device's install and its record is finished by the next run; the old certificate stays live until then", async () => {
    clock += DAY; // the next night: the first wave's bake is over
    expect((await planRotation(engine(), POLICY, now())).thisRun).toBe(5);
    // the crash hits the commit that records the install (issued -> active)
    const reg = crashing(registry, (ts) => ts.some((t) => t.from === "issued" && t.to === "active"));
    await expect(
      rotate(engineOf(reg, station, h.material, spec, { now }), POLICY, template()),
    ).rejects.toThrow(/crash/);
    const mid = (await registry.listDevices(spec.name)).filter((d) => d.state === "issued");
    expect(mid.length).toBeGreaterThan(0);
    for (const d of mid) {
      const live = await registry.certificates({ deviceId: d.deviceId, status: ["live"] });
      expect(live).toHaveLength(2); // the old one and the recorded new one: nothing issued unrecorded
    }
    expect(describeRotation(await planRotation(engine(), POLICY, now()))).toMatch(
      /finish \d+ devices? interrupted/,
    );
    // the rerun finishes the killed wave (what it recorded, and the rest of its allowance), no more
    const r = await rotate(engine(), POLICY, template());
    expect(r.resumed).toBe(mid.length);
    expect(r.resumed + r.renewed).toBe(5);
    expect(await planRotation(engine(), POLICY, now())).toMatchObject({ renew: 10, thisRun: 0 });
    await converged();
  });

  it("later runs renew the rest, never more than a wave each, then nothing is due", async () => {
    for (let i = 0; i < 5; i++) {
      clock += DAY; // one run a night
      const p = await planRotation(engine(), POLICY, now());
      if (p.renew === 0) break;
      const r = await rotate(engine(), POLICY, template());
      expect(r.renewed + r.rekeyed).toBeLessThanOrEqual(5);
      // a second run the same night changes nothing
      expect(await rotate(engine(), POLICY, template())).toMatchObject({ renewed: 0, rekeyed: 0 });
    }
    const p = await planRotation(engine(), POLICY, now());
    expect(p).toMatchObject({ renew: 0, rekey: 0, resume: 0 });
    await converged();
  });

  it("re-keys devices whose key is older than maxKeyAgeDays: new key and epoch, attested with the new key", async () => {
    clock = T0 + 301 * DAY;
    const p: RotationPolicy = { ...POLICY, maxKeyAgeDays: 300, wavesPerRun: 10 };
    const before = new Map((await registry.listDevices(spec.name)).map((d) => [d.deviceId, d]));
    expect(describeRotation(await planRotation(engine(), p, now()))).toBe(
      "renew 0 certificates of lot-r, re-key 20 (wave 1 of 4), CA rollover: none",
    );
    // a re-key killed after the devices derived their next key, before anything was recorded
    const reg = crashing(registry, (ts) => ts.some((t) => t.to === "issued"));
    await expect(rotate(engineOf(reg, station, h.material, spec, { now }), p, template())).rejects.toThrow(
      /crash/,
    );
    const st = await station.statusBatch([...before.keys()].slice(0, 5));
    expect(st.some((s) => s.ok && s.value.pendingEpoch !== null)).toBe(true);
    const r = await rotate(engine(), p, template());
    expect(r).toMatchObject({ rekeyed: 20, renewed: 0, failed: 0, waves: 4 });
    const after = await registry.listDevices(spec.name);
    const nonces = after.map(() => Buffer.alloc(32, 7));
    const att = await station.attestBatch(after.map((d, i) => ({ device: d.deviceId, nonce: nonces[i]! })));
    for (const [i, d] of after.entries()) {
      const old = before.get(d.deviceId)!;
      expect(d.publicKey!.equals(old.publicKey!)).toBe(false);
      expect(d.epoch).toBe(old.epoch! + 1);
      const a = att[i]!;
      expect(
        a.ok && verifyAttestation(d.publicKey!, d.deviceId, d.epoch!, nonces[i]!, a.value.signature),
      ).toBe(true);
      const prev = (await registry.certificates({ deviceId: d.deviceId })).find(
        (c) => c.serial === old.certSerial,
      )!;
      expect(prev.revocationReason).toBe("superseded");
    }
    const rows = await registry.audit({ deviceId: after[0]!.deviceId });
    expect(rows.some((a) => a.detail?.rotation === "rekey")).toBe(true);
    await converged();
    // the key age restarts with the new key: nothing due now
    expect(await planRotation(engine(), p, now())).toMatchObject({ renew: 0, rekey: 0 });
    expect((await registry.verify({ batch: spec.name })).ok).toBe(true);
  });

  it("a device that fails is counted, and a wave past the failure fraction stops the roll-out", async () => {
    clock = T0 + 301 * DAY + 250 * DAY;
    const due = await dueOf(engine(), POLICY, now());
    expect(due.renew).toHaveLength(20);
    // the first device of the first wave is zeroized behind the registry's back
    const victim = due.renew[0]!.d.deviceId;
    const [s] = await station.statusBatch([victim]);
    const auth = signCommand(
      h.material,
      victim,
      { op: "DECOMMISSION", confirm: victim },
      s!.ok ? s!.value.challenge! : Buffer.alloc(0),
    );
    const [z] = await station.decommissionBatch([{ device: victim, auth }]);
    expect(z!.ok).toBe(true);
    const err = await rotate(engine(), POLICY, template()).catch((e) => e);
    expect(err.code).toBe("POLICY_VIOLATION");
    expect(err.message).toMatch(/rotation wave 1 got 1 of 5 devices failing \(20\.0%\), want at most 10\.0%/);
    expect((await registry.getDevice(victim))!.state).toBe("quarantined");
    expect(await registry.certificates({ deviceId: victim, status: ["live"] })).toHaveLength(0);
    // the others of the wave were renewed; the rest keep their certificates
    expect((await planRotation(engine(), POLICY, now())).renew).toBe(15);
    await converged();
  });

  it("the farm killed mid-wave: the next run, with the farm back, converges", async () => {
    let killed = false;
    const reg = crashing(registry, (ts) => {
      if (!killed && ts.some((t) => t.to === "issued")) {
        killed = true;
        void farm.close();
      }
      return false;
    });
    const err = await rotate(
      engineOf(reg, station, h.material, spec, { now, deviceTimeoutMs: 2000 }),
      POLICY,
      template(),
    ).catch((e) => e);
    expect(err).toBeTruthy();
    await station.close();
    farm = await startFarm({ stateDir: path.join(dir, "farm"), count: 20, workers: 0 });
    setFarmClock(farm);
    station = new StationClient({ port: farm.port, poolSize: 2, timeoutMs: 20_000 });
    for (let i = 0; i < 6; i++) {
      if (i > 0) clock += DAY; // the same night finishes the killed wave; the rest, a wave a night
      const p = await planRotation(engine(), POLICY, now());
      if (p.renew + p.resume === 0) break;
      await rotate(engine(), POLICY, template());
    }
    expect(await planRotation(engine(), POLICY, now())).toMatchObject({ renew: 0, rekey: 0, resume: 0 });
    await converged();
    expect((await registry.verify({ batch: spec.name })).ok).toBe(true);
  }, 120_000);
  it("a batch registered at a hub: the new certificate is registered before the device switches to it", async () => {
    clock += 2 * DAY; // every certificate has 363 of its 365 days left
    const p: RotationPolicy = { renewBeforeDays: 364, maxWaveFraction: 0.25, maxFailureFraction: 0.1 };
    const hubHolds = async (serials: Array<{ deviceId: string; serial: string }>) =>
      registry.applyHub(
        serials.map((x) => ({
          hub: "hub-t",
          deviceId: x.deviceId,
          batch: spec.name,
          serial: x.serial,
          from: null,
          to: "active" as const,
          remoteId: x.serial,
        })),
      );
    const active = (await registry.listDevices(spec.name)).filter((d) => d.state === "active");
    await hubHolds(active.map((d) => ({ deviceId: d.deviceId, serial: d.certSerial! })));
    const r = await rotate(engine(), p, template());
    expect(r).toMatchObject({ renewed: 5, waves: 1, failed: 0 });
    const staged = (await registry.listDevices(spec.name)).filter((d) => d.state === "issued");
    expect(staged).toHaveLength(5);
    // not switched: each device still holds the certificate the hub knows
    const st = await station.statusBatch(staged.map((d) => d.deviceId));
    for (const [i, d] of staged.entries()) {
      const old = active.find((a) => a.deviceId === d.deviceId)!;
      const live = await registry.certificates({ deviceId: d.deviceId, status: ["live"] });
      expect(live.map((c) => c.serial).sort()).toEqual([old.certSerial, d.certSerial].sort());
      const held = live.find((c) => c.serial === old.certSerial)!;
      const s = st[i]!;
      expect(s.ok && s.value.chain[0]!.equals(held.der)).toBe(true);
    }
    const plan = await planRotation(engine(), p, now());
    expect(plan).toMatchObject({ heldForHubs: 5, switchAfterBake: 0, resume: 0 });
    expect(describeRotation(plan)).toContain(
      "5 certificates waiting for hub registration before the devices switch",
    );
    // the batch engine does not take them for interrupted work either
    expect((await engine().plan()).resume).toBe(0);
    // the hub sync registers the new certificates (the same up): the devices switch with the next
    // wave, once this one's bake is over, so the preview right after the up shows no changes
    await hubHolds(staged.map((d) => ({ deviceId: d.deviceId, serial: d.certSerial! })));
    const baking = await planRotation(engine(), p, now());
    expect(baking).toMatchObject({ heldForHubs: 0, switchAfterBake: 5, resume: 0, thisRun: 0 });
    expect(hasWork(baking)).toBe(false);
    expect(describeRotation(baking)).toContain("5 devices registered at the hubs switch with the next wave");
    expect((await engine().plan()).resume).toBe(0);
    // the next night: the staged devices switch, and the next wave is staged
    clock += DAY;
    expect(await planRotation(engine(), p, now())).toMatchObject({ resume: 5, switchAfterBake: 0 });
    const r2 = await rotate(engine(), p, template());
    expect(r2.resumed).toBe(5);
    expect(r2.renewed).toBe(5);
    for (const d of staged) {
      const now2 = (await registry.getDevice(d.deviceId))!;
      expect(now2).toMatchObject({ state: "active", certSerial: d.certSerial });
      const old = active.find((a) => a.deviceId === d.deviceId)!;
      const prev = (await registry.certificates({ deviceId: d.deviceId })).find(
        (c) => c.serial === old.certSerial,
      )!;
      expect(prev.revocationReason).toBe("superseded");
    }
  });
});
