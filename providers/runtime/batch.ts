/**
 * The DeviceIdentityBatch dynamic provider's implementation (Pulumi CRUD -> core/enroll). Loaded
 * lazily inside the provider process by providers/runtime/index.js; never serialized into state.
 *
 * One resource per batch whatever its size: per-device records live in the registry, the
 * resource's outputs are a fixed-size summary (brief, rule 1). Every method is idempotent against
 * the registry, so a `pulumi up` interrupted at any point converges when run again (rule 2).
 */
import * as crypto from "node:crypto";
import * as path from "node:path";
import { canonicalJson } from "../../core/canonical";
import type { KeyRef } from "../../core/custody";
import { crlCurrent, DEFAULT_CRL_DIR, publishCrl, readCrlMeta } from "../../core/enroll/crl";
import {
  BatchEngine,
  type BatchSpec,
  type BatchSummary,
  type DeviceRevocation,
  describeCounts,
  describePlan,
  type Progress,
  validateRevocations,
} from "../../core/enroll/engine";
import { exportManifest } from "../../core/enroll/manifest";
import {
  checkBatchNames,
  type DeviceCertificateProfile,
  type NameRules,
  resolveProfile,
} from "../../core/enroll/profile";
import { FleetError, invalid } from "../../core/errors";
import { formatAnchor, integrityError, parseAnchor } from "../../core/registry";
import type { Registry } from "../../core/registry/types";
import type { RevocationReason } from "../../core/x509/crl";
import { pemBlocks } from "../../core/x509/pem";
import { isUnknown, UNKNOWN } from "./ca";
import { checker } from "./check";
import { engineLog } from "./engine-log";
import { type IssuerInputs, issuerCrls, issuersOf, withStation } from "./issuer";
import { registryLocation, shown, withRegistry } from "./registry";

export { registryLocation };

export interface BatchPolicyInputs {
  name: string;
  digest: string;
  maxQuarantinedFraction: number;
  maxWaveFraction: number;
  /** policy `names`: what device names may be (absent in states from before it: the strict rules) */
  names?: NameRules;
  /** policy identity.refreshAttestSample: refresh attests this many active devices (absent: all) */
  refreshSample?: number;
}

export interface BatchInputs {
  kind: "fleetguard:batch";
  name: string;
  model: string;
  source: "puf" | "injected";
  firstSerial: number;
  count: number;
  profile: DeviceCertificateProfile;
  issuer: IssuerInputs["issuer"];
  /** where the issuing CA's key is (core/custody): this provider opens it itself */
  issuerKeyRef?: KeyRef;
  /** only for the pulumi-secret custody (and states from before custody): the key, a secret */
  issuerKeyPem?: string;
  /** during a CA rollover: the issuing CA's predecessor (its certificates conform, its CRL is fed) */
  previousIssuer?: IssuerInputs["previousIssuer"];
  previousIssuerKeyRef?: KeyRef;
  previousIssuerKeyPem?: string;
  station: { host: string; port: number };
  /** SQLite file (relative to the program directory) or postgres:// URL */
  registry: string;
  /** where CRLs are published (default: `.fleetguard/crl` next to the program) */
  crlDir: string;
  policy: BatchPolicyInputs;
  /** write a signed manifest of the batch here after each run (relative to the program directory) */
  manifestPath?: string;
  /** URN of this resource, so progress shows on its line in `pulumi up` */
  progressUrn?: string;
  /** devices declared revoked (core/enroll/revoke.ts); a file was read by the component */
  revocations?: DeviceRevocation[];
  /** the whole batch declared revoked */
  revoked?: { reason: RevocationReason; at?: string };
}

export interface BatchOutputs {
  total: number;
  counts: Record<string, number>;
  quarantineReasons: Record<string, number>;
  manifestDigest: string;
  issuerFingerprint: string;
  profileDigest: string;
  policyDigest: string;
  declarationDigest: string;
  lastRun: { enrolled: number; reissued: number; decommissioned: number; at: string };
  /**
   * The registry's audit head after this run (`SEQ:HASH:TABLES`): anchored in the Pulumi state, so a
   * registry rewritten behind fleetguard's back (even with its hash chain recomputed) is noticed
   * by the next preview, refresh or up (brief, rule 6). TABLES is the verified checkpoint of the
   * run's closing verify (core/registry/chain.ts runVerify): while the registry is unchanged, the
   * next verify skips the replay. Older states hold `SEQ:HASH`, which still verifies (in full).
   */
  auditHead: string;
  /** what the last refresh found; attestation figures are the sample it attested (policy identity.refreshAttestSample) */
  drift: {
    lostCertificate: number;
    missingDevice: number;
    attested?: number;
    attestationPopulation?: number;
    attestationFailed?: number;
    checkedAt: string | null;
  };
  crl: { path: string; crlNumber: number; revoked: number } | null;
  manifest: { path: string; signerPath: string; entries: number; digest: string } | null;
}

const fingerprintOf = (pem: string, field: string) =>
  crypto
    .createHash("sha256")
    .update(pemBlocks(pem, "CERTIFICATE", field)[0]!)
    .digest("hex");

/** Inputs whose change means another batch (its devices would be decommissioned). */
export const REPLACE_ON = ["name", "model", "source"] as const;

/** Digest of what the batch declares (no secrets, no endpoints: where the station or URN is does not change the fleet). */
export function declarationDigest(i: BatchInputs): string {
  const issuerFp = isUnknown(i.issuer?.certificatePem)
    ? UNKNOWN
    : fingerprintOf(i.issuer.certificatePem, "issuer.certificatePem");
  return crypto
    .createHash("sha256")
    .update(
      canonicalJson({
        name: i.name,
        model: i.model,
        source: i.source,
        firstSerial: i.firstSerial,
        count: i.count,
        profile: resolveProfile(i.profile, "profile", i.policy?.names),
        issuer: issuerFp,
        ...(i.previousIssuer
          ? {
              previousIssuer: isUnknown(i.previousIssuer.certificatePem)
                ? UNKNOWN
                : fingerprintOf(i.previousIssuer.certificatePem, "previousIssuer.certificatePem"),
            }
          : {}),
        policy: i.policy?.digest ?? null,
      }),
    )
    .digest("hex");
}

/** The engine's spec of a batch (the rotation provider's, too: it gets the batch's inputs without its revocations). */
export function specOf(
  i: Pick<BatchInputs, "name" | "model" | "source" | "firstSerial" | "count" | "profile" | "policy"> &
    Partial<Pick<BatchInputs, "revocations" | "revoked">>,
): BatchSpec {
  return {
    name: i.name,
    model: i.model,
    source: i.source,
    firstSerial: i.firstSerial,
    count: i.count,
    profile: resolveProfile(i.profile, "profile", i.policy?.names),
    maxQuarantinedFraction: i.policy.maxQuarantinedFraction,
    maxWaveFraction: i.policy.maxWaveFraction,
    names: i.policy?.names,
    ...(i.revocations?.length ? { revocations: i.revocations } : {}),
    ...(i.revoked ? { revoked: i.revoked } : {}),
  };
}

export function check(_olds: Record<string, unknown>, news: BatchInputs) {
  const { failures, at } = checker();
  at("name", () => {
    if (typeof news.name !== "string" || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(news.name))
      throw invalid("name", news.name, "1..63 letters, digits, '_', '.', '-'");
  });
  at("profile", () => {
    const rules = isUnknown(news.policy) ? undefined : news.policy?.names;
    const p = resolveProfile(news.profile, "profile", rules);
    // every device's names, under the issuing chain's name constraints, before anything is signed
    if (isUnknown(news.issuer) || isUnknown(news.name) || isUnknown(news.model) || isUnknown(news.count))
      return;
    checkBatchNames(p, news.name, news.model, rules, {
      certificates: pemBlocks(news.issuer.chainPem, "CERTIFICATE", "issuer.chainPem"),
      firstSerial: news.firstSerial ?? 0,
      count: news.count,
    });
  });
  at("count", () => {
    if (!Number.isInteger(news.count) || news.count < 0)
      throw invalid("count", news.count, "an integer >= 0");
  });
  at("station", () => {
    if (isUnknown(news.station)) return;
    if (
      !news.station ||
      typeof news.station.port !== "number" ||
      news.station.port < 1 ||
      news.station.port > 65535
    )
      throw invalid("station.port", news.station?.port, "a TCP port 1..65535 of the device station");
  });
  at("registry", () => {
    if (!isUnknown(news.registry)) registryLocation(news.registry);
  });
  at("revocations", () => {
    if (isUnknown({ r: news.revocations, b: news.revoked, n: news.name, m: news.model, c: news.count }))
      return;
    validateRevocations({
      name: news.name,
      model: news.model,
      firstSerial: news.firstSerial ?? 0,
      count: news.count,
      revocations: news.revocations,
      revoked: news.revoked,
    });
  });
  return { inputs: news, failures };
}

function progressLogger(i: BatchInputs) {
  let lastInfo = -1;
  return (p: Progress) => {
    const pct = p.total ? Math.floor((p.done / p.total) * 100) : 100;
    const n = (x: number) => Math.round(x).toLocaleString("en-US");
    const msg = `${p.phase} ${n(p.done)}/${n(p.total)} devices (${pct}%), ${n(p.ratePerSecond)}/s, ETA ${Math.ceil(p.etaSeconds)} s`;
    void engineLog(msg, { urn: i.progressUrn, ephemeral: true });
    const decile = Math.floor(pct / 10);
    if (decile !== lastInfo) {
      lastInfo = decile;
      void engineLog(`batch ${i.name}: ${msg}`, { urn: i.progressUrn });
    }
  };
}

/**
 * Verify the registry before trusting it: the audit chain whole, the row at the anchor the state
 * holds unchanged, and this batch's device and certificate records equal to what the audit log
 * says. Anything else stops the run (INTEGRITY) with what differs and what to run.
 */
async function checkIntegrity(
  i: BatchInputs,
  registry: Registry,
  anchor: unknown,
  thread = false,
): Promise<string> {
  const report = await registry.verify({
    batch: i.name,
    ...(typeof anchor === "string" && anchor ? { anchor: parseAnchor(anchor, "auditHead") } : {}),
    ...(thread ? { thread } : {}),
  });
  if (!report.ok) throw integrityError(report, shown(registryLocation(i.registry)));
  return formatAnchor({ ...report.head, ...(report.checkpoint ? { tables: report.checkpoint } : {}) });
}

function outputsOf(
  i: BatchInputs,
  s: BatchSummary,
  prev: Partial<BatchOutputs> | undefined,
  crl: BatchOutputs["crl"] | undefined,
  manifest: BatchOutputs["manifest"] | undefined,
  auditHead: string,
): BatchOutputs {
  return {
    total: s.total,
    counts: s.counts,
    quarantineReasons: s.quarantineReasons,
    manifestDigest: s.manifestDigest,
    issuerFingerprint: s.issuerFingerprint,
    profileDigest: s.profileDigest,
    policyDigest: i.policy.digest,
    declarationDigest: declarationDigest(i),
    lastRun: {
      enrolled: s.enrolledThisRun,
      reissued: s.reissuedThisRun,
      decommissioned: s.decommissionedThisRun,
      at: new Date().toISOString(),
    },
    drift: prev?.drift ?? { lostCertificate: 0, missingDevice: 0, checkedAt: null },
    crl: crl ?? prev?.crl ?? null,
    manifest: manifest ?? null,
    auditHead,
  };
}

const crlDirOf = (i: BatchInputs) => path.resolve(process.cwd(), i.crlDir || DEFAULT_CRL_DIR);

/** The CRLs this batch feeds (issuer.ts issuerCrls): the predecessor's in a rollover, the issuing CA's. */
const crlsOf = (i: BatchInputs, cas: ReturnType<typeof issuersOf>) =>
  issuerCrls(i, cas, i.profile?.crlUrls ?? []);

/** Is every CRL this batch feeds current (the registry's revocations, its names, its sequence)? */
async function crlsCurrent(i: BatchInputs, registry: Registry, cas: ReturnType<typeof issuersOf>) {
  for (const c of crlsOf(i, cas))
    if (!(await crlCurrent(registry, c.ca, crlDirOf(i), undefined, undefined, c.urls))) return false;
  return true;
}

/** Publish the CRLs this batch feeds; the issuing CA's figures are returned (it comes last). */
async function publishAll(i: BatchInputs, registry: Registry, cas: ReturnType<typeof issuersOf>) {
  let last: Awaited<ReturnType<typeof publish>> | undefined;
  for (const c of crlsOf(i, cas)) last = await publish(i, registry, c);
  return last!;
}

async function converge(i: BatchInputs, prev?: Partial<BatchOutputs>): Promise<BatchOutputs> {
  const cas = issuersOf(i, true);
  const issuer = cas.issuer;
  return withRegistry(i, (registry) =>
    withStation(i, async (station) => {
      const engine = new BatchEngine(
        { registry, station, ...cas, onProgress: progressLogger(i) },
        specOf(i),
        {
          declaration: publicDeclaration(i),
        },
      );
      await checkIntegrity(i, registry, prev?.auditHead);
      let summary: BatchSummary;
      let crl: BatchOutputs["crl"] | undefined;
      try {
        summary = await engine.converge();
      } finally {
        // revocations (superseded, decommissioned, quarantined) reach the CRL even when the run
        // fails; a CRL that differs from the registry (an earlier publish failed) is published again
        if (!(await crlsCurrent(i, registry, cas))) crl = await publishAll(i, registry, cas);
      }
      if (engine.revokedDevices)
        await engineLog(
          `batch ${i.name}: revoked ${engine.revokedDevices} device(s) as declared${crl ? `; CRL #${crl.crlNumber} at ${crl.path}` : ""}`,
          { urn: i.progressUrn },
        );
      await engineLog(`batch ${i.name}: ${describeCounts(summary.counts)}`, { urn: i.progressUrn });
      if (cas.previous && i.previousIssuer) {
        // a CA rollover: the batch leaves its predecessor's certificates to a RotationSchedule
        const left = await registry.certificates({
          batch: i.name,
          issuer: cas.previous.fingerprint,
          status: ["live"],
          limit: 1,
        });
        if (left.length)
          await engineLog(
            `batch ${i.name}: CA rollover of '${i.issuer.name}': devices still hold certificates of generation ${cas.previous.generation ?? 1}; a RotationSchedule over this batch moves them to generation ${cas.issuer.generation ?? 2} in waves (docs/rotation.md, CA rollover)`,
            { urn: i.progressUrn },
          );
      }
      let manifest: BatchOutputs["manifest"] | undefined;
      if (i.manifestPath) {
        const m = await exportManifest(
          registry,
          { name: i.name, model: i.model },
          { certificatePem: i.issuer.certificatePem, chainPem: i.issuer.chainPem, key: issuer.key! },
          path.resolve(process.cwd(), i.manifestPath),
        );
        manifest = m;
        await engineLog(`batch ${i.name}: signed manifest of ${m.entries} devices at ${m.path}`, {
          urn: i.progressUrn,
        });
      }
      // the closing verify: this run's rows replayed once here, so the next preview need not
      const head = await checkIntegrity(i, registry, prev?.auditHead);
      return outputsOf(i, summary, prev, crl, manifest, head);
    }),
  );
}

async function publish(i: BatchInputs, registry: Registry, c: ReturnType<typeof crlsOf>[number]) {
  const issuer = c.ca;
  const p = await publishCrl(
    registry,
    { certificatePem: c.certificatePem, key: issuer.key!, fingerprint: issuer.fingerprint },
    crlDirOf(i),
    undefined,
    c.urls,
  );
  // the CA publishes its CRL from creation on: none in this folder means the CaHierarchy writes
  // another folder, and the issuing CA then has two CRLs with two sequences (docs/crl.md)
  if (!readCrlMeta(crlDirOf(i), issuer.fingerprint)?.sources?.ca)
    await engineLog(
      `batch ${i.name}: crlDir: got ${i.crlDir || DEFAULT_CRL_DIR} where the issuing CA '${c.name}' publishes no CRL of its own, want the CaHierarchy's crlDir (one CRL per CA, docs/crl.md)`,
      { urn: i.progressUrn, severity: "warning" },
    );
  return { path: p.path, crlNumber: p.crlNumber, revoked: p.revoked };
}

/** What the registry keeps of the declaration, for `pulumi import` (no secrets, no endpoints). */
function publicDeclaration(i: BatchInputs) {
  return {
    name: i.name,
    model: i.model,
    source: i.source,
    firstSerial: i.firstSerial,
    count: i.count,
    profile: i.profile,
    issuer: { name: i.issuer.name, certificatePem: i.issuer.certificatePem, chainPem: i.issuer.chainPem },
    ...(i.previousIssuer
      ? {
          previousIssuer: {
            name: i.previousIssuer.name,
            certificatePem: i.previousIssuer.certificatePem,
            chainPem: i.previousIssuer.chainPem,
          },
        }
      : {}),
    policy: i.policy,
    crlDir: i.crlDir,
    ...(i.revocations?.length ? { revocations: i.revocations } : {}),
    ...(i.revoked ? { revoked: i.revoked } : {}),
  };
}

export async function create(inputs: BatchInputs) {
  const outs = await converge(inputs);
  // the inputs ride along: delete and refresh receive only the outputs (issuer is a secret output)
  return { id: inputs.name, outs: { ...inputs, ...outs } as unknown as Record<string, unknown> };
}

export async function update(_id: string, olds: Record<string, unknown>, news: BatchInputs) {
  const outs = await converge(news, olds as Partial<BatchOutputs>);
  return { outs: { ...news, ...outs } as unknown as Record<string, unknown> };
}

export async function diff(_id: string, olds: Record<string, unknown>, news: BatchInputs) {
  // what the plan and the registry checks need must be known; an unknown station does not matter
  const { name, model, source, firstSerial, count, profile, issuer: iss, registry, policy } = news;
  if (isUnknown({ name, model, source, firstSerial, count, profile, iss, registry, policy }))
    return { changes: true };
  const o = olds as unknown as BatchInputs & Partial<BatchOutputs>;
  const replaces = REPLACE_ON.filter((k) => o[k] !== news[k]);
  const declared = (o.declarationDigest ?? "") !== declarationDigest(news);
  const moved =
    typeof o.registry === "string" &&
    !isUnknown(news.registry) &&
    o.registry !== news.registry &&
    registryLocation(o.registry) !== registryLocation(news.registry);
  // the registry decides whether work is outstanding (an interrupted run, drift found by refresh,
  // a CRL that an earlier run failed to publish); a registry that cannot be read fails the preview
  const cas = issuersOf(news, false);
  const { plan, crlStale } = await withRegistry(news, async (registry) => {
    if (moved && !replaces.length && !(await registry.getBatch(news.name)))
      throw new FleetError(
        "INVALID_INPUT",
        `registry: got ${shown(news.registry)}, which holds no batch '${news.name}', want the registry its devices are recorded in (${shown(o.registry)}): a batch does not move by a change of location, which would enroll every device again into an empty registry. Set registry back, or copy the registry to the new location first (SQLite: copy the file while no run is going; PostgreSQL: pg_dump | psql) and run again`,
        "registry",
      );
    // the verify on a thread of its own (SQLite; PostgreSQL's is I/O on its own connection) while
    // this one plans: a plan is only looked at once its registry verified, and a registry that
    // fails is refused with the verify's error whatever the plan made of it
    const [verified, planned] = await Promise.allSettled([
      checkIntegrity(news, registry, o.auditHead, true),
      (async () => {
        const plan = await new BatchEngine(
          { registry, station: undefined as never, ...cas },
          specOf(news),
        ).plan();
        return { plan, crlStale: !(await crlsCurrent(news, registry, cas)) };
      })(),
    ]);
    if (verified.status === "rejected") throw verified.reason;
    if (planned.status === "rejected") throw planned.reason;
    return planned.value;
  });
  const revoke = Object.values(plan.revoke ?? {}).reduce((a, b) => a + b, 0);
  const outstanding = plan.enroll + plan.resume + plan.reissue + plan.decommission + revoke > 0 || crlStale;
  const changes = replaces.length > 0 || declared || outstanding || moved;
  if (changes && !replaces.length) {
    const extra = [moved ? "registry moved" : "", crlStale ? "publish the CRL again" : ""].filter(Boolean);
    await engineLog(
      `batch ${news.name}: ${describePlan(plan)}${extra.length ? `; ${extra.join("; ")}` : ""}`,
      {
        urn: news.progressUrn,
      },
    );
  }
  return {
    changes,
    replaces: [...replaces],
    deleteBeforeReplace: replaces.length > 0,
  };
}

export async function read(id: string, props: Record<string, unknown>) {
  // refresh: compare the registry with the devices; drift goes back into the registry
  const i = props as unknown as BatchInputs & BatchOutputs;
  const cas = issuersOf(i, false);
  return withRegistry(i, (registry) =>
    withStation(i, async (station) => {
      await checkIntegrity(i, registry, i.auditHead);
      const engine = new BatchEngine(
        {
          registry,
          station,
          ...cas,
          onProgress: progressLogger(i),
          ...(i.policy?.refreshSample ? { refreshSample: i.policy.refreshSample } : {}),
        },
        specOf(i),
      );
      const drift = await engine.refresh();
      const summary = await engine.summary();
      const a = drift.attestation;
      const attested = `${a.sample} of ${a.population} active device(s) attested, ${a.failed} failed (quarantined, certificate revoked)`;
      if (drift.lostCertificate || drift.missingDevice || a.failed)
        await engineLog(
          `batch ${i.name}: drift: ${drift.lostCertificate} device(s) lost their certificate, ${drift.missingDevice} record(s) without a device; ${attested}`,
          { urn: i.progressUrn, severity: "warning" },
        );
      else await engineLog(`batch ${i.name}: refresh: ${attested}`, { urn: i.progressUrn });
      return {
        id,
        props: {
          ...props,
          counts: summary.counts,
          quarantineReasons: summary.quarantineReasons,
          manifestDigest: summary.manifestDigest,
          drift: {
            lostCertificate: drift.lostCertificate,
            missingDevice: drift.missingDevice,
            attested: a.sample,
            attestationPopulation: a.population,
            attestationFailed: a.failed,
            checkedAt: new Date().toISOString(),
          },
          auditHead: await checkIntegrity(i, registry, i.auditHead),
        },
      };
    }),
  );
}

export async function del(_id: string, props: Record<string, unknown>) {
  const i = props as unknown as BatchInputs;
  const cas = issuersOf(i, true);
  await withRegistry(i, (registry) =>
    withStation(i, async (station) => {
      await checkIntegrity(i, registry, (props as { auditHead?: string }).auditHead);
      const engine = new BatchEngine({ registry, station, ...cas, onProgress: progressLogger(i) }, specOf(i));
      const r = await engine.deleteBatch();
      const crl = await publishAll(i, registry, cas);
      await engineLog(
        `batch ${i.name}: deleted: ${r.decommissioned} device(s) decommissioned, ${r.revoked} certificate(s) revoked; CRL #${crl.crlNumber} at ${crl.path}`,
        { urn: i.progressUrn },
      );
    }),
  );
}
