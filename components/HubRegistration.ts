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

import * as dps from "@pulumi/azure-native/deviceprovisioningservices";
import * as pulumi from "@pulumi/pulumi";
import { FleetError, invalid } from "../core/errors";
import type { DeclaredHubs } from "../policies/context";
import { enforceAtConstruction, loadPolicyFile, type PolicyInput } from "../policies/engine";
import { HubRegistrationResource } from "../providers/hub";
import type { HubSpecInputs } from "../providers/runtime/hub";
import type { CaOutputs } from "./CaHierarchy";
import type { DeviceIdentityBatch } from "./DeviceIdentityBatch";
import { declared } from "./errors";
import {
  type AwsHubArgs,
  awsHubInfrastructure,
  awsHubNames,
  checkAwsHubArgs,
  declaredAwsHub,
} from "./hub-aws";
import {
  type AzureHubArgs,
  azureHubInfrastructure,
  azureHubNames,
  checkAzureHubArgs,
  declaredAzureHub,
} from "./hub-azure";
import { childUrn } from "./urn";

/** The embedded local hub: a state folder that `fleet hub serve --state DIR` serves. */
export interface LocalHubArgs {
  readonly kind: "local";
  /** the hub's state folder, relative to the program (default `.fleetguard/hub`) */
  readonly stateDir?: string;
}

/** AWS IoT Core (docs/hub-aws.md): the CA, policy, thing type and group as @pulumi/aws resources; devices through the AWS API. */
export interface AwsHubRegistrationArgs extends AwsHubArgs {
  readonly kind: "aws";
  /** the AWS region (required: the device registrations are made there) */
  readonly region: string;
  /** a name for messages and plans ("prod"; default the region) */
  readonly label?: string;
  /** an emulator's URL (moto, ministack); unset: AWS itself */
  readonly endpoint?: string;
  /** per-device calls per second per API (default 10, the AWS quota); 0: no limit */
  readonly ratePerSecond?: number;
}

/** Azure IoT Hub with DPS (docs/hub-azure.md): DPS, its hub and the verified CAs as @pulumi/azure-native resources; enrollments through the DPS service API. */
export interface AzureHubRegistrationArgs extends AzureHubArgs {
  readonly kind: "azure";
  /** a name for messages and plans (default the DPS name) */
  readonly label?: string;
  /** the DPS service API to call (default the DPS instance's own endpoint; a contract service in tests) */
  readonly serviceEndpoint?: pulumi.Input<string>;
  /** the shared access policy and its key (default provisioningserviceowner, its primary key read from Azure) */
  readonly sasKeyName?: string;
  readonly sasKey?: pulumi.Input<string>;
  /** enrollments written per second (default 1,000 a minute, the DPS quota) */
  readonly ratePerSecond?: number;
}

export type HubArgs = LocalHubArgs | AwsHubRegistrationArgs | AzureHubRegistrationArgs;

export interface HubRegistrationArgs {
  /** the registration's name (the registry's hub records are keyed by it); default: the component name */
  readonly name?: string;
  /** the batches whose devices the hub must accept */
  readonly batches?: readonly DeviceIdentityBatch[];
  /**
   * issuing CAs to trust without per-device registration (AWS just-in-time provisioning, a DPS
   * enrollment group): devices of these CAs are admitted by the hub itself on first connect. The
   * batches' issuing CAs are trusted anyway.
   */
  readonly issuingCas?: readonly CaOutputs[];
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
  const batches = args.batches ?? [];
  if (!Array.isArray(batches)) throw invalid("batches", batches, "DeviceIdentityBatch components");
  if (args.issuingCas !== undefined && !Array.isArray(args.issuingCas))
    throw invalid("issuingCas", args.issuingCas, "issuing CAs: hierarchy.issuingCa(name)");
  (args.issuingCas ?? []).forEach((c, i) => {
    if (!c || typeof c.name !== "string" || !c.certificatePem)
      throw invalid(`issuingCas[${i}]`, c, 'an issuing CA of a CaHierarchy: hierarchy.issuingCa("line-a")');
  });
  if (batches.length === 0 && !(args.issuingCas ?? []).length)
    throw invalid("batches", batches, "one or more DeviceIdentityBatch components (or issuingCas to trust)");
  const seen = new Set<string>();
  batches.forEach((b, i) => {
    if (!b || typeof b.batchName !== "string" || !b.issuingCa)
      throw invalid(`batches[${i}]`, b, "a DeviceIdentityBatch component");
    if (seen.has(b.batchName)) throw invalid(`batches[${i}]`, b.batchName, "each batch once");
    seen.add(b.batchName);
  });
  const h = args.hub as { kind?: unknown } | undefined;
  if (!h || typeof h !== "object") throw invalid("hub", h, "{ kind: 'local' | 'aws' | 'azure', ... }");
  if (h.kind !== "local" && h.kind !== "aws" && h.kind !== "azure")
    throw invalid("hub.kind", h.kind, "'local', 'aws' or 'azure'");
  const rate = (args.hub as { ratePerSecond?: unknown }).ratePerSecond;
  if (rate !== undefined && !(typeof rate === "number" && rate >= 0 && Number.isFinite(rate)))
    throw invalid("hub.ratePerSecond", rate, "calls per second >= 0 (0: no limit)");
  if (args.hub.kind === "aws") {
    if (typeof args.hub.region !== "string" || !/^[a-z]{2}(-[a-z]+)+-\d$/.test(args.hub.region))
      throw invalid("hub.region", args.hub.region, "an AWS region such as eu-central-1");
    checkAwsHubArgs(args.hub, trustedCas(args));
    awsHubNames(name, args.hub);
    return;
  }
  if (args.hub.kind === "azure") {
    checkAzureHubArgs(name, args.hub, trustedCas(args));
    azureHubNames(name, args.hub, trustedCas(args));
    return;
  }
  if (!batches.length)
    throw invalid(
      "batches",
      batches,
      "one or more DeviceIdentityBatch components: the local hub admits registered certificates only (issuingCas alone is for AWS JITP and DPS enrollment groups)",
    );
  const l = args.hub as LocalHubArgs;
  if (
    l.stateDir !== undefined &&
    (typeof l.stateDir !== "string" || !l.stateDir.trim() || l.stateDir.includes("\0"))
  )
    throw invalid("hub.stateDir", l.stateDir, "a folder path for the local hub's state");
}

/**
 * The CAs the hub trusts: the batches' issuing CAs and those given alone, each once (by CA name),
 * each followed during a rollover by its predecessor (`previous`: same name, the generation
 * before), which the hub trusts too while devices hold its certificates. The predecessor's
 * predecessor is not listed: raising the generation again drops its hub resources.
 */
export function trustedCas(args: HubRegistrationArgs): CaOutputs[] {
  const seen = new Map<string, CaOutputs>();
  for (const c of [...issuingCas(args.batches ?? []), ...(args.issuingCas ?? [])])
    if (!seen.has(c.name)) seen.set(c.name, c);
  return [...seen.values()].flatMap((c) =>
    c.previous
      ? [
          c,
          {
            ...c.previous,
            name: c.name,
            generation: c.previous.generation ?? Math.max(1, (c.generation ?? 2) - 1),
          },
        ]
      : [c],
  );
}

/** The batches' issuing CAs, each once (by CA name), in the order of the batches. */
export function issuingCas(batches: readonly DeviceIdentityBatch[]): CaOutputs[] {
  const seen = new Map<string, CaOutputs>();
  for (const b of batches)
    if (b?.issuingCa && !seen.has(b.issuingCa.name)) seen.set(b.issuingCa.name, b.issuingCa);
  return [...seen.values()];
}

/** What the policy engine sees of the hub (AWS policies, Azure enrollment groups): what `up` deploys. */
export function declaredHubs(name: string, args: HubRegistrationArgs): DeclaredHubs {
  const h = args.hub;
  const batches = (args.batches ?? []).map((b) => b.batchName);
  if (h.kind === "aws") {
    const names = awsHubNames(name, h);
    return {
      aws: declaredAwsHub({
        policyName: names.policyName,
        region: h.region,
        account: h.account,
        topicPrefix: h.topicPrefix ?? "fleet",
        batches,
        logging: h.logging,
      }),
    };
  }
  if (h.kind === "azure") return { azure: declaredAzureHub({ ...h, batches }, trustedCas(args)) };
  return {};
}

/** The hub's infrastructure (ordinary resources) and the settings the per-batch resources get. */
function hubInfrastructure(
  name: string,
  args: HubRegistrationArgs,
  parent: pulumi.Resource,
): { hub: pulumi.Input<HubSpecInputs>; dependsOn: pulumi.Resource[] } {
  const h = args.hub;
  if (h.kind === "local")
    return { hub: { kind: "local", stateDir: h.stateDir ?? ".fleetguard/hub" }, dependsOn: [] };
  const cas = trustedCas(args);
  if (h.kind === "aws") {
    const infra = awsHubInfrastructure(
      name,
      { ...h, batches: h.batches ?? (args.batches ?? []).map((b) => b.batchName) },
      cas.map((c) => ({
        name: c.name,
        ...(c.generation !== undefined ? { generation: c.generation } : {}),
        certificatePem: c.certificatePem,
      })),
      parent,
    );
    return {
      hub: pulumi.all([infra.caCertificateIds, infra.caCertificatePems]).apply(([ids, pems]) => ({
        kind: "aws" as const,
        account: h.label ?? h.region,
        region: h.region,
        ...(h.endpoint ? { endpoint: h.endpoint } : {}),
        mode: h.mode ?? "per-device",
        ratePerSecond: h.ratePerSecond ?? 10,
        caCertificates: pems.map((pem, i) => ({ id: ids[i], pem })),
        policyName: infra.policyName,
        thingTypeName: infra.thingTypeName,
        thingGroupName: infra.thingGroupName,
      })),
      // the CAs are registered before any of their certificates (AWS refuses them otherwise)
      dependsOn: infra.resources,
    };
  }
  const infra = azureHubInfrastructure(name, h, cas, parent);
  const keyName = h.sasKeyName ?? "provisioningserviceowner";
  const sasKey =
    h.sasKey ??
    dps
      .listIotDpsResourceKeysForKeyNameOutput(
        { keyName, provisioningServiceName: infra.dps.name, resourceGroupName: h.resourceGroupName },
        { parent },
      )
      .apply((k) => {
        if (!k.primaryKey)
          throw new FleetError(
            "NOT_FOUND",
            `hub.sasKeyName: got ${keyName}, which has no primary key at the DPS`,
          );
        return k.primaryKey;
      });
  return {
    hub: pulumi
      .all([h.serviceEndpoint ?? infra.serviceEndpoint, pulumi.secret(sasKey), infra.idScope])
      .apply(([endpoint, key, idScope]) => ({
        kind: "azure" as const,
        account: h.label ?? h.dpsName ?? name,
        endpoint,
        sasKeyName: keyName,
        sasKey: key,
        mode: h.mode ?? "group",
        ratePerSecond: h.ratePerSecond ?? 1000 / 60,
        ...(idScope ? { idScope } : {}),
      })),
    dependsOn: [infra.dps, ...Object.values(infra.certificates)],
  };
}

/** A resource option's dependsOn as a list (one resource or a list; an output of them is waited for). */
function dependsOnList(d: pulumi.ResourceOptions["dependsOn"]): pulumi.Input<pulumi.Resource>[] {
  if (d === undefined) return [];
  return Array.isArray(d) ? d : [d as pulumi.Input<pulumi.Resource>];
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
      const hubs = declaredHubs(registration, args);
      if (policy && Object.keys(hubs).length) enforceAtConstruction(policy, { hubs });
    });
    const infra = hubInfrastructure(registration, args, this);
    const after = dependsOnList(opts?.dependsOn);
    this.registrations = {};
    for (const b of args.batches ?? []) {
      const ca = b.issuingCa;
      this.registrations[b.batchName] = new HubRegistrationResource(
        `${name}-${b.batchName}`,
        {
          kind: "fleetguard:hub",
          registration,
          batch: b.batchName,
          hub: pulumi.secret(infra.hub) as never,
          trust: pulumi
            .all([
              ca.certificatePem,
              ca.chainPem,
              ca.ancestorCrlPems ?? pulumi.output([]),
              b.batch.crl,
              // a CA rollover: the predecessor, trusted while the batch's devices hold its certificates
              ca.previous
                ? pulumi.all([ca.previous.certificatePem, ca.previous.chainPem])
                : pulumi.output(undefined),
            ])
            .apply(([certificatePem, chainPem, crlPems, crl, previous]) => ({
              name: ca.name,
              certificatePem,
              chainPem,
              crlPems,
              batchCrl: crl ? { path: crl.path, crlNumber: crl.crlNumber } : null,
              crlDir: b.crlDir,
              ...(ca.generation && ca.generation > 1 ? { generation: ca.generation } : {}),
              ...(previous
                ? {
                    previous: {
                      certificatePem: previous[0],
                      chainPem: previous[1],
                      generation: (ca.generation ?? 2) - 1,
                    },
                  }
                : {}),
            })) as never,
          registry: b.registry,
          progressUrn: childUrn(this, `${name}-${b.batchName}`),
        },
        // the registration's own dependsOn (e.g. a RotationSchedule: its new certificates registered
        // in the same run) reaches the resource that does the work: a child does not inherit it
        { parent: this, dependsOn: [b, ...infra.dependsOn, ...after] },
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
