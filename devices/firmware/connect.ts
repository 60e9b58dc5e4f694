/**
 * CONNECT on the device side: a set of devices, each running its own MQTT session (mqtt.ts) with
 * its own key, at most `concurrency` at once, folded into a bounded tally (counts, refusals
 * grouped by stage and reason, the first few refusals by device). The farm's main thread runs it
 * for all devices when it has no workers; with workers, each worker runs it for its shard, so a
 * device key is used by the thread that derived it, and the farm adds the tallies up.
 */

import type { KeyObject } from "node:crypto";
import type { ConnectFailure, ConnectReason, ConnectResult, ConnectStage } from "../../core/station/messages";
import { CONNECT_FAILURES_MAX, CONNECT_REASONS_MAX } from "../../core/station/messages";
import { type HubTarget, runSession } from "./mqtt";
import { toPem } from "./pkix";

/** What a device needs to connect: its key (from the agent) and its installed chain. */
export type Credentials =
  | { ok: true; key: KeyObject; chain: Buffer[] }
  | { ok: false; stage: ConnectStage; reason: string };

export interface ConnectJob {
  hub: HubTarget;
  /** the topic with `{deviceId}` still in it */
  topic: string;
  concurrency: number;
  timeoutMs: number;
  /** the MQTT client ID with `{deviceId}` in it (default the device ID itself) */
  clientId?: string;
  /** keep each session open this long after its PUBACK (ms) */
  holdMs?: number;
}

export class Tally {
  attempted = 0;
  connected = 0;
  refused = 0;
  /** held sessions the hub closed before the device did */
  closedByHub = 0;
  private readonly reasons = new Map<string, ConnectReason>();
  private readonly overflow = new Map<string, ConnectReason>();
  readonly failures: ConnectFailure[] = [];

  refuse(device: string, stage: ConnectStage, reason: string): void {
    this.refused++;
    this.reason(stage, reason, 1);
    if (this.failures.length < CONNECT_FAILURES_MAX) this.failures.push({ device, stage, reason });
  }

  private reason(stage: ConnectStage, reason: string, count: number): void {
    const k = `${stage}\0${reason}`;
    const r = this.reasons.get(k);
    if (r) r.count += count;
    else if (this.reasons.size < CONNECT_REASONS_MAX) this.reasons.set(k, { stage, reason, count });
    else {
      // past the cap, reasons are only counted per stage
      const o = `${stage}\0(other reasons)`;
      const x = this.overflow.get(o);
      if (x) x.count += count;
      else this.overflow.set(o, { stage, reason: "(other reasons)", count });
    }
  }

  /** Add another tally (a worker's) to this one. */
  add(r: ConnectResult): void {
    this.attempted += r.attempted;
    this.connected += r.connected;
    this.refused += r.refused;
    this.closedByHub += r.closedByHub ?? 0;
    for (const x of r.reasons) this.reason(x.stage, x.reason, x.count);
    for (const f of r.failures) if (this.failures.length < CONNECT_FAILURES_MAX) this.failures.push(f);
  }

  result(skipped: number, elapsedMs: number): ConnectResult {
    const reasons = [...this.reasons.values()].sort((a, b) => b.count - a.count);
    reasons.push(...this.overflow.values());
    return {
      attempted: this.attempted,
      connected: this.connected,
      refused: this.refused,
      closedByHub: this.closedByHub,
      skipped,
      reasons,
      failures: this.failures,
      elapsedMs,
    };
  }
}

export const topicFor = (template: string, device: string): string =>
  template.replaceAll("{deviceId}", device);

/** The telemetry message a device publishes once per CONNECT. */
export const telemetry = (device: string): Buffer =>
  Buffer.from(JSON.stringify({ deviceId: device, kind: "hello", at: new Date().toISOString() }));

/** The certificates a device presents: its chain without the self-signed root at the end. */
export function presentedChain(chain: Buffer[]): string {
  const send = chain.length > 1 ? chain.slice(0, -1) : chain;
  return send.map((c) => toPem(c)).join("");
}

/**
 * Run the sessions of `devices` (resolved lazily, one at a time as a slot frees, so that no more
 * than `concurrency` keys are out of the agent's cache at once) and tally them.
 */
export async function connectDevices(
  devices: string[],
  credentials: (i: number) => Credentials,
  job: ConnectJob,
  tally = new Tally(),
): Promise<Tally> {
  let next = 0;
  const one = async (): Promise<void> => {
    while (next < devices.length) {
      const i = next++;
      const device = devices[i]!;
      tally.attempted++;
      let c: Credentials;
      try {
        c = credentials(i);
      } catch (e) {
        tally.refuse(device, "device", (e as Error).message.slice(0, 200));
        continue;
      }
      if (!c.ok) {
        tally.refuse(device, c.stage, c.reason);
        continue;
      }
      const o = await runSession({
        hub: job.hub,
        clientId: job.clientId ? topicFor(job.clientId, device) : device,
        key: c.key,
        certPem: presentedChain(c.chain),
        topic: topicFor(job.topic, device),
        payload: telemetry(device),
        timeoutMs: job.timeoutMs,
        ...(job.holdMs ? { holdMs: job.holdMs } : {}),
      });
      if (o.closedByHub) tally.closedByHub++;
      if (o.ok) tally.connected++;
      else tally.refuse(device, o.stage!, o.reason!);
    }
  };
  const n = Math.max(1, Math.min(job.concurrency, devices.length));
  await Promise.all(Array.from({ length: n }, one));
  return tally;
}
