/**
 * Hub synchronisation, one lifecycle step (style.md): keep one hub's registrations of one batch in
 * step with the registry, the source of truth (brief, rule 2). The registry says which
 * certificates should connect (every live certificate of a device in good standing: issued,
 * installed or active; two during a rotation) and records, per (hub, certificate), what the hub
 * was told (registry hub records, HUB_TRANSITIONS). A sync:
 *   1. makes the hub trust the batch's issuing CA and its chain's CRLs (driver.ensureTrust);
 *   2. registers, in waves, every wanted certificate the hub does not hold: the intent
 *      (`registering`) is written before the hub is called and the outcome (`active` with the
 *      hub's id, or `failed` with its reason) after, so a run killed between the two is retried
 *      idempotently by the next one and nothing is registered twice;
 *   3. disables, the same way (`disabling` -> `disabled`), every record whose certificate is no
 *      longer wanted (revoked, superseded, device decommissioned, quarantined or revoked).
 * Waves are sized from the driver's rate (about 30 s of calls) so progress, the registry and a
 * kill -9 never lose more than a wave's calls. The plan is computed from the registry alone, so
 * `pulumi preview` says what an `up` will do without calling the hub.
 */
import { FleetError } from "../errors";
import { sha256Hex } from "../registry/chain";
import type { HubChange, HubRegistrationRecord, HubStatus, Registry } from "../registry/types";
import type { DeviceCert, HubDriver, HubTrustSummary, Outcome, RemoteRef, TrustedCa } from "./types";

/** Device states whose live certificates a hub should accept. */
export const CONNECTABLE = ["issued", "installed", "active"] as const;

const PAGE = 2000;

export interface HubSyncSpec {
  /** the registration's name: the `hub` of the registry's records */
  hub: string;
  batch: string;
}

export interface HubPlan {
  /** wanted certificates the hub does not hold yet (including failed ones retried) */
  register: number;
  /** records to disable at the hub */
  disable: number;
  /** intents an interrupted run left (registering / disabling): finished first */
  resume: number;
  /** already as wanted */
  unchanged: number;
}

interface Work {
  plan: HubPlan;
  register: DeviceCert[];
  registerFrom: Map<string, HubStatus | null>;
  disable: HubRegistrationRecord[];
}

async function allHubRecords(
  registry: Registry,
  spec: { hub: string; batch?: string },
): Promise<Map<string, HubRegistrationRecord>> {
  const out = new Map<string, HubRegistrationRecord>();
  for (let after: { deviceId: string; serial: string } | undefined; ; ) {
    const page = await registry.hubRegistrations(spec.hub, {
      ...(spec.batch !== undefined ? { batch: spec.batch } : {}),
      limit: PAGE,
      ...(after ? { after } : {}),
    });
    for (const r of page) out.set(r.serial, r);
    if (page.length < PAGE) break;
    const last = page[page.length - 1]!;
    after = { deviceId: last.deviceId, serial: last.serial };
  }
  return out;
}

async function connectableDevices(registry: Registry, batch: string): Promise<Set<string>> {
  const out = new Set<string>();
  for (let after: string | undefined; ; ) {
    const page = await registry.listDevices(batch, {
      states: CONNECTABLE,
      limit: PAGE,
      ...(after ? { after } : {}),
    });
    for (const d of page) out.add(d.deviceId);
    if (page.length < PAGE) break;
    after = page[page.length - 1]!.deviceId;
  }
  return out;
}

/**
 * What a sync would do, from the registry alone. With `withCerts`, the certificates to register
 * (DER included) are collected too; a plan for a preview needs only the counts.
 */
async function work(registry: Registry, spec: HubSyncSpec, withCerts: boolean): Promise<Work> {
  const records = await allHubRecords(registry, spec);
  const good = await connectableDevices(registry, spec.batch);
  const plan: HubPlan = { register: 0, disable: 0, resume: 0, unchanged: 0 };
  const register: DeviceCert[] = [];
  const registerFrom = new Map<string, HubStatus | null>();
  const wanted = new Set<string>();
  for (let after: string | undefined; ; ) {
    const page = await registry.certificates({
      batch: spec.batch,
      status: ["live"],
      limit: PAGE,
      ...(after ? { after } : {}),
    });
    for (const c of page) {
      if (!good.has(c.deviceId)) continue;
      wanted.add(c.serial);
      const r = records.get(c.serial);
      if (r?.status === "active") {
        plan.unchanged++;
        continue;
      }
      if (r?.status === "registering") plan.resume++;
      else plan.register++;
      registerFrom.set(c.serial, r?.status ?? null);
      if (withCerts)
        register.push({
          deviceId: c.deviceId,
          batch: c.batch,
          serial: c.serial,
          der: c.der,
          sha256: sha256Hex(c.der),
          issuer: c.issuer,
        });
    }
    if (page.length < PAGE) break;
    after = page[page.length - 1]!.serial;
  }
  const disable: HubRegistrationRecord[] = [];
  for (const r of records.values()) {
    if (wanted.has(r.serial)) continue;
    if (r.status === "disabled" || r.status === "removed") continue;
    if (r.status === "disabling") plan.resume++;
    else plan.disable++;
    disable.push(r);
  }
  return { plan, register, registerFrom, disable };
}

export async function planHubSync(registry: Registry, spec: HubSyncSpec): Promise<HubPlan> {
  return (await work(registry, spec, false)).plan;
}

const n = (x: number) => x.toLocaleString("en-US");

/** "about 2 h 47 min", "about 40 s". */
export function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "unknown";
  if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s`;
  const m = Math.round(seconds / 60);
  if (m < 60) return `about ${m} min`;
  return `about ${Math.floor(m / 60)} h ${m % 60} min`;
}

/**
 * The plan in words, as `pulumi preview` shows it: "register 1,000, disable 12 at local hub
 * 'demo'"; with a rate-limited per-device hub, the time it will take and the faster mode:
 * "register 100,000 devices with AWS IoT 'prod' at 10/s: about 2 h 47 min; consider just-in-time provisioning".
 */
export function describeHubPlan(
  p: HubPlan,
  hub: { label: string; mode: "per-device" | "ca"; ratePerSecond: number; kind?: string },
): string {
  const todo = p.register + p.resume;
  const parts: string[] = [];
  if (hub.mode === "ca") {
    parts.push(
      `record ${n(p.register)} device${p.register === 1 ? "" : "s"} trusted through the CA at ${hub.label} (no per-device call)`,
    );
  } else if (Number.isFinite(hub.ratePerSecond) && hub.ratePerSecond > 0 && todo > 0) {
    const secs = todo / hub.ratePerSecond;
    let s = `register ${n(todo)} device${todo === 1 ? "" : "s"} with ${hub.label} at ${n(hub.ratePerSecond)}/s: ${duration(secs)}`;
    if (secs > 600)
      s += `; consider ${hub.kind === "azure" ? "an enrollment group" : "just-in-time provisioning"}`;
    parts.push(s);
  } else parts.push(`register ${n(todo)}`);
  parts.push(`disable ${n(p.disable)}`);
  if (p.resume) parts.push(`finish ${n(p.resume)} interrupted`);
  const joined = parts.join(parts[0]!.includes(";") ? "; " : ", ");
  return `${joined}${hub.mode === "per-device" && !(Number.isFinite(hub.ratePerSecond) && todo > 0) ? ` at ${hub.label}` : ""}`;
}

export interface HubSyncResult {
  trust: HubTrustSummary;
  registered: number;
  disabled: number;
  failed: Array<{ deviceId: string; serial: string; reason: string; retryable: boolean }>;
}

export interface SyncOptions {
  onProgress?: (p: {
    phase: "register" | "disable";
    done: number;
    total: number;
    ratePerSecond: number;
    etaSeconds: number;
  }) => void;
  /** certificates per wave (default: about 30 s of the driver's rate, at most 20,000) */
  wave?: number;
  now?: () => Date;
}

function waveSize(driver: HubDriver, o: SyncOptions): number {
  if (o.wave) return o.wave;
  const r = driver.ratePerSecond;
  return Number.isFinite(r) && r > 0 ? Math.max(20, Math.min(20_000, Math.ceil(r * 30))) : 20_000;
}

function progressOf(o: SyncOptions, phase: "register" | "disable", total: number) {
  const start = Date.now();
  return (done: number) => {
    const secs = (Date.now() - start) / 1000;
    const rate = secs > 0 ? done / secs : 0;
    o.onProgress?.({
      phase,
      done,
      total,
      ratePerSecond: rate,
      etaSeconds: rate > 0 ? (total - done) / rate : 0,
    });
  };
}

/** Record the outcomes of a wave: every intent ends as done (to) or failed. */
function outcomes<T extends { deviceId: string; serial: string }>(
  spec: HubSyncSpec,
  items: readonly T[],
  got: readonly Outcome[],
  from: HubStatus,
  to: HubStatus,
  result: HubSyncResult,
): HubChange[] {
  const by = new Map(got.map((o) => [o.serial, o]));
  const changes: HubChange[] = [];
  for (const it of items) {
    const o = by.get(it.serial);
    const base = { hub: spec.hub, deviceId: it.deviceId, batch: spec.batch, serial: it.serial, from };
    if (o?.ok) changes.push({ ...base, to, remoteId: o.remoteId });
    else {
      const reason = o ? o.reason : "the hub gave no answer for it";
      const retryable = o ? o.retryable : true;
      result.failed.push({ deviceId: it.deviceId, serial: it.serial, reason, retryable });
      // a disable that failed stays an intent (disabling): the next run tries again
      if (from === "registering") changes.push({ ...base, to: "failed", reason: reason.slice(0, 500) });
    }
  }
  return changes;
}

/** Bring the hub in step with the registry for one batch (see the module comment). */
export async function syncHub(
  registry: Registry,
  driver: HubDriver,
  spec: HubSyncSpec,
  cas: readonly TrustedCa[],
  o: SyncOptions = {},
): Promise<HubSyncResult> {
  const trust = await driver.ensureTrust(cas);
  const w = await work(registry, spec, true);
  const result: HubSyncResult = { trust, registered: 0, disabled: 0, failed: [] };
  const size = waveSize(driver, o);
  const at = () => o.now?.() ?? new Date();
  const fail = (done: number, total: number, verb: string, e: unknown): never => {
    // a driver that stopped part-way may say how far it got (the AWS driver's HubRunError): its
    // own count is of its call, ours is of the run; say the cause once
    const why = (e instanceof Error ? e.message : String(e)).replace(
      /^.*?: [\d,]+ of [\d,]+ [a-z]+, then: /,
      "",
    );
    throw new FleetError(
      e instanceof FleetError ? e.code : "UNAVAILABLE",
      `${driver.label}: ${n(done)} of ${n(total)} ${verb}, then: ${why}; the registry records exactly what was done: run again to finish`,
      "hub",
    );
  };
  /** what a failed call did before it stopped, when the driver says (finished ones are recorded) */
  const partial = (e: unknown): Outcome[] | undefined => {
    const got = (e as { outcomes?: unknown } | null)?.outcomes;
    return Array.isArray(got) ? (got as Outcome[]).filter((x) => x.ok) : undefined;
  };

  /**
   * One step in waves: the intents (`pending`) recorded first, then the hub's call and flush, then
   * the outcomes (`to`, or failed); a call that stopped part-way records what it says it finished.
   */
  const waves = async <T extends { deviceId: string; serial: string }>(
    items: readonly T[],
    step: { phase: "register" | "disable"; verb: string; pending: HubStatus; to: HubStatus },
    fromOf: (it: T) => HubStatus | null,
    call: (wave: readonly T[], progress: (d: number) => void) => Promise<Outcome[]>,
    count: (changes: HubChange[]) => number,
  ): Promise<number> => {
    const progress = progressOf(o, step.phase, items.length);
    let done = 0;
    for (let i = 0; i < items.length; i += size) {
      const wave = items.slice(i, i + size);
      const intents: HubChange[] = [];
      for (const it of wave) {
        const from = fromOf(it);
        if (from !== step.pending)
          intents.push({
            hub: spec.hub,
            deviceId: it.deviceId,
            batch: spec.batch,
            serial: it.serial,
            from,
            to: step.pending,
          });
      }
      if (intents.length) await registry.applyHub(intents, at());
      let got: Outcome[];
      try {
        got = await call(wave, (d) => progress(i + d));
        await driver.flush?.();
      } catch (e) {
        const finished = partial(e);
        if (finished?.length && !driver.flush) {
          const ok = new Set(finished.map((x) => x.serial));
          const changes = outcomes(
            spec,
            wave.filter((it) => ok.has(it.serial)),
            finished,
            step.pending,
            step.to,
            result,
          );
          await registry.applyHub(changes, at());
          done += changes.length;
        }
        return fail(done, items.length, step.verb, e);
      }
      const changes = outcomes(spec, wave, got, step.pending, step.to, result);
      if (changes.length) await registry.applyHub(changes, at());
      done += count(changes);
      progress(i + wave.length);
    }
    return done;
  };

  result.registered = await waves(
    w.register,
    { phase: "register", verb: "registered", pending: "registering", to: "active" },
    (c) => w.registerFrom.get(c.serial) ?? null,
    (wave, progress) => driver.register(wave, progress),
    (changes) => changes.filter((c) => c.to === "active").length,
  );
  result.disabled = await waves(
    w.disable,
    { phase: "disable", verb: "disabled", pending: "disabling", to: "disabled" },
    (r) => r.status,
    async (wave, progress) => {
      // the certificate itself rides along: a hub that never saw it (AWS JITP, a DPS group) can
      // still be told to refuse it; revoked for cause (not superseded) is REVOKED at AWS
      const refs: RemoteRef[] = [];
      for (const r of wave) {
        const mine = (await registry.certificates({ deviceId: r.deviceId })).find(
          (c) => c.serial === r.serial,
        );
        refs.push({
          deviceId: r.deviceId,
          serial: r.serial,
          remoteId: r.remoteId,
          ...(mine
            ? { der: mine.der, revoked: mine.status === "revoked" && mine.revocationReason !== "superseded" }
            : {}),
        });
      }
      return driver.disable(refs, progress);
    },
    (changes) => changes.length,
  );
  return result;
}

/** An error for a sync that ended with refusals (after recording them): the count done and the first few. */
export function refusalError(label: string, r: HubSyncResult, total: number): FleetError | undefined {
  if (!r.failed.length) return undefined;
  const first = r.failed
    .slice(0, 3)
    .map((f) => `${f.deviceId}: ${f.reason}`)
    .join("; ");
  return new FleetError(
    r.failed.every((f) => f.retryable) ? "UNAVAILABLE" : "CONFLICT",
    `${label}: ${n(r.registered)} of ${n(total)} registered, ${n(r.disabled)} disabled; ${n(r.failed.length)} refused (${first}${r.failed.length > 3 ? `; and ${n(r.failed.length - 3)} more` : ""}); the registry records each as failed and the next run tries again`,
    "hub",
  );
}

/** Destroy: remove every registration this hub holds for the batch; the audit history stays. */
export async function removeHub(
  registry: Registry,
  driver: HubDriver,
  spec: HubSyncSpec,
  o: SyncOptions = {},
): Promise<{ removed: number }> {
  const records = [...(await allHubRecords(registry, spec)).values()].filter((r) => r.status !== "removed");
  const size = waveSize(driver, o);
  const at = () => o.now?.() ?? new Date();
  let removed = 0;
  for (let i = 0; i < records.length; i += size) {
    const wave = records.slice(i, i + size);
    let got: Outcome[];
    try {
      got = await driver.remove(
        wave.map((r) => ({ deviceId: r.deviceId, serial: r.serial, remoteId: r.remoteId })),
      );
      await driver.flush?.();
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new FleetError(
        e instanceof FleetError ? e.code : "UNAVAILABLE",
        `${driver.label}: ${n(removed)} of ${n(records.length)} removed, then: ${why}; run destroy again to finish`,
        "hub",
      );
    }
    const ok = new Set(got.filter((g) => g.ok).map((g) => g.serial));
    const changes: HubChange[] = wave
      .filter((r) => ok.has(r.serial))
      .map((r) => ({
        hub: spec.hub,
        deviceId: r.deviceId,
        batch: spec.batch,
        serial: r.serial,
        from: r.status,
        to: "removed",
      }));
    if (changes.length) await registry.applyHub(changes, at());
    removed += changes.length;
    const bad = got.filter((g) => !g.ok);
    if (bad.length) {
      const g = bad[0] as Extract<Outcome, { ok: false }>;
      throw new FleetError(
        "UNAVAILABLE",
        `${driver.label}: ${n(removed)} of ${n(records.length)} removed; ${n(bad.length)} could not be (${g.serial}: ${g.reason}); run destroy again to finish`,
        "hub",
      );
    }
  }
  return { removed };
}

export interface HubDrift {
  /** registered as active in the registry, but not active at the hub (deactivated behind fleetguard's back, deleted) */
  deactivated: Array<{ deviceId: string; serial: string; status: string }>;
  /** disabled in the registry, but active at the hub */
  reactivated: Array<{ deviceId: string; serial: string }>;
  /** registrations at the hub the registry does not know */
  unknown: string[];
}

/** Refresh: what the hub holds, against what the registry recorded. */
export async function hubDrift(registry: Registry, driver: HubDriver, spec: HubSyncSpec): Promise<HubDrift> {
  const records = [...(await allHubRecords(registry, spec)).values()].filter(
    (r) => r.status === "active" || r.status === "disabled",
  );
  const drift: HubDrift = { deactivated: [], reactivated: [], unknown: [] };
  for (let i = 0; i < records.length; i += PAGE) {
    const page = records.slice(i, i + PAGE);
    const got = new Map(
      (
        await driver.read(page.map((r) => ({ deviceId: r.deviceId, serial: r.serial, remoteId: r.remoteId })))
      ).map((s) => [s.serial, s]),
    );
    for (const r of page) {
      const s = got.get(r.serial)?.status ?? "missing";
      if (r.status === "active" && s !== "active")
        drift.deactivated.push({ deviceId: r.deviceId, serial: r.serial, status: s });
      if (r.status === "disabled" && s === "active")
        drift.reactivated.push({ deviceId: r.deviceId, serial: r.serial });
    }
  }
  if (driver.unknown) {
    // every record of this hub the registry holds (other batches under the same CA included),
    // whatever its status: only what it never recorded is unknown
    const all = [...(await allHubRecords(registry, { hub: spec.hub })).values()];
    drift.unknown = await driver.unknown(
      new Set(all.flatMap((r) => [r.serial, ...(r.remoteId ? [r.remoteId] : [])])),
    );
  }
  return drift;
}

/** Counts for the registration's outputs. */
export async function hubSummary(
  registry: Registry,
  spec: HubSyncSpec,
): Promise<{ registered: number; active: number; disabled: number; failed: number; pending: number }> {
  const c = await registry.hubCounts(spec.hub, spec.batch);
  return {
    registered: c.active + c.disabled + c.disabling,
    active: c.active,
    disabled: c.disabled,
    failed: c.failed,
    pending: c.registering + c.disabling,
  };
}
