/**
 * The enrollment engine: converges one production lot (a batch) of devices to its declaration,
 * with the registry as the source of truth (brief, rules 1-2). Per device, in this order:
 *
 *   identify -> attest (fresh nonce, verified against the identified key) -> CSR (verified, and
 *   signed by that same key) -> policy checks -> issue -> RECORD (issued, with the certificate)
 *   -> set trust anchor -> install the chain -> confirm (the device answers closed, same epoch)
 *   -> record active
 *
 * Every certificate is recorded in the registry, in a committed transaction, before it leaves
 * this process, so an interrupted run (kill -9 included) never leaves an issued certificate that
 * is not recorded. A device found in `issued` or `installed` on a later run gets the certificate
 * already recorded for it installed again (install is idempotent on the device), never a second
 * one, so every device ends with exactly one live certificate. Re-issues (a changed profile or
 * issuing CA) keep the old certificate live until the device confirms the new one; the transition
 * to `active` then revokes the old one as superseded, in the same transaction.
 *
 * Work goes to the station in waves (one BATCH frame per step per wave, several waves in
 * flight), and to the registry as one transaction per step per wave. Each step has its file:
 * enroll.ts, reissue.ts, decommission.ts, refresh.ts; run.ts holds what they share; this file
 * the order of the steps, the plan and the summary.
 *
 * What a run does is derived from the registry's device and certificate records against the
 * declaration, never from what an earlier run recorded as its intent: devices of the batch outside
 * the declared serial range and not yet decommissioned are decommissioned, active devices whose
 * live certificate is not what the declared profile and issuer issue (conformance.ts) are
 * re-issued, so a run that failed half-way is finished by the next one, and plan() shows it.
 *
 * Ownership (station protocol 2, core/station/command.ts): a closed device takes a new trust
 * anchor, an install, a re-key or a decommission only as a command signed by the issuing CA's key
 * (its chain must reach the anchor fused in the device) for the device's current challenge. A
 * device that refuses ours belongs to another CA: it is quarantined `owned-elsewhere`. Refresh
 * attests active devices (all, or `refreshSample` of them) against the keys on record, so a clone
 * swapped in after enrollment is quarantined and its certificate revoked.
 */
import * as crypto from "node:crypto";
import { FleetError } from "../errors";
import type { DeviceRecord } from "../registry/types";
import { decommission } from "./decommission";
import { wave } from "./enroll";
import { compileTemplate, profileDigest } from "./profile";
import { refresh } from "./refresh";
import { reissue, stalePages } from "./reissue";
import { heldForHubs } from "./renew";
import { describeRevocations, pendingRevocations, revoke } from "./revoke";
import {
  ALL_STATES,
  type BatchPlan,
  BatchRun,
  type BatchSummary,
  describeCounts,
  describeReasons,
  FINAL_OK,
  fmtPct,
  LIVE_STATES,
  Meter,
  pool,
  type RefreshResult,
  type StoredSpec,
  sha,
  WORKING,
} from "./run";

export {
  type BatchPlan,
  type BatchSpec,
  type BatchSummary,
  type DeviceRevocation,
  describeCounts,
  type EngineContext,
  emptyCounts,
  type Progress,
  type RefreshResult,
  serialHex,
  validateRevocations,
  validateSpec,
} from "./run";

export class BatchEngine extends BatchRun {
  /** What a converge would do, from the registry alone (used by diff/preview). */
  async plan(): Promise<BatchPlan> {
    const counts = await this.ctx.registry.counts(this.spec.name);
    const known = Object.values(counts).reduce((a, b) => a + b, 0);
    let outsideAll = 0;
    let outsideLive = 0;
    let outsideWorking = 0;
    let outsideResume = 0;
    for await (const page of this.outside(ALL_STATES))
      for (const d of page) {
        outsideAll++;
        if (d.state !== "decommissioned") outsideLive++;
        if (d.state === "pending" || d.state === "attested") outsideWorking++;
        if (d.state === "issued" || d.state === "installed") outsideResume++;
      }
    let reissue = 0;
    for await (const page of stalePages(this)) reissue += page.length;
    // renewals waiting for their hubs are the rotation's, not interrupted work (renew.ts)
    let held = 0;
    if (counts.issued)
      for await (const page of this.pages(["issued"]))
        held += (
          await heldForHubs(
            this,
            page.filter((d) => this.inRange(d.deviceId)),
          )
        ).size;
    // declared revocations (revoke.ts) by reason; declared devices never certified are not enrolled
    const revoke: Record<string, number> = {};
    for await (const page of pendingRevocations(this))
      for (const w of page) revoke[w.reason] = (revoke[w.reason] ?? 0) + 1;
    const unenrolled = await this.revokedUnenrolled();
    return {
      ...(Object.keys(revoke).length ? { revoke } : {}),
      enroll:
        this.spec.count -
        (known - outsideAll) +
        (counts.pending + counts.attested - outsideWorking) -
        unenrolled,
      resume: counts.issued + counts.installed - outsideResume - held,
      reissue,
      decommission: outsideLive,
      quarantined: counts.quarantined,
      active: counts.active,
    };
  }
  /** Declared-revoked devices of the range that enrollment skips: not yet known, pending or attested. */
  private async revokedUnenrolled(): Promise<number> {
    if (this.spec.revoked) {
      const c = await this.ctx.registry.counts(this.spec.name);
      let certifiedOrDone = 0;
      for (const s of ["issued", "installed", "active", "quarantined", "revoked", "decommissioned"] as const)
        certifiedOrDone += c[s];
      let outside = 0;
      for await (const page of this.outside(ALL_STATES))
        for (const d of page) if (d.state !== "pending" && d.state !== "attested") outside++;
      return this.spec.count - (certifiedOrDone - outside);
    }
    let n = 0;
    for (const r of this.spec.revocations ?? []) {
      const d = await this.ctx.registry.getDevice(r.device);
      if (!d || (d.batch === this.spec.name && (d.state === "pending" || d.state === "attested"))) n++;
    }
    return n;
  }
  /** Bring the batch to its declaration: enroll, resume, decommission, re-issue. */
  async converge(): Promise<BatchSummary> {
    const r = this.ctx.registry;
    // the declaration, for import; what to do comes from the device and certificate records
    const next: StoredSpec = {
      firstSerial: this.spec.firstSerial,
      count: this.spec.count,
      profileDigest: profileDigest(this.spec.profile),
      issuerFingerprint: this.ctx.issuer.fingerprint,
      declaration: this.opts.declaration,
    };
    await r.putBatch({
      name: this.spec.name,
      model: this.spec.model,
      source: this.spec.source,
      spec: JSON.stringify(next),
    });
    const ids = this.ids();
    for (let i = 0; i < ids.length; i += 10_000) await r.addDevices(this.spec.name, ids.slice(i, i + 10_000));
    await this.loadKeys();
    // declared revocations first: a device revoked before it was certified is never enrolled
    await revoke(this);

    const counts0 = await r.counts(this.spec.name);
    const meter = new Meter("enroll", this.spec.count, this.ctx.onProgress);
    meter.add(counts0.active + counts0.quarantined + counts0.revoked + counts0.decommissioned);
    const pages = this.pages(WORKING);
    const template = compileTemplate(this.spec.profile, this.ctx.issuer, this.now(), this.spec.names);
    await pool(
      async () => {
        // devices outside the range are decommissioned below, not enrolled
        for (;;) {
          const page: DeviceRecord[] | undefined = (await pages.next()).value || undefined;
          if (!page) return undefined;
          // a device declared revoked that was never certified is not enrolled (revoke.ts)
          const mine = page.filter((d) => this.inRange(d.deviceId) && !this.declaredRevoked(d.deviceId));
          // a renewal whose new certificate a hub does not hold yet switches later (renew.ts)
          const held = await heldForHubs(this, mine);
          const go = held.size ? mine.filter((d) => !held.has(d.deviceId)) : mine;
          if (go.length) return go;
        }
      },
      this.concurrency,
      async (page) => {
        const n = await wave(this, page, template);
        meter.add(n);
      },
    );
    meter.add(0, true);

    const removed: DeviceRecord[] = [];
    for await (const page of this.outside(LIVE_STATES)) removed.push(...page);
    if (removed.length) await decommission(this, removed, "removed from the batch");

    const before = this.reissued;
    await reissue(this, template);
    this.revokedThisRun += this.reissued - before; // each confirmed re-issue supersedes one certificate
    const summary = await this.summary();
    const total = this.spec.count;
    if (this.unreachable > 0) {
      throw new FleetError(
        "UNAVAILABLE",
        `batch ${this.spec.name}: got ${this.unreachable} device(s) the station could not reach, want 0 ` +
          `(progress is recorded in the registry; run again to converge): ${describeCounts(summary.counts)}`,
        "station",
      );
    }
    if (total > 0 && summary.counts.quarantined / total > this.spec.maxQuarantinedFraction) {
      throw new FleetError(
        "POLICY_VIOLATION",
        `batch ${this.spec.name}: got ${summary.counts.quarantined} of ${total} devices quarantined ` +
          `(${fmtPct(summary.counts.quarantined / total)}: ${describeReasons(summary.quarantineReasons)}), ` +
          `want at most ${fmtPct(this.spec.maxQuarantinedFraction)} (policy identity.maxQuarantinedFraction)`,
        "policy.identity.maxQuarantinedFraction",
      );
    }
    return summary;
  }
  /** Delete the batch: decommission every device (revoking its certificates). */
  async deleteBatch(): Promise<{ revoked: number; decommissioned: number }> {
    const stored = await this.storedSpec();
    if (!stored) return { revoked: 0, decommissioned: 0 };
    const before = await this.ctx.registry.certificates({ batch: this.spec.name, status: ["live"] });
    const devs: DeviceRecord[] = [];
    for await (const page of this.pages(LIVE_STATES)) devs.push(...page);
    const n = await decommission(this, devs, "batch deleted");
    if (this.unreachable > 0) {
      throw new FleetError(
        "UNAVAILABLE",
        `batch ${this.spec.name}: got ${this.unreachable} device(s) the station could not reach while decommissioning, want 0; run the delete again`,
        "station",
      );
    }
    await this.ctx.registry.markBatchDeleted(this.spec.name, this.now());
    return { revoked: before.length, decommissioned: n };
  }
  async summary(): Promise<BatchSummary> {
    const counts = await this.ctx.registry.counts(this.spec.name);
    const reasons: Record<string, number> = {};
    const h = crypto.createHash("sha256");
    for await (const page of this.pages(["quarantined"]))
      for (const d of page) {
        const k = (d.reason ?? "unknown").split(":")[0]!;
        reasons[k] = (reasons[k] ?? 0) + 1;
      }
    for await (const page of this.pages(FINAL_OK))
      for (const d of page)
        h.update(
          `${d.deviceId}\t${d.publicKey ? sha(d.publicKey).toString("hex") : "-"}\t${d.certSerial ?? "-"}\n`,
        );
    return {
      batch: this.spec.name,
      total: this.spec.count,
      counts,
      quarantineReasons: reasons,
      enrolledThisRun: this.enrolled,
      reissuedThisRun: this.reissued,
      decommissionedThisRun: this.decommissioned,
      unreachable: this.unreachable,
      manifestDigest: h.digest("hex"),
      issuerFingerprint: this.ctx.issuer.fingerprint,
      profileDigest: profileDigest(this.spec.profile),
    };
  }

  /** Apply the declared revocations (revoke.ts); the caller publishes the CRL. */
  revoke(): Promise<number> {
    return revoke(this);
  }

  /** Decommission devices at the station and in the registry (decommission.ts). */
  decommission(devices: DeviceRecord[], why: string): Promise<number> {
    return decommission(this, devices, why);
  }

  /** Attest and check the active devices against the registry (refresh.ts). */
  refresh(): Promise<RefreshResult> {
    return refresh(this);
  }
}

/** Words a reviewer understands: "enroll 5,000 devices, re-issue 0, decommission 0". */
export function describePlan(p: BatchPlan): string {
  const n = (x: number) => x.toLocaleString("en-US");
  const parts = [
    `enroll ${n(p.enroll)} device${p.enroll === 1 ? "" : "s"}`,
    `re-issue ${n(p.reissue)}`,
    `decommission ${n(p.decommission)}`,
  ];
  if (p.resume) parts.push(`finish ${n(p.resume)} interrupted`);
  const revoke = describeRevocations(p.revoke);
  if (revoke) parts.push(revoke);
  return parts.join(", ");
}
