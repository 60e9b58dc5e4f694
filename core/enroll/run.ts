/**
 * What every lifecycle step of the enrollment engine shares (engine.ts holds the overview and the
 * steps' order; enroll.ts, reissue.ts, decommission.ts and refresh.ts one step each): the
 * declaration and its checks, one run's counters and caches, paging through the registry, the
 * station (used only once it says it speaks protocol 2), and the quarantine rule.
 */
import * as crypto from "node:crypto";
import { FleetError, invalid } from "../errors";
import type {
  CertificateRecord,
  DeviceRecord,
  DeviceState,
  Registry,
  StateCounts,
  Transition,
} from "../registry/types";
import type { BatchItem, StationClient } from "../station/client";
import type { StationError } from "../station/frame";
import { checkModel, deviceId, MAX_COUNT, SERIAL_DIGITS } from "../station/ids";
import { PROTOCOL, UNAUTHORIZED } from "../station/messages";
import type { RevocationReason } from "../x509/crl";
import type { IssuerMaterial, NameRules, ResolvedProfile } from "./profile";
import { type DeviceRevocation, validateRevocations } from "./revocations";

export { type DeviceRevocation, validateRevocations };

export interface BatchSpec {
  name: string;
  model: string;
  source: "puf" | "injected";
  /** device serials firstSerial .. firstSerial+count-1; IDs `<model>-<serial, 7 digits>` */
  firstSerial: number;
  count: number;
  profile: ResolvedProfile;
  /** the run fails when more than this fraction of the batch is quarantined (policy) */
  maxQuarantinedFraction: number;
  /** re-issues go in waves of at most this fraction of the batch (policy) */
  maxWaveFraction: number;
  /** what device names may be (policy `names`: wildcards, URI schemes); default the strict rules */
  names?: NameRules;
  /** devices declared revoked (revoke.ts): each must be a device of the batch */
  revocations?: readonly DeviceRevocation[];
  /** the whole batch declared revoked (revoke.ts): every device of it */
  revoked?: { reason: RevocationReason; at?: string };
}

export interface Progress {
  phase: "enroll" | "reissue" | "decommission" | "revoke" | "refresh";
  done: number;
  total: number;
  ratePerSecond: number;
  etaSeconds: number;
}

export interface EngineContext {
  registry: Registry;
  station: StationClient;
  issuer: IssuerMaterial;
  /**
   * During a CA rollover, the issuing CA's predecessor: what it issued still conforms (the
   * RotationSchedule re-issues it under `issuer` in waves, core/enroll/renew.ts); its CRL is
   * published beside the issuer's
   */
  previous?: IssuerMaterial;
  now?: () => Date;
  onProgress?: (p: Progress) => void;
  /** devices per station BATCH frame (<= 1024) */
  waveSize?: number;
  /** waves in flight */
  concurrency?: number;
  /** per-device answer time inside a batch frame */
  deviceTimeoutMs?: number;
  /**
   * active devices refresh attests, chosen at random (policy, for huge fleets); default: every one.
   * refresh() reports the sample size and how many failed.
   */
  refreshSample?: number;
}

export interface RefreshResult {
  lostCertificate: number;
  missingDevice: number;
  /** active devices asked for their STATUS */
  checked: number;
  attestation: {
    /** active devices attested (all of them unless refreshSample is smaller) */
    sample: number;
    /** active devices the sample was drawn from */
    population: number;
    /** quarantined (attestation-failed, key-mismatch) and their certificates revoked */
    failed: number;
  };
}

export interface BatchSummary {
  batch: string;
  total: number;
  counts: StateCounts;
  quarantineReasons: Record<string, number>;
  enrolledThisRun: number;
  reissuedThisRun: number;
  decommissionedThisRun: number;
  /** devices the station could not reach this run (left as they were; run again) */
  unreachable: number;
  manifestDigest: string;
  issuerFingerprint: string;
  profileDigest: string;
}

export interface BatchPlan {
  enroll: number;
  resume: number;
  reissue: number;
  decommission: number;
  quarantined: number;
  active: number;
  /** devices a declared revocation (revoke.ts) would revoke, by reason */
  revoke?: Record<string, number>;
}

export function validateSpec(s: BatchSpec): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(s.name))
    throw invalid("name", s.name, "1..63 letters, digits, '_', '.', '-'");
  checkModel(s.model);
  if (s.source !== "puf" && s.source !== "injected") throw invalid("source", s.source, "'puf' or 'injected'");
  if (!Number.isInteger(s.firstSerial) || s.firstSerial < 0)
    throw invalid("firstSerial", s.firstSerial, "an integer >= 0");
  if (!Number.isInteger(s.count) || s.count < 0 || s.firstSerial + s.count > MAX_COUNT)
    throw invalid("count", s.count, `an integer >= 0 with firstSerial + count <= ${MAX_COUNT}`);
  if (!(s.maxQuarantinedFraction >= 0 && s.maxQuarantinedFraction <= 1))
    throw invalid("policy.identity.maxQuarantinedFraction", s.maxQuarantinedFraction, "a fraction in 0..1");
  if (!(s.maxWaveFraction > 0 && s.maxWaveFraction <= 1))
    throw invalid("policy.rotation.maxWaveFraction", s.maxWaveFraction, "a fraction in (0, 1]");
  validateRevocations(s);
}

/** What the registry holds about a batch, stored with it (no secrets). */
export interface StoredSpec {
  firstSerial: number;
  count: number;
  profileDigest: string;
  issuerFingerprint: string;
  /** the caller's declaration (no secrets), for import */
  declaration?: unknown;
}

export const WORKING: DeviceState[] = ["pending", "attested", "issued", "installed"];
export const ALL_STATES: DeviceState[] = [...WORKING, "active", "quarantined", "revoked", "decommissioned"];
export const LIVE_STATES: DeviceState[] = ALL_STATES.filter((s) => s !== "decommissioned");
export const FINAL_OK: DeviceState[] = ["active"];

export class Meter {
  private readonly t0 = performance.now();
  private last = 0;
  done = 0;
  constructor(
    private readonly phase: Progress["phase"],
    private readonly total: number,
    private readonly cb?: (p: Progress) => void,
  ) {}
  add(n: number, force = false): void {
    this.done += n;
    const t = performance.now();
    if (!this.cb || (!force && t - this.last < 1000)) return;
    this.last = t;
    const rate = this.done / Math.max((t - this.t0) / 1000, 1e-3);
    this.cb({
      phase: this.phase,
      done: this.done,
      total: this.total,
      ratePerSecond: rate,
      etaSeconds: rate > 0 ? Math.max(this.total - this.done, 0) / rate : 0,
    });
  }
}

/** Run `fn` over pages pulled from `next`, `concurrency` at a time. */
export async function pool<T>(
  next: () => Promise<T | undefined>,
  concurrency: number,
  fn: (t: T) => Promise<void>,
) {
  let failed: unknown;
  let pulling: Promise<T | undefined> = Promise.resolve(undefined);
  const pull = () => {
    // serialize page fetches (keyset pagination)
    pulling = pulling.then(() => (failed ? undefined : next()));
    return pulling;
  };
  const worker = async () => {
    for (let item = await pull(); item !== undefined && !failed; item = await pull()) {
      try {
        await fn(item);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  if (failed) throw failed;
}

export const isTransient = (e: FleetError) => e.code === "UNAVAILABLE";
/** Another run's command moved the device's challenge on: not a refusal, run again. */
export const staleChallenge = (e: StationError) =>
  e.status === UNAUTHORIZED && e.detail.startsWith("auth.nonce");

export const sha = (b: Uint8Array) => crypto.createHash("sha256").update(b).digest();

export class BatchRun {
  readonly now: () => Date;
  readonly waveSize: number;
  readonly concurrency: number;
  readonly rootDer: Buffer;
  readonly chainDer: Buffer[];
  unreachable = 0;
  enrolled = 0;
  reissued = 0;
  decommissioned = 0;
  checked?: Promise<StationClient>;
  /** SHA-256 of identity keys seen in this batch -> device, to catch a cloned key */
  keys?: Map<string, string>;

  /** certificates revoked by this engine (decommission, quarantine, superseded): the CRL needs publishing */
  revokedThisRun = 0;
  /** devices moved to `revoked` by a declared revocation this run (revoke.ts) */
  revokedDevices = 0;

  constructor(
    readonly ctx: EngineContext,
    readonly spec: BatchSpec,
    readonly opts: { declaration?: unknown } = {},
  ) {
    validateSpec(spec);
    this.now = ctx.now ?? (() => new Date());
    this.waveSize = Math.min(Math.max(ctx.waveSize ?? 512, 1), 1024);
    this.concurrency = Math.max(ctx.concurrency ?? 4, 1);
    this.chainDer = [ctx.issuer.certificate, ...ctx.issuer.chain];
    this.rootDer = this.chainDer[this.chainDer.length - 1]!;
  }

  ids(): string[] {
    const out = new Array<string>(this.spec.count);
    for (let i = 0; i < this.spec.count; i++) out[i] = deviceId(this.spec.model, this.spec.firstSerial + i);
    return out;
  }
  async storedSpec(): Promise<StoredSpec | undefined> {
    const b = await this.ctx.registry.getBatch(this.spec.name);
    if (!b || b.deletedAt) return undefined;
    return JSON.parse(b.spec) as StoredSpec;
  }
  /** Is `id` declared revoked (the whole batch, or by name)? Such a device is never enrolled. */
  declaredRevoked(id: string): boolean {
    if (this.spec.revoked) return this.inRange(id);
    this.revokedIds ??= new Set((this.spec.revocations ?? []).map((r) => r.device));
    return this.revokedIds.has(id);
  }
  private revokedIds?: Set<string>;
  /** Is `id` one of the declared devices (serial in the declared range)? */
  inRange(id: string): boolean {
    const m = this.spec.model;
    if (id.length !== m.length + 1 + SERIAL_DIGITS || !id.startsWith(`${m}-`)) return false;
    const tail = id.slice(m.length + 1);
    if (!/^\d+$/.test(tail)) return false;
    const n = Number(tail);
    return n >= this.spec.firstSerial && n < this.spec.firstSerial + this.spec.count;
  }
  /**
   * The batch's device records outside the declared range, in `states`: those before the first
   * declared ID and those after the last (IDs sort by serial), so the cost is what is outside.
   */
  async *outside(states: readonly DeviceState[]): AsyncGenerator<DeviceRecord[]> {
    const r = this.ctx.registry;
    const { model, firstSerial: lo, count } = this.spec;
    const loId = deviceId(model, lo);
    const segments: Array<{ after?: string; stopAt?: string }> =
      count === 0 ? [{}] : [{ stopAt: loId }, { after: deviceId(model, lo + count - 1) }];
    for (const seg of segments) {
      let after = seg.after;
      for (;;) {
        const page = await r.listDevices(this.spec.name, { states, after, limit: this.waveSize });
        const stop = seg.stopAt === undefined ? -1 : page.findIndex((d) => d.deviceId >= seg.stopAt!);
        const mine = (stop >= 0 ? page.slice(0, stop) : page).filter((d) => !this.inRange(d.deviceId));
        if (mine.length) yield mine;
        if (stop >= 0 || page.length < this.waveSize) break;
        after = page[page.length - 1]!.deviceId;
      }
    }
  }
  async *pages(states: DeviceState[]): AsyncGenerator<DeviceRecord[]> {
    let after: string | undefined;
    for (;;) {
      const page = await this.ctx.registry.listDevices(this.spec.name, {
        states,
        after,
        limit: this.waveSize,
      });
      if (page.length === 0) return;
      yield page;
      after = page[page.length - 1]!.deviceId;
      if (page.length < this.waveSize) return;
    }
  }
  /**
   * The station, once it said (asked once, before the first request) that it speaks protocol 2:
   * one that predates signed commands would take them from anyone, so it is not used at all.
   */
  station(): Promise<StationClient> {
    this.checked ??= this.ctx.station.ping().then((info) => {
      if (info.protocol !== PROTOCOL)
        throw new FleetError(
          "INVALID_INPUT",
          `station.protocol: got ${info.protocol}, want ${PROTOCOL} (a farm before version 2 lets anyone take over closed devices; upgrade it)`,
          "station",
        );
      return this.ctx.station;
    });
    return this.checked;
  }
  async loadKeys(): Promise<void> {
    this.keys = new Map();
    // a revoked device's key too: a key revoked (keyCompromise) is never certified again for another device
    for await (const page of this.pages(["attested", "issued", "installed", "active", "revoked"]))
      for (const d of page) if (d.publicKey) this.keys.set(sha(d.publicKey).toString("hex"), d.deviceId);
  }
  /** The device's current certificate, if it is live. */
  async liveCert(d: DeviceRecord): Promise<CertificateRecord | undefined> {
    if (!d.certSerial) return undefined;
    const cs = await this.ctx.registry.certificates({ deviceId: d.deviceId, status: ["live"] });
    return cs.find((c) => c.serial === d.certSerial);
  }
  failed(
    d: DeviceRecord,
    res: Extract<BatchItem<unknown>, { ok: false }>,
    q: (d: DeviceRecord, reason: string) => unknown,
    step: string,
  ): undefined {
    const e = res.error;
    if (isTransient(e) || staleChallenge(e)) {
      this.unreachable++;
      return undefined;
    }
    const detail = e.message.replace(/[\r\n]+/g, " ").slice(0, 200);
    if (e.status === UNAUTHORIZED)
      return q(
        d,
        `owned-elsewhere: ${step}: the device is closed under a trust anchor this batch's CA does not chain to, and refused its signed command: ${detail}`,
      ) as undefined;
    if (e.code === "INTEGRITY" && /KEY_FAILURE/.test(e.message))
      q(
        d,
        `key-failure: ${step}: the device cannot reconstruct its identity key (PUF unreadable, or a clone without the genuine PUF): ${detail}`,
      );
    else if (e.code === "NOT_FOUND") q(d, `unknown-device: ${step}: the station does not know this device`);
    else q(d, `${step}-refused: ${detail}`);
    return undefined;
  }
}

export const COMPROMISE = /^(key-mismatch|duplicate-key|attestation-failed)/;

/** Quarantine a device; one that held certificates has them revoked (a quarantined device is never certified). */
export function quarantine(d: DeviceRecord, from: DeviceState, reason: string): Transition {
  const certified = from === "issued" || from === "installed" || from === "active";
  return {
    deviceId: d.deviceId,
    batch: d.batch,
    from,
    to: "quarantined",
    reason,
    ...(certified
      ? {
          revoke: {
            at: new Date(),
            reason: COMPROMISE.test(reason) ? "keyCompromise" : "cessationOfOperation",
          },
        }
      : {}),
  };
}

export const serialHex = (b: Uint8Array): string => {
  const h = Buffer.from(b)
    .toString("hex")
    .replace(/^(00)+/, "");
  return h.length ? h : "00";
};

export function emptyCounts(): StateCounts {
  return {
    pending: 0,
    attested: 0,
    issued: 0,
    installed: 0,
    active: 0,
    quarantined: 0,
    revoked: 0,
    decommissioned: 0,
  };
}

export const fmtPct = (x: number) => `${(x * 100).toFixed(x < 0.01 ? 2 : 1)}%`;
export const describeCounts = (c: StateCounts): string =>
  Object.entries(c)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${n.toLocaleString("en-US")}`)
    .join(", ") || "no devices";
export const describeReasons = (r: Record<string, number>) =>
  Object.entries(r)
    .map(([k, n]) => `${k} ${n}`)
    .join(", ");
