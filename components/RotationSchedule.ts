/**
 * RotationSchedule: renewal and re-keying of one or more DeviceIdentityBatch, driven by the
 * nightly `pulumi up` (type token fleetguard:rotation:RotationSchedule; issue 12, point 1).
 *
 * One dynamic resource per governed batch (providers/rotation.ts), named `<schedule>-<batch>`.
 * Its diff asks the registry what is due now by the schedule's clock and says it in words
 * ("renew 1,204 certificates of lot-7 (wave 1 of 9), re-key 0, CA rollover: none"); with nothing
 * due it reports no change, so the nightly run needs no `--refresh` and shows an empty plan
 * (time_rotating, by contrast, rotates only when Read runs, i.e. on refresh). Its update does one
 * run of the schedule for the batch: interrupted devices first, then at most `wavesPerRun` waves
 * (default 1) of at most `maxWaveFraction` of the batch (core/enroll/renew.ts). After a wave the
 * next is not due for `bakeHours` (default 20: one wave a night, and with a maintenance window one
 * per window), read back from the registry, so the workflow's convergence preview right after a
 * nightly up shows no changes while waves are left, and says when the next is due.
 *
 * The schedule is checked against the fleet policy at construction: maxWaveFraction within
 * rotation.maxWaveFraction, renewBeforeDays at least renewal.deviceWindowDays, maxKeyAgeDays
 * within renewal.maxKeyAgeDays (policy defaults fill what the program leaves out), and the policy
 * engine's own checks (FG-ROT-001, FG-LIFE-002, FG-LIFE-003) over the declared rotation.
 *
 * The clock: `now` (an ISO instant), else stack config `fleetguard:now`, else the wall clock.
 * Tests and replays set it; the devices must be on the same clock (they check validity).
 */
import * as pulumi from "@pulumi/pulumi";
import { type RotationPolicy, validatePolicy } from "../core/enroll/rotation-policy";
import { invalid } from "../core/errors";
import type { DeclaredRotation } from "../policies/context";
import { enforceAtConstruction, loadPolicyFile, type PolicyInput } from "../policies/engine";
import { RotationResource } from "../providers/rotation";
import type { DeviceIdentityBatch } from "./DeviceIdentityBatch";
import { declared } from "./errors";
import { childUrn } from "./urn";

export interface RotationScheduleArgs {
  /** the batches this schedule renews and re-keys */
  readonly batches: readonly DeviceIdentityBatch[];
  /** renew when fewer than this many days of validity remain */
  readonly renewBeforeDays?: number;
  /** renew once this fraction of the lifetime has elapsed (cert-manager, step-ca: 2/3); the default when renewBeforeDays is not set */
  readonly renewAtFraction?: number;
  /** re-key when the key is older than this (default: the policy's renewal.maxKeyAgeDays; none: never) */
  readonly maxKeyAgeDays?: number;
  /** the largest fraction of a batch one wave changes (default and maximum: the policy's rotation.maxWaveFraction) */
  readonly maxWaveFraction?: number;
  /** a wave with more than this fraction of its devices failing stops the roll-out (default 0.05) */
  readonly maxFailureFraction?: number;
  /** UTC "HH:MM-HH:MM" (may wrap midnight): work only inside it */
  readonly maintenanceWindow?: string;
  /** waves one run may do per batch (default 1: the policy's fraction per run) */
  readonly wavesPerRun?: number;
  /**
   * hours a wave bakes (soaks) before the next wave of the schedule is due (default 20: one wave a
   * night from a nightly run, whose convergence preview then shows no changes; 0: waves back to back)
   */
  readonly bakeHours?: number;
  /** the schedule's clock, an ISO instant (default: config `fleetguard:now`, else the wall clock) */
  readonly now?: pulumi.Input<string>;
  /** fleet policy (path or loaded) the schedule must obey */
  readonly policy?: string | PolicyInput;
}

export interface ShapedSchedule {
  rotation: RotationPolicy;
  declared: DeclaredRotation;
  bounds: { policy: string; deviceWindowDays?: number };
}

/** The schedule's arguments against the policy: what the providers get. Pure; each error names the field. */
export function shapeSchedule(
  name: string,
  args: RotationScheduleArgs,
  policy?: PolicyInput,
): ShapedSchedule {
  if (!args || typeof args !== "object") throw invalid("args", args, "the schedule's declaration");
  if (!Array.isArray(args.batches) || args.batches.length === 0)
    throw invalid("batches", args.batches, "one or more DeviceIdentityBatch");
  const spec = policy?.spec ?? {};
  const pname = `policy '${policy?.name ?? "(none)"}'`;
  const maxWave = spec.rotation?.maxWaveFraction;
  const wave = args.maxWaveFraction ?? maxWave ?? 0.25;
  if (maxWave !== undefined && wave > maxWave)
    throw invalid("maxWaveFraction", wave, `at most ${maxWave} (${pname} rotation.maxWaveFraction)`);
  const window = spec.renewal?.deviceWindowDays;
  if (args.renewBeforeDays !== undefined && window !== undefined && args.renewBeforeDays < window)
    throw invalid(
      "renewBeforeDays",
      args.renewBeforeDays,
      `at least ${window} (${pname} renewal.deviceWindowDays)`,
    );
  const maxAge = spec.renewal?.maxKeyAgeDays;
  if (args.maxKeyAgeDays !== undefined && maxAge !== undefined && args.maxKeyAgeDays > maxAge)
    throw invalid("maxKeyAgeDays", args.maxKeyAgeDays, `at most ${maxAge} (${pname} renewal.maxKeyAgeDays)`);
  const rotation: RotationPolicy = {
    ...(args.renewBeforeDays !== undefined ? { renewBeforeDays: args.renewBeforeDays } : {}),
    ...(args.renewAtFraction !== undefined || args.renewBeforeDays === undefined
      ? { renewAtFraction: args.renewAtFraction ?? 2 / 3 }
      : {}),
    ...((args.maxKeyAgeDays ?? maxAge) !== undefined ? { maxKeyAgeDays: args.maxKeyAgeDays ?? maxAge } : {}),
    maxWaveFraction: wave,
    maxFailureFraction: args.maxFailureFraction ?? 0.05,
    ...(args.maintenanceWindow !== undefined ? { maintenanceWindow: args.maintenanceWindow } : {}),
    ...(args.wavesPerRun !== undefined ? { wavesPerRun: args.wavesPerRun } : {}),
    ...(args.bakeHours !== undefined ? { bakeHours: args.bakeHours } : {}),
  };
  validatePolicy(rotation);
  const names = args.batches.map((b) => b.batchName);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw invalid("batches", dup, "each batch once");
  return {
    rotation,
    declared: {
      name,
      batches: names,
      waveFraction: wave,
      ...(args.renewBeforeDays !== undefined ? { renewBeforeDays: args.renewBeforeDays } : {}),
      ...(rotation.maxKeyAgeDays !== undefined ? { rekeyAfterDays: rotation.maxKeyAgeDays } : {}),
    },
    bounds: {
      policy: policy?.name ?? "(none)",
      ...(window !== undefined ? { deviceWindowDays: window } : {}),
    },
  };
}

export class RotationSchedule extends pulumi.ComponentResource {
  /** one resource per batch, by batch name */
  readonly rotations: Record<string, RotationResource> = {};
  /** what is due after the last run, per batch */
  readonly plans: pulumi.Output<Record<string, unknown>>;

  constructor(name: string, args: RotationScheduleArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fleetguard:rotation:RotationSchedule", name, {}, opts);
    const shaped = declared("RotationSchedule", name, () => {
      const policy = typeof args?.policy === "string" ? loadPolicyFile(args.policy) : args?.policy;
      const s = shapeSchedule(name, args, policy);
      if (policy) enforceAtConstruction(policy, { rotation: [s.declared] });
      return s;
    });
    const now = args.now ?? new pulumi.Config("fleetguard").get("now");
    for (const b of args.batches) {
      // the batch resource's outputs carry its inputs (providers/runtime/batch.ts): the rotation
      // reaches the same station, registry, CA custody and CRL folder, after the batch's own update
      const o = b.batch as unknown as Record<string, pulumi.Output<unknown>>;
      const batch = pulumi
        .all({
          name: o.name,
          model: o.model,
          source: o.source,
          firstSerial: o.firstSerial,
          count: o.count,
          profile: o.profile,
          issuer: o.issuer,
          issuerKeyRef: o.issuerKeyRef,
          issuerKeyPem: o.issuerKeyPem,
          previousIssuer: o.previousIssuer,
          previousIssuerKeyRef: o.previousIssuerKeyRef,
          previousIssuerKeyPem: o.previousIssuerKeyPem,
          station: o.station,
          registry: o.registry,
          crlDir: o.crlDir,
          policy: o.policy,
        })
        .apply((x) => Object.fromEntries(Object.entries(x).filter(([, v]) => v !== undefined && v !== null)));
      const rname = `${name}-${b.batchName}`;
      this.rotations[b.batchName] = new RotationResource(
        rname,
        {
          kind: "fleetguard:rotation",
          schedule: name,
          batch: batch as never,
          rotation: shaped.rotation,
          bounds: shaped.bounds,
          ...(now !== undefined ? { now } : {}),
          progressUrn: childUrn(this, rname),
        },
        { parent: this, dependsOn: [b] },
      );
    }
    this.plans = pulumi
      .all(Object.entries(this.rotations).map(([k, r]) => r.plan.apply((p) => [k, p] as const)))
      .apply((xs) => Object.fromEntries(xs));
    this.registerOutputs({ plans: this.plans });
  }
}
