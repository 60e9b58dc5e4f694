/**
 * The farm's worker threads: real devices each have their own CPU, so the emulation spreads
 * the device operations (PUF enrollment and reconstruction, key derivation, ECDSA signatures,
 * INSTALL's chain check, the device state decoded and encoded again) over a pool of
 * worker_threads (worker.ts).
 *
 * Devices are sharded by a hash of their index (not the index modulo the number of workers:
 * a station that takes every 20th device would put them all on one worker), so a device's key
 * is derived, cached and used by one worker and never crosses threads. Jobs submitted during one
 * event-loop turn go to each worker as one message (a batch of 1,024 devices is one message per
 * worker, not 1,024), answered by one message in the same order.
 *
 * A worker that dies (an uncaught error, or killed) answers every job it held with INTERNAL,
 * which the farm logs; the next job for its shard starts a new worker (a power cycle for those
 * devices: their keys are reconstructed on next use). Nothing a dead worker computed was
 * logged, so the device states are as before the jobs.
 */
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { Status } from "../../core/station/frame";
import type { ConnectResult } from "../../core/station/messages";
import type { AgentCounters } from "../firmware/agent";
import type { CaCacheStats } from "../firmware/chain";
import type { ConnectWork, FromWorker, ToWorker, WorkerAnswer, WorkerJob, WorkerSetup } from "./worker";

// not worker.js: a resolver that prefers .js to .ts would load the entry for "./worker"
const ENTRY = path.join(__dirname, "worker-entry.js");

interface Slot {
  worker?: Worker;
  /** jobs waiting for the end of the current turn */
  outbox: WorkerJob[];
  outResolvers: Array<(a: WorkerAnswer) => void>;
  /** messages sent, by id, with the resolvers of their jobs in order */
  pending: Map<number, Array<(a: WorkerAnswer) => void>>;
  /** CONNECT work sent, by id: its device count and resolver */
  connects: Map<number, { devices: number; resolve: (r: ConnectResult) => void }>;
}

export interface PoolStats {
  /** messages posted to workers */
  messages: number;
  jobs: number;
  /** workers that died (not counting close) */
  crashes: number;
  /** workers started, restarts included */
  started: number;
}

/** young-generation limit of a worker's V8 heap, MB (issue 13: the farm under 1 GiB at 111,000 devices) */
const WORKER_YOUNG_MB = 8;

const DIED: WorkerAnswer = { ok: false, status: Status.INTERNAL, message: "internal error" };

export class WorkerPool {
  private readonly slots: Slot[];
  private nextId = 1;
  private scheduled = false;
  private closed = false;
  readonly stats: PoolStats = { messages: 0, jobs: 0, crashes: 0, started: 0 };

  constructor(
    readonly size: number,
    private readonly setup: WorkerSetup,
    /** what a worker's message added to its agent's counters and CA cache stats */
    private readonly onCounters: (c: AgentCounters, cache?: CaCacheStats) => void,
    private readonly log: (line: string) => void,
  ) {
    this.slots = Array.from({ length: size }, () => ({
      outbox: [],
      outResolvers: [],
      pending: new Map(),
      connects: new Map(),
    }));
  }

  /** The worker (shard) that owns device `index`. */
  shardOf(index: number): number {
    return fmix32(index) % this.size;
  }

  /** Queue a job for the worker of its device; resolves with its answer (never rejects). */
  submit(job: WorkerJob): Promise<WorkerAnswer> {
    if (this.closed) return Promise.resolve(DIED);
    const slot = this.slots[this.shardOf(job.index)]!;
    return new Promise((resolve) => {
      slot.outbox.push(job);
      slot.outResolvers.push(resolve);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /**
   * CONNECT for devices of one shard: the worker runs their MQTT sessions with the keys it holds
   * and answers with a tally (never rejects: a worker that dies refuses the devices it held).
   */
  connect(shard: number, work: ConnectWork): Promise<ConnectResult> {
    if (this.closed) return Promise.resolve(died(work.devices.length));
    const slot = this.slots[shard]!;
    const id = this.nextId++;
    return new Promise((resolve) => {
      slot.connects.set(id, { devices: work.devices.length, resolve });
      const msg: ToWorker = { type: "connect", id, work };
      this.stats.messages++;
      this.workerFor(shard).postMessage(msg);
    });
  }

  /** Jobs sent to workers and not answered yet. */
  get inFlight(): number {
    let n = 0;
    for (const s of this.slots) for (const p of s.pending.values()) n += p.length;
    return n;
  }

  /** The running worker of a shard (tests: to kill it). */
  workerOf(shard: number): Worker | undefined {
    return this.slots[shard]?.worker;
  }

  /**
   * Make a shard's worker die of an uncaught error when its next job list arrives, with the
   * jobs unanswered (tests: the crash path). Starts the worker if it is not running.
   */
  crash(shard: number): void {
    const msg: ToWorker = { type: "crash" };
    this.workerFor(shard).postMessage(msg);
  }

  private flush(): void {
    this.scheduled = false;
    if (this.closed) return;
    this.slots.forEach((slot, shard) => {
      if (slot.outbox.length === 0) return;
      const id = this.nextId++;
      const msg: ToWorker = { type: "jobs", id, jobs: slot.outbox };
      slot.pending.set(id, slot.outResolvers);
      slot.outbox = [];
      slot.outResolvers = [];
      this.stats.messages++;
      this.stats.jobs += msg.jobs.length;
      this.workerFor(shard).postMessage(msg);
    });
  }

  private workerFor(shard: number): Worker {
    const slot = this.slots[shard]!;
    if (slot.worker) return slot.worker;
    const w = new Worker(ENTRY, {
      workerData: { fleetFarmWorker: this.setup },
      // a small young generation: the default one (~100 MB per worker here) is most of a
      // worker's memory, and the jobs' garbage is short-lived (measured: no CPU cost)
      resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_MB },
    });
    this.stats.started++;
    slot.worker = w;
    w.on("message", (m: FromWorker) => {
      if (m.type === "connected") {
        const c = slot.connects.get(m.id);
        slot.connects.delete(m.id);
        this.onCounters(m.counters);
        c?.resolve(m.result);
        return;
      }
      const resolvers = slot.pending.get(m.id);
      if (!resolvers) return;
      slot.pending.delete(m.id);
      this.onCounters(m.counters, m.cache);
      for (let i = 0; i < m.answers.length; i++) resolvers[i]!(m.answers[i]!);
    });
    let why = "";
    w.on("error", (e) => {
      why = e instanceof Error ? e.message : String(e);
    });
    w.on("exit", (code) => {
      if (slot.worker === w) slot.worker = undefined;
      const lost = [...slot.pending.values()];
      slot.pending.clear();
      const n = lost.reduce((a, r) => a + r.length, 0);
      if (!this.closed) {
        this.stats.crashes++;
        this.log(
          `farm worker ${shard} died (exit code ${code}${why ? `: ${why}` : ""}); ${n} job(s) answered INTERNAL`,
        );
      }
      for (const rs of lost) for (const r of rs) r(DIED);
      for (const c of slot.connects.values()) c.resolve(died(c.devices));
      slot.connects.clear();
      // jobs queued meanwhile go to a new worker at the next flush
      if (!this.closed && slot.outbox.length && !this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
    return w;
  }

  /** Stop every worker; jobs still pending are answered INTERNAL. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const slot of this.slots) {
      for (const c of slot.connects.values()) c.resolve(died(c.devices));
      slot.connects.clear();
      for (const r of slot.outResolvers) r(DIED);
      slot.outbox = [];
      slot.outResolvers = [];
    }
    await Promise.all(this.slots.map((s) => s.worker?.terminate()));
  }
}

/** The tally of CONNECT work a dead worker held: every device refused, none listed by name. */
function died(devices: number): ConnectResult {
  return {
    attempted: devices,
    connected: 0,
    refused: devices,
    skipped: 0,
    reasons: [{ stage: "device", reason: "farm worker died (device power-cycled)", count: devices }],
    failures: [],
    elapsedMs: 0,
  };
}

/** MurmurHash3's 32-bit finalizer: every input bit affects every output bit. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
