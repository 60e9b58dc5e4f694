/**
 * Renewal (issue 12, points 1-2 and 8): which active devices of a batch are due for a new
 * certificate or a new key, decided from the registry alone and a clock the caller gives, and the
 * renewal step itself (new certificate, same key). rekey.ts holds the re-key step; rotate() below
 * runs both in waves.
 *
 * Due, after cert-manager and step-ca (renew at 2/3 of the lifetime, or `renewBefore` days
 * before expiry) and AWS IoT Device Defender (DEVICE_CERTIFICATE_EXPIRING 30 days, AGE 365):
 *  - renew when the live certificate's remaining validity is below the renew window: fewer than
 *    `renewBeforeDays` left, or `renewAtFraction` of its lifetime elapsed (either, when both);
 *  - re-key when the key is older than `maxKeyAgeDays`. The key's age is read from the
 *    registry's certificates: the issue time of the first certificate that certifies the key the
 *    registry holds for the device (the SubjectPublicKeyInfo appears verbatim in every
 *    certificate of that key), so no new registry field is needed and a re-key, which records
 *    the new key with its first certificate in one audited transition, restarts the age.
 * A device due for both is re-keyed (the new key comes with a new certificate).
 *
 * Proof that the new certificate's key is the device's (the CSR is bound to an attestation by the
 * current key): the device signs the CSR with the key it certifies (proof of possession), and the
 * key the registry holds for the device signs an attestation whose nonce is SHA-256 over a
 * domain, a fresh random value and that CSR. For a renewal both keys are the same; for a re-key
 * (rekey.ts) the new key signs the CSR and the current key vouches for it.
 *
 * Switching: the new certificate is recorded (`issued`, with the certificate) before it leaves
 * this process, the old one stays live while the device installs the new one, and the
 * transition to `active` after the device confirms revokes the old one as superseded in the same
 * registry transaction (core/registry). A run killed at any point is finished by the next one:
 * devices left in `issued` or `installed` get the recorded certificate installed again (enroll.ts
 * wave, idempotent on the device), a device left with a started re-key (pending epoch) answers the
 * repeated ROTATE with the same pending key.
 *
 * Waves: at most `maxWaveFraction` of the batch per wave (policy rotation.maxWaveFraction), one
 * wave per run unless the caller asks for more (FG-ROT-001 reads the fraction as "per run"), and
 * after a wave the next is not due before its bake is over (`bakeHours`, default 20, and one wave
 * per maintenance window: rotation-policy.ts nextWaveAt). The waves so far are read from the
 * registry (the issue times of certificates that replaced another), so a run killed mid-wave is
 * finished by the next one up to the wave's size, and the preview right after a nightly up finds
 * nothing due until the next night; a wave's staged devices (a batch at hubs) switch with the next
 * wave, once their bake is over. A
 * wave in which more than `maxFailureFraction` of its devices fail (quarantined or unreachable)
 * stops the roll-out with POLICY_VIOLATION, the devices not reached keeping their certificates.
 * An optional maintenance window (UTC, "HH:MM-HH:MM", may wrap midnight) holds all work outside it.
 */
import * as crypto from "node:crypto";
import { FleetError } from "../errors";
import type { DeviceRecord, Transition } from "../registry/types";
import { verifyAttestation } from "../station/attest";
import { verifyCsr } from "../station/csr";
import { randomSerial } from "../x509/cert";
import { wave as enrollWave, install, type ToInstall } from "./enroll";
import { type CompiledTemplate, deviceNames } from "./profile";
import { rekey } from "./rekey";
import {
  allowanceAt,
  bakeMsOf,
  DEFAULT_BAKE_HOURS,
  inWindow,
  type RotationPolicy,
  renewAt,
  validatePolicy,
  type Wave,
  wavesOf,
} from "./rotation-policy";

export {
  allowanceAt,
  DEFAULT_BAKE_HOURS,
  inWindow,
  nextWaveAt,
  nextWindowStart,
  parseWindow,
  type RotationPolicy,
  renewAt,
  validatePolicy,
  type Wave,
  wavesOf,
} from "./rotation-policy";

import { type BatchRun, fmtPct, pool, quarantine, serialHex } from "./run";

const DAY_MS = 86_400_000;

export interface DueDevice {
  d: DeviceRecord;
  /** when it became due */
  at: Date;
  /** the live certificate's notAfter (undefined: none recorded) */
  notAfter?: Date;
}

export interface Due {
  renew: DueDevice[];
  rekey: DueDevice[];
  /** devices an interrupted run left in issued / installed (finished first) */
  resume: DeviceRecord[];
  /** renewed or re-keyed devices whose new certificate a hub of the batch does not hold yet (not switched) */
  held: number;
  /** staged devices every hub holds, switched once their wave's bake is over (with the next wave) */
  switchAfterBake: number;
  /** due for a re-key but their key cannot change (injected keys): renewed only, when due */
  rekeyBlocked: number;
  /** the earliest time something not yet due becomes due */
  nextDue?: Date;
  /** active devices examined */
  active: number;
  /**
   * A CA rollover: active devices whose live certificate is not the batch's issuing CA's (its
   * predecessor's): all due now, counted in renew or rekey as well
   */
  rollover: number;
  /** renewals and re-keys the schedule may still start now (the wave's allowance: allowanceAt) */
  allowance: number;
  /** the last wave's bake is not over: the next wave is due then */
  nextWaveAt?: Date;
  /** the last wave (from the registry), while it bakes */
  wave?: Wave;
}

/** What is due for one batch at `now`, from the registry alone (one pass over devices and certificates). */
export async function dueOf(run: BatchRun, p: RotationPolicy, now: Date): Promise<Due> {
  validatePolicy(p);
  const active = new Map<
    string,
    { d: DeviceRecord; notBefore?: Date; notAfter?: Date; born?: number; issuer?: string }
  >();
  for await (const page of run.pages(["active"]))
    for (const d of page) if (run.inRange(d.deviceId)) active.set(d.deviceId, { d });
  const working: DeviceRecord[] = [];
  for await (const page of run.pages(["issued", "installed"]))
    for (const d of page) if (run.inRange(d.deviceId)) working.push(d);
  const held = await heldOf(run, working, bakeMsOf(p));
  const resume = working.filter((d) => !held.hub.has(d.deviceId) && !held.bake.has(d.deviceId));
  // the waves so far: every certificate but each device's first (its enrollment) replaced another
  const baking = bakeMsOf(p) > 0;
  const first = new Map<string, number>();
  const issued: Array<{ deviceId: string; t: number }> = [];
  let after: string | undefined;
  for (;;) {
    const page = await run.ctx.registry.certificates({ batch: run.spec.name, after, limit: 2000 });
    for (const c of page) {
      if (baking) {
        const t = c.issuedAt.getTime();
        const f = first.get(c.deviceId);
        if (f === undefined || t < f) first.set(c.deviceId, t);
        issued.push({ deviceId: c.deviceId, t });
      }
      const a = active.get(c.deviceId);
      if (!a) continue;
      if (c.serial === a.d.certSerial && c.status === "live") {
        a.notBefore = c.notBefore;
        a.notAfter = c.notAfter;
        a.issuer = c.issuer;
      }
      if (a.d.publicKey && c.der.includes(a.d.publicKey)) {
        const t = c.issuedAt.getTime();
        if (a.born === undefined || t < a.born) a.born = t;
      }
    }
    if (page.length < 2000) break;
    after = page[page.length - 1]!.serial;
  }
  const t = now.getTime();
  const waves = wavesOf(
    p,
    issued.filter((c) => c.t > first.get(c.deviceId)!).map((c) => c.t),
  );
  const allow = allowanceAt(p, waves, waveSizeOf(run, p), now);
  const out: Due = {
    renew: [],
    rekey: [],
    resume,
    held: held.hub.size,
    switchAfterBake: held.bake.size,
    rekeyBlocked: 0,
    active: active.size,
    rollover: 0,
    allowance: allow.devices,
    ...(allow.nextWaveAt ? { nextWaveAt: allow.nextWaveAt, wave: allow.current } : {}),
  };
  let next = Number.POSITIVE_INFINITY;
  const canRekey = run.spec.source === "puf";
  const current = run.ctx.issuer.fingerprint;
  for (const a of active.values()) {
    // a certificate of another CA than the batch's issuing CA (its predecessor, in a rollover) is
    // due now: re-issued under the issuing CA, in waves like any renewal
    const moved = a.issuer !== undefined && a.issuer !== current;
    if (moved) out.rollover++;
    const renewT = moved ? t : a.notBefore && a.notAfter ? renewAt(p, a.notBefore, a.notAfter).getTime() : t;
    const rekeyT =
      p.maxKeyAgeDays !== undefined && a.born !== undefined
        ? a.born + p.maxKeyAgeDays * DAY_MS
        : Number.POSITIVE_INFINITY;
    if (rekeyT <= t && canRekey) out.rekey.push({ d: a.d, at: new Date(rekeyT), notAfter: a.notAfter });
    else if (renewT <= t) {
      out.renew.push({ d: a.d, at: new Date(renewT), notAfter: a.notAfter });
      if (rekeyT <= t) out.rekeyBlocked++;
    } else {
      if (rekeyT <= t) out.rekeyBlocked++;
      next = Math.min(next, renewT, canRekey ? rekeyT : Number.POSITIVE_INFINITY);
    }
  }
  // the most urgent first: the earliest expiry, then the longest overdue
  const order = (x: DueDevice, y: DueDevice) =>
    (x.notAfter?.getTime() ?? 0) - (y.notAfter?.getTime() ?? 0) || x.at.getTime() - y.at.getTime();
  out.renew.sort(order);
  out.rekey.sort(order);
  if (Number.isFinite(next)) out.nextDue = new Date(next);
  return out;
}

export interface RotationPlan {
  batch: string;
  renew: number;
  rekey: number;
  resume: number;
  /** new certificates issued but not yet installed: a hub of the batch does not hold them yet */
  heldForHubs: number;
  /** new certificates every hub holds; the devices switch once their wave's bake is over */
  switchAfterBake: number;
  rekeyBlocked: number;
  /** devices per wave (maxWaveFraction of the batch) */
  waveSize: number;
  /** waves the due work needs (this run does the first `wavesPerRun`, when no wave is baking) */
  waves: number;
  /** the last wave is baking: the next wave is due then (ISO); this run only finishes what its wave left */
  nextWaveAt?: string;
  /** hours a wave bakes before the next (the schedule's bakeHours, its default filled in) */
  bakeHours: number;
  /** devices this run would change */
  thisRun: number;
  /** false: outside the maintenance window, nothing runs */
  inWindow: boolean;
  maintenanceWindow?: string;
  nextDue?: string;
  active: number;
  /**
   * CA rollover: the issuing CA's generation, whether its predecessor is still declared, and the
   * due devices whose live certificate is another CA's (they move in this plan's waves)
   */
  rollover: { generation: number; predecessor: boolean; devices: number };
}

export function waveSizeOf(run: BatchRun, p: RotationPolicy): number {
  return Math.max(1, Math.floor(run.spec.count * p.maxWaveFraction));
}

/** What a rotation run at `now` would do (diff/preview), from the registry alone. */
export async function planRotation(run: BatchRun, p: RotationPolicy, now: Date): Promise<RotationPlan> {
  const due = await dueOf(run, p, now);
  const size = waveSizeOf(run, p);
  const n = due.renew.length + due.rekey.length;
  const open = inWindow(p.maintenanceWindow, now);
  return {
    batch: run.spec.name,
    renew: due.renew.length,
    rekey: due.rekey.length,
    resume: due.resume.length,
    heldForHubs: due.held,
    switchAfterBake: due.switchAfterBake,
    rekeyBlocked: due.rekeyBlocked,
    waveSize: size,
    waves: Math.ceil(n / size),
    ...(due.nextWaveAt ? { nextWaveAt: due.nextWaveAt.toISOString() } : {}),
    bakeHours: p.bakeHours ?? DEFAULT_BAKE_HOURS,
    thisRun: open ? Math.min(n, due.allowance) + due.resume.length : 0,
    inWindow: open,
    ...(p.maintenanceWindow ? { maintenanceWindow: p.maintenanceWindow } : {}),
    ...(due.nextDue ? { nextDue: due.nextDue.toISOString() } : {}),
    active: due.active,
    rollover: {
      generation: run.ctx.issuer.generation ?? 1,
      predecessor: run.ctx.previous !== undefined,
      devices: due.rollover,
    },
  };
}

/** "CA rollover: none", "... move 750 devices to generation 2", "... complete: every device under generation 2" */
export function describeRollover(p: RotationPlan): string {
  const r = p.rollover;
  if (!r || (!r.predecessor && r.devices === 0)) return "CA rollover: none";
  const g = r.generation;
  if (r.devices === 0)
    return `CA rollover: complete, every device under generation ${g} (generation ${g - 1} can be retired)`;
  return `CA rollover: move ${r.devices.toLocaleString("en-US")} device${r.devices === 1 ? "" : "s"} to generation ${g}`;
}

/** Does the plan mean work for this run? (Nothing while the last wave bakes, but what it left.) */
export const hasWork = (p: RotationPlan) => p.inWindow && p.thisRun > 0;

/** "2026-12-03T02:00Z": an instant to the minute, as a plan in words says it */
const minute = (iso: string) => `${iso.slice(0, 16)}Z`;

/** "renew 1,204 certificates of lot-7 (wave 1 of 9), re-key 0, CA rollover: none" */
export function describeRotation(p: RotationPlan): string {
  const n = (x: number) => x.toLocaleString("en-US");
  const cert = (x: number) => `${n(x)} certificate${x === 1 ? "" : "s"}`;
  const dev = (x: number) => `${n(x)} device${x === 1 ? "" : "s"}`;
  // the last wave bakes: nothing new starts in this run, the next wave is due at nextWaveAt
  const waiting = p.nextWaveAt !== undefined && p.thisRun - p.resume === 0;
  const waves = waiting
    ? ` (${n(p.waves)} wave${p.waves === 1 ? "" : "s"} left, the next due after ${minute(p.nextWaveAt!)}: the last wave bakes ${n(p.bakeHours)} h)`
    : ` (wave 1 of ${n(p.waves)})`;
  const parts = [
    `renew ${cert(p.renew)} of ${p.batch}${p.renew > 0 ? waves : ""}`,
    `re-key ${n(p.rekey)}${p.renew === 0 && p.rekey > 0 ? waves : ""}`,
    describeRollover(p),
  ];
  if (p.resume) parts.push(`finish ${dev(p.resume)} interrupted`);
  if (p.heldForHubs)
    parts.push(`${cert(p.heldForHubs)} waiting for hub registration before the devices switch`);
  if (p.switchAfterBake)
    parts.push(`${dev(p.switchAfterBake)} registered at the hubs switch with the next wave`);
  if (p.rekeyBlocked) parts.push(`${dev(p.rekeyBlocked)} past the key age cannot re-key (injected keys)`);
  if (!waiting && p.nextWaveAt !== undefined && p.renew + p.rekey > 0)
    parts.push(`finish the wave begun before (the next due after ${minute(p.nextWaveAt)})`);
  if (!p.inWindow && p.renew + p.rekey + p.resume > 0)
    parts.push(`waiting for the maintenance window ${p.maintenanceWindow} UTC`);
  if (p.renew + p.rekey === 0 && p.nextDue) parts.push(`next due ${p.nextDue.slice(0, 10)}`);
  return parts.join(", ");
}

export interface RotationResult {
  batch: string;
  renewed: number;
  rekeyed: number;
  /** interrupted devices finished */
  resumed: number;
  /** devices of this run's waves that failed (quarantined or unreachable) */
  failed: number;
  waves: number;
  /** due devices left for later runs */
  remaining: number;
  /** the run did nothing: outside the maintenance window */
  outsideWindow: boolean;
  /** the wave bakes: the next wave is due then (ISO) */
  nextWaveAt?: string;
}

/** A run of the schedule for one batch: finish interrupted devices, then up to `wavesPerRun` waves. */
export async function rotate(
  run: BatchRun,
  p: RotationPolicy,
  template: CompiledTemplate,
): Promise<RotationResult> {
  validatePolicy(p);
  const now = run.now();
  const res: RotationResult = {
    batch: run.spec.name,
    renewed: 0,
    rekeyed: 0,
    resumed: 0,
    failed: 0,
    waves: 0,
    remaining: 0,
    outsideWindow: !inWindow(p.maintenanceWindow, now),
  };
  const due = await dueOf(run, p, now);
  if (res.outsideWindow) {
    res.remaining = due.renew.length + due.rekey.length;
    return res;
  }
  for (let i = 0; i < due.resume.length; i += run.waveSize) {
    const before = run.enrolled;
    await enrollWave(run, due.resume.slice(i, i + run.waveSize), template);
    res.resumed += run.enrolled - before;
    run.revokedThisRun += run.enrolled - before;
    run.enrolled = before;
  }
  // a batch registered at hubs: the wave's new certificates are recorded (the next hub sync
  // registers them) and installed by a later run, once every hub holds them
  const staged = (await hubsOf(run)).length > 0;
  const size = waveSizeOf(run, p);
  const all = [
    ...due.rekey.map((x) => ({ ...x, rekey: true })),
    ...due.renew.map((x) => ({ ...x, rekey: false })),
  ];
  // the wave's allowance: a full one when the last wave's bake is over, else what it left
  const todo = all.slice(0, Math.min(all.length, due.allowance));
  if (due.nextWaveAt) res.nextWaveAt = due.nextWaveAt.toISOString();
  let w = 0;
  for (; w * size < todo.length; w++) {
    const wave = todo.slice(w * size, (w + 1) * size);
    const before = { unreachable: run.unreachable, quarantined: await quarantinedOf(run) };
    // the wave's station frames, `concurrency` in flight (as enrollment)
    let at = 0;
    await pool(
      async () => {
        if (at >= wave.length) return undefined;
        at += run.waveSize;
        return wave.slice(at - run.waveSize, at);
      },
      run.concurrency,
      async (part) => {
        const r = part.filter((x) => !x.rekey).map((x) => x.d);
        const k = part.filter((x) => x.rekey).map((x) => x.d);
        const renewed = r.length ? await renew(run, r, template, { install: !staged }) : 0;
        const rekeyed = k.length ? await rekey(run, k, template, { install: !staged }) : 0;
        res.renewed += renewed;
        res.rekeyed += rekeyed;
      },
    );
    const failed = run.unreachable - before.unreachable + ((await quarantinedOf(run)) - before.quarantined);
    res.failed += failed;
    res.waves++;
    if (failed / wave.length > p.maxFailureFraction)
      throw new FleetError(
        "POLICY_VIOLATION",
        `batch ${run.spec.name}: rotation wave ${w + 1} got ${failed} of ${wave.length} devices failing ` +
          `(${fmtPct(failed / wave.length)}), want at most ${fmtPct(p.maxFailureFraction)} (maxFailureFraction); ` +
          `roll-out stopped: ${res.renewed} renewed, ${res.rekeyed} re-keyed this run, the devices not reached keep their certificates`,
        "maxFailureFraction",
      );
  }
  res.remaining = all.length - todo.length;
  return res;
}

const quarantinedOf = async (run: BatchRun) => (await run.ctx.registry.counts(run.spec.name)).quarantined;

const BIND_DOMAIN = Buffer.from("fleetguard/rotate-bind/v1\0", "latin1");

/** The attestation nonce that binds a CSR to the device's current key: SHA-256(domain | fresh | CSR). */
export function bindNonce(csr: Uint8Array, fresh: Uint8Array = crypto.randomBytes(32)): Buffer {
  return crypto.createHash("sha256").update(BIND_DOMAIN).update(fresh).update(csr).digest();
}

/**
 * Renew active devices (same key): CSR by the recorded key, an attestation by the same key over
 * the CSR, issue and record `issued`, install; the device's confirmation makes it active and
 * supersedes the old certificate. Returns how many devices confirmed their new certificate.
 */
export async function renew(
  run: BatchRun,
  devs: DeviceRecord[],
  template: CompiledTemplate,
  opts0: { install?: boolean } = {},
): Promise<number> {
  const st = await run.station();
  const opts = { deviceTimeoutMs: run.ctx.deviceTimeoutMs };
  const tx: Transition[] = [];
  const q = (d: DeviceRecord, reason: string) => tx.push(quarantine(d, "active", reason));
  const names = devs.map((d) =>
    deviceNames(run.spec.profile, d.deviceId, run.spec.name, run.spec.model, run.spec.names),
  );
  const csrs = await st.csrBatch(
    devs.map((d, i) => ({ device: d.deviceId, subject: names[i]!.subject })),
    opts,
  );
  const bound: BoundCsr[] = [];
  for (let i = 0; i < csrs.length; i++) {
    const res = csrs[i]!;
    const d = devs[i]!;
    if (!res.ok) {
      run.failed(d, res, q, "renew-csr");
      continue;
    }
    if (!d.publicKey) {
      q(d, "registry: an active device without a recorded key");
      continue;
    }
    if (res.value.epoch !== d.epoch) {
      q(
        d,
        `key-mismatch: renew: the device answers with key epoch ${res.value.epoch}, the registry records ${d.epoch}`,
      );
      continue;
    }
    try {
      const spki = verifyCsr(res.value.csr, d.publicKey).spki;
      bound.push({ d, i, spki, nonce: bindNonce(res.value.csr) });
    } catch (e) {
      q(d, `csr-invalid: renew: ${(e as Error).message.slice(0, 160)}`);
    }
  }
  return vouchIssueInstall(run, { tx, q, names, template, opts, install: opts0.install }, bound, {
    step: "renew",
    attestationFailed:
      "attestation-failed: renew: the CSR is not vouched for by the key recorded for this device",
    transition: (b) => ({
      reason: "renewal: the live certificate entered the renew window",
      detail: { rotation: "renew", replaces: b.d.certSerial },
    }),
  });
}

/** A CSR of a device, signed by the key it certifies, waiting for the recorded key's attestation over it. */
export interface BoundCsr {
  d: DeviceRecord;
  /** the device's index in the wave (its names) */
  i: number;
  /** the key the CSR certifies */
  spki: Buffer;
  /** bindNonce(csr): what the recorded key must sign */
  nonce: Buffer;
  /** re-key: the epoch of the new key */
  epoch?: number;
}

/**
 * The second half of a renewal and of a re-key: the key the registry records for each device
 * attests over its CSR (bindNonce), the certificate is issued and recorded `issued` (before any of
 * these certificates leaves this process), then installed and confirmed (or staged, with
 * `install: false`, until the hubs hold them). Returns how many devices confirmed (or were staged).
 */
export async function vouchIssueInstall(
  run: BatchRun,
  w: {
    tx: Transition[];
    q: (d: DeviceRecord, reason: string) => void;
    names: ReturnType<typeof deviceNames>[];
    template: CompiledTemplate;
    opts: { deviceTimeoutMs?: number };
    install?: boolean;
  },
  bound: readonly BoundCsr[],
  step: {
    step: "renew" | "rekey";
    attestationFailed: string;
    transition: (b: BoundCsr) => Pick<Transition, "reason" | "publicKey" | "detail">;
  },
): Promise<number> {
  const st = await run.station();
  const att = bound.length
    ? await st.attestBatch(
        bound.map((b) => ({ device: b.d.deviceId, nonce: b.nonce })),
        w.opts,
      )
    : [];
  const now = run.now();
  const items: ToInstall[] = [];
  for (let j = 0; j < att.length; j++) {
    const res = att[j]!;
    const b = bound[j]!;
    const { d, i, spki, nonce } = b;
    if (!res.ok) {
      run.failed(d, res, w.q, `${step.step}-attest`);
      continue;
    }
    if (
      !d.publicKey ||
      res.value.epoch !== d.epoch ||
      !verifyAttestation(d.publicKey, d.deviceId, d.epoch ?? 0, nonce, res.value.signature)
    ) {
      w.q(d, step.attestationFailed);
      continue;
    }
    const serial = randomSerial();
    const n = w.names[i]!;
    const der = w.template.issue(
      serial,
      n.commonName,
      spki,
      n.san.uri.length || n.san.dns.length ? n.san : undefined,
    );
    w.tx.push({
      deviceId: d.deviceId,
      batch: d.batch,
      from: "active",
      to: "issued",
      ...step.transition(b),
      certificate: {
        serial: serialHex(serial),
        deviceId: d.deviceId,
        batch: d.batch,
        issuer: run.ctx.issuer.fingerprint,
        der,
        notBefore: w.template.notBefore,
        notAfter: w.template.notAfter,
        issuedAt: now,
      },
    });
    items.push({
      d: { ...d, state: "issued" },
      chain: [der, ...run.chainDer],
      lifecycle: "closed",
      challenge: res.value.challenge,
    });
  }
  // recorded before any of these certificates leaves this process
  if (w.tx.length) await run.ctx.registry.apply(w.tx, now);
  if (w.install === false) return items.length; // staged: installed once the hubs hold them
  return confirm(run, items);
}

/** Hubs with registrations of this batch (the registry's hub records). */
export async function hubsOf(run: BatchRun): Promise<string[]> {
  const out: string[] = [];
  for (const h of await run.ctx.registry.hubs()) {
    const c = await run.ctx.registry.hubCounts(h, run.spec.name);
    if (Object.values(c).some((n) => n > 0)) out.push(h);
  }
  return out;
}

/**
 * Devices in `issued` during a rotation (their old certificate still live beside the new one)
 * whose new certificate some hub of the batch does not hold yet (`active` there): they are not
 * switched, so a device never presents a certificate its hub would refuse (issue 12, point 2).
 * Nor while the wave that staged them bakes (its new certificate issued less than `bakeMs` ago by
 * the run's clock): they switch with the next wave, so the preview right after the up that staged
 * and registered them shows no changes. The batch engine's resume skips them too (engine.ts: with
 * the default bake, the schedule's own is not the batch's to know; the schedule switches them).
 */
export async function heldForHubs(
  run: BatchRun,
  devs: readonly DeviceRecord[],
  bakeMs: number = DEFAULT_BAKE_HOURS * 3_600_000,
): Promise<Set<string>> {
  const h = await heldOf(run, devs, bakeMs);
  return new Set([...h.hub, ...h.bake]);
}

/** heldForHubs, by reason: `hub` not held by every hub yet, `bake` registered but their wave bakes. */
export async function heldOf(
  run: BatchRun,
  devs: readonly DeviceRecord[],
  bakeMs: number,
): Promise<{ hub: Set<string>; bake: Set<string> }> {
  const held = new Set<string>();
  const bake = new Set<string>();
  const issued = devs.filter((d) => d.state === "issued" && d.certSerial);
  if (!issued.length) return { hub: held, bake };
  const hubs = await hubsOf(run);
  if (!hubs.length) return { hub: held, bake };
  for (const d of issued) {
    const live = await run.ctx.registry.certificates({ deviceId: d.deviceId, status: ["live"] });
    if (live.length < 2) continue; // an enrollment, not a rotation
    let atHubs = true;
    for (const h of hubs) {
      const recs = await run.ctx.registry.hubRegistrations(h, { deviceId: d.deviceId });
      if (!recs.some((r) => r.serial === d.certSerial && r.status === "active")) {
        held.add(d.deviceId);
        atHubs = false;
        break;
      }
    }
    const mine = live.find((c) => c.serial === d.certSerial);
    if (atHubs && mine && mine.issuedAt.getTime() > run.now().getTime() - bakeMs) bake.add(d.deviceId);
  }
  return { hub: held, bake };
}

/**
 * install() from enroll.ts, counted as rotations (not enrollments); each confirmation supersedes
 * one certificate. The parts of a wave install concurrently, so each counts on its own view of
 * the run (its own enrolled and unreachable counters), added to the run's afterwards.
 */
export async function confirm(run: BatchRun, items: ToInstall[]): Promise<number> {
  if (!items.length) return 0;
  const view = Object.create(run) as BatchRun;
  view.enrolled = 0;
  view.unreachable = 0;
  try {
    await install(view, items);
  } finally {
    run.unreachable += view.unreachable;
    run.revokedThisRun += view.enrolled;
  }
  return view.enrolled;
}
