/**
 * The RotationSchedule dynamic provider's implementation (Pulumi CRUD -> core/enroll/renew.ts),
 * one resource per governed batch. Loaded lazily inside the provider process by
 * providers/runtime/index.js; never serialized into state.
 *
 * diff asks the registry what is due NOW (by the schedule's clock: the `now` input, else the wall
 * clock) and says it in words ("renew 1,204 certificates of lot-7 (wave 1 of 9), re-key 0, CA
 * rollover: none"): with nothing due it reports no change, so a nightly `pulumi up` needs no
 * `--refresh` (time_rotating rotates only in Read, i.e. on refresh) and shows an empty plan
 * when there is no work. update runs one run of the schedule: the interrupted devices first, then
 * up to `wavesPerRun` waves (default 1: FG-ROT-001 bounds what one run changes), through the
 * station, and publishes the issuing CA's CRL again when certificates were superseded. After a
 * wave the next is not due until its bake is over (`bakeHours`, default 20, read back from the
 * registry's certificates at the schedule's clock), so the preview right after an up reports no
 * change while waves are left, and says when the next is due: the nightly workflow's convergence
 * check holds.
 * delete forgets the schedule: certificates stay as they are, the registry keeps the history.
 */
import * as path from "node:path";
import { crlCurrent, publishCrl } from "../../core/enroll/crl";
import { BatchEngine } from "../../core/enroll/engine";
import { compileTemplate, type DeviceCertificateProfile, resolveProfile } from "../../core/enroll/profile";
import {
  describeRotation,
  hasWork,
  planRotation,
  type RotationPlan,
  type RotationPolicy,
  type RotationResult,
  rotate,
  validatePolicy,
} from "../../core/enroll/renew";
import { invalid } from "../../core/errors";
import { formatAnchor } from "../../core/registry";
import { type BatchPolicyInputs, specOf } from "./batch";
import { isUnknown } from "./ca";
import { checker } from "./check";
import { engineLog } from "./engine-log";
import { type IssuerInputs, issuerCrls, issuersOf, withStation } from "./issuer";
import { registryLocation, withRegistry } from "./registry";

/** The governed batch, as its DeviceIdentityBatch resource's outputs carry it. */
export interface RotationBatchInputs extends IssuerInputs {
  name: string;
  model: string;
  source: "puf" | "injected";
  firstSerial: number;
  count: number;
  profile: DeviceCertificateProfile;
  station: { host: string; port: number };
  registry: string;
  crlDir: string;
  policy: BatchPolicyInputs;
}

export interface RotationInputs {
  kind: "fleetguard:rotation";
  /** the RotationSchedule's name */
  schedule: string;
  batch: RotationBatchInputs;
  rotation: RotationPolicy;
  /** policy bounds the schedule was checked against (renewal.deviceWindowDays), for check() */
  bounds?: { policy: string; deviceWindowDays?: number };
  /** ISO instant: the schedule's clock (tests, replays); absent: the wall clock */
  now?: string;
  progressUrn?: string;
}

export interface RotationOutputs {
  /** what was due after the last run (the next run's work) */
  plan: RotationPlan;
  lastRun: (RotationResult & { at: string }) | null;
  auditHead: string;
  crl: { path: string; crlNumber: number; revoked: number } | null;
}

const clockOf = (i: RotationInputs) => {
  const t = i.now ? Date.parse(i.now) : Number.NaN;
  return i.now ? () => new Date(t) : () => new Date();
};

export function check(_olds: Record<string, unknown>, news: RotationInputs) {
  const { failures, at } = checker();
  at("rotation", () => {
    if (!isUnknown(news.rotation)) validatePolicy(news.rotation);
  });
  at("now", () => {
    if (news.now !== undefined && !isUnknown(news.now) && Number.isNaN(Date.parse(news.now)))
      throw invalid("now", news.now, "an ISO 8601 instant, e.g. 2027-06-01T02:00:00Z");
  });
  at("rotation.renewAtFraction", () => {
    // the renew window a fraction leaves must still be the policy's device window
    const b = news.batch;
    const w = news.bounds?.deviceWindowDays;
    const f = news.rotation?.renewAtFraction;
    if (isUnknown(b) || isUnknown(news.rotation) || w === undefined || f === undefined) return;
    const days = resolveProfile(b.profile, "profile", b.policy?.names).validityDays;
    if (days * (1 - f) < w)
      throw invalid(
        "renewAtFraction",
        f,
        `at most ${(1 - w / days).toFixed(3)}: batch ${b.name}'s ${days}-day certificates would be renewed ${Math.floor(days * (1 - f))} days before expiry, policy '${news.bounds?.policy}' wants at least ${w} (renewal.deviceWindowDays)`,
      );
  });
  at("batch.registry", () => {
    if (!isUnknown(news.batch) && !isUnknown(news.batch?.registry)) registryLocation(news.batch.registry);
  });
  return { inputs: news, failures };
}

async function planOf(i: RotationInputs): Promise<RotationPlan> {
  const cas = issuersOf(i.batch, false);
  const now = clockOf(i);
  return withRegistry(i.batch, (registry) =>
    planRotation(
      new BatchEngine({ registry, station: undefined as never, ...cas, now }, specOf(i.batch)),
      i.rotation,
      now(),
    ),
  );
}

export async function diff(_id: string, olds: Record<string, unknown>, news: RotationInputs) {
  if (isUnknown(news.batch) || isUnknown(news.rotation) || isUnknown(news.now)) return { changes: true };
  const o = olds as unknown as RotationInputs & Partial<RotationOutputs>;
  const plan = await planOf(news);
  const declared = JSON.stringify(o.rotation ?? null) !== JSON.stringify(news.rotation);
  const moved = o.batch?.name !== news.batch.name;
  const work = hasWork(plan);
  const words = `rotation ${news.schedule}: ${describeRotation(plan)}`;
  await engineLog(words, { urn: news.progressUrn });
  return {
    changes: work || declared || moved,
    replaces: moved ? ["batch"] : [],
    deleteBeforeReplace: false,
  };
}

async function run(i: RotationInputs, prev?: Partial<RotationOutputs>): Promise<RotationOutputs> {
  const cas = issuersOf(i.batch, true);
  const issuer = cas.issuer;
  const now = clockOf(i);
  return withRegistry(i.batch, (registry) =>
    withStation(i.batch, async (station) => {
      const engine = new BatchEngine(
        { registry, station, ...cas, now, onProgress: undefined },
        specOf(i.batch),
      );
      const template = compileTemplate(engine.spec.profile, issuer, now(), engine.spec.names);
      let result: RotationResult;
      let crl: RotationOutputs["crl"] = prev?.crl ?? null;
      const dir = path.resolve(process.cwd(), i.batch.crlDir || ".fleetguard/crl");
      try {
        result = await rotate(engine, i.rotation, template);
      } finally {
        // superseded certificates reach the CRL even when a wave stopped the run; in a rollover
        // they are the predecessor's, on its own CRL
        for (const c of issuerCrls(i.batch, cas, engine.spec.profile.crlUrls)) {
          if (
            engine.revokedThisRun > 0 ||
            !(await crlCurrent(registry, c.ca, dir, undefined, undefined, c.urls))
          ) {
            const p = await publishCrl(
              registry,
              { certificatePem: c.certificatePem, key: c.ca.key!, fingerprint: c.ca.fingerprint },
              dir,
              undefined,
              c.urls,
            );
            if (c.ca === issuer) crl = { path: p.path, crlNumber: p.crlNumber, revoked: p.revoked };
          }
        }
      }
      const plan = await planRotation(engine, i.rotation, now());
      await engineLog(
        `rotation ${i.schedule}: batch ${i.batch.name}: ${result.renewed} renewed, ${result.rekeyed} re-keyed, ${result.resumed} interrupted finished, ${result.failed} failed (${result.waves} wave${result.waves === 1 ? "" : "s"}); next: ${describeRotation(plan)}`,
        { urn: i.progressUrn },
      );
      return {
        plan,
        lastRun: { ...result, at: now().toISOString() },
        auditHead: formatAnchor(await registry.auditHead()),
        crl,
      };
    }),
  );
}

export async function create(inputs: RotationInputs) {
  const outs = await run(inputs);
  return {
    id: `${inputs.schedule}/${inputs.batch.name}`,
    outs: { ...inputs, ...outs } as unknown as Record<string, unknown>,
  };
}

export async function update(_id: string, olds: Record<string, unknown>, news: RotationInputs) {
  const outs = await run(news, olds as Partial<RotationOutputs>);
  return { outs: { ...news, ...outs } as unknown as Record<string, unknown> };
}

export async function read(id: string, props: Record<string, unknown>) {
  // the plan, read again: what a refresh shows; rotation itself happens in update, never in read
  const i = props as unknown as RotationInputs;
  const plan = await planOf(i);
  return { id, props: { ...props, plan } };
}

export async function del(_id: string, _props: Record<string, unknown>) {
  // nothing to undo: the certificates stay as they are and the registry keeps every rotation
}
