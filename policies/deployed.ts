/**
 * The `deployed` side of a fleet context read from what is deployed now (brief rule 5: an audit evaluates
 * what the registry, the CRLs and the hubs hold), and the audit that evaluates the check catalog on it,
 * in the spirit of AWS IoT Device Defender's audit. Facts and where they come from:
 *   - device certificates, live and revoked, with their device, batch, registry status, device state and
 *     key epoch: the registry (Registry.certificates / listDevices), read in pages;
 *   - when a key was first certified (key age across renewals): the earliest certificate of the device
 *     with the same SubjectPublicKeyInfo;
 *   - CA certificates: a CA folder (PEM files, e.g. the one `fleet ca summary` writes) and the CAs a
 *     local hub's registration files carry; a registry certificate's issuer is its CA's SHA-256;
 *   - CRLs: every `X509 CRL` PEM block in the CRL folder, matched to its CA by issuer Name and the
 *     key that signed it (two CAs share a Name during a rollover);
 *   - hubs: the registry's hub records (every hub, AWS and Azure included: fleetguard does not ask the
 *     cloud itself here) and, for the embedded local hub, its state folder (the certificates it admits).
 * Memory stays bounded by the page size plus small per-device indexes (a key hash and a state per
 * device): each page of certificates is evaluated with the CAs and CRLs, and the two checks that compare
 * devices with each other (FG-ID-002, FG-KEY-003) run once, on the devices an index pass found
 * colliding.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as v8 from "node:v8";
import * as vm from "node:vm";
import { FleetError } from "../core/errors";
import { readRegistration } from "../core/hubs/local-state";
import type { CertificateRecord, DeviceState, HubStatus, Registry } from "../core/registry/types";
import { parseCertificate as parseDer } from "../core/x509/parse";
import type { Check, Standards } from "./check";
import { catalog } from "./checks/index";
import type {
  CaRole,
  DeployedCertificate,
  DeployedCrl,
  FleetContext,
  InventoryHubRegistration,
} from "./context";
import { type CheckRun, evaluate, type Finding, type PolicyInput, type RunStatus } from "./engine";
import { parseCertificate, parseCrl } from "./x509";

/** Checks that compare certificates with each other: run on the colliding devices, not per page. */
export const CROSS_DEVICE_CHECKS: ReadonlySet<string> = new Set(["FG-ID-002", "FG-KEY-003"]);

/** Hub record statuses under which the hub may let the certificate connect (intents included). */
const ADMITTING: ReadonlySet<HubStatus> = new Set(["registering", "active", "disabling"]);
/** Device states in which a certificate with no hub record counts as in service. */
const IN_SERVICE: ReadonlySet<DeviceState> = new Set(["installed", "active"]);

export interface DeployedSources {
  registry: Registry;
  /** a folder of CA certificate PEM files */
  caDir?: string;
  /** the folder CRLs are published into */
  crlDir?: string;
  /** the local hub's state folder (registrations/*.json) */
  hubStateDir?: string;
}

export interface AuditProgress {
  phase: "index" | "evaluate";
  done: number;
  total: number;
  elapsedMs: number;
}

export interface AuditOptions {
  now?: Date;
  /** certificates per page (default 2,000) */
  pageSize?: number;
  /** a full garbage collection every this many pages (default 10; 0: never) */
  collectEvery?: number;
  /** findings kept per check (all are counted; default 1,000) */
  maxFindingsPerCheck?: number;
  onProgress?: (p: AuditProgress) => void;
}

export interface AuditCa {
  id: string;
  role: CaRole;
  fingerprint: string;
  subject: string;
  notAfter: string;
  source: string;
}

export interface AuditCrl {
  issuer: string;
  file: string;
  thisUpdate: string;
  nextUpdate?: string;
  revoked: number;
}

export interface AuditRun extends Omit<CheckRun, "findings"> {
  standards: Standards;
  /** every finding, waived ones included */
  count: number;
  waived: number;
  /** the first maxFindingsPerCheck findings */
  findings: Finding[];
}

export interface DeployedAudit {
  policy: string;
  at: string;
  registry: string;
  sources: { caDir?: string; crlDir?: string; hubState?: string };
  inventory: {
    devices: number;
    devicesByState: Record<string, number>;
    certificates: { live: number; revoked: number };
    cas: AuditCa[];
    crls: AuditCrl[];
    /** per hub of the registry: records by status */
    hubRecords: Record<string, Record<string, number>>;
    localHub?: { registrations: number; admitted: number; disabled: number };
    /** certificates a local hub admits that the registry does not hold (capped list, full count) */
    unknownAtRegistry: {
      count: number;
      certificates: Array<{ hub: string; deviceId: string; serial: string }>;
    };
    /** issuers (CA SHA-256) of registry certificates whose CA certificate was not found */
    issuersWithoutCa: Array<{ fingerprint: string; certificates: number }>;
  };
  runs: AuditRun[];
  totals: { findings: number; blocking: number; advisory: number; waived: number };
  durationMs: number;
}

const sha256 = (b: Uint8Array) => crypto.createHash("sha256").update(b).digest("hex");

function pemBlocks(text: string, label: string): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`, "g");
  return [...text.matchAll(re)].map((m) => Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
}

const toPem = (label: string, der: Uint8Array) =>
  `-----BEGIN ${label}-----\n${(
    Buffer.from(der)
      .toString("base64")
      .match(/.{1,64}/g) ?? []
  ).join("\n")}\n-----END ${label}-----\n`;

function listFolder(dir: string, field: string): string[] {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (e) {
    throw new FleetError(
      "INVALID_INPUT",
      `${field}: got ${JSON.stringify(dir)} (${(e as NodeJS.ErrnoException).code ?? "unreadable"}), want a folder`,
      field,
    );
  }
  if (!st.isDirectory())
    throw new FleetError("INVALID_INPUT", `${field}: got ${JSON.stringify(dir)}, want a folder`, field);
  return fs
    .readdirSync(dir)
    .sort()
    .map((f) => path.join(dir, f))
    .filter((f) => fs.statSync(f).isFile());
}

/** A PEM file of at most 64 MiB, as text (a CRL of a big fleet runs to megabytes). */
function readPemFile(file: string): string {
  const size = fs.statSync(file).size;
  if (size > 64 * 1024 * 1024)
    throw new FleetError("INVALID_INPUT", `${file}: got ${size} bytes, want a PEM file of at most 64 MiB`);
  return fs.readFileSync(file, "latin1");
}

interface CaEntry extends DeployedCertificate {
  fingerprint: string;
  source: string;
}

function caName(x: crypto.X509Certificate, fingerprint: string): string {
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(x.subject)?.[1];
  const base = (cn ?? fingerprint.slice(0, 16)).toLowerCase().replace(/[^a-z0-9.-]+/g, "-");
  return base.replace(/^-+|-+$/g, "") || fingerprint.slice(0, 16);
}

/**
 * CA certificates from a CA folder (a file's first certificate is named after the file: root.pem ->
 * root; chain files' further certificates by their CN) and from a local hub's registration files.
 * Roles: self-signed -> root, a CA that signed another CA of the set -> intermediate, else issuing.
 */
export function readCas(sources: Pick<DeployedSources, "caDir" | "hubStateDir">): CaEntry[] {
  const byFp = new Map<string, { der: Buffer; name?: string; source: string }>();
  const add = (der: Buffer, name: string | undefined, source: string) => {
    const fp = sha256(der);
    if (!byFp.has(fp)) byFp.set(fp, { der, name, source });
  };
  if (sources.caDir) {
    const files = listFolder(sources.caDir, "caDir").filter((f) => /\.(pem|crt)$/.test(f));
    // a file of its own names its CA: read those before chain and bundle files
    const bundle = (f: string) => Number(/\.(chain|untrusted)\./.test(path.basename(f)));
    files.sort((a, b) => bundle(a) - bundle(b) || a.localeCompare(b));
    for (const f of files) {
      const blocks = pemBlocks(readPemFile(f), "CERTIFICATE");
      const own = !bundle(f);
      blocks.forEach((der, i) => {
        add(der, own && i === 0 ? path.basename(f).replace(/\.(pem|crt)$/, "") : undefined, f);
      });
    }
  }
  for (const reg of readLocalRegistrations(sources.hubStateDir)) {
    for (const ca of reg.file.cas) {
      pemBlocks(ca.certificatePem, "CERTIFICATE").forEach((der) => {
        add(der, ca.name, reg.path);
      });
      pemBlocks(ca.chainPem, "CERTIFICATE").forEach((der) => {
        add(der, undefined, reg.path);
      });
    }
  }
  const parsed = [...byFp.entries()].map(([fp, e]) => ({ fp, e, x: new crypto.X509Certificate(e.der) }));
  const cas = parsed.filter((p) => p.x.ca);
  const used = new Set<string>();
  return cas.map(({ fp, e, x }) => {
    const selfSigned = x.checkIssued(x) && x.verify(x.publicKey);
    const signsCa = cas.some((o) => o.fp !== fp && o.x.checkIssued(x) && o.x.verify(x.publicKey));
    let id = e.name ?? caName(x, fp);
    if (used.has(id)) id = `${id}-${fp.slice(0, 8)}`;
    used.add(id);
    const role: CaRole = selfSigned ? "root" : signsCa ? "intermediate" : "issuing";
    return { id, role, pem: toPem("CERTIFICATE", e.der), fingerprint: fp, source: e.source, active: true };
  });
}

/** Every `X509 CRL` block of the CRL folder, attributed to the CA whose key signed it (by its subject, else). */
export function readCrls(crlDir: string, cas: readonly CaEntry[]): Array<DeployedCrl & { file: string }> {
  const infos = cas.map((c) => parseCertificate(c));
  const out: Array<DeployedCrl & { file: string }> = [];
  for (const f of listFolder(crlDir, "crlDir")) {
    const text = readPemFile(f);
    if (!text.includes("-----BEGIN X509 CRL-----")) continue;
    for (const der of pemBlocks(text, "X509 CRL")) {
      const pem = toPem("X509 CRL", der);
      let issuerDer: string;
      try {
        issuerDer = parseCrl({ issuer: "?", pem }).issuerDer;
      } catch (e) {
        throw new FleetError(
          "INTEGRITY",
          `${f}: got a CRL that does not parse (${(e as Error).message}), want a DER CRL (RFC 5280)`,
        );
      }
      // two CAs may share a name (an issuing CA and its successor in a rollover): the CRL is the
      // one whose key signed it; a name alone decides only when no CA of that name verifies it
      const named = infos.filter((c) => c.subjectDer === issuerDer);
      const ca = named.find((c) => parseCrl({ issuer: c.id, pem }, c).signatureValid === true) ?? named[0];
      out.push({ issuer: ca?.id ?? `unknown-ca:${path.basename(f)}`, pem, file: f });
    }
  }
  return out;
}

interface LocalRegistration {
  path: string;
  file: NonNullable<ReturnType<typeof readRegistration>>;
}

function readLocalRegistrations(stateDir: string | undefined): LocalRegistration[] {
  if (!stateDir) return [];
  listFolder(stateDir, "hubStateDir");
  const dir = path.join(stateDir, "registrations");
  if (!fs.existsSync(dir)) return [];
  return listFolder(dir, "hubStateDir")
    .filter((f) => f.endsWith(".json"))
    .map((f) => ({ path: f, file: readRegistration(f)! }))
    .filter((r) => r.file !== undefined);
}

interface DeviceFacts {
  state: DeviceState;
  epoch: number | null;
  certSerial: string | null;
}

interface RunAcc {
  run: Omit<AuditRun, "findings" | "count" | "waived">;
  findings: Finding[];
  count: number;
  waived: number;
  blocking: number;
  advisory: number;
  seen: Set<string>;
}

/**
 * A full garbage collection, when one can be had. Parsed certificates hold OpenSSL memory (X509Certificate,
 * KeyObject) that V8's heap accounting does not see, so the collection that frees it comes late: 100,000
 * devices reached 1.2 GiB RSS with a 150 MiB heap; a collection every few pages keeps RSS flat and the
 * run faster. The same way as Jest's leak detection: expose gc at run time and take it from a context.
 */
function fullCollection(): (() => void) | undefined {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === "function") return g;
  try {
    v8.setFlagsFromString("--expose-gc");
    const fn = vm.runInNewContext("gc") as unknown;
    return typeof fn === "function" ? (fn as () => void) : undefined;
  } catch {
    return undefined;
  }
}

const STATUS_RANK: Record<RunStatus, number> = {
  disabled: 0,
  "not-applicable": 1,
  pass: 2,
  fail: 3,
  error: 4,
};

/**
 * Audit what is deployed: build the deployed view from the registry (and the CA folder, CRL folder and
 * local hub state when given), page by page, and evaluate every check of the catalog on it.
 */
export async function auditDeployed(
  policy: PolicyInput,
  sources: DeployedSources,
  opts: AuditOptions = {},
): Promise<DeployedAudit> {
  const t0 = performance.now();
  const now = opts.now ?? new Date();
  const pageSize = opts.pageSize ?? 2000;
  const cap = opts.maxFindingsPerCheck ?? 1000;
  const reg = sources.registry;

  const cas = readCas(sources);
  const caByFp = new Map(cas.map((c) => [c.fingerprint, c]));
  const crlFiles = sources.crlDir ? readCrls(sources.crlDir, cas) : undefined;
  const crls: DeployedCrl[] | undefined = crlFiles?.map(({ issuer, pem }) => ({ issuer, pem }));

  // hubs: the registry's records, then the local hub's files
  const hubsBySerial = new Map<string, InventoryHubRegistration[]>();
  const addHub = (serial: string, h: InventoryHubRegistration) => {
    const list = hubsBySerial.get(serial);
    if (list) list.push(h);
    else hubsBySerial.set(serial, [h]);
  };
  const hubRecords: Record<string, Record<string, number>> = {};
  for (const hub of await reg.hubs()) {
    hubRecords[hub] = { ...(await reg.hubCounts(hub)) };
    let after: { deviceId: string; serial: string } | undefined;
    for (;;) {
      const page = await reg.hubRegistrations(hub, { after, limit: 5000 });
      for (const r of page)
        addHub(r.serial, { hub, source: "registry", status: r.status, accepts: ADMITTING.has(r.status) });
      if (page.length < 5000) break;
      after = { deviceId: page.at(-1)!.deviceId, serial: page.at(-1)!.serial };
    }
  }
  const localRegs = readLocalRegistrations(sources.hubStateDir);
  const localEntries = new Map<string, { hub: string; deviceId: string }>();
  let admitted = 0;
  let disabled = 0;
  for (const r of localRegs) {
    const hub = `local:${r.file.registration}`;
    for (const d of Object.values(r.file.devices)) {
      admitted++;
      addHub(d.serial, { hub, source: "local-state", status: "allowed", accepts: true });
      localEntries.set(d.serial, { hub, deviceId: d.deviceId });
    }
    for (const d of Object.values(r.file.disabled)) {
      disabled++;
      addHub(d.serial, { hub, source: "local-state", status: "disabled", accepts: false });
    }
  }
  const hubsKnown = true; // the registry's hub records are always read: no record means no hub admits it

  // devices: state and epoch per device, read in pages
  const devices = new Map<string, DeviceFacts>();
  const devicesByState: Record<string, number> = {};
  for (const b of await reg.listBatches()) {
    let after: string | undefined;
    for (;;) {
      const page = await reg.listDevices(b.name, { after, limit: 5000 });
      for (const d of page) {
        devices.set(d.deviceId, { state: d.state, epoch: d.epoch, certSerial: d.certSerial });
        devicesByState[d.state] = (devicesByState[d.state] ?? 0) + 1;
      }
      if (page.length < 5000) break;
      after = page.at(-1)!.deviceId;
    }
  }

  const hubsOf = (serial: string) => (hubsKnown ? (hubsBySerial.get(serial) ?? []) : undefined);
  const activeOf = (r: CertificateRecord, hubs: InventoryHubRegistration[] | undefined): boolean => {
    if (hubs?.length) return hubs.some((h) => h.accepts);
    const d = devices.get(r.deviceId);
    return r.status === "live" && d !== undefined && IN_SERVICE.has(d.state);
  };

  // index pass: key first certified per device, collisions across devices, counts
  const keyBorn = new Map<string, number>();
  const keyOwner = new Map<string, string>();
  const subjectOwner = new Map<string, string>();
  const suspects = new Set<string>();
  const seenSerials = new Set<string>();
  const issuerCounts = new Map<string, number>();
  const certCounts = { live: 0, revoked: 0 };
  const certPages = async function* () {
    let after: string | undefined;
    for (;;) {
      const page = await reg.certificates({ after, limit: pageSize });
      if (page.length) yield page;
      if (page.length < pageSize) return;
      after = page.at(-1)!.serial;
    }
  };
  const progress = (phase: AuditProgress["phase"], done: number, total: number) =>
    opts.onProgress?.({ phase, done, total, elapsedMs: performance.now() - t0 });
  let total = 0;
  let pages = 0;
  const every = opts.collectEvery ?? 10;
  const collect = every > 0 ? fullCollection() : undefined;
  for await (const page of certPages()) {
    for (const r of page) {
      const p = parseDer(r.der, `certificate ${r.serial}`);
      const spki = sha256(p.spki).slice(0, 32);
      const born = `${r.deviceId}\u0000${spki}`;
      const t = r.notBefore.getTime();
      if (!(keyBorn.get(born)! <= t)) keyBorn.set(born, t);
      const owner = keyOwner.get(spki);
      if (owner === undefined) keyOwner.set(spki, r.deviceId);
      else if (owner !== r.deviceId) suspects.add(owner).add(r.deviceId);
      if (activeOf(r, hubsOf(r.serial))) {
        const subj = sha256(p.subject).slice(0, 32);
        const so = subjectOwner.get(subj);
        if (so === undefined) subjectOwner.set(subj, r.deviceId);
        else if (so !== r.deviceId) suspects.add(so).add(r.deviceId);
      }
      if (localEntries.has(r.serial)) seenSerials.add(r.serial);
      certCounts[r.status]++;
      issuerCounts.set(r.issuer, (issuerCounts.get(r.issuer) ?? 0) + 1);
    }
    total += page.length;
    if (collect && ++pages % every === 0) collect();
    progress("index", total, total);
  }
  subjectOwner.clear();

  const toDeployed = (r: CertificateRecord): DeployedCertificate => {
    const d = devices.get(r.deviceId);
    const hubs = hubsOf(r.serial);
    const spki = sha256(parseDer(r.der).spki).slice(0, 32);
    const born = keyBorn.get(`${r.deviceId}\u0000${spki}`);
    return {
      id: d?.certSerial === r.serial ? r.deviceId : `${r.deviceId}@${r.serial}`,
      role: "device",
      pem: toPem("CERTIFICATE", r.der),
      deviceId: r.deviceId,
      batch: r.batch,
      active: activeOf(r, hubs),
      ...(born !== undefined && born < r.notBefore.getTime()
        ? { keyCreatedAt: new Date(born).toISOString() }
        : {}),
      status: r.status,
      ...(r.revocationReason ? { revocationReason: r.revocationReason } : {}),
      ...(d ? { deviceState: d.state } : {}),
      ...(d?.epoch !== null && d?.epoch !== undefined ? { epoch: d.epoch } : {}),
      ...(hubs ? { hubs } : {}),
    };
  };

  const caCerts: DeployedCertificate[] = cas.map(({ fingerprint: _f, source: _s, ...c }) => c);
  const caSubjects = new Set(caCerts.map((c) => `cert:${c.id}`));
  const acc = new Map<string, RunAcc>();
  const standards = new Map(catalog.map((c) => [c.id, c.standards]));
  const merge = (runs: CheckRun[]) => {
    for (const r of runs) {
      let a = acc.get(r.id);
      if (!a) {
        const { findings: _f, ...run } = r;
        a = {
          run: { ...run, standards: standards.get(r.id) ?? {} },
          findings: [],
          count: 0,
          waived: 0,
          blocking: 0,
          advisory: 0,
          seen: new Set(),
        };
        acc.set(r.id, a);
      } else if (STATUS_RANK[r.status] > STATUS_RANK[a.run.status]) {
        a.run.status = r.status;
        a.run.details = r.details;
      }
      for (const f of r.findings) {
        // a CA, CRL or check-level finding repeats on every page: count it once
        if (!f.subject.startsWith("cert:") || caSubjects.has(f.subject)) {
          const key = `${f.subject}\u0000${f.message}`;
          if (a.seen.has(key)) continue;
          a.seen.add(key);
        }
        a.count++;
        if (f.waived) a.waived++;
        else if (f.enforcement === "mandatory") a.blocking++;
        else a.advisory++;
        if (a.findings.length < cap) a.findings.push(f);
      }
    }
  };
  const fleetOf = (certificates: DeployedCertificate[]): FleetContext => ({
    name: reg.location,
    declared: {},
    deployed: { certificates, ...(crls ? { crls } : {}) },
  });
  const pageChecks: Check[] = catalog.filter((c) => !CROSS_DEVICE_CHECKS.has(c.id));
  const crossChecks: Check[] = catalog.filter((c) => CROSS_DEVICE_CHECKS.has(c.id));

  // evaluation pass: one page of device certificates with every CA and CRL
  let done = 0;
  for await (const page of certPages()) {
    merge(evaluate(policy, fleetOf([...caCerts, ...page.map(toDeployed)]), { now, checks: pageChecks }).runs);
    if (collect && ++pages % every === 0) collect();
    done += page.length;
    progress("evaluate", done, Math.max(total, done));
  }
  if (done === 0) merge(evaluate(policy, fleetOf(caCerts), { now, checks: pageChecks }).runs);

  // cross-device checks: on every certificate of the devices that collide (none: the CAs alone)
  const suspectCerts: DeployedCertificate[] = [];
  for (const id of [...suspects].sort())
    for (const r of await reg.certificates({ deviceId: id })) suspectCerts.push(toDeployed(r));
  merge(evaluate(policy, fleetOf([...caCerts, ...suspectCerts]), { now, checks: crossChecks }).runs);

  const order = new Map(catalog.map((c, i) => [c.id, i]));
  const runs: AuditRun[] = [...acc.values()]
    .sort((a, b) => order.get(a.run.id)! - order.get(b.run.id)!)
    .map((a) => ({ ...a.run, count: a.count, waived: a.waived, findings: a.findings }));
  const sum = (k: "count" | "blocking" | "advisory" | "waived") =>
    [...acc.values()].reduce((n, a) => n + a[k], 0);

  const unknown = [...localEntries.entries()].filter(([s]) => !seenSerials.has(s));
  const crlInfo: AuditCrl[] = (crlFiles ?? []).map((c) => {
    const info = parseCrl(c);
    return {
      issuer: c.issuer,
      file: c.file,
      thisUpdate: info.thisUpdate.toISOString(),
      ...(info.nextUpdate ? { nextUpdate: info.nextUpdate.toISOString() } : {}),
      revoked: info.revokedSerials.size,
    };
  });
  return {
    policy: policy.name,
    at: now.toISOString(),
    registry: reg.location,
    sources: {
      ...(sources.caDir ? { caDir: sources.caDir } : {}),
      ...(sources.crlDir ? { crlDir: sources.crlDir } : {}),
      ...(sources.hubStateDir ? { hubState: sources.hubStateDir } : {}),
    },
    inventory: {
      devices: devices.size,
      devicesByState,
      certificates: certCounts,
      cas: cas.map((c) => {
        const x = new crypto.X509Certificate(c.pem);
        return {
          id: c.id,
          role: c.role as CaRole,
          fingerprint: c.fingerprint,
          subject: x.subject.replace(/\n/g, ", "),
          notAfter: new Date(x.validTo).toISOString(),
          source: c.source,
        };
      }),
      crls: crlInfo,
      hubRecords,
      ...(sources.hubStateDir ? { localHub: { registrations: localRegs.length, admitted, disabled } } : {}),
      unknownAtRegistry: {
        count: unknown.length,
        certificates: unknown
          .slice(0, cap)
          .map(([serial, e]) => ({ hub: e.hub, deviceId: e.deviceId, serial })),
      },
      issuersWithoutCa: [...issuerCounts.entries()]
        .filter(([fp]) => !caByFp.has(fp))
        .map(([fingerprint, certificates]) => ({ fingerprint, certificates })),
    },
    runs,
    totals: {
      findings: sum("count"),
      blocking: sum("blocking"),
      advisory: sum("advisory"),
      waived: sum("waived"),
    },
    durationMs: Math.round(performance.now() - t0),
  };
}
