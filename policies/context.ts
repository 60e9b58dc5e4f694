/**
 * The fleet context every check evaluates: what is declared (CAs, batches, rotation schedules, hub
 * settings: from fleet.yaml, from component arguments, or from resources seen by the CrossGuard pack)
 * and, when known, what is deployed (certificates as PEM with their registry metadata, CRLs, batch state
 * counts, hub settings read back from the hub). The declared shapes are generated from
 * policies/schema/fleet.schema.json, so the fleet file, the components and the checks share one type.
 */
import type {
  DeclaredBatch,
  DeclaredCa,
  DeclaredHubs,
  DeclaredRotation,
  InventoryBatch,
  InventoryHubRegistration,
} from "./schema/fleet.gen";

export type {
  CertificateProfile,
  DeclaredAwsHub,
  DeclaredAzureHub,
  DeclaredBatch,
  DeclaredCa,
  DeclaredEnrollmentGroup,
  DeclaredHubs,
  DeclaredIotPolicy,
  DeclaredRotation,
  ExtKeyUsage,
  InventoryBatch,
  InventoryHubRegistration,
  IotPolicyDocument,
  IotPolicyStatement,
  TlsStack,
} from "./schema/fleet.gen";

export type CertRole = "root" | "intermediate" | "issuing" | "device";
export type CaRole = "root" | "intermediate" | "issuing";

/** What a fleet declares. Every list may be empty: a component declares only its own part. */
export interface DeclaredFleet {
  cas?: DeclaredCa[];
  batches?: DeclaredBatch[];
  rotation?: DeclaredRotation[];
  hubs?: DeclaredHubs;
}

/** A deployed certificate and its registry metadata; issuer, serial, dates and key come from the PEM. */
export interface DeployedCertificate {
  /** Registry id: a CA name or a device id. */
  id: string;
  role: CertRole;
  pem: string;
  deviceId?: string;
  batch?: string;
  /** Registered and allowed to connect (default true). */
  active?: boolean;
  /** When the key was generated, when older than the certificate (re-issue without re-key). */
  keyCreatedAt?: string;
  /** The registry's status of the certificate, when read from a registry (fleet audit). */
  status?: "live" | "revoked";
  revocationReason?: string;
  /** The registry's state of the device that holds it. */
  deviceState?: string;
  epoch?: number;
  /** Where hubs admit or refuse it (registry hub records, the local hub's state files); absent: unknown. */
  hubs?: InventoryHubRegistration[];
}

export interface DeployedCrl {
  /** Inventory id of the CA certificate that signed it. */
  issuer: string;
  /** PEM ("-----BEGIN X509 CRL-----"). */
  pem: string;
}

export interface DeployedFleet {
  certificates?: DeployedCertificate[];
  crls?: DeployedCrl[];
  batches?: InventoryBatch[];
  hubs?: DeclaredHubs;
}

export interface FleetContext {
  /** Fleet name, for reports. */
  name?: string;
  declared: DeclaredFleet;
  deployed?: DeployedFleet;
}

/** The parts of a context a check reads; a check whose parts are all empty is not applicable. */
export type ContextPart =
  | "declared.cas"
  | "declared.batches"
  | "declared.rotation"
  | "declared.hubs.aws"
  | "declared.hubs.azure"
  | "deployed.certificates"
  | "deployed.crls"
  | "deployed.batches"
  | "deployed.hubs.aws"
  | "deployed.hubs.azure";

export function hasPart(ctx: FleetContext, part: ContextPart): boolean {
  const d = ctx.declared;
  const x = ctx.deployed;
  switch (part) {
    case "declared.cas":
      return (d.cas?.length ?? 0) > 0;
    case "declared.batches":
      return (d.batches?.length ?? 0) > 0;
    case "declared.rotation":
      return (d.rotation?.length ?? 0) > 0;
    case "declared.hubs.aws":
      return d.hubs?.aws !== undefined;
    case "declared.hubs.azure":
      return d.hubs?.azure !== undefined;
    case "deployed.certificates":
      return (x?.certificates?.length ?? 0) > 0;
    case "deployed.crls":
      return (x?.crls?.length ?? 0) > 0;
    case "deployed.batches":
      return (x?.batches?.length ?? 0) > 0;
    case "deployed.hubs.aws":
      return x?.hubs?.aws !== undefined;
    case "deployed.hubs.azure":
      return x?.hubs?.azure !== undefined;
  }
}
