import { appendFileSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { frameRecord, StateStore, scanRecords } from "../../../devices/farm/store";
import { blankState, type DeviceState, encodeState } from "../../../devices/firmware/state";
import { tempDir } from "./helpers";

function stateFor(i: number, helperBytes = 40): DeviceState {
  const s = blankState();
  s.helper = Buffer.alloc(helperBytes, i & 0xff);
  s.epoch = i % 5;
  const w = Buffer.alloc(4);
  w.writeUInt32BE(i + 1);
  s.otp.program("spare", w);
  return s;
}
const enc = (m: ReadonlyMap<number, DeviceState>) =>
  new Map([...m].map(([k, v]) => [k, encodeState(v).toString("hex")]));

const dirs: Array<{ remove(): void }> = [];
afterEach(() => {
  for (const d of dirs.splice(0)) d.remove();
});
function dir() {
  const d = tempDir("fg-store-");
  dirs.push(d);
  return d.path;
}
const walOf = (p: string) => join(p, readdirSync(p).find((f) => f.startsWith("wal-"))!);

describe("state store", () => {
  it("replays every durable put after a reopen; last record wins", async () => {
    const p = dir();
    const s = await StateStore.open(p);
    const seqs: number[] = [];
    for (let i = 0; i < 200; i++) seqs.push(s.put(i % 150, stateFor(i)));
    await s.durable(seqs[seqs.length - 1]!);
    expect(s.barrier(3)).toBeUndefined();
    const want = enc(s.states);
    await s.close();
    const r = await StateStore.open(p);
    expect(enc(r.states)).toEqual(want);
    expect(r.states.get(0)!.epoch).toBe(150 % 5);
    await r.close();
  });

  it("group-commits: many puts in one tick cost one sync", async () => {
    const s = await StateStore.open(dir());
    const seqs = Array.from({ length: 500 }, (_, i) => s.put(i, stateFor(i)));
    await s.durable(seqs[499]!);
    expect(s.stats.syncs).toBeLessThanOrEqual(2);
    await s.close();
  });

  it("ignores a torn last record (short write) and appends after the good ones", async () => {
    const p = dir();
    const s = await StateStore.open(p);
    for (let i = 0; i < 10; i++) s.put(i, stateFor(i));
    await s.drain();
    const want = enc(s.states);
    await s.close();
    const rec = frameRecord(99, encodeState(stateFor(99)));
    for (const cut of [1, 7, 8, 12, rec.length - 1]) {
      const before = statSync(walOf(p)).size;
      appendFileSync(walOf(p), rec.subarray(0, cut));
      const r = await StateStore.open(p);
      expect(enc(r.states)).toEqual(want);
      expect(r.stats.tornBytes).toBe(cut);
      await r.close();
      expect(statSync(walOf(p)).size).toBe(before); // truncated back
    }
    const r = await StateStore.open(p);
    r.put(10, stateFor(10));
    await r.close();
    const again = await StateStore.open(p);
    expect(again.states.size).toBe(11);
    await again.close();
  });

  it("ignores a last record whose CRC or length does not match", async () => {
    const p = dir();
    const s = await StateStore.open(p);
    for (let i = 0; i < 5; i++) s.put(i, stateFor(i));
    await s.close();
    const buf = readFileSync(walOf(p));
    const last = Buffer.from(buf);
    last[last.length - 3]! ^= 0x10; // inside the last record's payload
    writeFileSync(walOf(p), last);
    const r = await StateStore.open(p);
    expect(r.states.size).toBe(4);
    await r.close();
    // a damaged length field cannot make a shorter record pass: the CRC covers it
    const rec = frameRecord(1, encodeState(stateFor(1)));
    const shorter = Buffer.from(rec);
    shorter.writeUInt32BE(rec.readUInt32BE(0) - 1, 0);
    expect(scanRecords(shorter, 0, () => {}).clean).toBe(false);
  });

  it("compacts into a snapshot, deletes the old log, and recovers from snapshot + new log", async () => {
    const p = dir();
    const s = await StateStore.open(p, { compactBytes: 8 * 1024 });
    for (let i = 0; i < 400; i++) {
      s.put(i % 300, stateFor(i, 100));
      if (i % 50 === 0) await s.drain();
    }
    await s.drain();
    while (s.stats.compactions === 0) await new Promise((r) => setTimeout(r, 5));
    const want = enc(s.states);
    await s.close();
    const files = readdirSync(p).sort();
    expect(files.some((f) => f.startsWith("snapshot-"))).toBe(true);
    const gens = files.filter((f) => f.startsWith("wal-")).length;
    expect(gens).toBeLessThanOrEqual(2);
    const r = await StateStore.open(p);
    expect(enc(r.states)).toEqual(want);
    await r.close();
  });

  it("a crash mid-compaction (snapshot .tmp left, old log kept) loses nothing", async () => {
    const p = dir();
    const s = await StateStore.open(p);
    for (let i = 0; i < 20; i++) s.put(i, stateFor(i));
    await s.compact();
    for (let i = 20; i < 30; i++) s.put(i, stateFor(i));
    const want = enc(s.states);
    await s.close();
    writeFileSync(join(p, "snapshot-00000002.bin.tmp"), "half a snapshot");
    const r = await StateStore.open(p);
    expect(enc(r.states)).toEqual(want);
    expect(readdirSync(p).some((f) => f.endsWith(".tmp"))).toBe(false);
    await r.close();
  });

  it("refuses to start on a damaged snapshot rather than lose devices silently", async () => {
    const p = dir();
    const s = await StateStore.open(p);
    for (let i = 0; i < 5; i++) s.put(i, stateFor(i));
    await s.compact();
    await s.close();
    const snap = join(p, readdirSync(p).find((f) => f.startsWith("snapshot-"))!);
    truncateSync(snap, statSync(snap).size - 3);
    await expect(StateStore.open(p)).rejects.toThrow(FleetError);
  });
});

describe("state store, encoded states", () => {
  it("holds each state as its encoded record in its own allocation; putEncoded and put are the same write", async () => {
    const p = dir();
    const s = await StateStore.open(p);
    const a = stateFor(1, 700);
    const bytes = encodeState(stateFor(2, 700));
    s.put(1, a);
    // a slice of a larger buffer: the store keeps an exact-size copy, not the view
    const big = Buffer.concat([Buffer.alloc(16), bytes, Buffer.alloc(16)]);
    s.putEncoded(2, big.subarray(16, 16 + bytes.length));
    big.fill(0);
    expect(Buffer.from(s.getEncoded(1)!)).toEqual(encodeState(a));
    const e2 = s.getEncoded(2)!;
    expect(Buffer.from(e2)).toEqual(bytes);
    expect(e2.byteLength).toBe(e2.buffer.byteLength);
    // an array alone in its buffer (a worker's answer after structured clone) is taken over
    const alone = new Uint8Array(bytes);
    s.putEncoded(3, alone);
    expect(s.getEncoded(3)).toBe(alone);
    s.putEncoded(3, bytes);
    // get() decodes a fresh object each time: changing it changes nothing stored
    const got = s.get(1)!;
    got.epoch = 4;
    expect(s.get(1)!.epoch).toBe(a.epoch);
    expect(s.states.get(2)!.helper).toEqual(stateFor(2, 700).helper);
    expect([...s.states.keys()].sort()).toEqual([1, 2, 3]);
    await s.close();
    const r = await StateStore.open(p);
    expect(Buffer.from(r.getEncoded(2)!)).toEqual(bytes);
    expect(encodeState(r.get(1)!)).toEqual(encodeState(a));
    await r.compact();
    await r.close();
    const c = await StateStore.open(p);
    expect(enc(new Map(c.states))).toEqual(
      new Map([
        [1, encodeState(a).toString("hex")],
        [2, bytes.toString("hex")],
        [3, bytes.toString("hex")],
      ]),
    );
    await c.close();
  });
});

describe("state store, snapshot in chunks", () => {
  it("a snapshot larger than one write chunk (1 MiB) holds every state", async () => {
    const p = dir();
    const s = await StateStore.open(p);
    for (let i = 0; i < 700; i++) s.put(i, stateFor(i, 2500));
    await s.compact();
    const want = enc(s.states);
    await s.close();
    const snap = readdirSync(p).find((f) => f.startsWith("snapshot-"))!;
    expect(statSync(join(p, snap)).size).toBeGreaterThan(1024 * 1024 + 500_000);
    const r = await StateStore.open(p);
    expect(r.states.size).toBe(700);
    expect(enc(r.states)).toEqual(want);
    await r.close();
  });
});
