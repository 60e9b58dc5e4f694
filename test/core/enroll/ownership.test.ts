// Issue 9, finding 5: a second program with its own registry and CA hierarchy, pointed at the
// same device farm, must not take over the first one's closed devices. Two engines, two SQLite
// registries, two hierarchies from core/ca, one real farm (worker threads) over TCP.
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signCommand } from "../../../core/enroll/authorize";
import { compileTemplate } from "../../../core/enroll/profile";
import { openRegistry } from "../../../core/registry";
import type { Registry } from "../../../core/registry/types";
import { verifyAttestation } from "../../../core/station/attest";
import { StationClient } from "../../../core/station/client";
import type { CommandPayload } from "../../../core/station/command";
import { Op, type StationError, Status } from "../../../core/station/frame";
import { deviceId } from "../../../core/station/ids";
import { UNAUTHORIZED } from "../../../core/station/messages";
import { randomSerial } from "../../../core/x509/cert";
import { pemBlocks } from "../../../core/x509/pem";
import { type RunningFarm, startFarm } from "../../../devices/farm/serve";
import { type Service, StationServer } from "../../../devices/protocol/server";
import { tmpdir } from "../../helpers/openssl";
import { batchSpec, engineOf, hierarchy } from "./helpers";

const id = (i: number) => deviceId("fg100", i);
const A = hierarchy("Fleet A");
const B = hierarchy("Fleet B");
const rootOf = (h: typeof A) => pemBlocks(h.rootPem, "CERTIFICATE", "root")[0]!;

let dir: string;
let farm: RunningFarm;
let station: StationClient;
let regA: Registry;
let regB: Registry;

beforeAll(async () => {
  dir = tmpdir("fg-owner-");
  farm = await startFarm({ stateDir: path.join(dir, "farm"), count: 24, log: () => {} });
  station = new StationClient({ port: farm.port, timeoutMs: 20_000 });
  regA = await openRegistry(path.join(dir, "a.db"));
  regB = await openRegistry(path.join(dir, "b.db"));
}, 60_000);

afterAll(async () => {
  await station?.close();
  await farm?.close();
  await regA?.close();
  await regB?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const refusal = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error("accepted, want refused");
    },
    (e: StationError) => [e.status, e.detail] as const,
  );

describe("device ownership", () => {
  it("the second fleet's engine takes over none of the first's closed devices; its own are quarantined owned-elsewhere", async () => {
    const a = engineOf(regA, station, A.material, batchSpec({ name: "a", count: 20 }));
    expect((await a.converge()).counts.active).toBe(20);
    const liveA = await regA.certificates({ batch: "a", status: ["live"] });
    expect(liveA).toHaveLength(20);

    // same devices, another registry and CA: the run fails on the policy's quarantine fraction
    const b = engineOf(regB, station, B.material, batchSpec({ name: "b", count: 20 }));
    await expect(b.converge()).rejects.toThrow(
      /got 20 of 20 devices quarantined \(100\.0%: owned-elsewhere 20\), want at most 10\.0%/,
    );
    const recsB = await regB.listDevices("b");
    expect(recsB).toHaveLength(20);
    for (const d of recsB) {
      expect(d.state).toBe("quarantined");
      expect(d.reason).toMatch(
        /^owned-elsewhere: identify: the device is closed under a trust anchor other than/,
      );
    }
    // nothing was certified for them
    expect(await regB.certificates({ batch: "b" })).toHaveLength(0);
    // deleting its batch does not zeroize them either
    expect((await b.deleteBatch()).decommissioned).toBe(20);
    expect((await regB.getDevice(id(4)))?.reason).toMatch(/owned-elsewhere: the device refused/);

    // the first fleet's devices: untouched
    for (const c of liveA) {
      const s = await station.status(c.deviceId);
      expect(s.lifecycle).toBe("closed");
      expect(s.chain[0]!.equals(c.der)).toBe(true);
      expect(s.trustAnchors).toHaveLength(1); // no second anchor fused
    }
    const rec = (await regA.getDevice(id(7)))!;
    const nonce = Buffer.alloc(32, 7);
    const att = await station.attest(id(7), nonce);
    expect(verifyAttestation(rec.publicKey!, id(7), att.epoch, nonce, att.signature)).toBe(true);
    const r = await a.refresh();
    expect(r).toMatchObject({ lostCertificate: 0, missingDevice: 0 });
    expect(r.attestation).toEqual({ sample: 20, population: 20, failed: 0 });
    expect((await a.converge()).counts.active).toBe(20);
  }, 120_000);

  it("commands from the other CA, unsigned, replayed or for another device are refused and change nothing", async () => {
    const d = id(2);
    const before = await station.status(d);
    const ch = before.challenge!;
    const key = (await regA.getDevice(d))!.publicKey!;
    const rootB = rootOf(B);
    const t = compileTemplate(batchSpec().profile, B.material, new Date());
    const chainB = [t.issue(randomSerial(), d, key), B.material.certificate, ...B.material.chain];
    const subject: [["CN", string]] = [["CN", d]];
    const byB = (p: CommandPayload) => ({ auth: signCommand(B.material, d, p, ch) });
    const untrusted = /^auth\.signer: got a chain to a root this device does not trust/;

    for (const [call, signed] of [
      [
        () => station.setTrustAnchor(d, rootB),
        () => station.setTrustAnchor(d, rootB, byB({ op: "SET_TRUST", anchor: rootB })),
      ],
      [
        () => station.install(d, chainB),
        () => station.install(d, chainB, byB({ op: "INSTALL", chain: chainB })),
      ],
      [() => station.rotate(d, subject), () => station.rotate(d, subject, byB({ op: "ROTATE", subject }))],
      [() => station.decommission(d), () => station.decommission(d, byB({ op: "DECOMMISSION", confirm: d }))],
    ] as const) {
      const [s1, m1] = await refusal(call());
      expect(s1).toBe(UNAUTHORIZED);
      expect(m1).toMatch(/^auth: got none/);
      const [s2, m2] = await refusal(signed());
      expect(s2).toBe(UNAUTHORIZED);
      expect(m2).toMatch(untrusted);
    }

    // the owner's key, but bound to something else: another device, another op, another payload
    const rootA = rootOf(A);
    const other = signCommand(A.material, id(3), { op: "DECOMMISSION", confirm: d }, ch);
    expect((await refusal(station.decommission(d, { auth: other })))[1]).toMatch(/^auth\.signature/);
    const asTrust = signCommand(A.material, d, { op: "SET_TRUST", anchor: rootA }, ch);
    expect((await refusal(station.decommission(d, { auth: asTrust })))[1]).toMatch(/^auth\.signature/);
    const anchorCmd = signCommand(A.material, d, { op: "SET_TRUST", anchor: rootA }, ch);
    expect((await refusal(station.setTrustAnchor(d, rootB, { auth: anchorCmd })))[1]).toMatch(
      /^auth\.signature/,
    );
    // the device's own certificate chains to the anchor too, but it is no CA: it commands nothing
    const devCert = (await regA.certificates({ deviceId: d, status: ["live"] }))[0]!.der;
    const fake = {
      ...signCommand(A.material, d, { op: "DECOMMISSION", confirm: d }, ch),
      signer: [devCert, ...A.material.chain],
    };
    expect((await refusal(station.decommission(d, { auth: fake })))[1]).toMatch(
      /^auth\.signer\[0\]: .*want a CA/,
    );

    const after = await station.status(d);
    expect(after.lifecycle).toBe("closed");
    expect(after.trustAnchors).toEqual(before.trustAnchors);
    expect(after.chain).toEqual(before.chain);
    expect(after.pendingEpoch).toBeNull();
    expect(after.challenge!.equals(ch)).toBe(true); // nothing was executed

    // the owner's own command runs once: a replay of it is refused
    const dec = signCommand(A.material, d, { op: "DECOMMISSION", confirm: d }, ch);
    const anchor2 = hierarchy("Fleet A next").rootPem;
    const next = pemBlocks(anchor2, "CERTIFICATE", "root")[0]!;
    const add = signCommand(A.material, d, { op: "SET_TRUST", anchor: next }, ch);
    expect((await station.setTrustAnchor(d, next, { auth: add })).slot).toBe(1);
    expect((await refusal(station.decommission(d, { auth: dec })))[1]).toMatch(/^auth\.nonce/);
  }, 60_000);

  it("protocol 2 on both sides: the farm refuses a version-1 request, an engine refuses a version-1 farm", async () => {
    // what a version-1 station sends: the request without `protocol`
    const e = (await station
      .call(Op.SET_TRUST, 0, { device: id(5), anchor: rootOf(B) }, true)
      .catch((x: unknown) => x)) as StationError;
    expect(e.status).toBe(Status.UNSUPPORTED_VERSION);
    expect(e.detail).toMatch(/^protocol: got 1 \(no protocol field\), want 2/);

    const old: Service = {
      knows: (op) => op === Op.PING,
      handle: () => ({
        kind: "ok",
        body: { protocol: 1, model: "fg100", count: 24, farmId: "old", vendorCa: Buffer.alloc(8) },
      }),
    };
    const server = new StationServer(old, { log: () => {} });
    const port = await server.listen(0);
    const st = new StationClient({ port });
    try {
      const reg = await openRegistry(path.join(dir, "c.db"));
      try {
        const c = engineOf(reg, st, A.material, batchSpec({ name: "c" }));
        await expect(c.converge()).rejects.toThrow(/^station\.protocol: got 1, want 2/);
        await expect(c.deleteBatch()).rejects.toThrow(/^station\.protocol: got 1, want 2/);
        // declared, and nothing asked of the station beyond its version
        expect((await reg.counts("c")).pending).toBe(10);
        expect(await reg.certificates({ batch: "c" })).toHaveLength(0);
      } finally {
        await reg.close();
      }
    } finally {
      await st.close();
      await server.close();
    }
  }, 60_000);
});
