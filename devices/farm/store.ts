/**
 * Durable device state of a farm: an in-memory map of the devices provisioning changed, backed
 * by an append-only write-ahead log and periodic snapshots in the state directory.
 *
 * Record: u32 length | u32 CRC-32 (of length and payload) | payload, where payload = u32 device
 * index | device state (firmware/state.ts). A record holds a device's whole state, so replay
 * is "last record wins" and replaying a record twice is harmless.
 *
 * Durability: put() changes the map and queues the record; the queue is written and
 * fdatasync'd in one go (group commit: everything queued while the previous sync ran goes in
 * the next), and only then are the callers waiting on durable() released. The farm answers a
 * request only after the records it depends on are durable (barrier()), so an acknowledged
 * write survives kill -9 and power loss (assuming the disk honours fdatasync).
 *
 * Recovery: records are read in order until the first one that is short or fails its CRC;
 * that is a torn tail from a crash mid-write (never acknowledged), so the file is truncated
 * there and appending resumes.
 *
 * Memory: each device's state is held as its encoded record (firmware/state.ts, what the log
 * carries), one exact-size allocation per device with the chain's CA certificates shared by the
 * whole farm (pack.ts), and decoded on get(): decoded states cost an
 * object, a fuse array and two Buffers each, and the Buffers, cut from Node's shared 8 KiB pool
 * next to short-lived ones, kept whole pool slabs alive (1.8 GiB for 111,000 enrolled devices).
 * The farm's worker threads take and give encoded states (getEncoded, putEncoded), so a state
 * that only passes through the main thread is never decoded or encoded there.
 *
 * Compaction: past `compactBytes` of log, the log is switched to generation g+1, all states are
 * written to snapshot-(g+1).tmp, fsync'd and renamed to snapshot-(g+1).bin, the directory is
 * fsync'd, and only then are the older log and snapshot deleted. At start the newest complete
 * snapshot is loaded and every log of its generation or later replayed, so a crash at any
 * point of compaction loses nothing.
 */
import {
  closeSync,
  fsyncSync,
  openSync,
  readdirSync,
  readFileSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { type FileHandle, open, rename } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { ensurePrivateDir, PRIVATE_FILE } from "../../core/durable";
import { FleetError } from "../../core/errors";
import { type DeviceState, decodeState, encodeState } from "../firmware/state";
import { pack, SharedCerts, type StoredState, unpack } from "./pack";

const WAL_MAGIC = Buffer.from("FGWAL01\n");
const SNAP_MAGIC = Buffer.from("FGSNP01\n");
const REC_HEADER = 8;
/** bytes of snapshot records framed and written at a time */
const SNAP_CHUNK = 1 << 20;

export interface StoreStats {
  records: number;
  bytes: number;
  syncs: number;
  generation: number;
  tornBytes: number;
  compactions: number;
}

export function frameRecord(index: number, state: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(REC_HEADER + 4 + state.length);
  out.writeUInt32BE(4 + state.length, 0);
  out.writeUInt32BE(index, REC_HEADER);
  out.set(state, REC_HEADER + 4);
  // the CRC covers the length too: a damaged length cannot pass for a shorter record
  out.writeUInt32BE(crc32(out.subarray(REC_HEADER), crc32(out.subarray(0, 4))), 4);
  return out;
}

/** Parse records from `buf` starting at `pos`; stops at the first damaged or short record. */
export function scanRecords(
  buf: Buffer,
  pos: number,
  onRecord: (index: number, state: Buffer) => void,
): { end: number; clean: boolean } {
  while (pos < buf.length) {
    if (buf.length - pos < REC_HEADER + 4) return { end: pos, clean: false };
    const len = buf.readUInt32BE(pos);
    if (len < 4 || buf.length - pos - REC_HEADER < len) return { end: pos, clean: false };
    const payload = buf.subarray(pos + REC_HEADER, pos + REC_HEADER + len);
    if (crc32(payload, crc32(buf.subarray(pos, pos + 4))) !== buf.readUInt32BE(pos + 4))
      return { end: pos, clean: false };
    onRecord(payload.readUInt32BE(0), payload.subarray(4));
    pos += REC_HEADER + len;
  }
  return { end: pos, clean: true };
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

const walName = (g: number) => `wal-${String(g).padStart(8, "0")}.log`;
const snapName = (g: number) => `snapshot-${String(g).padStart(8, "0")}.bin`;

export interface StoreOptions {
  /** log size that triggers compaction into a snapshot (default 256 MiB; 0 = never) */
  compactBytes?: number;
  /** called with a line when something notable happens (torn tail, compaction) */
  log?: (line: string) => void;
}

/** A read-only Map view that decodes each state when it is read. */
class DecodedView implements ReadonlyMap<number, DeviceState> {
  constructor(private readonly m: Map<number, StoredState>) {}
  get size(): number {
    return this.m.size;
  }
  get(k: number): DeviceState | undefined {
    const b = this.m.get(k);
    return b === undefined ? undefined : decodeState(unpack(b));
  }
  has(k: number): boolean {
    return this.m.has(k);
  }
  keys(): MapIterator<number> {
    return this.m.keys();
  }
  *entries(): MapIterator<[number, DeviceState]> {
    for (const [k, b] of this.m) yield [k, decodeState(unpack(b))];
  }
  *values(): MapIterator<DeviceState> {
    for (const b of this.m.values()) yield decodeState(unpack(b));
  }
  [Symbol.iterator](): MapIterator<[number, DeviceState]> {
    return this.entries();
  }
  forEach(f: (v: DeviceState, k: number, m: ReadonlyMap<number, DeviceState>) => void): void {
    for (const [k, v] of this.entries()) f(v, k, this);
  }
}

/**
 * An array that is alone in an allocation of its own size: `b` itself when it is (what a worker's
 * answer is after structured clone), else an exact-size copy (never a slice of a shared pool).
 */
function own(b: Uint8Array): Uint8Array {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && !Buffer.isBuffer(b)) return b;
  const out = new Uint8Array(b.length);
  out.set(b);
  return out;
}

export class StateStore {
  /** encoded state of every device provisioning changed, CA certificates shared (pack.ts) */
  private readonly enc = new Map<number, StoredState>();
  private readonly shared = new SharedCerts();
  /** the states, decoded on each read (tests, tools; the farm uses get and getEncoded) */
  readonly states: ReadonlyMap<number, DeviceState> = new DecodedView(this.enc);
  private readonly lastSeq = new Map<number, number>();
  private fh!: FileHandle;
  private writePos = 0;
  private gen = 0;
  private seq = 0;
  private durableSeq = 0;
  private queue: Buffer[] = [];
  private queueLastSeq = 0;
  private waiters: Array<{ seq: number; resolve: () => void; reject: (e: Error) => void }> = [];
  private flushing = false;
  private scheduled = false;
  private failed: Error | undefined;
  private compacting = false;
  private idle: Array<() => void> = [];
  readonly stats: StoreStats = {
    records: 0,
    bytes: 0,
    syncs: 0,
    generation: 0,
    tornBytes: 0,
    compactions: 0,
  };

  private constructor(
    readonly dir: string,
    private readonly compactBytes: number,
    private readonly log: (line: string) => void,
  ) {}

  static async open(dir: string, opts: StoreOptions = {}): Promise<StateStore> {
    // the device states hold every device's secrets: a private folder, private files (durable.ts)
    ensurePrivateDir(dir);
    const s = new StateStore(dir, opts.compactBytes ?? 256 * 1024 * 1024, opts.log ?? (() => {}));
    await s.recover();
    return s;
  }

  private async recover(): Promise<void> {
    const files = readdirSync(this.dir);
    for (const f of files) if (f.endsWith(".tmp")) unlinkSync(join(this.dir, f)); // unfinished snapshot
    const gens = (re: RegExp) =>
      files
        .map((f) => re.exec(f))
        .filter((m): m is RegExpExecArray => !!m)
        .map((m) => Number(m[1]))
        .sort((a, b) => a - b);
    const snaps = gens(/^snapshot-(\d{8})\.bin$/);
    const wals = gens(/^wal-(\d{8})\.log$/);
    const base = snaps.length ? snaps[snaps.length - 1]! : 0;
    if (snaps.length) {
      const buf = readFileSync(join(this.dir, snapName(base)));
      if (!buf.subarray(0, SNAP_MAGIC.length).equals(SNAP_MAGIC))
        throw new FleetError("INTEGRITY", `state: ${snapName(base)} has no snapshot header, want one`);
      const r = scanRecords(buf, SNAP_MAGIC.length, (i, st) => this.load(i, st));
      if (!r.clean)
        throw new FleetError("INTEGRITY", `state: ${snapName(base)} damaged at offset ${r.end}, want intact`);
    }
    const replay = wals.filter((g) => g >= base);
    this.gen = replay.length ? replay[replay.length - 1]! : base;
    for (const g of replay) {
      const path = join(this.dir, walName(g));
      const buf = readFileSync(path);
      let end = WAL_MAGIC.length;
      if (buf.length < WAL_MAGIC.length || !buf.subarray(0, WAL_MAGIC.length).equals(WAL_MAGIC)) {
        if (g !== this.gen || buf.length > WAL_MAGIC.length)
          throw new FleetError("INTEGRITY", `state: ${walName(g)} has no log header, want one`);
        writeFileSync(path, WAL_MAGIC, { mode: PRIVATE_FILE }); // created but never written: a crash right at rotation
      } else {
        const r = scanRecords(buf, WAL_MAGIC.length, (i, st) => {
          this.load(i, st);
          this.stats.records++;
        });
        end = r.end;
        if (!r.clean) {
          if (g !== this.gen)
            throw new FleetError("INTEGRITY", `state: ${walName(g)} damaged at ${r.end}, want intact`);
          this.stats.tornBytes = buf.length - r.end;
          this.log(`state: ignoring a torn last record (${buf.length - r.end} bytes) in ${walName(g)}`);
        }
      }
      this.stats.bytes = end;
    }
    const path = join(this.dir, walName(this.gen));
    const fresh = !replay.includes(this.gen);
    this.fh = await open(path, fresh ? "w+" : "r+", PRIVATE_FILE);
    if (fresh) {
      await this.fh.write(WAL_MAGIC, 0, WAL_MAGIC.length, 0);
      await this.fh.sync();
      fsyncDir(this.dir);
      this.writePos = WAL_MAGIC.length;
      this.stats.bytes = this.writePos;
    } else {
      this.writePos = this.stats.bytes;
      await this.fh.truncate(this.writePos);
      await this.fh.sync();
    }
    this.stats.generation = this.gen;
  }

  /** A recovered record: checked by decoding it once, kept encoded. */
  private load(index: number, st: Uint8Array): void {
    decodeState(st);
    this.enc.set(index, this.keep(st));
  }

  /** The device's state, decoded (a fresh object: changing it changes nothing stored). */
  get(index: number): DeviceState | undefined {
    const b = this.enc.get(index);
    return b === undefined ? undefined : decodeState(unpack(b));
  }

  /** What the map holds for an encoded state: packed, or an array alone in its allocation. */
  private keep(encoded: Uint8Array): StoredState {
    const p = pack(encoded, this.shared);
    return p === encoded ? own(encoded) : p;
  }

  /** The device's state as encodeState() gives it, without decoding (do not modify). */
  getEncoded(index: number): Uint8Array | undefined {
    const b = this.enc.get(index);
    return b === undefined ? undefined : unpack(b);
  }

  /** Record a device's new state. Returns the sequence number to wait on with durable(). */
  put(index: number, state: DeviceState): number {
    return this.putEncoded(index, encodeState(state));
  }

  /**
   * put() of a state already encoded (encodeState: a farm worker's answer). An array alone in its
   * buffer is kept as it is (the caller hands it over and must not change it), anything else copied.
   */
  putEncoded(index: number, encoded: Uint8Array): number {
    if (this.failed)
      throw new FleetError("UNAVAILABLE", `state: log write failed earlier (${this.failed.message})`);
    this.enc.set(index, this.keep(encoded));
    const rec = frameRecord(index, encoded);
    this.queue.push(rec);
    this.stats.records++;
    const seq = ++this.seq;
    this.queueLastSeq = seq;
    this.lastSeq.set(index, seq);
    if (!this.flushing && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => void this.flush());
    }
    return seq;
  }

  /** Resolves once every record up to `seq` is on disk. */
  durable(seq: number): Promise<void> {
    if (seq <= this.durableSeq) return Promise.resolve();
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => this.waiters.push({ seq, resolve, reject }));
  }

  /** Undefined if the device's last change is already durable, else a promise for it. */
  barrier(index: number): Promise<void> | undefined {
    const s = this.lastSeq.get(index);
    if (s === undefined) return undefined;
    if (s <= this.durableSeq) {
      this.lastSeq.delete(index);
      return undefined;
    }
    return this.durable(s);
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.queue.length && !this.failed) {
        const batch = this.queue.length === 1 ? this.queue[0]! : Buffer.concat(this.queue);
        const upTo = this.queueLastSeq;
        this.queue = [];
        try {
          let off = 0;
          while (off < batch.length) {
            const { bytesWritten } = await this.fh.write(batch, off, batch.length - off, this.writePos + off);
            off += bytesWritten;
          }
          await this.fh.datasync();
        } catch (e) {
          this.failed = e as Error;
          for (const w of this.waiters.splice(0)) w.reject(this.failed);
          this.log(`state: log write failed: ${(e as Error).message}`);
          return;
        }
        this.writePos += batch.length;
        this.stats.bytes = this.writePos;
        this.stats.syncs++;
        this.durableSeq = upTo;
        let n = 0;
        while (n < this.waiters.length && this.waiters[n]!.seq <= upTo) n++;
        for (const w of this.waiters.splice(0, n)) w.resolve();
        if (this.compactBytes > 0 && this.writePos >= this.compactBytes && !this.compacting)
          await this.rotate();
      }
    } finally {
      this.flushing = false;
      for (const f of this.idle.splice(0)) f();
    }
  }

  /** Switch to a new log generation and write a snapshot of everything in the background. */
  private async rotate(): Promise<void> {
    this.compacting = true;
    const old = this.gen;
    const g = old + 1;
    const fh = await open(join(this.dir, walName(g)), "w+", PRIVATE_FILE);
    await fh.write(WAL_MAGIC, 0, WAL_MAGIC.length, 0);
    await fh.sync();
    fsyncDir(this.dir);
    await this.fh.close();
    this.fh = fh;
    this.gen = g;
    this.writePos = WAL_MAGIC.length;
    this.stats.generation = g;
    // Taken now, from memory: it includes the records still queued, which also go into the
    // new log; replaying them over the snapshot is harmless (last record wins).
    // The states are immutable arrays (a put replaces, never edits), so the snapshot holds
    // references to them and frames them chunk by chunk as it writes: no second copy of every
    // state in memory while the snapshot is written.
    void this.writeSnapshot(g, old, [...this.enc]);
  }

  private async writeSnapshot(g: number, old: number, states: Array<[number, StoredState]>): Promise<void> {
    const tmp = join(this.dir, `${snapName(g)}.tmp`);
    try {
      const fh = await open(tmp, "w", PRIVATE_FILE);
      try {
        await fh.write(SNAP_MAGIC);
        let chunk: Buffer[] = [];
        let bytes = 0;
        for (const [i, st] of states) {
          const rec = frameRecord(i, unpack(st));
          chunk.push(rec);
          bytes += rec.length;
          if (bytes >= SNAP_CHUNK) {
            await fh.write(Buffer.concat(chunk, bytes));
            chunk = [];
            bytes = 0;
          }
        }
        if (bytes) await fh.write(Buffer.concat(chunk, bytes));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, join(this.dir, snapName(g)));
      fsyncDir(this.dir);
      for (const f of [walName(old), snapName(old)]) {
        try {
          unlinkSync(join(this.dir, f));
        } catch {
          // not there (first snapshot has no predecessor)
        }
      }
      fsyncDir(this.dir);
      this.stats.compactions++;
      this.log(`state: compacted ${states.length} devices into ${snapName(g)}`);
    } catch (e) {
      this.log(`state: snapshot ${snapName(g)} failed (${(e as Error).message}); logs kept`);
    } finally {
      this.compacting = false;
    }
  }

  /** Force a compaction now (tests, clean shutdown). Resolves when the snapshot is durable. */
  async compact(): Promise<void> {
    await this.drain();
    if (this.compacting) return;
    this.flushing = true;
    try {
      await this.rotate();
    } finally {
      this.flushing = false;
      if (this.queue.length && !this.scheduled) {
        this.scheduled = true;
        setImmediate(() => void this.flush());
      }
    }
    while (this.compacting) await new Promise((r) => setTimeout(r, 5));
  }

  /** Wait until everything put so far is durable. */
  async drain(): Promise<void> {
    if (this.seq > 0) await this.durable(this.seq);
    while (this.flushing) await new Promise<void>((r) => this.idle.push(r));
  }

  async close(): Promise<void> {
    await this.drain();
    while (this.compacting) await new Promise((r) => setTimeout(r, 5));
    await this.fh.close();
  }
}
