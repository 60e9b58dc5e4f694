/**
 * The device farm: N emulated devices of one model behind the station protocol. Devices are
 * virtual: a device's ID, PUF, chip key and vendor certificate derive from the farm seed and
 * its index, and only the devices provisioning changed have a stored state (StateStore), so a
 * farm of a million devices costs memory only for what was written to it.
 *
 * With `workers: 0` each request is handled synchronously by the device agent
 * (firmware/agent.ts) in this thread. With workers (pool.ts), every device operation runs in the
 * worker thread of its device (devices sharded by index), on the state as the log holds it
 * (encoded), and hands back the next state encoded; this thread keeps the network, the device
 * states, the log, and the order of requests per device: an operation starts only when the
 * previous one for the same device has finished (different devices run in parallel), and reads
 * the state that one left. Either way a changed state goes to the write-ahead log and the answer
 * waits until it, and any earlier change to the same device, is durable. Batches answer once,
 * with one result per device, in order. Fault knobs make some devices misbehave:
 *   clones  an existing ID without its PUF or chip key: key reconstruction and injection fail
 *   noisy   PUF reads at a bit error rate beyond what the fuzzy extractor corrects
 *   drop    the operation runs, then the connection is closed instead of answered
 *   hang    the operation runs, then no answer is ever sent (in a batch: TIMEOUT for the item)
 * drop and hang take an optional count (`id:3`): misbehave on the first 3 requests only.
 *
 * Every device request must say `protocol: 2` (messages.ts PROTOCOL): a station of version 1
 * sends unsigned commands, which closed devices now refuse, so it is told to upgrade instead.
 * A signed command to a closed device is verified where the device's keys are (its worker).
 */
import { createHash } from "node:crypto";
import { FleetError, invalid } from "../../core/errors";
import type { CborMap, Value } from "../../core/station/cbor";
import { isMap } from "../../core/station/cbor";
import { Op, StationError, Status } from "../../core/station/frame";
import { deviceId, indexOf } from "../../core/station/ids";
import {
  BATCH_MAX,
  CONNECT_SESSIONS_MAX,
  type ConnectRequest,
  checkProtocol,
  DEVICE_OPS,
  type DeviceOpName,
  deviceOpByCode,
  type FarmStats,
  PROTOCOL,
  parseConnectRequest,
} from "../../core/station/messages";
import {
  type AgentCounters,
  type AgentOptions,
  DeviceAgent,
  type DeviceRef,
  type Outcome,
  runDeviceOp,
} from "../firmware/agent";
import type { CaCacheStats } from "../firmware/chain";
import { type ConnectJob, connectDevices, Tally } from "../firmware/connect";
import { lifecycleOf } from "../firmware/lifecycle";
import { blankState, type DeviceState } from "../firmware/state";
import type { SiliconVendor } from "../injection/vendor";
import { errorReply, type Reply, type Service } from "../protocol/server";
import { WorkerPool } from "./pool";
import type { StateStore } from "./store";
import { addCounts, asBuffers, type JobDevice, runJobs, type WorkerJob } from "./worker";

export interface FaultSpec {
  id: string;
  /** misbehave this many times, then behave; Infinity = always */
  times: number;
}

/** Parse "id,id:3,..." into fault specs. */
export function parseFaults(list: string | undefined, field: string): FaultSpec[] {
  if (!list) return [];
  return list
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const m = /^([^:]+)(?::(\d+))?$/.exec(s);
      if (!m) throw invalid(field, s, "a device ID, optionally followed by :count");
      return { id: m[1]!, times: m[2] === undefined ? Number.POSITIVE_INFINITY : Number(m[2]) };
    });
}

export interface FarmOptions extends Omit<AgentOptions, "model" | "seed" | "vendor"> {
  count: number;
  model: string;
  seed: Buffer;
  vendor: SiliconVendor;
  store: StateStore;
  clones?: string[];
  noisy?: string[];
  drop?: FaultSpec[];
  hang?: FaultSpec[];
  /** how long a batch waits for a silent device before reporting TIMEOUT (default 2000 ms) */
  deviceTimeoutMs?: number;
  /**
   * MQTT sessions (CONNECT) open at once over the whole farm, all requests and connections
   * together (default CONNECT_SESSIONS_MAX); a CONNECT that would pass it is answered BUSY
   */
  connectSessionsMax?: number;
  /** replaces the agent (tests) */
  agent?: DeviceAgent;
  /**
   * worker threads for the device-side cryptography (default 0: all in this thread). Needs the
   * default PUF, clock and CA cache (functions do not cross threads).
   */
  workers?: number;
  /** where worker crashes are reported (default stderr) */
  log?: (line: string) => void;
}

const BLANK: DeviceState = blankState();

type Fault = "drop" | "hang" | undefined;

export class Farm implements Service {
  readonly agent: DeviceAgent;
  /** the worker threads, if any */
  readonly pool?: WorkerPool;
  /** devices with an operation running (workers only): the waiters behind it, in order */
  private readonly busy = new Map<number, Array<() => void>>();
  private readonly clones: Set<number>;
  private readonly noisy: Set<number>;
  private readonly faults = new Map<number, { kind: "drop" | "hang"; left: number }>();
  private readonly started = Date.now();
  private requests = 0;
  /** CONNECT sessions the requests in progress may have open at once */
  private sessionBudget = 0;
  readonly farmId: string;

  constructor(private readonly o: FarmOptions) {
    const workers = o.workers ?? 0;
    if (!Number.isInteger(workers) || workers < 0 || workers > MAX_WORKERS)
      throw invalid("workers", workers, `an integer in 0..${MAX_WORKERS}`);
    if (workers > 0 && (o.agent || o.puf || o.clock || o.caCache))
      throw invalid(
        "workers",
        workers,
        "0 with a custom agent, PUF, clock or CA cache (they cannot cross threads)",
      );
    this.agent =
      o.agent ??
      new DeviceAgent({
        ...o,
        seed: o.seed,
        model: o.model,
        vendor: o.vendor,
        // with workers, device keys live in the workers only
        keyCache: workers > 0 ? 0 : o.keyCache,
      });
    if (workers > 0) {
      const keyCache = o.keyCache ?? 4096;
      this.pool = new WorkerPool(
        workers,
        {
          seed: o.seed,
          model: o.model,
          vendorCa: o.vendor.certificate,
          // the farm's "keys in RAM", shared out over the shards
          keyCache: Math.ceil(keyCache / workers),
          cells: o.cells,
          noisyBer: o.noisyBer,
          conditions: o.conditions,
        },
        (c, cache) => this.addCounters(c, cache),
        o.log ?? ((l: string) => process.stderr.write(`${l}\n`)),
      );
    }
    const idx = (ids: string[] | undefined, field: string) =>
      new Set(
        (ids ?? []).map((id) => {
          const i = indexOf(o.model, o.count, id);
          if (i === undefined)
            throw invalid(field, id, `a device ID of this farm (${deviceId(o.model, 0)}..)`);
          return i;
        }),
      );
    this.clones = idx(o.clones, "clones");
    this.noisy = idx(o.noisy, "noisy");
    for (const [kind, specs] of [
      ["drop", o.drop],
      ["hang", o.hang],
    ] as const) {
      for (const f of specs ?? []) {
        const i = indexOf(o.model, o.count, f.id);
        if (i === undefined) throw invalid(kind, f.id, "a device ID of this farm");
        this.faults.set(i, { kind, left: f.times });
      }
    }
    this.farmId = createHash("sha256").update("fleetguard/farm").update(o.seed).digest("hex").slice(0, 16);
  }

  /**
   * With workers, this thread's agent runs no device operation: its counters and its CA cache's
   * stats are the sums of the workers'.
   */
  private addCounters(c: AgentCounters, cache?: CaCacheStats): void {
    addCounts(this.agent.counters, c);
    if (cache) addCounts(this.agent.caCache.stats, cache);
  }

  /**
   * Activate the PUF of every blank device before the farm serves (DeviceAgent.activate: the
   * helper data a silicon vendor makes at wafer sort), on the worker threads, in chunks; each
   * new state goes through the write-ahead log and is durable before this resolves. Devices with
   * a stored state are skipped, so a farm killed half-way finishes the rest when started again.
   * `progress` is called after each chunk with the count done so far.
   */
  async activate(progress?: (done: number, todo: number) => void): Promise<{ activated: number }> {
    const todo: number[] = [];
    for (let i = 0; i < this.o.count; i++) if (!this.o.store.states.has(i)) todo.push(i);
    const CHUNK = 2048;
    let activated = 0;
    let last = 0;
    for (let at = 0; at < todo.length; at += CHUNK) {
      const chunk = todo.slice(at, at + CHUNK);
      const answers = await Promise.all(
        chunk.map((i) => {
          // the same job on a worker or, without workers, in this thread (worker.ts runJobs)
          const job: WorkerJob = { kind: "activate", ...this.jobOf(deviceId(this.o.model, i), i) };
          return this.pool ? this.pool.submit(job) : runJobs(this.agent, [job])[0]!;
        }),
      );
      answers.forEach((a, k) => {
        if (!a.ok)
          throw new FleetError(
            "INTERNAL",
            `activate: device ${deviceId(this.o.model, chunk[k]!)}: ${a.message}`,
          );
        if (a.next) {
          last = this.o.store.putEncoded(chunk[k]!, a.next);
          activated++;
        }
      });
      progress?.(Math.min(at + CHUNK, todo.length), todo.length);
    }
    if (last) await this.o.store.durable(last);
    return { activated };
  }

  /** Stop the worker threads (pending jobs are answered INTERNAL). */
  async close(): Promise<void> {
    await this.pool?.close();
  }

  knows(op: number): boolean {
    return op === Op.PING || op === Op.STATS || op === Op.CONNECT || deviceOpByCode(op) !== undefined;
  }

  stats(): FarmStats {
    const c = this.agent.counters;
    const s = this.o.store.stats;
    const cpu = process.cpuUsage();
    return {
      requests: this.requests,
      reconstructions: c.reconstructions,
      reconstructionFailures: c.reconstructionFailures,
      enrollments: c.enrollments,
      changedDevices: this.o.store.states.size,
      walRecords: s.records,
      walBytes: s.bytes,
      walSyncs: s.syncs,
      uptimeMs: Date.now() - this.started,
      cpuUserMs: Math.round(cpu.user / 1000),
      cpuSystemMs: Math.round(cpu.system / 1000),
    };
  }

  handle(op: number, batch: boolean, body: CborMap): Reply | Promise<Reply> {
    this.requests++;
    if (op === Op.PING)
      return {
        kind: "ok",
        body: {
          protocol: PROTOCOL,
          model: this.o.model,
          count: this.o.count,
          farmId: this.farmId,
          vendorCa: this.o.vendor.certificate,
        },
      };
    if (op === Op.STATS) return { kind: "ok", body: this.stats() as unknown as CborMap };
    if (op === Op.CONNECT) return this.connect(body);
    const name = deviceOpByCode(op)!;
    return batch ? this.batch(name, body) : this.single(name, body, body.protocol);
  }

  /**
   * Start one device operation: the reply (with workers, a promise of it), the fault to apply
   * if the reply is not an error, and the device index. Without workers it runs synchronously.
   */
  private run(
    name: DeviceOpName,
    m: Value | undefined,
    protocol: Value | undefined,
  ): { reply: Reply | Promise<Reply>; fault: Fault; index?: number } {
    let index: number | undefined;
    try {
      if (!isMap(m)) throw new StationError(Status.BAD_REQUEST, "item: got a non-map, want a map");
      const req = DEVICE_OPS[name].parseRequest(m) as { device: string };
      // after the fields, so that a malformed request is still told what is wrong with it
      checkProtocol(protocol);
      index = indexOf(this.o.model, this.o.count, req.device);
      if (index === undefined)
        throw new StationError(
          Status.UNKNOWN_DEVICE,
          `device: got ${JSON.stringify(req.device)}, want an ID of this farm, ${deviceId(this.o.model, 0)} .. ${deviceId(this.o.model, this.o.count - 1)}`,
        );
      const fault = this.takeFault(index);
      if (this.pool) return { reply: this.queued(name, index, req), fault, index };
      const out = this.dispatch(name, this.devRef(req.device, index), req);
      if (out.next) this.o.store.put(index, out.next);
      return { reply: { kind: "ok", body: out.result as unknown as CborMap }, fault, index };
    } catch (e) {
      return { reply: errorReply(e), fault: undefined, index };
    }
  }

  private devRef(id: string, index: number): DeviceRef {
    return {
      id,
      index,
      state: this.o.store.get(index) ?? BLANK,
      clone: this.clones.has(index),
      noisy: this.noisy.has(index),
    };
  }

  /** A worker job's device: its stored state as encoded, not decoded and encoded again. */
  private jobOf(id: string, index: number): JobDevice {
    return {
      id,
      index,
      clone: this.clones.has(index),
      noisy: this.noisy.has(index),
      state: this.o.store.getEncoded(index) ?? null,
    };
  }

  /** Workers: run the operation once the device's previous one has finished. */
  private queued(name: DeviceOpName, index: number, req: { device: string }): Promise<Reply> {
    const q = this.busy.get(index);
    if (!q) {
      this.busy.set(index, []);
      return this.exec(name, index, req);
    }
    return new Promise<void>((r) => q.push(r)).then(() => this.exec(name, index, req));
  }

  private release(index: number): void {
    const q = this.busy.get(index);
    const next = q?.shift();
    if (next) next();
    else this.busy.delete(index);
  }

  /**
   * Workers: one operation on a device this call holds, in the device's worker; the state is read
   * now. The worker gets the stored encoded state and hands back the next one encoded: this
   * thread neither decodes nor encodes it.
   */
  private async exec(name: DeviceOpName, index: number, req: { device: string }): Promise<Reply> {
    try {
      const a = await this.pool!.submit({ kind: "op", op: name, req, ...this.jobOf(req.device, index) });
      if (!a.ok) return { kind: "error", status: a.status, message: a.message };
      if (a.next) this.o.store.putEncoded(index, a.next);
      return { kind: "ok", body: asBuffers(a.result) as CborMap };
    } catch (e) {
      return errorReply(e);
    } finally {
      this.release(index);
    }
  }

  private dispatch(name: DeviceOpName, dev: DeviceRef, req: unknown): Outcome<unknown> {
    return runDeviceOp(this.agent, name, dev, req);
  }

  private takeFault(index: number): Fault {
    const f = this.faults.get(index);
    if (!f || f.left <= 0) return undefined;
    f.left--;
    return f.kind;
  }

  private async single(name: DeviceOpName, body: CborMap, protocol: Value | undefined): Promise<Reply> {
    const started = this.run(name, body, protocol);
    const { index } = started;
    const reply = await started.reply;
    if (index !== undefined) await this.o.store.barrier(index);
    if (started.fault && reply.kind !== "error") return { kind: started.fault };
    return reply;
  }

  /**
   * CONNECT (messages.ts): the named or ranged devices connect to an MQTT hub, each with its own
   * key, in the thread that holds that key (its worker, or this thread without workers). The
   * states are read when the request arrives; a session changes no state, so it does not queue
   * behind the device's other operations. Fault knobs (drop, hang) are about the station link
   * and do not apply; a clone or a noisy device cannot reconstruct its key and is refused at
   * stage "key".
   */
  private async connect(body: CborMap): Promise<Reply> {
    const t0 = Date.now();
    try {
      const req = parseConnectRequest(body);
      checkProtocol(body.protocol);
      if (req.model !== undefined && req.model !== this.o.model)
        throw new StationError(
          Status.BAD_REQUEST,
          `model: got ${JSON.stringify(req.model)}, want ${JSON.stringify(this.o.model)} (this farm's)`,
        );
      const tally = new Tally();
      let skipped = 0;
      const targets: DeviceRef[] = [];
      if (req.devices) {
        for (const id of req.devices) {
          const i = indexOf(this.o.model, this.o.count, id);
          if (i === undefined) {
            tally.attempted++;
            tally.refuse(id, "device", "not a device of this farm");
          } else targets.push(this.devRef(id, i));
        }
      } else {
        const first = req.first!;
        const end = first + req.count!;
        if (end > this.o.count)
          throw new StationError(
            Status.BAD_REQUEST,
            `first + count: got ${end}, want at most ${this.o.count} (the farm's devices)`,
          );
        for (let i = first; i < end; i++) {
          const st = this.o.store.get(i);
          if (!st || lifecycleOf(st.otp) !== "closed" || st.chain.length === 0) skipped++;
          else {
            const id = deviceId(this.o.model, i);
            targets.push({ id, index: i, state: st, clone: this.clones.has(i), noisy: this.noisy.has(i) });
          }
        }
      }
      // every request may open up to min(concurrency, devices) sockets: bounded over the farm
      const sessions = Math.min(req.concurrency, targets.length);
      const max = this.o.connectSessionsMax ?? CONNECT_SESSIONS_MAX;
      if (this.sessionBudget + sessions > max)
        throw new StationError(
          Status.BUSY,
          `sessions: got ${this.sessionBudget} open and ${sessions} more asked, want at most ${max} at once (lower the concurrency, or wait)`,
        );
      this.sessionBudget += sessions;
      try {
        await this.connectTargets(req, targets, tally);
      } finally {
        this.sessionBudget -= sessions;
      }
      return { kind: "ok", body: tally.result(skipped, Date.now() - t0) as unknown as CborMap };
    } catch (e) {
      return errorReply(e);
    }
  }

  private async connectTargets(req: ConnectRequest, targets: DeviceRef[], tally: Tally): Promise<void> {
    const job: ConnectJob = {
      hub: req.hub,
      topic: req.topic,
      concurrency: req.concurrency,
      timeoutMs: req.timeoutMs,
      ...(req.clientId ? { clientId: req.clientId } : {}),
      ...(req.holdMs ? { holdMs: req.holdMs } : {}),
    };
    if (!this.pool) {
      await connectDevices(
        targets.map((d) => d.id),
        (k) => this.agent.credentials(targets[k]!),
        job,
        tally,
      );
    } else if (targets.length > 0) {
      const pool = this.pool;
      const shards = new Map<number, DeviceRef[]>();
      for (const d of targets) {
        const s = pool.shardOf(d.index);
        const l = shards.get(s);
        if (l) l.push(d);
        else shards.set(s, [d]);
      }
      const results = await Promise.all(
        [...shards].map(([shard, devs]) =>
          pool.connect(shard, {
            devices: devs.map((d) => this.jobOf(d.id, d.index)),
            // the request's concurrency, shared out in proportion to the shard's devices
            job: {
              ...job,
              concurrency: Math.max(1, Math.floor((job.concurrency * devs.length) / targets.length)),
            },
          }),
        ),
      );
      for (const r of results) tally.add(r);
    }
  }

  private async batch(name: DeviceOpName, body: CborMap): Promise<Reply> {
    const items = body.items;
    if (!Array.isArray(items) || items.length === 0 || items.length > BATCH_MAX)
      return {
        kind: "error",
        status: Status.BAD_REQUEST,
        message: `items: got ${Array.isArray(items) ? items.length : typeof items}, want an array of 1..${BATCH_MAX}`,
      };
    const t = body.deviceTimeoutMs;
    const deviceTimeoutMs =
      typeof t === "number" && t >= 0 && t <= 600_000 ? t : (this.o.deviceTimeoutMs ?? 2_000);
    const started = items.map((item) => this.run(name, item, body.protocol));
    const replies = this.pool
      ? await Promise.all(started.map((s) => s.reply))
      : started.map((s) => s.reply as Reply);
    const results: CborMap[] = [];
    const waits: Promise<void>[] = [];
    let drop = false;
    let hang = false;
    for (let k = 0; k < started.length; k++) {
      const { index } = started[k]!;
      const reply = replies[k]!;
      // as in one thread: a fault applies to an operation that did not fail
      const fault = reply.kind === "error" ? undefined : started[k]!.fault;
      if (index !== undefined) {
        const b = this.o.store.barrier(index);
        if (b) waits.push(b);
      }
      if (fault === "drop") drop = true;
      if (fault === "hang") {
        hang = true;
        results.push({
          status: Status.TIMEOUT,
          message: `device did not answer within ${deviceTimeoutMs} ms`,
        });
      } else if (reply.kind === "ok") results.push({ status: Status.OK, result: reply.body });
      else if (reply.kind === "error") results.push({ status: reply.status, message: reply.message });
    }
    await Promise.all(waits);
    if (drop) return { kind: "drop" };
    if (hang) await new Promise((r) => setTimeout(r, deviceTimeoutMs));
    return { kind: "ok", body: { results } };
  }
}

export const MAX_WORKERS = 64;
