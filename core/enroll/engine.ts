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
import { verifyCsr } from "../station/csr";
import { checkModel, deviceId, MAX_COUNT } from "../station/ids";
import type { IdentifyResult } from "../station/messages";
import { randomSerial } from "../x509/cert";
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
  /** live certificates issued before this instant are re-issued (profile or CA changed) */
  reissueSince: string | null;
  /** the caller's declaration (no secrets), for import */
  declaration?: unknown;
}

const WORKING: DeviceState[] = ["pending", "attested", "issued", "installed"];
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

  /** What a converge would do, from the registry alone (used by diff/preview). */
  async plan(): Promise<BatchPlan> {
    const r = this.ctx.registry;
    const stored = await this.storedSpec();
    const counts = stored ? await r.counts(this.spec.name) : emptyCounts();
    const known = Object.values(counts).reduce((a, b) => a + b, 0);
    const lo = this.spec.firstSerial;
    const hi = lo + this.spec.count;
    let outside = 0;
    let inside = 0;
    if (stored) {
      // devices outside the declared range that are not decommissioned yet
      const sLo = stored.firstSerial;
      const sHi = stored.firstSerial + stored.count;
      const overlap = Math.max(0, Math.min(hi, sHi) - Math.max(lo, sLo));
      inside = overlap;
      outside = stored.count - overlap;
    }
    const reissue =
      stored &&
      (stored.profileDigest !== profileDigest(this.spec.profile) ||
        stored.issuerFingerprint !== this.ctx.issuer.fingerprint)
        ? counts.active
        : stored?.reissueSince
          ? await this.countStale(stored.reissueSince)
          : 0;
    return {
      enroll: this.spec.count - inside + (stored ? counts.pending + counts.attested : 0),
      resume: counts.issued + counts.installed,
      reissue,
      decommission: Math.min(outside, known - counts.decommissioned),
      quarantined: counts.quarantined,
      active: counts.active,
    };
  }

  private async countStale(since: string): Promise<number> {
    let n = 0;
    for await (const page of this.pages(["active"])) n += (await this.stale(page, new Date(since))).length;
    return n;
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

  /** Active devices whose live certificate predates `since` or comes from another issuer. */
  private async stale(page: DeviceRecord[], since: Date): Promise<DeviceRecord[]> {
    const out: DeviceRecord[] = [];
    for (const d of page) {
      const c = await this.liveCert(d);
      if (!c || c.issuedAt < since || c.issuer !== this.ctx.issuer.fingerprint) out.push(d);
    }
    return out;
  }

  /** Bring the batch to its declaration: enroll, resume, re-issue, decommission. */
  async converge(): Promise<BatchSummary> {
    const r = this.ctx.registry;
    const stored = await this.storedSpec();
    const pd = profileDigest(this.spec.profile);
    let reissueSince = stored?.reissueSince ?? null;
    if (stored && (stored.profileDigest !== pd || stored.issuerFingerprint !== this.ctx.issuer.fingerprint))
      reissueSince = this.now().toISOString();
    const next: StoredSpec = {
      firstSerial: this.spec.firstSerial,
      count: this.spec.count,
      profileDigest: pd,
      issuerFingerprint: this.ctx.issuer.fingerprint,
      reissueSince,
      declaration: this.opts.declaration,
    };
    const removed = stored ? this.removedIds(stored) : [];
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
      async () => (await pages.next()).value || undefined,
      this.concurrency,
      async (page) => {
        const n = await this.wave(page, template);
        meter.add(n);
      },
    );
    meter.add(0, true);

    if (reissueSince) {
      const before = this.reissued;
      await this.reissue(new Date(reissueSince), template);
      this.revokedThisRun += this.reissued - before; // each confirmed re-issue supersedes one certificate
      if (this.unreachable === 0)
        await r.putBatch({
          name: this.spec.name,
          model: this.spec.model,
          source: this.spec.source,
          spec: JSON.stringify({ ...next, reissueSince: null }),
        });
    }
    if (removed.length) await this.decommission(removed, "removed from the batch");
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

  private removedIds(stored: StoredSpec): string[] {
    const out: string[] = [];
    const lo = this.spec.firstSerial;
    const hi = lo + this.spec.count;
    for (let s = stored.firstSerial; s < stored.firstSerial + stored.count; s++)
      if (s < lo || s >= hi) out.push(deviceId(this.spec.model, s));
    return out;
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
    const toInstall: Array<{ d: DeviceRecord; chain: Buffer[] }> = [];
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
  private async attest(
    devs: DeviceRecord[],
  ): Promise<Array<{ d: DeviceRecord; id: IdentifyResult; key: crypto.KeyObject }>> {
    const st = this.ctx.station;
    const opts = { deviceTimeoutMs: this.ctx.deviceTimeoutMs };
    const ident = await st.identifyBatch(
      devs.map((d) => d.deviceId),
      opts,
    );
    const tx: Transition[] = [];
    const q = (d: DeviceRecord, reason: string) => tx.push(quarantine(d, d.state, reason));
    const candidates: Array<{ d: DeviceRecord; id: IdentifyResult; nonce: Buffer }> = [];
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
    const att = candidates.length
      ? await st.attestBatch(
          candidates.map((c) => ({ device: c.d.deviceId, nonce: c.nonce })),
          opts,
        )
      : [];
    const out: Array<{ d: DeviceRecord; id: IdentifyResult; key: crypto.KeyObject }> = [];
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
        out.push({ d: { ...c.d, state: c.d.state === "pending" ? "attested" : c.d.state }, id: c.id, key });
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
    if (isTransient(e)) {
      this.unreachable++;
      return undefined;
    }
    const detail = e.message.replace(/[\r\n]+/g, " ").slice(0, 200);
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
  private async issue(
    devs: Array<{ d: DeviceRecord; id: IdentifyResult; key: crypto.KeyObject }>,
    template: CompiledTemplate,
  ): Promise<Array<{ d: DeviceRecord; chain: Buffer[] }>> {
    if (!devs.length) return [];
    const names = devs.map((x) =>
      deviceNames(this.spec.profile, x.d.deviceId, this.spec.name, this.spec.model),
    );
    const csrs = await this.ctx.station.csrBatch(
      devs.map((x, i) => ({ device: x.d.deviceId, subject: names[i]!.subject })),
      { deviceTimeoutMs: this.ctx.deviceTimeoutMs },
    );
    const tx: Transition[] = [];
    const out: Array<{ d: DeviceRecord; chain: Buffer[] }> = [];
    const now = this.now();
    const q = (d: DeviceRecord, reason: string) => tx.push(quarantine(d, d.state, reason));
    for (let i = 0; i < csrs.length; i++)
      ((res: (typeof csrs)[number]): unknown => {
        const { d, id, key } = devs[i]!;
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
        out.push({ d: { ...d, state: "issued" }, chain: [der, ...this.chainDer] });
        return undefined;
      })(csrs[i]!);
    // recorded before any of these certificates leaves this process
    if (tx.length) await this.ctx.registry.apply(tx, now);
    return out;
  }

  /** set trust + install; records installed then active (or quarantined). Returns how many ended final. */
  private async install(items: Array<{ d: DeviceRecord; chain: Buffer[] }>): Promise<number> {
    const st = this.ctx.station;
    const opts = { deviceTimeoutMs: this.ctx.deviceTimeoutMs };
    const trust = await st.setTrustAnchorBatch(
      items.map((x) => ({ device: x.d.deviceId, anchor: this.rootDer })),
      opts,
    );
    const tx: Transition[] = [];
    let quarantined = 0;
    const q = (d: DeviceRecord, reason: string) => {
      quarantined++;
      tx.push(quarantine(d, d.state, reason));
    };
    const ready = items.filter((x, i) => {
      const r = trust[i]!;
      if (!r.ok) this.failed(x.d, r, q, "set-trust");
      return r.ok;
    });
    const inst = ready.length
      ? await st.installBatch(
          ready.map((x) => ({ device: x.d.deviceId, chain: x.chain })),
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

  /** Re-issue stale certificates in waves no larger than the policy allows. */
  private async reissue(since: Date, template: CompiledTemplate): Promise<void> {
    const waveMax = Math.max(1, Math.floor(this.spec.count * this.spec.maxWaveFraction));
    const stale: DeviceRecord[] = [];
    for await (const page of this.pages(["active"])) stale.push(...(await this.stale(page, since)));
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
        await this.install(issued.map((x) => ({ d: { ...x.d, state: "issued" }, chain: x.chain })));
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

  /** Decommission devices at the station and in the registry (revoking their certificates). */
  async decommission(ids: string[], why: string): Promise<number> {
    const r = this.ctx.registry;
    const meter = new Meter("decommission", ids.length, this.ctx.onProgress);
    let n = 0;
    for (let i = 0; i < ids.length; i += this.waveSize) {
      const part = ids.slice(i, i + this.waveSize);
      const recs = (await Promise.all(part.map((id) => r.getDevice(id)))).filter(
        (d): d is DeviceRecord => !!d && d.batch === this.spec.name && d.state !== "decommissioned",
      );
      if (!recs.length) continue;
      const res = await this.ctx.station.decommissionBatch(
        recs.map((d) => d.deviceId),
        { deviceTimeoutMs: this.ctx.deviceTimeoutMs },
      );
      const at = this.now();
      const tx: Transition[] = [];
      for (let j = 0; j < res.length; j++)
        ((x: (typeof res)[number]): unknown => {
          const d = recs[j]!;
          if (!x.ok && isTransient(x.error)) {
            this.unreachable++;
            return;
          }
          const gone = !x.ok && x.error.code === "NOT_FOUND";
          const refused =
            !x.ok && !gone ? ` (the station refused to zeroize it: ${x.error.message.slice(0, 120)})` : "";
          tx.push({
            deviceId: d.deviceId,
            batch: d.batch,
            from: d.state,
            to: "decommissioned",
            reason: gone ? `${why} (the station no longer knows the device)` : why + refused,
            revoke: { at, reason: "cessationOfOperation" },
          });
          return undefined;
        })(res[j]!);
      if (tx.length) await r.apply(tx, at);
      n += tx.length;
      this.revokedThisRun += recs.filter((d) => d.certSerial).length;
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
    const ids: string[] = [];
    for await (const page of this.pages([
      "pending",
      "attested",
      "issued",
      "installed",
      "active",
      "quarantined",
      "revoked",
    ]))
      ids.push(...page.map((d) => d.deviceId));
    const n = await this.decommission(ids, "batch deleted");
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
   * Refresh: compare the registry with the devices. An active device that no longer holds its
   * certificate goes back to `issued` (the next run installs the recorded one again); a record
   * whose device the station does not know is quarantined. Returns the drift found.
   */
  async refresh(): Promise<{ lostCertificate: number; missingDevice: number; checked: number }> {
    const counts = await this.ctx.registry.counts(this.spec.name);
    const meter = new Meter("refresh", counts.active, this.ctx.onProgress);
    let lost = 0;
    let missing = 0;
    let checked = 0;
    for await (const page of this.pages(["active"])) {
      const res = await this.ctx.station.statusBatch(
        page.map((d) => d.deviceId),
        { deviceTimeoutMs: this.ctx.deviceTimeoutMs },
      );
      const tx: Transition[] = [];
      for (let i = 0; i < page.length; i++) {
        const d = page[i]!;
        const s = res[i]!;
        checked++;
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
      meter.add(page.length);
    }
    meter.add(0, true);
    return { lostCertificate: lost, missingDevice: missing, checked };
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
