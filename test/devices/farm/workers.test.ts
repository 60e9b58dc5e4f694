// The farm's worker threads give the answers the in-thread farm gives: two farms on copies of
// one state directory (same seed, same PUF helper data), one with --workers 0 and one with 2,
// are driven through the same requests and compared: public keys, results, errors, device
// states and counters equal, signatures (randomized by ECDSA) verified under the same keys.
// And a worker that dies answers INTERNAL instead of leaving requests hanging.
import { randomBytes } from "node:crypto";
import { cpSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../../../cli/devices";
import { FleetError } from "../../../core/errors";
import { verifyAttestation } from "../../../core/station/attest";
import { type BatchItem, StationClient } from "../../../core/station/client";
import { verifyCsr } from "../../../core/station/csr";
import { StationError, Status } from "../../../core/station/frame";
import { deviceId } from "../../../core/station/ids";
import { type Subject, UNAUTHORIZED } from "../../../core/station/messages";
import type { RunningFarm } from "../../../devices/farm/serve";
import { Hsm } from "../../../devices/injection/hsm";
import * as puf from "../../../devices/puf";
import { farmFor, makeCa, tempDir } from "./helpers";

const id = (i: number) => deviceId("fg100", i);
const subject = (d: string): Subject => [
  ["O", "Acme"],
  ["CN", d],
];
const CLONE = 900;
const NOISY = 901;
const faults = { clones: [id(CLONE)], noisy: [id(NOISY)] };

/** A batch's results in a comparable form: values, or [status, message]. */
function plain<T>(rs: BatchItem<T>[]): unknown[] {
  return rs.map((r) => (r.ok ? r.value : [r.error.status, r.error.detail]));
}

function values<T>(rs: BatchItem<T>[]): T[] {
  return rs.map((r) => {
    if (!r.ok) throw r.error;
    return r.value;
  });
}

describe("farm worker threads answer like the in-thread farm", () => {
  const dirs = [tempDir("fg-w0-"), tempDir("fg-w2-")];
  const ca = makeCa();
  let farms: RunningFarm[] = [];
  let clients: StationClient[] = [];
  const enrolled = Array.from({ length: 24 }, (_, i) => id(i * 7)); // both shards
  const both = <T>(f: (c: StationClient, k: number) => Promise<T>) => Promise.all(clients.map(f));

  beforeAll(async () => {
    // one farm enrolls the PUFs (helper data is random), then both start on copies of its state
    const seedFarm = await farmFor(dirs[0]!.path, { workers: 0 });
    const c = new StationClient({ port: seedFarm.port, timeoutMs: 20_000 });
    values(await c.identifyBatch(enrolled));
    await c.close();
    await seedFarm.close();
    cpSync(dirs[0]!.path, dirs[1]!.path, { recursive: true });
    farms = [
      await farmFor(dirs[0]!.path, { ...faults, workers: 0 }),
      await farmFor(dirs[1]!.path, { ...faults, workers: 2 }),
    ];
    expect(farms[0]!.farm.pool).toBeUndefined();
    expect(farms[1]!.farm.pool?.size).toBe(2);
    clients = farms.map((f) => new StationClient({ port: f.port, timeoutMs: 20_000 }));
  });
  afterAll(async () => {
    for (const c of clients) await c.close();
    for (const f of farms) await f.close();
    for (const d of dirs) d.remove();
  });

  it("same keys, results, errors, states and counters through a whole lifecycle", async () => {
    const s0 = await both((c) => c.stats());
    // after a power cycle: every key reconstructed from the same helper data
    const idents = await both((c) => c.identifyBatch([...enrolled, id(CLONE), id(NOISY), "fg100-9999999"]));
    expect(plain(idents[1]!)).toEqual(plain(idents[0]!));
    const keys = values(idents[0]!.slice(0, enrolled.length)).map((r) => r.publicKey!);
    expect(idents[0]!.slice(-3).map((r) => (r.ok ? "ok" : r.error.status))).toEqual([
      Status.KEY_FAILURE,
      Status.KEY_FAILURE,
      Status.UNKNOWN_DEVICE,
    ]);

    // attestation: ECDSA signatures differ run to run; both verify under the same key
    const nonces = enrolled.map(() => randomBytes(32));
    const atts = await both((c) =>
      c.attestBatch(enrolled.map((device, i) => ({ device, nonce: nonces[i]! }))),
    );
    for (const rs of atts)
      values(rs).forEach((a, i) => {
        expect(a.epoch).toBe(0);
        expect(verifyAttestation(keys[i]!, enrolled[i]!, 0, nonces[i]!, a.signature)).toBe(true);
      });

    // CSRs: signed by the same key, the same request content
    const csrs = await both((c) =>
      c.csrBatch(enrolled.map((device) => ({ device, subject: subject(device) }))),
    );
    const parsed = csrs.map((rs) => values(rs).map((r, i) => verifyCsr(r.csr, keys[i]!)));
    expect(parsed[1]!.map((p) => [p.subject, p.spki])).toEqual(parsed[0]!.map((p) => [p.subject, p.spki]));

    // trust and install, including refusals: the same status and message
    const trust = await both((c) =>
      c.setTrustAnchorBatch(enrolled.map((device) => ({ device, anchor: ca.root }))),
    );
    expect(plain(trust[1]!)).toEqual(plain(trust[0]!));
    const chains = enrolled.map((d, i) => ca.chainFor(keys[i]!, d));
    const forged = Buffer.from(chains[1]![0]!);
    forged[forged.length - 5]! ^= 1;
    const stranger = makeCa("Stranger");
    const installs = enrolled.map((device, i) => ({
      device,
      chain:
        i === 1
          ? [forged, chains[1]![1]!, chains[1]![2]!]
          : i === 2
            ? stranger.chainFor(keys[2]!, device)
            : i === 3
              ? ca.chainFor(keys[4]!, device) // another device's key
              : i === 5
                ? [Buffer.from("junk"), ...chains[5]!.slice(1)]
                : chains[i]!,
    }));
    const inst = await both((c) => c.installBatch(installs));
    expect(plain(inst[1]!)).toEqual(plain(inst[0]!));
    expect(inst[0]!.slice(1, 6).map((r) => (r.ok ? "ok" : r.error.status))).toEqual([
      Status.BAD_SIGNATURE,
      Status.BAD_CERTIFICATE,
      Status.BAD_CERTIFICATE,
      "ok",
      Status.BAD_CERTIFICATE,
    ]);

    // the devices are closed now: commands signed by another CA, or for an old challenge, are
    // refused alike (the workers verify them), and change nothing
    const rot = enrolled.slice(6, 12);
    const challenges = await both(async (c) => values(await c.statusBatch(rot)).map((s) => s.challenge!));
    expect(challenges[1]).toEqual(challenges[0]);
    const rotReq = (signer: typeof ca, ch: Buffer[]) =>
      rot.map((device, i) => ({
        device,
        subject: subject(device),
        auth: signer.command(device, { op: "ROTATE", subject: subject(device) }, ch[i]!),
      }));
    const refused = await both((c) => c.rotateBatch(rotReq(stranger, challenges[0]!)));
    expect(plain(refused[1]!)).toEqual(plain(refused[0]!));
    expect(refused[0]!.every((r) => !r.ok && r.error.status === UNAUTHORIZED)).toBe(true);
    expect((refused[0]![0] as { error: StationError }).error.detail).toMatch(
      /^auth\.signer: got a chain to a root/,
    );

    // rotation: the next epoch's key is the same on both; installing it switches epochs
    const rotated = await both((c) => c.rotateBatch(rotReq(ca, challenges[0]!)));
    const next = rotated.map((rs) => values(rs).map((r) => verifyCsr(r.csr).spki));
    expect(next[1]).toEqual(next[0]);
    const replayed = await both((c) => c.rotateBatch(rotReq(ca, challenges[0]!).slice(0, 1)));
    expect(replayed[0]![0]!.ok).toBe(true); // a repeat of a started re-key changes nothing: no command
    const after = values(rotated[0]!).map((r) => r.challenge!);
    const chains1 = rot.map((device, i) => {
      const chain = ca.chainFor(next[0]![i]!, device);
      return { device, chain, auth: ca.command(device, { op: "INSTALL", chain }, after[i]!) };
    });
    const inst1 = await both((c) => c.installBatch(chains1));
    expect(plain(inst1[1]!)).toEqual(plain(inst1[0]!));
    expect(values(inst1[0]!).every((r) => r.epoch === 1)).toBe(true);
    // the same commands again: the chains are installed, so nothing to authorize; another chain with a spent challenge is refused
    const again = await both((c) => c.installBatch(chains1.slice(0, 1)));
    expect(values(again[0]!)[0]!.epoch).toBe(1);
    const other = ca.chainFor(next[0]![0]!, rot[0]!);
    const stale = await both((c) =>
      c.installBatch([
        {
          device: rot[0]!,
          chain: other,
          auth: ca.command(rot[0]!, { op: "INSTALL", chain: other }, after[0]!),
        },
      ]),
    );
    expect(plain(stale[1]!)).toEqual(plain(stale[0]!));
    expect((stale[0]![0] as { error: StationError }).error.detail).toMatch(/^auth\.nonce/);

    // decommission: a signed command for the device's challenge
    const d12 = enrolled[12]!;
    const dec = await both(async (c) =>
      c.decommission(d12, {
        auth: ca.command(d12, { op: "DECOMMISSION", confirm: d12 }, (await c.status(d12)).challenge!),
      }),
    );
    expect(dec[1]).toEqual(dec[0]);
    expect(dec[0]!.lifecycle).toBe("decommissioned");

    // key injection: one license (ECIES to the chip key, which both farms derive from the seed)
    const hsm = Hsm.create(
      join(dirs[0]!.path, "hsm.json"),
      { productId: "acme", limit: 4, secrets: { "fw-key": randomBytes(32) } },
      readFileSync(join(dirs[0]!.path, "vendor-ca.der")),
    );
    const lic = hsm.license(farms[0]!.vendor.chipCertificate(id(30)), (chip, spki) =>
      ca.chainFor(spki, chip),
    );
    const inj = await both((c) => c.inject(id(30), lic.license, lic.payload));
    expect(inj[1]).toEqual(inj[0]);
    const injIdent = await both((c) => c.identify(id(30)));
    expect(injIdent[1]).toEqual(injIdent[0]);
    expect(injIdent[0]!.publicKey!.equals(lic.identitySpki!)).toBe(true);

    // every device's whole state (fuses, helper data, chain, epochs) is the same
    const touched = [...enrolled, id(30), id(CLONE), id(NOISY)];
    const st = await both((c) => c.statusBatch(touched));
    expect(plain(st[1]!)).toEqual(plain(st[0]!));

    const s1 = await both((c) => c.stats());
    const delta = (k: number) => ({
      reconstructions: s1[k]!.reconstructions - s0[k]!.reconstructions,
      reconstructionFailures: s1[k]!.reconstructionFailures - s0[k]!.reconstructionFailures,
      enrollments: s1[k]!.enrollments - s0[k]!.enrollments,
      changedDevices: s1[k]!.changedDevices,
      walRecords: s1[k]!.walRecords - s0[k]!.walRecords,
    });
    expect(delta(1)).toEqual(delta(0));
    expect(delta(0).reconstructions).toBeGreaterThanOrEqual(enrolled.length);
    expect(farms[1]!.farm.pool!.stats.crashes).toBe(0);
  });

  it("first contact on both: a PUF enrolled and the same answer apart from the (random) key", async () => {
    const fresh = [id(400), id(401)];
    const rs = await both((c) => c.identifyBatch(fresh));
    const strip = (r: BatchItem<{ publicKey?: Buffer }>) => (r.ok ? { ...r.value, publicKey: undefined } : r);
    expect(rs[1]!.map(strip)).toEqual(rs[0]!.map(strip));
    for (const r of rs.flat()) expect(r.ok && r.value.lifecycle === "provisioned").toBe(true);
  });

  it("requests for one device apply in order, across connections, while other devices run in parallel", async () => {
    // 3 connections each pipelining identify -> trust -> STATUS for the same devices: every
    // STATUS after the device's own SET_TRUST shows the anchor, on both farms
    const devs = enrolled.slice(13, 20);
    const out = await both(async (_, k) => {
      const cs = Array.from(
        { length: 3 },
        () => new StationClient({ port: farms[k]!.port, timeoutMs: 20_000 }),
      );
      try {
        const rounds = await Promise.all(
          cs.map((c) =>
            Promise.all(
              devs.map(async (d) => {
                const ident = await c.identify(d);
                await c.setTrustAnchor(d, ca.root);
                const s = await c.status(d);
                return [ident.publicKey!.toString("hex"), s.trustAnchors.length];
              }),
            ),
          ),
        );
        return rounds;
      } finally {
        for (const c of cs) await c.close();
      }
    });
    expect(out[1]).toEqual(out[0]);
    for (const round of out[1]!) for (const [, anchors] of round) expect(anchors).toBe(1);
  });
});

describe("a farm worker that dies", () => {
  const dir = tempDir("fg-wcrash-");
  const lines: string[] = [];
  let farm: RunningFarm;
  let client: StationClient;
  beforeAll(async () => {
    farm = await farmFor(dir.path, { workers: 2, log: (l) => lines.push(l) });
    client = new StationClient({ port: farm.port, timeoutMs: 20_000, retries: 0 });
  });
  afterAll(async () => {
    await client.close();
    await farm.close();
    dir.remove();
  });

  it("answers its requests INTERNAL, the other shard's normally, and is replaced", async () => {
    const pool = farm.farm.pool!;
    const devices = Array.from({ length: 40 }, (_, i) => id(100 + i));
    const onShard0 = devices.filter((_, i) => pool.shardOf(100 + i) === 0).length;
    expect(onShard0).toBeGreaterThan(0);
    expect(onShard0).toBeLessThan(40);
    pool.crash(0);
    const rs = await client.identifyBatch(devices);
    rs.forEach((r, i) => {
      if (pool.shardOf(100 + i) === 0) {
        expect(r.ok).toBe(false);
        if (!r.ok) expect(r.error.status).toBe(Status.INTERNAL);
      } else expect(r.ok).toBe(true);
    });
    expect(pool.stats.crashes).toBe(1);
    expect(lines.join("\n")).toMatch(
      new RegExp(`farm worker 0 died .*crash requested.*; ${onShard0} job\\(s\\) answered INTERNAL`),
    );
    // nothing the dead worker did was kept: its devices are still blank
    const st = values(await client.statusBatch(devices.filter((_, i) => pool.shardOf(100 + i) === 0)));
    expect(st.every((s) => s.lifecycle === "blank")).toBe(true);
    // the next request for that shard goes to a new worker
    const again = values(await client.identifyBatch(devices));
    expect(again.every((r) => r.lifecycle === "provisioned")).toBe(true);
    expect(pool.stats.started).toBe(3);
  });

  it("answers a single request INTERNAL, and a killed worker is replaced too", async () => {
    const pool = farm.farm.pool!;
    const [a, b, c] = Array.from({ length: 100 }, (_, i) => 200 + i).filter((i) => pool.shardOf(i) === 1);
    pool.crash(1);
    const e = await client.identify(id(a!)).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(StationError);
    expect((e as StationError).status).toBe(Status.INTERNAL);
    // INSTALL's leaf check runs in the worker too: its crash is INTERNAL, the device unchanged
    const ca = makeCa();
    const key = (await client.identify(id(b!))).publicKey!;
    await client.setTrustAnchor(id(b!), ca.root);
    pool.crash(1);
    const ie = await client.install(id(b!), ca.chainFor(key, id(b!))).catch((x: unknown) => x);
    expect((ie as StationError).status).toBe(Status.INTERNAL);
    expect((await client.status(id(b!))).lifecycle).toBe("provisioned");
    expect((await client.install(id(b!), ca.chainFor(key, id(b!)))).lifecycle).toBe("closed");
    await pool.workerOf(1)!.terminate();
    expect((await client.identify(id(c!))).lifecycle).toBe("provisioned");
    expect(pool.stats.crashes).toBe(4);
  });
});

describe("worker options", () => {
  it("refuses a bad --workers, and workers with a PUF model that cannot cross threads", async () => {
    const dir = tempDir("fg-wopt-");
    try {
      for (const w of ["65", "-1", "two"]) {
        const e = await run([
          "serve",
          "--count",
          "10",
          "--port",
          "0",
          "--state",
          dir.path,
          "--workers",
          w,
        ]).catch((x: unknown) => x);
        expect(e, w).toBeInstanceOf(FleetError);
        expect((e as FleetError).code).toBe("INVALID_INPUT");
      }
      const e = await farmFor(dir.path, { workers: 2, puf: { ...puf } }).catch((x: unknown) => x);
      expect((e as FleetError).code).toBe("INVALID_INPUT");
      expect((e as Error).message).toMatch(/workers/);
      // defaulted: a custom PUF model runs in the main thread
      const farm = await farmFor(dir.path, { puf: { ...puf } });
      try {
        expect(farm.farm.pool).toBeUndefined();
      } finally {
        await farm.close();
      }
    } finally {
      dir.remove();
    }
  });
});
