/**
 * Body of one farm worker thread (devices/farm/pool.ts): every device operation of the devices
 * of one shard (pool.ts shardOf: a hash of the device index). It runs the device agent
 * (devices/firmware/agent.ts) with its own "keys in RAM" cache, so a device's private key is
 * derived, kept and used in this thread only and never crosses to another one.
 *
 * The farm's main thread owns the device states, the write-ahead log and the ordering of
 * requests per device: it sends a job with the device's current state (CBOR, as the log holds
 * it) and gets back the result and the next state, if any, to log. Jobs come in lists (one
 * message per batch chunk and shard) and are answered in one message, in order.
 *
 * Protocol: parent -> {type: "jobs", id, jobs} | {type: "crash"} (tests: the next job list
 * raises an uncaught error instead of being answered, as a bug in the device code would);
 * worker -> {type: "done", id, answers, counters, cache} (counters and the CA cache's stats: what
 * this list added).
 */
import { parentPort, workerData } from "node:worker_threads";
import type { ConnectResult, DeviceOpName } from "../../core/station/messages";
import { type AgentCounters, DeviceAgent, type DeviceRef, runDeviceOp } from "../firmware/agent";
import type { CaCacheStats } from "../firmware/chain";
import { type ConnectJob, connectDevices } from "../firmware/connect";
import { blankState, decodeState, encodeState } from "../firmware/state";
import { SiliconVendor } from "../injection/vendor";
import { errorReply } from "../protocol/server";
import type { PufConditions } from "../puf";

/** What every worker of a farm is started with (structured-clonable). */
export interface WorkerSetup {
  seed: Uint8Array;
  model: string;
  vendorCa: Uint8Array;
  /** this worker's share of the farm's key cache */
  keyCache: number;
  cells?: number;
  noisyBer?: number;
  conditions?: PufConditions;
}

export interface JobDevice {
  id: string;
  index: number;
  clone: boolean;
  noisy: boolean;
  /** encodeState() of the device's state; null for a device never written to */
  state: Uint8Array | null;
}

export type WorkerJob =
  | (JobDevice & { kind: "op"; op: DeviceOpName; req: unknown })
  /** the PUF activated before the line (DeviceAgent.activate: helper data, no key) */
  | (JobDevice & { kind: "activate" });

export type WorkerAnswer =
  | { ok: true; result: unknown; next?: Uint8Array }
  | { ok: false; status: number; message: string };

/** CONNECT for the devices of one shard (devices/firmware/connect.ts runs their sessions here). */
export interface ConnectWork {
  devices: JobDevice[];
  job: ConnectJob;
}

export type ToWorker =
  | { type: "jobs"; id: number; jobs: WorkerJob[] }
  | { type: "connect"; id: number; work: ConnectWork }
  | { type: "crash" };
export type FromWorker =
  | { type: "done"; id: number; answers: WorkerAnswer[]; counters: AgentCounters; cache: CaCacheStats }
  | { type: "connected"; id: number; result: ConnectResult; counters: AgentCounters };

/**
 * Byte strings arrive as Uint8Array (structured clone drops the Buffer prototype); the agent
 * was written against decoded CBOR, which gives Buffers. Views, no copies.
 */
export function asBuffers(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.length);
  if (Array.isArray(v)) return v.map(asBuffers);
  if (v !== null && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = asBuffers(x);
    return out;
  }
  return v;
}

const refOf = (job: JobDevice): DeviceRef => ({
  id: job.id,
  index: job.index,
  state: job.state ? decodeState(job.state) : blankState(),
  clone: job.clone,
  noisy: job.noisy,
});

/** CONNECT's sessions for `work.devices` on `agent` (in a worker: the agent that holds their keys). */
export async function runConnect(
  agent: DeviceAgent,
  work: ConnectWork,
): Promise<{ result: ConnectResult; counters: AgentCounters }> {
  const t0 = Date.now();
  const devs = work.devices;
  // the counters of the key reconstructions done here (other jobs run in between)
  const counters: AgentCounters = { reconstructions: 0, reconstructionFailures: 0, enrollments: 0 };
  const tally = await connectDevices(
    devs.map((d) => d.id),
    (i) => {
      const c = agent.counters;
      const r0 = c.reconstructions;
      const f0 = c.reconstructionFailures;
      try {
        return agent.credentials(refOf(devs[i]!));
      } finally {
        counters.reconstructions += c.reconstructions - r0;
        counters.reconstructionFailures += c.reconstructionFailures - f0;
      }
    },
    work.job,
  );
  return { result: tally.result(0, Date.now() - t0), counters };
}

/** Run a list of jobs on `agent`, in order. Exported for the in-process tests of the split. */
export function runJobs(agent: DeviceAgent, jobs: WorkerJob[]): WorkerAnswer[] {
  return jobs.map((job) => {
    try {
      const dev = refOf(job);
      if (job.kind === "activate") {
        const a = agent.activate(dev);
        return { ok: true, result: a.result, next: a.next ? encodeState(a.next) : undefined };
      }
      const out = runDeviceOp(agent, job.op, dev, asBuffers(job.req));
      return { ok: true, result: out.result, next: out.next ? encodeState(out.next) : undefined };
    } catch (e) {
      const r = errorReply(e);
      return r.kind === "error"
        ? { ok: false, status: r.status, message: r.message }
        : { ok: false, status: 13, message: "internal error" };
    }
  });
}

/** What a record of counts (agent counters, CA cache stats) added since the copy `then`. */
function countsSince<T extends Record<keyof T, number>>(now: T, then: T): T {
  const out = { ...now };
  for (const k of Object.keys(now) as (keyof T)[]) out[k] = (now[k] - then[k]) as T[keyof T];
  return out;
}

/** Add the counts `more` into `into` (the farm's sums of its workers' counts). */
export function addCounts<T extends Record<keyof T, number>>(into: T, more: T): void {
  for (const k of Object.keys(more) as (keyof T)[]) into[k] = (into[k] + more[k]) as T[keyof T];
}

export function workerAgent(s: WorkerSetup): DeviceAgent {
  const seed = Buffer.from(s.seed);
  return new DeviceAgent({
    seed,
    model: s.model,
    vendor: new SiliconVendor(seed, s.vendorCa),
    keyCache: s.keyCache,
    cells: s.cells,
    noisyBer: s.noisyBer,
    conditions: s.conditions,
  });
}

const port = parentPort;
if (port && (workerData as { fleetFarmWorker?: WorkerSetup })?.fleetFarmWorker) {
  const agent = workerAgent((workerData as { fleetFarmWorker: WorkerSetup }).fleetFarmWorker);
  let crashNext = false;
  port.on("message", (m: ToWorker) => {
    if (m.type === "crash") {
      crashNext = true;
      return;
    }
    if (m.type === "connect") {
      void runConnect(agent, m.work).then(({ result, counters }) => {
        const done: FromWorker = { type: "connected", id: m.id, result, counters };
        port.postMessage(done);
      });
      return;
    }
    // uncaught: the worker dies with this list unanswered
    if (crashNext) throw new Error("farm worker: crash requested");
    const c0 = { ...agent.counters };
    const k0 = { ...agent.caCache.stats };
    const answers = runJobs(agent, m.jobs);
    const done: FromWorker = {
      type: "done",
      id: m.id,
      answers,
      counters: countsSince(agent.counters, c0),
      cache: countsSince(agent.caCache.stats, k0),
    };
    port.postMessage(done);
  });
}
