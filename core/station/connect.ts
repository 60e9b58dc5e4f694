/**
 * Make a set of farm devices connect to an MQTT hub over mutual TLS (the station protocol's
 * CONNECT, messages.ts) and add up what they report: how many connected, and why the others were
 * refused. `fleet devices connect`, the tests and bench/hub-connect.ts call this.
 *
 * A large set goes as several CONNECT requests of at most `chunkSize` devices (four in flight, so
 * the hub never sees the storm drain between chunks), which keeps every answer small and gives
 * progress after each; the concurrency asked for is shared between the requests in flight. The
 * devices' keys stay in the farm: only IDs, the hub's address and its CA certificate are sent.
 */
import { invalid } from "../errors";
import type { StationClient } from "./client";
import {
  CONNECT_CONCURRENCY_MAX,
  CONNECT_HOLD_MAX,
  CONNECT_MAX,
  CONNECT_TIMEOUT_MAX,
  type ConnectReason,
  type ConnectRequest,
  type ConnectResult,
  type ConnectStage,
  checkTopic,
  DEFAULT_TOPIC,
  type HubEndpoint,
} from "./messages";

export interface ConnectOptions {
  hub: HubEndpoint;
  /** explicit device IDs; otherwise the enrolled devices of the range first..first+count-1 */
  devices?: string[];
  /** the farm's model, checked when given */
  model?: string;
  /** default 0 */
  first?: number;
  /** default: up to the farm's last device */
  count?: number;
  /** default DEFAULT_TOPIC, "devices/{deviceId}/telemetry" */
  topic?: string;
  /** sessions open at once over the whole set (default 64) */
  concurrency?: number;
  /** per device session, ms (default 10,000) */
  deviceTimeoutMs?: number;
  /** devices per CONNECT request (default 512, at most CONNECT_MAX) */
  chunkSize?: number;
  /** refusals kept by device (default 100); the rest are counted in `reasons` */
  maxRefusals?: number;
  /** the MQTT client ID with `{deviceId}` in it (default the device ID): to test a hub's client ID rule */
  clientId?: string;
  /** keep each session open this long after its PUBACK (ms), as a device that stays online */
  holdMs?: number;
  onProgress?: (p: ConnectProgress) => void;
}

export interface ConnectProgress {
  /** devices of the set (range: devices in the range, enrolled or not) */
  total: number;
  done: number;
  connected: number;
  refused: number;
  skipped: number;
  elapsedMs: number;
}

export interface Refusal {
  deviceId: string;
  stage: ConnectStage;
  reason: string;
}

export interface ConnectSummary {
  /** devices that tried */
  attempted: number;
  connected: number;
  /** the first `maxRefusals` refusals, by device */
  refused: Refusal[];
  refusedCount: number;
  /** devices of a range that are not enrolled (not attempted) */
  skipped: number;
  /** refusals by stage and reason, most frequent first */
  reasons: ConnectReason[];
  elapsedMs: number;
  /** held sessions (holdMs) that the hub closed before the device did */
  closedByHub: number;
}

/** CONNECT requests in flight: enough that one finishing (its last sessions) leaves the hub busy */
const LANES = 4;

const posInt = (v: unknown, field: string, min: number, max: number): number => {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
    throw invalid(field, v, `an integer in ${min}..${max}`);
  return v;
};

export async function connectDevices(client: StationClient, o: ConnectOptions): Promise<ConnectSummary> {
  if (!o || typeof o !== "object") throw invalid("options", o, "connect options");
  const concurrency = posInt(o.concurrency ?? 64, "concurrency", 1, CONNECT_CONCURRENCY_MAX * 2);
  const deviceTimeoutMs = posInt(o.deviceTimeoutMs ?? 10_000, "deviceTimeoutMs", 100, CONNECT_TIMEOUT_MAX);
  const chunkSize = posInt(o.chunkSize ?? 512, "chunkSize", 1, CONNECT_MAX);
  const maxRefusals = posInt(o.maxRefusals ?? 100, "maxRefusals", 0, 1_000_000);
  const topic = checkTopic(o.topic ?? DEFAULT_TOPIC);
  if (o.holdMs !== undefined) posInt(o.holdMs, "holdMs", 0, CONNECT_HOLD_MAX);
  if (!o.hub || typeof o.hub.host !== "string" || !o.hub.host)
    throw invalid("hub.host", o.hub?.host, "a host");
  posInt(o.hub.port, "hub.port", 1, 65535);
  if (typeof o.hub.caPem !== "string" || !o.hub.caPem.includes("-----BEGIN CERTIFICATE-----"))
    throw invalid("hub.caPem", "no PEM certificate", "the hub's CA certificate(s) as PEM");

  // the set: explicit IDs, or a range; requests take slices of it as lanes free up
  let total: number;
  let take: (size: number) => Pick<ConnectRequest, "devices" | "first" | "count"> | undefined;
  if (o.devices !== undefined) {
    if (o.first !== undefined || o.count !== undefined)
      throw invalid("devices", "devices and a range", "either device IDs or first/count");
    if (!Array.isArray(o.devices) || o.devices.length === 0)
      throw invalid("devices", o.devices, "a non-empty list of device IDs");
    const seen = new Set<string>();
    for (const d of o.devices) {
      if (seen.has(d)) throw invalid("devices", d, "each device once");
      seen.add(d);
    }
    const devices = o.devices;
    total = devices.length;
    let at = 0;
    take = (size) => {
      if (at >= devices.length) return undefined;
      const part = devices.slice(at, at + size);
      at += part.length;
      return { devices: part };
    };
  } else {
    const info = await client.ping();
    if (o.model !== undefined && o.model !== info.model)
      throw invalid("model", o.model, `the farm's model, ${info.model}`);
    const first = posInt(o.first ?? 0, "first", 0, Math.max(0, info.count - 1));
    const count = posInt(o.count ?? info.count - first, "count", 1, info.count - first);
    total = count;
    let at = first;
    take = (size) => {
      if (at >= first + count) return undefined;
      const part = { first: at, count: Math.min(size, first + count - at) };
      at += part.count;
      return part;
    };
  }

  const inFlight = Math.min(LANES, Math.ceil(total / chunkSize));
  const perRequest = Math.min(CONNECT_CONCURRENCY_MAX, Math.ceil(concurrency / inFlight));
  const t0 = Date.now();
  const sum: ConnectSummary = {
    attempted: 0,
    connected: 0,
    refused: [],
    refusedCount: 0,
    skipped: 0,
    reasons: [],
    elapsedMs: 0,
    closedByHub: 0,
  };
  const reasons = new Map<string, ConnectReason>();
  let done = 0;
  const add = (r: ConnectResult, size: number) => {
    sum.attempted += r.attempted;
    sum.connected += r.connected;
    sum.refusedCount += r.refused;
    sum.skipped += r.skipped;
    sum.closedByHub += r.closedByHub ?? 0;
    for (const x of r.reasons) {
      const k = `${x.stage}\0${x.reason}`;
      const have = reasons.get(k);
      if (have) have.count += x.count;
      else reasons.set(k, { ...x });
    }
    for (const f of r.failures)
      if (sum.refused.length < maxRefusals)
        sum.refused.push({ deviceId: f.device, stage: f.stage, reason: f.reason });
    done += size;
    o.onProgress?.({
      total,
      done,
      connected: sum.connected,
      refused: sum.refusedCount,
      skipped: sum.skipped,
      elapsedMs: Date.now() - t0,
    });
  };

  // lane k's first request is (k+1)/inFlight of a chunk, so that the lanes finish their requests
  // in turn rather than together: progress comes every chunkSize/inFlight devices
  let failed = false;
  const lane = async (k: number) => {
    for (let size = Math.ceil((chunkSize * (k + 1)) / inFlight); !failed; size = chunkSize) {
      const part = take(size);
      if (!part) return;
      const n = part.devices?.length ?? part.count!;
      // the farm runs `n` sessions `perRequest` at a time, each within deviceTimeoutMs
      const timeoutMs = (deviceTimeoutMs + (o.holdMs ?? 0)) * (Math.ceil(n / perRequest) + 1) + 10_000;
      const r = await client
        .connect(
          {
            ...part,
            hub: o.hub,
            model: o.model,
            topic,
            concurrency: perRequest,
            timeoutMs: deviceTimeoutMs,
            ...(o.clientId !== undefined ? { clientId: o.clientId } : {}),
            ...(o.holdMs ? { holdMs: o.holdMs } : {}),
          },
          { timeoutMs, retries: 0 },
        )
        .catch((e: unknown) => {
          failed = true; // the other lanes stop after their current request
          throw e;
        });
      add(r, n);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, (_, k) => lane(k)));
  sum.reasons = [...reasons.values()].sort((a, b) => b.count - a.count);
  sum.elapsedMs = Date.now() - t0;
  return sum;
}
