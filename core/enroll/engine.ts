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
 * flight), and to the registry as one transaction per step per wave.
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
import { FleetError, invalid } from "../errors";
import type {
  CertificateRecord,
  DeviceRecord,
  DeviceState,
  Registry,
  StateCounts,
  Transition,
} from "../registry/types";
import { importP256Spki, verifyAttestation } from "../station/attest";
import type { BatchItem, StationClient } from "../station/client";
import type { CommandPayload } from "../station/command";
import { verifyCsr } from "../station/csr";
import type { StationError } from "../station/frame";
import { checkModel, deviceId, MAX_COUNT, SERIAL_DIGITS } from "../station/ids";
import {
  type CommandAuth,
  type IdentifyResult,
  type Lifecycle,
  PROTOCOL,
  UNAUTHORIZED,
} from "../station/messages";
import { randomSerial } from "../x509/cert";
import { signCommand } from "./authorize";
import { Conformance } from "./conformance";
import {
  type CompiledTemplate,
  compileTemplate,
  deviceNames,
  type IssuerMaterial,
  profileDigest,
  type ResolvedProfile,
} from "./profile";

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
}

/** What the registry holds about a batch, stored with it (no secrets). */
interface StoredSpec {
  firstSerial: number;
  count: number;
  profileDigest: string;
  issuerFingerprint: string;
  /** the caller's declaration (no secrets), for import */
  declaration?: unknown;
}

const WORKING: DeviceState[] = ["pending", "attested", "issued", "installed"];
const ALL_STATES: DeviceState[] = [...WORKING, "active", "quarantined", "revoked", "decommissioned"];
const LIVE_STATES: DeviceState[] = ALL_STATES.filter((s) => s !== "decommissioned");
const FINAL_OK: DeviceState[] = ["active"];

class Meter {
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
async function pool<T>(next: () => Promise<T | undefined>, concurrency: number, fn: (t: T) => Promise<void>) {
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

const isTransient = (e: FleetError) => e.code === "UNAVAILABLE";
/** Another run's command moved the device's challenge on: not a refusal, run again. */
const staleChallenge = (e: StationError) => e.status === UNAUTHORIZED && e.detail.startsWith("auth.nonce");

/** A certificate on its way to a device, with what a command to a closed device needs. */
interface ToInstall {
  d: DeviceRecord;
  chain: Buffer[];
  /** unknown for a resumed device (install asks STATUS) */
  lifecycle?: Lifecycle;
  challenge?: Buffer;
}

interface Attested {
  d: DeviceRecord;
  id: IdentifyResult;
  key: crypto.KeyObject;
  challenge?: Buffer;
}
const sha = (b: Uint8Array) => crypto.createHash("sha256").update(b).digest();

export class BatchEngine {
  private readonly now: () => Date;
  private readonly waveSize: number;
  private readonly concurrency: number;
  private readonly rootDer: Buffer;
  private readonly chainDer: Buffer[];
  private unreachable = 0;
  private enrolled = 0;
  private reissued = 0;
  private decommissioned = 0;
  private checked?: Promise<StationClient>;
  /** SHA-256 of identity keys seen in this batch -> device, to catch a cloned key */
  private keys?: Map<string, string>;

  /** certificates revoked by this engine (decommission, quarantine, superseded): the CRL needs publishing */
  revokedThisRun = 0;

  constructor(
    private readonly ctx: EngineContext,
    private readonly spec: BatchSpec,
    private readonly opts: { declaration?: unknown } = {},
  ) {
    validateSpec(spec);
    this.now = ctx.now ?? (() => new Date());
    this.waveSize = Math.min(Math.max(ctx.waveSize ?? 512, 1), 1024);
    this.concurrency = Math.max(ctx.concurrency ?? 4, 1);
    this.chainDer = [ctx.issuer.certificate, ...ctx.issuer.chain];
    this.rootDer = this.chainDer[this.chainDer.length - 1]!;
  }

  private ids(): string[] {
    const out = new Array<string>(this.spec.count);
    for (let i = 0; i < this.spec.count; i++) out[i] = deviceId(this.spec.model, this.spec.firstSerial + i);
    return out;
  }

  private async storedSpec(): Promise<StoredSpec | undefined> {
    const b = await this.ctx.registry.getBatch(this.spec.name);
    if (!b || b.deletedAt) return undefined;
    return JSON.parse(b.spec) as StoredSpec;
  }

  /** Is `id` one of the declared devices (serial in the declared range)? */
  private inRange(id: string): boolean {
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
  private async *outside(states: readonly DeviceState[]): AsyncGenerator<DeviceRecord[]> {
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

  /**
   * Live certificates of the batch that are not what the declaration issues: device -> serial.
   * One pass over the batch's live certificates (pages by serial), whatever their number.
   */
  private async nonConforming(): Promise<Map<string, string>> {
    const c = new Conformance(this.spec.profile, this.ctx.issuer, this.spec.name, this.spec.model);
    const out = new Map<string, string>();
    let after: string | undefined;
    for (;;) {
      const page = await this.ctx.registry.certificates({
        batch: this.spec.name,
        status: ["live"],
        after,
        limit: 2000,
      });
      for (const cert of page) if (!c.matches(cert)) out.set(cert.deviceId, cert.serial);
      if (page.length < 2000) return out;
      after = page[page.length - 1]!.serial;
    }
  }

  /** Declared active devices whose current certificate does not conform (or is not recorded). */
  private async *stalePages(): AsyncGenerator<DeviceRecord[]> {
    const bad = await this.nonConforming();
    for await (const page of this.pages(["active"])) {
      const stale = page.filter(
        (d) => this.inRange(d.deviceId) && (!d.certSerial || bad.get(d.deviceId) === d.certSerial),
      );
      if (stale.length) yield stale;
    }
  }

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
    for await (const page of this.stalePages()) reissue += page.length;
    return {
      enroll: this.spec.count - (known - outsideAll) + (counts.pending + counts.attested - outsideWorking),
      resume: counts.issued + counts.installed - outsideResume,
      reissue,
      decommission: outsideLive,
      quarantined: counts.quarantined,
      active: counts.active,
    };
  }

  private async *pages(states: DeviceState[]): AsyncGenerator<DeviceRecord[]> {
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
  private station(): Promise<StationClient> {
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

    const counts0 = await r.counts(this.spec.name);
    const meter = new Meter("enroll", this.spec.count, this.ctx.onProgress);
    meter.add(counts0.active + counts0.quarantined + counts0.revoked + counts0.decommissioned);
    const pages = this.pages(WORKING);
    const template = compileTemplate(this.spec.profile, this.ctx.issuer, this.now());
    await pool(
      async () => {
        // devices outside the range are decommissioned below, not enrolled
        for (;;) {
          const page: DeviceRecord[] | undefined = (await pages.next()).value || undefined;
          if (!page) return undefined;
          const mine = page.filter((d) => this.inRange(d.deviceId));
          if (mine.length) return mine;
        }
      },
      this.concurrency,
      async (page) => {
        const n = await this.wave(page, template);
        meter.add(n);
      },
    );
    meter.add(0, true);

    const removed: DeviceRecord[] = [];
    for await (const page of this.outside(LIVE_STATES)) removed.push(...page);
    if (removed.length) await this.decommission(removed, "removed from the batch");

    const before = this.reissued;
    await this.reissue(template);
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

  private async loadKeys(): Promise<void> {
    this.keys = new Map();
    for await (const page of this.pages(["attested", "issued", "installed", "active"]))
      for (const d of page) if (d.publicKey) this.keys.set(sha(d.publicKey).toString("hex"), d.deviceId);
  }

  /** One wave of devices in working states; returns how many reached a final state. */
  private async wave(page: DeviceRecord[], template: CompiledTemplate): Promise<number> {
    const fresh = page.filter((d) => d.state === "pending" || d.state === "attested");
    const resume = page.filter((d) => d.state === "issued" || d.state === "installed");
    const toInstall: ToInstall[] = [];
    let final = 0;

    if (fresh.length) {
      const attested = await this.attest(fresh);
      final += fresh.length - attested.length;
      const issued = await this.issue(attested, template);
      final += attested.length - issued.length;
      toInstall.push(...issued);
    }
    for (const d of resume) {
      const cert = await this.liveCert(d);
      if (cert) toInstall.push({ d, chain: [cert.der, ...this.chainDer] });
      else {
        // an issued state without its certificate cannot happen through this engine; start over
        await this.ctx.registry.apply([
          quarantine(d, d.state, "registry: no live certificate recorded for an issued device"),
        ]);
        final++;
      }
    }
    if (toInstall.length) final += await this.install(toInstall);
    return final;
  }

  /** The device's current certificate, if it is live. */
  private async liveCert(d: DeviceRecord): Promise<CertificateRecord | undefined> {
    if (!d.certSerial) return undefined;
    const cs = await this.ctx.registry.certificates({ deviceId: d.deviceId, status: ["live"] });
    return cs.find((c) => c.serial === d.certSerial);
  }

  /** identify + attest; records attested (with the key) or quarantined. Returns the attested. */
  private async attest(devs: DeviceRecord[]): Promise<Attested[]> {
    const st = await this.station();
    const opts = { deviceTimeoutMs: this.ctx.deviceTimeoutMs };
    const ident = await st.identifyBatch(
      devs.map((d) => d.deviceId),
      opts,
    );
    const tx: Transition[] = [];
    const q = (d: DeviceRecord, reason: string) => tx.push(quarantine(d, d.state, reason));
    let candidates: Array<{ d: DeviceRecord; id: IdentifyResult; nonce: Buffer }> = [];
    for (let i = 0; i < ident.length; i++)
      ((res: (typeof ident)[number]): unknown => {
        const d = devs[i]!;
        if (!res.ok) return this.failed(d, res, q, "identify");
        const id = res.value;
        if (id.model !== this.spec.model)
          return q(d, `model-mismatch: device reports ${id.model}, batch declares ${this.spec.model}`);
        if (id.source !== this.spec.source)
          return q(
            d,
            `source-mismatch: device identity comes from ${id.source}, batch declares ${this.spec.source}`,
          );
        if (id.lifecycle === "decommissioned" || !id.publicKey)
          return q(
            d,
            "no-identity-key: the device has no identity key (decommissioned or never provisioned)",
          );
        if (d.publicKey && !d.publicKey.equals(id.publicKey))
          return q(
            d,
            "key-mismatch: the device presents another identity key than the one recorded for it (clone or swapped part)",
          );
        const kh = sha(id.publicKey).toString("hex");
        const owner = this.keys?.get(kh);
        if (owner && owner !== d.deviceId)
          return q(d, `duplicate-key: same identity key as ${owner} (cloned key)`);
        candidates.push({ d, id, nonce: crypto.randomBytes(32) });
        return undefined;
      })(ident[i]!);
    // a closed device that trusts other roots than ours belongs to another CA: say so before
    // certifying anything for it (what it reports is a hint; its refusal of our commands is the proof)
    const closed = candidates.filter((c) => c.id.lifecycle === "closed");
    if (closed.length) {
      const status = await st.statusBatch(
        closed.map((c) => c.d.deviceId),
        opts,
      );
      const ours = sha(this.rootDer);
      const dropped = new Set<string>();
      closed.forEach((c, i) => {
        const r = status[i]!;
        if (!r.ok) {
          this.failed(c.d, r, q, "status");
          dropped.add(c.d.deviceId);
        } else if (r.value.trustAnchors.length > 0 && !r.value.trustAnchors.some((a) => a.equals(ours))) {
          q(
            c.d,
            "owned-elsewhere: identify: the device is closed under a trust anchor other than this batch's root",
          );
          dropped.add(c.d.deviceId);
        }
      });
      if (dropped.size) candidates = candidates.filter((c) => !dropped.has(c.d.deviceId));
    }
    const att = candidates.length
      ? await st.attestBatch(
          candidates.map((c) => ({ device: c.d.deviceId, nonce: c.nonce })),
          opts,
        )
      : [];
    const out: Attested[] = [];
    for (let i = 0; i < att.length; i++)
      ((res: (typeof att)[number]): unknown => {
        const c = candidates[i]!;
        if (!res.ok) return this.failed(c.d, res, q, "attest");
        let key: crypto.KeyObject;
        try {
          key = importP256Spki(c.id.publicKey!);
        } catch {
          return q(c.d, "bad-key: the identity key is not a valid P-256 key");
        }
        if (
          res.value.epoch !== c.id.epoch ||
          !verifyAttestation(key, c.d.deviceId, res.value.epoch, c.nonce, res.value.signature)
        )
          return q(
            c.d,
            "attestation-failed: the answer is not signed by the identified key (clone suspected)",
          );
        this.keys?.set(sha(c.id.publicKey!).toString("hex"), c.d.deviceId);
        if (c.d.state === "pending")
          tx.push({
            deviceId: c.d.deviceId,
            batch: c.d.batch,
            from: "pending",
            to: "attested",
            publicKey: c.id.publicKey,
            epoch: c.id.epoch,
          });
        // the state the registry now holds: pending became attested; attested or active stay
        out.push({
          d: { ...c.d, state: c.d.state === "pending" ? "attested" : c.d.state },
          id: c.id,
          key,
          challenge: res.value.challenge,
        });
        return undefined;
      })(att[i]!);
    if (tx.length) await this.ctx.registry.apply(tx, this.now());
    return out;
  }

  private failed(
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

  /** CSR, verify, issue, and record `issued` with the certificate. Returns what to install. */
  private async issue(devs: Attested[], template: CompiledTemplate): Promise<ToInstall[]> {
    if (!devs.length) return [];
    const names = devs.map((x) =>
      deviceNames(this.spec.profile, x.d.deviceId, this.spec.name, this.spec.model),
    );
    const csrs = await (await this.station()).csrBatch(
      devs.map((x, i) => ({ device: x.d.deviceId, subject: names[i]!.subject })),
      { deviceTimeoutMs: this.ctx.deviceTimeoutMs },
    );
    const tx: Transition[] = [];
    const out: ToInstall[] = [];
    const now = this.now();
    const q = (d: DeviceRecord, reason: string) => tx.push(quarantine(d, d.state, reason));
    for (let i = 0; i < csrs.length; i++)
      ((res: (typeof csrs)[number]): unknown => {
        const { d, id, key, challenge } = devs[i]!;
        if (!res.ok) return this.failed(d, res, q, "csr");
        if (res.value.epoch !== id.epoch)
          return q(d, `csr-refused: epoch ${res.value.epoch}, identified ${id.epoch}`);
        let spki: Buffer;
        try {
          spki = verifyCsr(res.value.csr, id.publicKey, key).spki;
        } catch (e) {
          return q(d, `csr-invalid: ${(e as Error).message.slice(0, 160)}`);
        }
        const serial = randomSerial();
        const n = names[i]!;
        const der = template.issue(
          serial,
          n.commonName,
          spki,
          n.san.uri.length || n.san.dns.length ? n.san : undefined,
        );
        tx.push({
          deviceId: d.deviceId,
          batch: d.batch,
          from: d.state,
          to: "issued",
          certificate: {
            serial: serialHex(serial),
            deviceId: d.deviceId,
            batch: d.batch,
            issuer: this.ctx.issuer.fingerprint,
            der,
            notBefore: template.notBefore,
            notAfter: template.notAfter,
            issuedAt: now,
          },
        });
        out.push({
          d: { ...d, state: "issued" },
          chain: [der, ...this.chainDer],
          lifecycle: id.lifecycle,
          challenge,
        });
        return undefined;
      })(csrs[i]!);
    // recorded before any of these certificates leaves this process
    if (tx.length) await this.ctx.registry.apply(tx, now);
    return out;
  }

  /**
   * set trust + install; records installed then active (or quarantined). Returns how many ended
   * final. A closed device gets both as signed commands, the install for the challenge the
   * set-trust answer hands on; a resumed device's lifecycle and challenge come from STATUS.
   */
  private async install(items: ToInstall[]): Promise<number> {
    const st = await this.station();
    const opts = { deviceTimeoutMs: this.ctx.deviceTimeoutMs };
    const tx: Transition[] = [];
    let quarantined = 0;
    const q = (d: DeviceRecord, reason: string) => {
      quarantined++;
      tx.push(quarantine(d, d.state, reason));
    };
    let live = items;
    const unknown = items.filter((x) => x.lifecycle === undefined);
    if (unknown.length) {
      const res = await st.statusBatch(
        unknown.map((x) => x.d.deviceId),
        opts,
      );
      const gone = new Set<ToInstall>();
      unknown.forEach((x, i) => {
        const r = res[i]!;
        if (!r.ok) {
          this.failed(x.d, r, q, "status");
          gone.add(x);
          return;
        }
        x.lifecycle = r.value.lifecycle;
        x.challenge = r.value.challenge;
      });
      live = items.filter((x) => !gone.has(x));
    }
    const trust = live.length
      ? await st.setTrustAnchorBatch(
          live.map((x) => ({
            device: x.d.deviceId,
            anchor: this.rootDer,
            auth: this.command(x, { op: "SET_TRUST", anchor: this.rootDer }),
          })),
          opts,
        )
      : [];
    const ready = live.filter((x, i) => {
      const r = trust[i]!;
      if (!r.ok) this.failed(x.d, r, q, "set-trust");
      else if (r.value.challenge) x.challenge = r.value.challenge;
      return r.ok;
    });
    const inst = ready.length
      ? await st.installBatch(
          ready.map((x) => ({
            device: x.d.deviceId,
            chain: x.chain,
            auth: this.command(x, { op: "INSTALL", chain: x.chain }),
          })),
          opts,
        )
      : [];
    const installed: DeviceRecord[] = [];
    for (let i = 0; i < inst.length; i++)
      ((r: (typeof inst)[number]): unknown => {
        const { d } = ready[i]!;
        if (!r.ok) return this.failed(d, r, q, "install");
        if (r.value.lifecycle !== "closed")
          return q(d, `install-unconfirmed: device lifecycle ${r.value.lifecycle}, want closed`);
        if (d.state === "issued")
          tx.push({
            deviceId: d.deviceId,
            batch: d.batch,
            from: "issued",
            to: "installed",
            epoch: r.value.epoch,
          });
        installed.push(d);
        return undefined;
      })(inst[i]!);
    if (tx.length) await this.ctx.registry.apply(tx, this.now());
    if (installed.length)
      await this.ctx.registry.apply(
        installed.map((d) => ({
          deviceId: d.deviceId,
          batch: d.batch,
          from: "installed" as const,
          to: "active" as const,
        })),
        this.now(),
      );
    this.enrolled += installed.length;
    return installed.length + quarantined;
  }

  /** The signed command a closed device needs (none for a device still on the line). */
  private command(x: ToInstall, payload: CommandPayload): CommandAuth | undefined {
    if (x.lifecycle !== "closed" || !x.challenge) return undefined;
    return signCommand(this.ctx.issuer, x.d.deviceId, payload, x.challenge);
  }

  /** Re-issue the certificates that do not conform to the declaration, in waves no larger than the policy allows. */
  private async reissue(template: CompiledTemplate): Promise<void> {
    const waveMax = Math.max(1, Math.floor(this.spec.count * this.spec.maxWaveFraction));
    const stale: DeviceRecord[] = [];
    for await (const page of this.stalePages()) stale.push(...page);
    if (!stale.length) return;
    const meter = new Meter("reissue", stale.length, this.ctx.onProgress);
    for (let w = 0; w < stale.length; w += waveMax) {
      const wave = stale.slice(w, w + waveMax);
      const before = this.unreachable;
      let quarantined = 0;
      for (let i = 0; i < wave.length; i += this.waveSize) {
        const part = wave.slice(i, i + this.waveSize);
        const attested = await this.attest(part); // active devices stay active until re-issued
        quarantined += part.length - attested.length;
        const issued = await this.issue(attested, template);
        quarantined += attested.length - issued.length;
        await this.install(issued);
        this.reissued += issued.length;
        meter.add(part.length);
      }
      // a wave that went badly stops the roll-out; devices not reached keep their live certificate
      const bad = quarantined + (this.unreachable - before);
      if (bad / wave.length > this.spec.maxQuarantinedFraction) {
        throw new FleetError(
          "POLICY_VIOLATION",
          `batch ${this.spec.name}: re-issue wave ${w / waveMax + 1} got ${bad} of ${wave.length} devices failing, ` +
            `want at most ${fmtPct(this.spec.maxQuarantinedFraction)}; roll-out stopped, the remaining devices keep their certificates`,
          "policy.rotation.maxWaveFraction",
        );
      }
    }
    meter.add(0, true);
  }

  /**
   * Decommission devices at the station and in the registry (revoking their certificates). A
   * closed device zeroizes only on a signed command, for the challenge its STATUS shows.
   */
  async decommission(devices: DeviceRecord[], why: string): Promise<number> {
    const r = this.ctx.registry;
    const st = await this.station();
    const opts = { deviceTimeoutMs: this.ctx.deviceTimeoutMs };
    const meter = new Meter("decommission", devices.length, this.ctx.onProgress);
    let n = 0;
    for (let i = 0; i < devices.length; i += this.waveSize) {
      const part = devices.slice(i, i + this.waveSize);
      const recs = part.filter((d) => d.batch === this.spec.name && d.state !== "decommissioned");
      if (!recs.length) continue;
      const status = await st.statusBatch(
        recs.map((d) => d.deviceId),
        opts,
      );
      const res = await st.decommissionBatch(
        recs.map((d, j) => {
          const s = status[j]!;
          const auth =
            s.ok && s.value.lifecycle === "closed" && s.value.challenge
              ? signCommand(
                  this.ctx.issuer,
                  d.deviceId,
                  { op: "DECOMMISSION", confirm: d.deviceId },
                  s.value.challenge,
                )
              : undefined;
          return { device: d.deviceId, auth };
        }),
        opts,
      );
      const at = this.now();
      const tx: Transition[] = [];
      for (let j = 0; j < res.length; j++)
        ((x: (typeof res)[number]): unknown => {
          const d = recs[j]!;
          if (!x.ok && (isTransient(x.error) || staleChallenge(x.error))) {
            this.unreachable++;
            return;
          }
          const gone = !x.ok && x.error.code === "NOT_FOUND";
          const refused = x.ok
            ? ""
            : x.error.status === UNAUTHORIZED
              ? ` (owned-elsewhere: the device refused this batch's signed command and was not zeroized: ${x.error.detail.slice(0, 120)})`
              : gone
                ? ""
                : ` (the station refused to zeroize it: ${x.error.message.slice(0, 120)})`;
          tx.push({
            deviceId: d.deviceId,
            batch: d.batch,
            from: d.state,
            to: "decommissioned",
            reason: gone ? `${why} (the station no longer knows the device)` : why + refused,
            revoke: { at, reason: "cessationOfOperation" },
          });
          if (d.certSerial) this.revokedThisRun++;
          return undefined;
        })(res[j]!);
      if (tx.length) await r.apply(tx, at);
      n += tx.length;
      meter.add(part.length);
    }
    this.decommissioned += n;
    meter.add(0, true);
    return n;
  }

  /** Delete the batch: decommission every device (revoking its certificates). */
  async deleteBatch(): Promise<{ revoked: number; decommissioned: number }> {
    const stored = await this.storedSpec();
    if (!stored) return { revoked: 0, decommissioned: 0 };
    const before = await this.ctx.registry.certificates({ batch: this.spec.name, status: ["live"] });
    const devs: DeviceRecord[] = [];
    for await (const page of this.pages(LIVE_STATES)) devs.push(...page);
    const n = await this.decommission(devs, "batch deleted");
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

  /**
   * Refresh: compare the registry with the devices. Every active device (or a random
   * `refreshSample` of them) attests for a fresh nonce, checked against the key and epoch on
   * record: one that cannot (a clone swapped in, another part) is quarantined and its
   * certificate revoked. An active device that no longer holds its certificate goes back to
   * `issued` (the next run installs the recorded one again); a record whose device the station
   * does not know is quarantined. Returns the drift found and the attestation sample.
   */
  async refresh(): Promise<RefreshResult> {
    const want = this.ctx.refreshSample;
    if (want !== undefined && !(Number.isInteger(want) && want >= 0))
      throw invalid("refreshSample", want, "an integer >= 0 (active devices to attest)");
    const counts = await this.ctx.registry.counts(this.spec.name);
    const population = counts.active;
    const sample = want === undefined || want >= population ? undefined : await this.sampleActive(want);
    const meter = new Meter("refresh", population, this.ctx.onProgress);
    const opts = { deviceTimeoutMs: this.ctx.deviceTimeoutMs };
    let lost = 0;
    let missing = 0;
    let checked = 0;
    let asked = 0;
    let failed = 0;
    for await (const page of this.pages(["active"])) {
      const st = await this.station();
      const toAttest = sample ? page.filter((d) => sample.has(d.deviceId)) : page;
      const nonces = toAttest.map(() => crypto.randomBytes(32));
      const [res, att] = await Promise.all([
        st.statusBatch(
          page.map((d) => d.deviceId),
          opts,
        ),
        toAttest.length
          ? st.attestBatch(
              toAttest.map((d, i) => ({ device: d.deviceId, nonce: nonces[i]! })),
              opts,
            )
          : Promise.resolve([]),
      ]);
      asked += toAttest.length;
      const tx: Transition[] = [];
      const bad = new Set<string>();
      const q = (d: DeviceRecord, reason: string) => {
        failed++;
        bad.add(d.deviceId);
        tx.push(quarantine(d, "active", reason));
      };
      toAttest.forEach((d, i) => {
        const a = att[i]!;
        if (!a.ok) {
          // unreachable: tried again next time; unknown: STATUS below says so
          if (isTransient(a.error) || a.error.code === "NOT_FOUND") return;
          const detail = a.error.message.replace(/[\r\n]+/g, " ").slice(0, 160);
          q(
            d,
            `attestation-failed: refresh: the device cannot attest with its identity key (clone or swapped part suspected): ${detail}`,
          );
        } else if (d.epoch !== null && a.value.epoch !== d.epoch)
          q(
            d,
            `key-mismatch: refresh: the device attests with key epoch ${a.value.epoch}, the registry records ${d.epoch}`,
          );
        else if (
          !d.publicKey ||
          !verifyAttestation(d.publicKey, d.deviceId, a.value.epoch, nonces[i]!, a.value.signature)
        )
          q(
            d,
            "attestation-failed: refresh: the answer is not signed by the key recorded for this device (clone or swapped part)",
          );
      });
      for (let i = 0; i < page.length; i++) {
        const d = page[i]!;
        const s = res[i]!;
        checked++;
        if (bad.has(d.deviceId)) continue;
        if (!s.ok) {
          if (s.error.code === "NOT_FOUND") {
            missing++;
            tx.push(
              quarantine(
                d,
                "active",
                "drift: a registry record without a device (the station does not know it)",
              ),
            );
          }
          continue;
        }
        const cert = await this.liveCert(d);
        const has = cert && s.value.chain.length > 0 && s.value.chain[0]!.equals(cert.der);
        if (!has) {
          lost++;
          tx.push({
            deviceId: d.deviceId,
            batch: d.batch,
            from: "active",
            to: "issued",
            reason: "drift: the device lost its certificate; the recorded one will be installed again",
          });
        }
      }
      if (tx.length) await this.ctx.registry.apply(tx, this.now());
      this.revokedThisRun += bad.size; // a quarantined active device's certificate is revoked
      meter.add(page.length);
    }
    meter.add(0, true);
    return {
      lostCertificate: lost,
      missingDevice: missing,
      checked,
      attestation: { sample: asked, population, failed },
    };
  }

  /** `k` active devices drawn uniformly (reservoir sampling: one pass, memory for `k` IDs). */
  private async sampleActive(k: number): Promise<Set<string>> {
    const picked: string[] = [];
    let seen = 0;
    for await (const page of this.pages(["active"]))
      for (const d of page) {
        seen++;
        if (picked.length < k) picked.push(d.deviceId);
        else {
          const j = crypto.randomInt(seen);
          if (j < k) picked[j] = d.deviceId;
        }
      }
    return new Set(picked);
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
}

const COMPROMISE = /^(key-mismatch|duplicate-key|attestation-failed)/;

/** Quarantine a device; one that held certificates has them revoked (a quarantined device is never certified). */
function quarantine(d: DeviceRecord, from: DeviceState, reason: string): Transition {
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

const fmtPct = (x: number) => `${(x * 100).toFixed(x < 0.01 ? 2 : 1)}%`;
export const describeCounts = (c: StateCounts): string =>
  Object.entries(c)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${n.toLocaleString("en-US")}`)
    .join(", ") || "no devices";
const describeReasons = (r: Record<string, number>) =>
  Object.entries(r)
    .map(([k, n]) => `${k} ${n}`)
    .join(", ");

/** Words a reviewer understands: "enroll 5,000 devices, re-issue 0, decommission 0". */
export function describePlan(p: BatchPlan): string {
  const n = (x: number) => x.toLocaleString("en-US");
  const parts = [
    `enroll ${n(p.enroll)} device${p.enroll === 1 ? "" : "s"}`,
    `re-issue ${n(p.reissue)}`,
    `decommission ${n(p.decommission)}`,
  ];
  if (p.resume) parts.push(`finish ${n(p.resume)} interrupted`);
  return parts.join(", ");
}
