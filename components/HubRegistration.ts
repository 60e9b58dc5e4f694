/**
 * HubRegistration: trust and register device batches with an IoT hub (type token
 * fleetguard:hubs:HubRegistration): the embedded local MQTT hub (the default: `fleet hub serve`),
 * AWS IoT Core, or Azure IoT Hub through DPS.
 *
 * The hub's own infrastructure is small and belongs in Pulumi state: ordinary resources (AWS: the
 * CA registrations, the device policy, thing type and group, a JITP template; Azure: the DPS
 * instance, its linked hub, the verified CA certificates). The per-device part is ONE dynamic
 * resource per hub and batch (brief, rule 1), driven from the registry: it registers every live
 * certificate of the batch's devices in good standing and disables, in the same run, those
 * decommissioned, revoked or superseded; per-device registration state is in the registry's hub
 * records, with every change in its audit log. Outputs are a fixed-size summary.
 */
import * as pulumi from "@pulumi/pulumi";
import { invalid } from "../core/errors";
import type { DeclaredHubs } from "../policies/context";
import { enforceAtConstruction, loadPolicyFile, type PolicyInput } from "../policies/engine";
import { HubRegistrationResource } from "../providers/hub";
import type { HubSpecInputs } from "../providers/runtime/hub";
import type { DeviceIdentityBatch } from "./DeviceIdentityBatch";
import { declared } from "./errors";

/** The embedded local hub: a state folder that `fleet hub serve --state DIR` serves. */
export interface LocalHubArgs {
  readonly kind: "local";
  /** the hub's state folder, relative to the program (default `.fleetguard/hub`) */
  readonly stateDir?: string;
}

export type HubArgs = LocalHubArgs;

export interface HubRegistrationArgs {
  /** the registration's name (the registry's hub records are keyed by it); default: the component name */
  readonly name?: string;
  /** the batches whose devices the hub must accept */
  readonly batches: readonly DeviceIdentityBatch[];
  readonly hub: HubArgs;
  /** fleet policy (path or loaded) the hub's declaration must obey (FG-HUB-*) */
  readonly policy?: string | PolicyInput;
}

export interface HubSummaryOutput {
  registered: number;
  active: number;
  disabled: number;
  failed: number;
  /** what devices connect to */
  endpoint: string;
  /** the CA ids (AWS certificate ids, DPS certificate names) or fingerprints trusted at the hub */
  caIds: string[];
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** The arguments' shape, before any resource is registered: each error names the field. */
export function checkHubArgs(name: string, args: HubRegistrationArgs): void {
  if (!args || typeof args !== "object") throw invalid("args", args, "the hub registration's declaration");
  if (!NAME.test(name)) throw invalid("name", name, "1..63 letters, digits, '_', '.', '-'");
  if (!Array.isArray(args.batches) || args.batches.length === 0)
    throw invalid("batches", args.batches, "one or more DeviceIdentityBatch components");
  const seen = new Set<string>();
  args.batches.forEach((b, i) => {
    if (!b || typeof b.batchName !== "string" || !b.issuingCa)
      throw invalid(`batches[${i}]`, b, "a DeviceIdentityBatch component");
    if (seen.has(b.batchName)) throw invalid(`batches[${i}]`, b.batchName, "each batch once");
    seen.add(b.batchName);
  });
  const h = args.hub as { kind?: unknown } | undefined;
  if (!h || typeof h !== "object") throw invalid("hub", h, "{ kind: 'local' | 'aws' | 'azure', ... }");
  if (h.kind !== "local") throw invalid("hub.kind", h.kind, "'local', 'aws' or 'azure'");
  const l = args.hub as LocalHubArgs;
  if (
    l.stateDir !== undefined &&
    (typeof l.stateDir !== "string" || !l.stateDir.trim() || l.stateDir.includes("\0"))
  )
    throw invalid("hub.stateDir", l.stateDir, "a folder path for the local hub's state");
}

/** The hub's settings as the provider gets them (plain values and outputs). */
function hubInputs(args: HubRegistrationArgs): pulumi.Input<HubSpecInputs> {
  const h = args.hub;
  return { kind: "local", stateDir: h.stateDir ?? ".fleetguard/hub" };
}

/** What the policy engine sees of the hub (AWS policies, Azure enrollment groups). */
function declaredHubs(_args: HubRegistrationArgs): DeclaredHubs {
  return {};
}

export class HubRegistration extends pulumi.ComponentResource {
  /** one per batch, by batch name */
  readonly registrations: Record<string, HubRegistrationResource>;
  readonly summary: pulumi.Output<HubSummaryOutput>;

  constructor(name: string, args: HubRegistrationArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fleetguard:hubs:HubRegistration", name, {}, opts);
    const registration = args?.name ?? name;
    declared("HubRegistration", name, () => {
      checkHubArgs(registration, args);
      const policy = typeof args.policy === "string" ? loadPolicyFile(args.policy) : args.policy;
      const hubs = declaredHubs(args);
      if (policy && Object.keys(hubs).length) enforceAtConstruction(policy, { hubs });
    });
    const hub = hubInputs(args);
    this.registrations = {};
    for (const b of args.batches) {
      const ca = b.issuingCa;
      this.registrations[b.batchName] = new HubRegistrationResource(
        `${name}-${b.batchName}`,
        {
          kind: "fleetguard:hub",
          registration,
          batch: b.batchName,
          hub: pulumi.secret(hub) as never,
          trust: pulumi
            .all([ca.certificatePem, ca.chainPem, ca.ancestorCrlPems ?? pulumi.output([]), b.batch.crl])
            .apply(([certificatePem, chainPem, crlPems, crl]) => ({
              name: ca.name,
              certificatePem,
              chainPem,
              crlPems,
              batchCrl: crl ? { path: crl.path, crlNumber: crl.crlNumber } : null,
            })) as never,
          registry: b.registry,
          progressUrn: pulumi.createUrn(`${name}-${b.batchName}`, "pulumi-nodejs:dynamic:Resource", this),
        },
        { parent: this, dependsOn: [b] },
      );
    }
    const rs = Object.values(this.registrations);
    this.summary = pulumi
      .all(rs.map((r) => pulumi.all([r.registered, r.active, r.disabled, r.failed, r.endpoint, r.caIds])))
      .apply((all) => {
        const sum = (k: number) => all.reduce((a, r) => a + (r[k] as number), 0);
        return {
          registered: sum(0),
          active: sum(1),
          disabled: sum(2),
          failed: sum(3),
          endpoint: (all[0]?.[4] as string) ?? "",
          caIds: [...new Set(all.flatMap((r) => r[5] as string[]))].sort(),
        };
      });
    this.registerOutputs({ summary: this.summary });
  }
}
