/**
 * Revoke (engine.ts): the revocations a batch declares (DeviceIdentityBatch `revocations`, one
 * device each with an RFC 5280 section 5.3.1 reason, or `revoked`, the whole batch) applied to the
 * registry: every live certificate of each device is revoked with the declared reason and the
 * device goes to `revoked`, one registry transaction per wave. The station is not asked anything:
 * a compromised device cannot be trusted to take part in its own revocation. The caller publishes
 * the issuing CA's CRL afterwards (core/enroll/crl publishCrl; the batch provider does whenever the
 * registry's revocations differ from the published CRL), so a run killed between the registry
 * write and the CRL publication is finished by the next one.
 *
 * `revoked` is terminal for the device's key: a revoked device is never enrolled, re-issued,
 * renewed or re-keyed again by the engine, even when its declaration is removed, and its key stays
 * among the batch's known keys (run.ts loadKeys), so a device presenting it is quarantined as
 * `duplicate-key`: a key revoked for keyCompromise is never certified again. The record and its
 * history stay in the registry; decommissioning it later (removed from the batch, batch deleted)
 * zeroizes it at the station.
 *
 * Idempotent: a device already `revoked`, `quarantined` (never certified; its certificates were
 * revoked when it was quarantined) or `decommissioned` is left as it is, so a rerun does nothing.
 * A declared device that was never certified (`pending`, `attested`) is not enrolled while the
 * declaration stands; the registry's transitions (core/registry/types.ts) have no pending ->
 * revoked, so it stays where it is.
 */
import type { DeviceRecord, DeviceState, Transition } from "../registry/types";
import type { RevocationReason } from "../x509/crl";
import { type BatchRun, Meter } from "./run";

/**
 * The states a declared revocation moves to `revoked`: those that hold (or are about to hold) a
 * certificate. A declared device still `pending` or `attested` is never certified: enrollment skips
 * it while it is declared (run.ts declaredRevoked), and the registry keeps it as it is.
 */
export const REVOCABLE: DeviceState[] = ["issued", "installed", "active"];

export interface RevocationWork {
  device: DeviceRecord;
  reason: RevocationReason;
  /** the declared date, else undefined (the run's time) */
  at?: Date;
}

/** The devices the batch's declaration revokes that are not revoked yet, in pages of the wave size. */
export async function* pendingRevocations(run: BatchRun): AsyncGenerator<RevocationWork[]> {
  const { revoked, revocations } = run.spec;
  const named = new Map((revocations ?? []).map((r) => [r.device, r]));
  if (revoked) {
    // the whole batch: a device's own declaration (its reason) wins over the batch's
    for await (const page of run.pages(REVOCABLE)) {
      const mine = page.filter((d) => run.inRange(d.deviceId));
      if (mine.length)
        yield mine.map((d) => {
          const r = named.get(d.deviceId) ?? revoked;
          return { device: d, reason: r.reason, ...(r.at ? { at: new Date(r.at) } : {}) };
        });
    }
    return;
  }
  let page: RevocationWork[] = [];
  for (const r of named.values()) {
    const d = await run.ctx.registry.getDevice(r.device);
    if (!d || d.batch !== run.spec.name || !REVOCABLE.includes(d.state)) continue;
    page.push({ device: d, reason: r.reason, ...(r.at ? { at: new Date(r.at) } : {}) });
    if (page.length >= run.waveSize) {
      yield page;
      page = [];
    }
  }
  if (page.length) yield page;
}

/** What a run would revoke, by reason (from the registry alone: used by plan()). */
export async function planRevocations(run: BatchRun): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for await (const page of pendingRevocations(run))
    for (const w of page) out[w.reason] = (out[w.reason] ?? 0) + 1;
  return out;
}

/**
 * Apply the declared revocations: one transaction per wave, each device compare-and-set from the
 * state it was read in (a concurrent run's change fails the wave with CONFLICT; run again).
 * Returns the number of devices revoked; `run.revokedThisRun` counts their live certificates.
 */
export async function revoke(run: BatchRun): Promise<number> {
  if (!run.spec.revoked && !run.spec.revocations?.length) return 0;
  const planned = await planRevocations(run);
  const total = Object.values(planned).reduce((a, b) => a + b, 0);
  if (total === 0) return 0;
  const meter = new Meter("revoke", total, run.ctx.onProgress);
  let n = 0;
  for await (const page of pendingRevocations(run)) {
    const now = run.now();
    const tx: Transition[] = page.map((w) => ({
      deviceId: w.device.deviceId,
      batch: w.device.batch,
      from: w.device.state,
      to: "revoked",
      reason: `revoked by declaration: ${w.reason}`,
      revoke: { at: w.at ?? now, reason: w.reason },
      detail: { revocation: { reason: w.reason, declared: run.spec.revoked ? "batch" : "device" } },
    }));
    await run.ctx.registry.apply(tx, now);
    for (const w of page) if (w.device.certSerial) run.revokedThisRun++;
    n += tx.length;
    meter.add(tx.length);
  }
  meter.add(0, true);
  run.revokedDevices += n;
  return n;
}

/** "revoke 3 devices (keyCompromise 2, cessationOfOperation 1)", or "" when there is nothing to revoke. */
export function describeRevocations(byReason: Record<string, number> | undefined): string {
  const entries = Object.entries(byReason ?? {}).filter(([, c]) => c > 0);
  const total = entries.reduce((a, [, c]) => a + c, 0);
  if (!total) return "";
  const n = (x: number) => x.toLocaleString("en-US");
  entries.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  return `revoke ${n(total)} device${total === 1 ? "" : "s"} (${entries.map(([r, c]) => `${r} ${n(c)}`).join(", ")})`;
}
