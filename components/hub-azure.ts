/**
 * The Azure side of a hub registration: the small, slow-changing infrastructure that belongs in
 * Pulumi state, made of @pulumi/azure-native resources. A Device Provisioning Service instance
 * (IotDpsResource) with its linked IoT hub (a new IotHubResource, or an existing hub linked by
 * its connection string, a secret), and one DpsCertificate per issuing CA, uploaded verified
 * (`isVerified: true`) so enrollment groups can name it in caReferences. The per-device part
 * (enrollment groups and enrollments, through the DPS service API) is core/hubs/azure-dps.ts,
 * driven by the registration's dynamic resource.
 *
 * Only the two service modules are imported, never the package root: `@pulumi/azure-native`
 * loads ~490 files of 271 services (~490 ms and ~20 MiB of heap on this machine), the two
 * modules ~10 files (~75 ms). See docs/hub-azure.md.
 *
 * Verification: on upload, not the proof-of-possession flow. The CA is fleetguard's own (its key
 * in fleetguard's custody: CaHierarchy made it), so possession is known to whoever declares it;
 * proof of possession would need a verification certificate signed with the CA key at the time of
 * `up` (generateVerificationCode, then a POST verify action that azure-native does not model as a
 * resource). A CA brought from outside (`keyHeldByFleetguard: false`) is declared unverified, so
 * FG-HUB-004 (requireCaVerified) refuses it unless the policy waives it.
 *
 * CA rollover: while an issuing CA's predecessor is still trusted (CaOutputs.previous), both are
 * uploaded, each its own DpsCertificate: the first generation keeps its names (`<hub>-ca-<name>`,
 * fleetguard-<name>), a successor adds its generation (`<hub>-ca-<name>-g<g>`,
 * fleetguard-<name>-g<g>), and the enrollment group of the CA name references both (successor
 * primary, predecessor secondary: core/hubs/azure-dps.ts). The predecessor's predecessor, no
 * longer declared, is deleted by the next generation's `up`.
 */
import * as dps from "@pulumi/azure-native/deviceprovisioningservices";
import * as iothub from "@pulumi/azure-native/iothub";
import * as pulumi from "@pulumi/pulumi";
import { FleetError, invalid } from "../core/errors";
import { dpsCertificateName, enrollmentGroupId } from "../core/hubs/azure-dps";
import type { DeclaredAzureHub, DeclaredEnrollmentGroup } from "../policies/context";

export type AzureAllocationPolicy = "Hashed" | "GeoLatency" | "Static";

export interface AzureHubArgs {
  readonly resourceGroupName: pulumi.Input<string>;
  readonly location: string;
  /** the DPS instance's name (global DNS name: <name>.azure-devices-provisioning.net); default the registration's name */
  readonly dpsName?: string;
  /** DPS units (S1); default 1 */
  readonly dpsUnits?: number;
  /** the linked IoT hub: one fleetguard creates, or an existing hub by its connection string */
  readonly iotHub:
    | {
        readonly create: {
          readonly name?: string;
          readonly sku?: "F1" | "B1" | "B2" | "B3" | "S1" | "S2" | "S3";
          readonly units?: number;
        };
      }
    | { readonly existing: { readonly connectionString: pulumi.Input<string>; readonly location: string } };
  /** how DPS allocates devices to the linked hubs; default Hashed */
  readonly allocationPolicy?: AzureAllocationPolicy;
  /** group: one X.509 enrollment group per issuing CA (default); individual: one enrollment per device */
  readonly mode?: "group" | "individual";
  /** the batches registered here (the declared view names them) */
  readonly batches?: readonly string[];
  readonly tags?: Readonly<Record<string, string>>;
}

/** An issuing CA the DPS trusts. */
export interface AzureIssuingCa {
  /** CA name in the CaHierarchy: names the DpsCertificate (logical names are stable by it) */
  readonly name: string;
  /** the CA's generation (CaHierarchy rollover; absent: 1): a successor's certificate names end in -g<g> */
  readonly generation?: number;
  readonly certificatePem: pulumi.Input<string>;
  /** the CA's key is in fleetguard's custody (a CaHierarchy CA); false: brought from outside. Default true */
  readonly keyHeldByFleetguard?: boolean;
}

export interface AzureHubInfrastructure {
  readonly dps: dps.IotDpsResource;
  readonly hub?: iothub.IotHubResource;
  /** by CA name (a rollover's successor by `<name>-g<generation>`) */
  readonly certificates: Readonly<Record<string, dps.DpsCertificate>>;
  /** what devices connect to: global.azure-devices-provisioning.net */
  readonly dpsEndpoint: pulumi.Output<string>;
  /** the service API the driver calls: https://<dps>.azure-devices-provisioning.net */
  readonly serviceEndpoint: pulumi.Output<string>;
  readonly idScope: pulumi.Output<string>;
  /** DPS certificate names, in CA order (what enrollment groups reference) */
  readonly certificateNames: readonly string[];
  readonly declared: DeclaredAzureHub;
}

const NAME = /^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$/i;

/** Check the arguments; every problem at once, naming the field. Pure. */
export function checkAzureHubArgs(name: string, args: AzureHubArgs, cas: readonly AzureIssuingCa[]): void {
  const problems: FleetError[] = [];
  const dpsName = args.dpsName ?? name;
  if (!NAME.test(dpsName))
    problems.push(
      invalid("dpsName", dpsName, "3-64 letters, digits or hyphens, not starting or ending with a hyphen"),
    );
  if (typeof args.location !== "string" || !args.location)
    problems.push(invalid("location", args.location, "an Azure region such as westeurope"));
  if (
    args.dpsUnits !== undefined &&
    (!Number.isInteger(args.dpsUnits) || args.dpsUnits < 1 || args.dpsUnits > 10)
  )
    problems.push(invalid("dpsUnits", args.dpsUnits, "an integer 1..10"));
  if (args.mode !== undefined && args.mode !== "group" && args.mode !== "individual")
    problems.push(invalid("mode", args.mode, "group or individual"));
  if (
    args.allocationPolicy !== undefined &&
    !["Hashed", "GeoLatency", "Static"].includes(args.allocationPolicy)
  )
    problems.push(invalid("allocationPolicy", args.allocationPolicy, "Hashed, GeoLatency or Static"));
  const hub = args.iotHub as Record<string, unknown> | undefined;
  if (!hub || "create" in hub === "existing" in hub)
    problems.push(
      invalid("iotHub", hub, "{ create: {...} } or { existing: { connectionString, location } }"),
    );
  else if ("create" in hub) {
    const c = (args.iotHub as { create: { name?: string; units?: number } }).create ?? {};
    if (c.name !== undefined && !NAME.test(c.name))
      problems.push(invalid("iotHub.create.name", c.name, "3-64 letters, digits or hyphens"));
    if (c.units !== undefined && (!Number.isInteger(c.units) || c.units < 1))
      problems.push(invalid("iotHub.create.units", c.units, "an integer >= 1"));
  } else if (typeof (args.iotHub as { existing: { location: string } }).existing?.location !== "string")
    problems.push(invalid("iotHub.existing.location", undefined, "the existing hub's region"));
  if (!Array.isArray(cas) || cas.length === 0)
    problems.push(invalid("issuingCas", cas, "at least one issuing CA"));
  else if (cas.length > 25)
    problems.push(invalid("issuingCas", cas, "at most 25 CAs (a DPS instance holds 25 certificates)"));
  const seen = new Set<string>();
  for (const [i, ca] of (cas ?? []).entries()) {
    let certName = "";
    try {
      certName = dpsCertificateName(ca.name);
    } catch {
      problems.push(invalid(`issuingCas[${i}].name`, ca.name, "a CA name with a letter or digit"));
      continue;
    }
    try {
      certName = dpsCertificateName(ca.name, ca.generation);
    } catch {
      problems.push(invalid(`issuingCas[${i}].generation`, ca.generation, "a whole number >= 1"));
      continue;
    }
    if (seen.has(certName))
      problems.push(
        invalid(
          `issuingCas[${i}].name`,
          ca.name,
          `a name whose certificate name (${certName}) no other CA has`,
        ),
      );
    seen.add(certName);
  }
  if (problems.length === 1) throw problems[0];
  if (problems.length)
    throw new FleetError("INVALID_INPUT", problems.map((p) => p.message).join("; "), problems[0].field);
}

/** The declared view policies evaluate (FG-HUB-004). Pure. */
export function declaredAzureHub(args: AzureHubArgs, cas: readonly AzureIssuingCa[]): DeclaredAzureHub {
  const batches = args.batches ? { batches: [...args.batches] } : {};
  if ((args.mode ?? "group") === "individual")
    return {
      enrollmentGroups: [{ name: "individual-enrollments", attestation: "x509-individual", ...batches }],
    };
  // one group per CA name: a rollover's two generations share it (primary and secondary slot)
  const byGroup = new Map<string, DeclaredEnrollmentGroup>();
  for (const ca of cas) {
    const name = enrollmentGroupId(ca.name);
    const verified = ca.keyHeldByFleetguard !== false && (byGroup.get(name)?.caVerified ?? true);
    byGroup.set(name, { name, attestation: "x509-ca", caVerified: verified, ...batches });
  }
  return { enrollmentGroups: [...byGroup.values()] };
}

/** Logical and Azure names of every child, stable by CA name. Pure. */
export function azureHubNames(name: string, args: AzureHubArgs, cas: readonly AzureIssuingCa[]) {
  const create = "create" in args.iotHub ? args.iotHub.create : undefined;
  return {
    dps: { logical: `${name}-dps`, azure: args.dpsName ?? name },
    hub: create
      ? { logical: `${name}-iothub`, azure: create.name ?? `${args.dpsName ?? name}-hub` }
      : undefined,
    // the first generation keeps the names it had before any rollover
    certificates: cas.map((ca) => {
      const g = ca.generation ?? 1;
      const key = g > 1 ? `${ca.name}-g${g}` : ca.name;
      return { ca: key, logical: `${name}-ca-${key}`, azure: dpsCertificateName(ca.name, g) };
    }),
  };
}

/** Create the DPS, its linked hub and the CA certificates as children of `parent`. */
export function azureHubInfrastructure(
  name: string,
  args: AzureHubArgs,
  issuingCas: readonly AzureIssuingCa[],
  parent: pulumi.Resource,
): AzureHubInfrastructure {
  checkAzureHubArgs(name, args, issuingCas);
  const names = azureHubNames(name, args, issuingCas);
  const opts = { parent };
  let hub: iothub.IotHubResource | undefined;
  let link: { connectionString: pulumi.Input<string>; location: pulumi.Input<string> };
  if ("create" in args.iotHub) {
    const c = args.iotHub.create;
    hub = new iothub.IotHubResource(
      names.hub?.logical as string,
      {
        resourceGroupName: args.resourceGroupName,
        resourceName: names.hub?.azure,
        location: args.location,
        sku: { name: c.sku ?? "S1", capacity: c.units ?? 1 },
        tags: { ...args.tags },
      },
      opts,
    );
    const keys = iothub.listIotHubResourceKeysForKeyNameOutput(
      { resourceGroupName: args.resourceGroupName, resourceName: hub.name, keyName: "iothubowner" },
      { parent },
    );
    link = {
      connectionString: pulumi.secret(
        pulumi.interpolate`HostName=${hub.properties.hostName};SharedAccessKeyName=iothubowner;SharedAccessKey=${keys.primaryKey}`,
      ),
      location: args.location,
    };
  } else {
    link = {
      connectionString: pulumi.secret(args.iotHub.existing.connectionString),
      location: args.iotHub.existing.location,
    };
  }
  const instance = new dps.IotDpsResource(
    names.dps.logical,
    {
      resourceGroupName: args.resourceGroupName,
      provisioningServiceName: names.dps.azure,
      location: args.location,
      sku: { name: "S1", capacity: args.dpsUnits ?? 1 },
      properties: {
        allocationPolicy: args.allocationPolicy ?? "Hashed",
        iotHubs: [
          { connectionString: link.connectionString, location: link.location, applyAllocationPolicy: true },
        ],
      },
      tags: { ...args.tags },
    },
    { ...opts, ...(hub ? { dependsOn: [hub] } : {}) },
  );
  const certificates: Record<string, dps.DpsCertificate> = {};
  if ((args.mode ?? "group") === "group")
    for (const [i, ca] of issuingCas.entries()) {
      const n = names.certificates[i];
      certificates[n.ca] = new dps.DpsCertificate(
        n.logical,
        {
          resourceGroupName: args.resourceGroupName,
          provisioningServiceName: instance.name,
          certificateName: n.azure,
          properties: { certificate: ca.certificatePem, isVerified: true },
        },
        opts,
      );
    }
  return {
    dps: instance,
    hub,
    certificates,
    dpsEndpoint: instance.properties.apply((p) => p.deviceProvisioningHostName),
    serviceEndpoint: instance.properties.apply((p) => `https://${p.serviceOperationsHostName}`),
    idScope: instance.properties.apply((p) => p.idScope),
    certificateNames: (args.mode ?? "group") === "group" ? names.certificates.map((c) => c.azure) : [],
    declared: declaredAzureHub(args, issuingCas),
  };
}
