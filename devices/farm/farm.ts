/**
 * The device farm: N emulated devices of one model behind the station protocol. Devices are
 * virtual: a device's ID, PUF, chip key and vendor certificate derive from the farm seed and
 * its index, and only the devices provisioning changed have a stored state (StateStore), so a
 * farm of a million devices costs memory only for what was written to it.
 *
 * Each request is handled synchronously by the device agent (firmware/agent.ts); a changed
 * state goes to the write-ahead log and the answer waits until it, and any earlier change to
 * the same device, is durable. Batches run their items in order and answer once, with one
 * result per device. Fault knobs make some devices misbehave:
 *   clones  an existing ID without its PUF or chip key: key reconstruction and injection fail
 *   noisy   PUF reads at a bit error rate beyond what the fuzzy extractor corrects
 *   drop    the operation runs, then the connection is closed instead of answered
 *   hang    the operation runs, then no answer is ever sent (in a batch: TIMEOUT for the item)
 * drop and hang take an optional count (`id:3`): misbehave on the first 3 requests only.
 */
import { createHash } from "node:crypto";
import { invalid } from "../../core/errors";
import type { CborMap, Value } from "../../core/station/cbor";
import { isMap } from "../../core/station/cbor";
import { Op, StationError, Status } from "../../core/station/frame";
import {
  BATCH_MAX,
  DEVICE_OPS,
  type DeviceOpName,
  deviceOpByCode,
  type FarmStats,
} from "../../core/station/messages";
import { type AgentOptions, DeviceAgent, type DeviceRef, type Outcome } from "../firmware/agent";
import { blankState, type DeviceState } from "../firmware/state";
import type { SiliconVendor } from "../injection/vendor";
import { errorReply, type Reply, type Service } from "../protocol/server";
import { deviceId, indexOf } from "./ids";
import type { StateStore } from "./store";

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
  /** replaces the agent (tests) */
  agent?: DeviceAgent;
}

const BLANK: DeviceState = blankState();

type Fault = "drop" | "hang" | undefined;

export class Farm implements Service {
  readonly agent: DeviceAgent;
  private readonly clones: Set<number>;
  private readonly noisy: Set<number>;
  private readonly faults = new Map<number, { kind: "drop" | "hang"; left: number }>();
  private readonly started = Date.now();
  private requests = 0;
  readonly farmId: string;

  constructor(private readonly o: FarmOptions) {
    this.agent =
      o.agent ??
      new DeviceAgent({
        ...o,
        seed: o.seed,
        model: o.model,
        vendor: o.vendor,
      });
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

  knows(op: number): boolean {
    return op === Op.PING || op === Op.STATS || deviceOpByCode(op) !== undefined;
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
          protocol: 1,
          model: this.o.model,
          count: this.o.count,
          farmId: this.farmId,
          vendorCa: this.o.vendor.certificate,
        },
      };
    if (op === Op.STATS) return { kind: "ok", body: this.stats() as unknown as CborMap };
    const name = deviceOpByCode(op)!;
    return batch ? this.batch(name, body) : this.single(name, body);
  }

  /** Run one device operation synchronously: the outcome, the fault to apply, the log seq. */
  private run(name: DeviceOpName, m: Value | undefined): { reply: Reply; fault: Fault; index?: number } {
    let index: number | undefined;
    try {
      if (!isMap(m)) throw new StationError(Status.BAD_REQUEST, "item: got a non-map, want a map");
      const req = DEVICE_OPS[name].parseRequest(m) as { device: string };
      index = indexOf(this.o.model, this.o.count, req.device);
      if (index === undefined)
        throw new StationError(
          Status.UNKNOWN_DEVICE,
          `device: got ${JSON.stringify(req.device)}, want an ID of this farm, ${deviceId(this.o.model, 0)} .. ${deviceId(this.o.model, this.o.count - 1)}`,
        );
      const fault = this.takeFault(index);
      const dev: DeviceRef = {
        id: req.device,
        index,
        state: this.o.store.get(index) ?? BLANK,
        clone: this.clones.has(index),
        noisy: this.noisy.has(index),
      };
      const out = this.dispatch(name, dev, req);
      if (out.next) this.o.store.put(index, out.next);
      return { reply: { kind: "ok", body: out.result as unknown as CborMap }, fault, index };
    } catch (e) {
      return { reply: errorReply(e), fault: undefined, index };
    }
  }

  private dispatch(name: DeviceOpName, dev: DeviceRef, req: unknown): Outcome<unknown> {
    const a = this.agent;
    switch (name) {
      case "IDENTIFY":
        return a.identify(dev, req as never);
      case "ATTEST":
        return a.attest(dev, req as never);
      case "CSR":
        return a.csr(dev, req as never);
      case "SET_TRUST":
        return a.setTrust(dev, req as never);
      case "INSTALL":
        return a.install(dev, req as never);
      case "ROTATE":
        return a.rotate(dev, req as never);
      case "STATUS":
        return a.status(dev);
      case "DECOMMISSION":
        return a.decommission(dev, req as never);
      case "INJECT":
        return a.inject(dev, req as never);
    }
  }

  private takeFault(index: number): Fault {
    const f = this.faults.get(index);
    if (!f || f.left <= 0) return undefined;
    f.left--;
    return f.kind;
  }

  private async single(name: DeviceOpName, body: CborMap): Promise<Reply> {
    const { reply, fault, index } = this.run(name, body);
    if (index !== undefined) await this.o.store.barrier(index);
    if (fault) return { kind: fault };
    return reply;
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
    const results: CborMap[] = [];
    const waits: Promise<void>[] = [];
    let drop = false;
    let hang = false;
    for (const item of items) {
      const { reply, fault, index } = this.run(name, item);
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
