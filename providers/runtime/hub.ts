/**
 * The HubRegistration dynamic provider's implementation (Pulumi CRUD -> core/hubs/sync.ts), one
 * resource per hub and batch (brief, rule 1): per-device registration state lives in the
 * registry's hub records, the resource's outputs are a fixed-size summary. Loaded lazily inside
 * the provider process by providers/runtime/index.js; the hub's driver (local files, AWS SDK, DPS
 * REST) is created inside each method and closed after it, never captured.
 *
 * diff asks the registry what is outstanding (devices to register or disable, intents a killed
 * run left, trust or CRLs that changed) and says it in words; create/update sync; read (refresh)
 * compares the hub with the registry and reports drift; delete removes what the registration
 * created at the hub and leaves the audit history.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { canonicalJson } from "../../core/canonical";
import { publishedCrlPems } from "../../core/enroll/crl";
import { FleetError, invalid } from "../../core/errors";
// static imports: a lazy require() of a .ts file breaks under vitest (see core/registry/index.ts);
// this module is itself loaded lazily, inside the provider process only
import { AwsIotDriver } from "../../core/hubs/aws";
import { AzureDpsDriver } from "../../core/hubs/azure-dps";
import { LocalHubDriver } from "../../core/hubs/local";
import {
  CONNECTABLE,
  describeHubPlan,
  hubDrift,
  hubSummary,
  planHubSync,
  refusalError,
  removeHub,
  syncHub,
} from "../../core/hubs/sync";
import type { HubDriver, TrustedCa } from "../../core/hubs/types";
import type { HubChange, Registry } from "../../core/registry/types";
import { pemBlocks } from "../../core/x509/pem";
import { isUnknown } from "./ca";
import { checker } from "./check";
import { engineLog } from "./engine-log";
import { registryLocation, withRegistry } from "./registry";

export interface LocalHubInputs {
  kind: "local";
  /** the hub's state folder (relative to the program directory) that `fleet hub serve --state` reads */
  stateDir: string;
}

export interface AwsHubInputs {
  kind: "aws";
  /** a name for messages ("prod") */
  account: string;
  region: string;
  /** an emulator's URL (moto, ministack); absent: AWS itself */
  endpoint?: string;
  mode: "per-device" | "jitp";
  /** calls per second per API (0: no limit) */
  ratePerSecond: number;
  /** the issuing CAs as registered by the Pulumi resources (aws.iot.CaCertificate) */
  caCertificates: Array<{ id?: string; pem: string }>;
  policyName: string;
  thingTypeName?: string;
  thingGroupName?: string;
}

export interface AzureHubInputs {
  kind: "azure";
  /** a name for messages ("prod") */
  account: string;
  /** the DPS service endpoint, https://<name>.azure-devices-provisioning.net (or a contract service) */
  endpoint: string;
  sasKeyName: string;
  /** a secret output: never logged */
  sasKey: string;
  mode: "group" | "individual";
  ratePerSecond: number;
  /** the IoT hub(s) devices are assigned to */
  iotHubs?: string[];
  /** PEM of a CA the client trusts for the DPS endpoint (tests: the contract service's certificate) */
  tlsCaPem?: string;
  /** the DPS id scope devices use with the global endpoint */
  idScope?: string;
}

export type HubSpecInputs = LocalHubInputs | AwsHubInputs | AzureHubInputs;

export interface HubInputs {
  kind: "fleetguard:hub";
  /** the registration's name: the registry's hub records are keyed by it */
  registration: string;
  batch: string;
  hub: HubSpecInputs;
  /** the batch's issuing CA, its chain, and the CRLs of the CAs above it */
  trust: {
    name: string;
    certificatePem: string;
    chainPem: string;
    /** CRLs of the CAs above the issuing CA (CaHierarchy's), PEM */
    crlPems: string[];
    /** the issuing CA's CRL as the batch publishes it from the registry */
    batchCrl: { path: string; crlNumber: number } | null;
    /**
     * the batch's CRL folder, where every CA of the chain publishes its one CRL (docs/crl.md):
     * the hub reads them all there; absent in states from before it
     */
    crlDir?: string;
    /** the issuing CA's generation (absent: 1) */
    generation?: number;
    /**
     * a CA rollover: the issuing CA's predecessor (same name and subject), trusted while a live
     * certificate of the batch is its (trustedOf)
     */
    previous?: { certificatePem: string; chainPem: string; generation?: number };
  };
  /** the batch's registry (SQLite file or postgres:// URL) */
  registry: string;
  progressUrn?: string;
}

export interface HubOutputs {
  registered: number;
  active: number;
  disabled: number;
  failed: number;
  pending: number;
  endpoint: string;
  caIds: string[];
  /** digest of what the hub is told to trust (CAs and CRLs) after the last run */
  trustDigest: string;
  /** digest of the hub's declaration (where, how), without secrets */
  hubDigest: string;
  lastRun: { registered: number; disabled: number; at: string };
  drift: { deactivated: number; reactivated: number; unknown: number; checkedAt: string | null };
}

const HUB_KINDS = ["local", "aws", "azure"];

/**
 * What the hub must trust: the issuing CA, and during a rollover its predecessor as long as one
 * of the batch's live certificates is the predecessor's (from the registry: the predecessor is
 * dropped at the hub, AWS and DPS included, once the rotation has moved every device).
 */
export async function trustedOf(i: HubInputs, registry: Registry): Promise<TrustedCa[]> {
  const cas = [trustOf(i)];
  const p = i.trust.previous;
  if (p) {
    const prev = trustOf(i, p);
    const live = await registry.certificates({
      batch: i.batch,
      issuer: prev.fingerprint,
      status: ["live"],
      limit: 1,
    });
    if (live.length) cas.push(prev);
  }
  return cas;
}

/** What the hub must trust of one CA (default: the issuing CA): it, its chain, a current CRL for every CA of the chain. */
export function trustOf(
  i: HubInputs,
  ca: { certificatePem: string; chainPem: string; generation?: number } = i.trust,
): TrustedCa {
  const t = { ...i.trust, ...ca };
  const cert = pemBlocks(t.certificatePem, "CERTIFICATE", "trust.certificatePem")[0]!;
  pemBlocks(t.chainPem, "CERTIFICATE", "trust.chainPem");
  const crls: string[] = [];
  if (t.crlDir) {
    // every CA of the chain, the issuing CA first, from the folder they publish in; a CA without
    // a file there (another folder, a state from before) gives what the state holds instead
    const dir = path.resolve(process.cwd(), t.crlDir);
    const all = publishedCrlPems(dir, t.chainPem, 0);
    const issuing = crypto.createHash("sha256").update(cert).digest("hex");
    if (all.missing.includes(issuing))
      throw new FleetError(
        "UNAVAILABLE",
        `trust.crlDir: got ${dir} without a CRL of issuing CA '${t.name}', want the CRL its CaHierarchy and batch '${i.batch}' publish there: give the CaHierarchy the batch's crlDir and run \`pulumi up\` again`,
        "trust.crlDir",
      );
    crls.push(...all.pems);
    if (all.missing.length) crls.push(...(t.crlPems ?? []));
  } else if (t.batchCrl) {
    const file = path.resolve(process.cwd(), t.batchCrl.path);
    let pem: string;
    try {
      pem = fs.readFileSync(file, "utf8");
    } catch (e) {
      throw new FleetError(
        "UNAVAILABLE",
        `trust.batchCrl: got ${file} that cannot be read (${(e as NodeJS.ErrnoException).code}), want the CRL batch '${i.batch}' published: run \`pulumi up\` again`,
        "trust.batchCrl",
      );
    }
    crls.push(pem);
    // the CAs above publish in the same CRL folder (core/enroll/crl: one CRL per CA): their
    // files are current; a CA without one there (another folder, a state from before) gives its
    // CaHierarchy CRL instead
    const above = publishedCrlPems(path.dirname(file), t.chainPem, 1);
    crls.push(...above.pems);
    if (above.missing.length) crls.push(...(t.crlPems ?? []));
  } else crls.push(...(t.crlPems ?? []));
  return {
    name: t.name,
    fingerprint: crypto.createHash("sha256").update(cert).digest("hex"),
    certificatePem: t.certificatePem,
    chainPem: t.chainPem,
    crlPems: crls,
    // set in a rollover, both CAs (drivers tell the two by it); absent otherwise, as before
    ...(t.generation !== undefined ? { generation: t.generation } : {}),
  };
}

const digest = (v: unknown) => crypto.createHash("sha256").update(canonicalJson(v)).digest("hex");

/** Digest of what the hub is told to trust (one CA alone digests as before rollovers existed). */
const trustDigestOf = (cas: readonly TrustedCa[]) => digest(cas.length === 1 ? cas[0] : cas);

/** The hub's declaration without secrets (a rotated SAS key is not a change of hub). */
export function hubDigest(h: HubSpecInputs): string {
  const { sasKey: _s, ...rest } = h as AzureHubInputs;
  return digest(rest);
}

export function labelOf(h: HubSpecInputs, registration: string): string {
  if (h.kind === "aws") return `AWS IoT '${h.account}'`;
  if (h.kind === "azure") return `Azure DPS '${h.account}'`;
  return `local hub '${registration}'`;
}

/** The driver for this hub, created in this process (never captured by the serialized provider). */
export function driverOf(i: HubInputs, registry: Registry): HubDriver {
  const h = i.hub;
  const label = labelOf(h, i.registration);
  if (h.kind === "local") {
    return new LocalHubDriver({
      stateDir: path.resolve(process.cwd(), h.stateDir),
      registration: i.registration,
      batch: i.batch,
      label,
    });
  }
  if (h.kind === "aws") {
    // credentials: the SDK's default chain (environment, profile, role), never the state
    return new AwsIotDriver({
      label,
      region: h.region,
      ...(h.endpoint ? { endpoint: h.endpoint } : {}),
      mode: h.mode,
      ratePerSecond: h.ratePerSecond,
      caCertificates: h.caCertificates,
      policyName: h.policyName,
      ...(h.thingTypeName ? { thingTypeName: h.thingTypeName } : {}),
      ...(h.thingGroupName ? { thingGroupName: h.thingGroupName } : {}),
      batch: i.batch,
    });
  }
  return new AzureDpsDriver({
    label,
    endpoint: h.endpoint,
    sasKeyName: h.sasKeyName,
    sasKey: h.sasKey,
    mode: h.mode,
    ratePerSecond: h.ratePerSecond,
    ...(h.iotHubs ? { iotHubs: h.iotHubs } : {}),
    ...(h.idScope ? { idScope: h.idScope } : {}),
    ...(h.tlsCaPem ? { tls: { ca: h.tlsCaPem } } : {}),
    // group mode blocks or pins one device with an individual enrollment, which carries a certificate
    lookupCertificate: async (ref) =>
      (await registry.certificates({ deviceId: ref.deviceId })).find((c) => c.serial === ref.serial)?.der,
    liveCertificates: async (deviceId) => {
      const d = await registry.getDevice(deviceId);
      if (!d || !(CONNECTABLE as readonly string[]).includes(d.state)) return [];
      return (await registry.certificates({ deviceId, status: ["live"] })).map((c) => ({
        serial: c.serial,
        der: c.der,
      }));
    },
  });
}

async function withDriver<T>(i: HubInputs, registry: Registry, f: (d: HubDriver) => Promise<T>): Promise<T> {
  const d = driverOf(i, registry);
  try {
    return await f(d);
  } finally {
    await d.close();
  }
}

export function check(_olds: Record<string, unknown>, news: HubInputs) {
  const { failures, at } = checker();
  at("registration", () => {
    if (typeof news.registration !== "string" || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(news.registration))
      throw invalid("registration", news.registration, "1..63 letters, digits, '_', '.', '-'");
  });
  at("hub", () => {
    if (isUnknown(news.hub)) return;
    if (!news.hub || !HUB_KINDS.includes(news.hub.kind))
      throw invalid("hub.kind", news.hub?.kind, "'local', 'aws' or 'azure'");
    if (news.hub.kind === "local" && (typeof news.hub.stateDir !== "string" || !news.hub.stateDir.trim()))
      throw invalid("hub.stateDir", news.hub.stateDir, "the local hub's state folder");
    if (news.hub.kind !== "local" && !(news.hub.ratePerSecond >= 0))
      throw invalid("hub.ratePerSecond", news.hub.ratePerSecond, "calls per second >= 0 (0: no limit)");
  });
  at("registry", () => {
    if (!isUnknown(news.registry)) registryLocation(news.registry);
  });
  return { inputs: news, failures };
}

function log(i: HubInputs, msg: string, severity?: "warning") {
  return engineLog(`hub ${i.registration}/${i.batch}: ${msg}`, {
    urn: i.progressUrn,
    ...(severity ? { severity } : {}),
  });
}

function progress(i: HubInputs) {
  let last = -1;
  return (p: { phase: string; done: number; total: number; ratePerSecond: number; etaSeconds: number }) => {
    const pct = p.total ? Math.floor((p.done / p.total) * 100) : 100;
    const n = (x: number) => Math.round(x).toLocaleString("en-US");
    const msg = `${p.phase} ${n(p.done)}/${n(p.total)} at the hub (${pct}%), ${n(p.ratePerSecond)}/s, ETA ${Math.ceil(p.etaSeconds)} s`;
    void engineLog(msg, { urn: i.progressUrn, ephemeral: true });
    if (Math.floor(pct / 25) !== last) {
      last = Math.floor(pct / 25);
      void log(i, msg);
    }
  };
}

const spec = (i: HubInputs) => ({ hub: i.registration, batch: i.batch });

async function converge(i: HubInputs, prev?: Partial<HubOutputs>): Promise<HubOutputs> {
  return withRegistry(i, async (registry) => {
    const trust = await trustedOf(i, registry);
    return withDriver(i, registry, async (driver) => {
      const r = await syncHub(registry, driver, spec(i), trust, { onProgress: progress(i) });
      const s = await hubSummary(registry, spec(i));
      await log(
        i,
        `${s.active.toLocaleString("en-US")} active, ${s.disabled.toLocaleString("en-US")} disabled at ${driver.label} (${r.registered.toLocaleString("en-US")} registered, ${r.disabled.toLocaleString("en-US")} disabled this run); endpoint ${r.trust.endpoint}`,
      );
      const err = refusalError(driver.label, r, r.registered + r.failed.length);
      if (err) throw err;
      return {
        ...s,
        endpoint: r.trust.endpoint,
        caIds: r.trust.caIds,
        trustDigest: trustDigestOf(trust),
        hubDigest: hubDigest(i.hub),
        lastRun: { registered: r.registered, disabled: r.disabled, at: new Date().toISOString() },
        drift: prev?.drift ?? { deactivated: 0, reactivated: 0, unknown: 0, checkedAt: null },
      };
    });
  });
}

/** The secret inputs never ride along into the outputs in plain text: the resource marks them secret. */
export async function create(inputs: HubInputs) {
  const outs = await converge(inputs);
  return {
    id: `${inputs.registration}/${inputs.batch}`,
    outs: { ...inputs, ...outs } as unknown as Record<string, unknown>,
  };
}

export async function update(_id: string, olds: Record<string, unknown>, news: HubInputs) {
  const outs = await converge(news, olds as Partial<HubOutputs>);
  return { outs: { ...news, ...outs } as unknown as Record<string, unknown> };
}

export async function diff(_id: string, olds: Record<string, unknown>, news: HubInputs) {
  const { registration, batch, hub, trust, registry } = news;
  if (isUnknown({ registration, batch, hub, trust, registry })) return { changes: true };
  const o = olds as unknown as HubInputs & Partial<HubOutputs>;
  const replaces: string[] = [];
  if (o.registration !== news.registration) replaces.push("registration");
  if (o.batch !== news.batch) replaces.push("batch");
  if (o.hub?.kind !== news.hub.kind) replaces.push("hub");
  const hubChanged = (o.hubDigest ?? "") !== hubDigest(news.hub);
  const { plan, trusted } = await withRegistry(news, async (registry) => ({
    plan: await planHubSync(registry, spec(news)),
    trusted: await trustedOf(news, registry),
  }));
  const trustChanged = (o.trustDigest ?? "") !== trustDigestOf(trusted);
  const outstanding = plan.register + plan.disable + plan.resume > 0;
  const changes = replaces.length > 0 || trustChanged || hubChanged || outstanding;
  if (changes && !replaces.length) {
    const h = news.hub;
    const mode =
      (h.kind === "aws" && h.mode === "jitp") || (h.kind === "azure" && h.mode === "group")
        ? "ca"
        : "per-device";
    const rate = h.kind === "local" ? Number.POSITIVE_INFINITY : h.ratePerSecond || Number.POSITIVE_INFINITY;
    const words = describeHubPlan(plan, {
      label: labelOf(h, news.registration),
      mode,
      ratePerSecond: rate,
      kind: h.kind,
    });
    const extra = [
      trustChanged ? "trust or CRLs changed" : "",
      hubChanged ? "hub settings changed" : "",
    ].filter(Boolean);
    await log(news, `${words}${extra.length ? `; ${extra.join("; ")}` : ""}`);
  }
  return { changes, replaces, deleteBeforeReplace: replaces.length > 0 };
}

export async function read(id: string, props: Record<string, unknown>) {
  const i = props as unknown as HubInputs & HubOutputs;
  return withRegistry(i, (registry) =>
    withDriver(i, registry, async (driver) => {
      const d = await hubDrift(registry, driver, spec(i));
      // what the hub changed behind fleetguard's back is recorded, so the next `up` puts it right
      const changes: HubChange[] = d.deactivated.map((x) => ({
        hub: i.registration,
        deviceId: x.deviceId,
        batch: i.batch,
        serial: x.serial,
        from: "active",
        to: "failed",
        reason: `drift: ${x.status} at ${driver.label}, registered in the registry`,
      }));
      if (changes.length) await registry.applyHub(changes);
      const total = d.deactivated.length + d.reactivated.length + d.unknown.length;
      const msg = `refresh: ${d.deactivated.length} certificate(s) not active at the hub behind fleetguard's back (registered again by the next up), ${d.reactivated.length} disabled here but active there, ${d.unknown.length} registration(s) the registry does not know${d.unknown.length ? ` (${d.unknown.slice(0, 3).join(", ")})` : ""}`;
      await log(i, msg, total ? "warning" : undefined);
      const s = await hubSummary(registry, spec(i));
      return {
        id,
        props: {
          ...props,
          ...s,
          drift: {
            deactivated: d.deactivated.length,
            reactivated: d.reactivated.length,
            unknown: d.unknown.length,
            checkedAt: new Date().toISOString(),
          },
        },
      };
    }),
  );
}

export async function del(_id: string, props: Record<string, unknown>) {
  const i = props as unknown as HubInputs;
  await withRegistry(i, (registry: Registry) =>
    withDriver(i, registry, async (driver) => {
      const r = await removeHub(registry, driver, spec(i), { onProgress: progress(i) });
      // the hub's trust for this registration goes with its last batch (DPS: the enrollment group)
      const left = await registry.hubCounts(i.registration);
      const remove = (driver as { removeTrust?: (cas: TrustedCa[]) => Promise<void> }).removeTrust;
      if (remove && left.registering + left.active + left.disabling + left.disabled + left.failed === 0)
        await remove.call(driver, [trustOf(i), ...(i.trust.previous ? [trustOf(i, i.trust.previous)] : [])]);
      await log(
        i,
        `deleted: ${r.removed} registration(s) removed at ${driver.label}; the audit history stays in the registry`,
      );
    }),
  );
}
