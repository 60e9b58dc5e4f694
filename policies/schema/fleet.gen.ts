// GENERATED FILE, do not edit: produced from policies/schema/fleet.schema.json by `npm run gen:policy-types`.
/* biome-ignore-all lint: generated */
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "Name".
 */
export type Name = string;
/**
 * Name of the signing CA; absent for a root.
 */
export type Name1 = string;
/**
 * Key algorithm and size: ecdsa-p256, ecdsa-p384, ecdsa-p521, rsa-<bits>, ed25519.
 *
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "KeyAlgorithm".
 */
export type KeyAlgorithm = string;
/**
 * RFC 5280 key usage bits; contentCommitment is the newer name of nonRepudiation.
 *
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "KeyUsage".
 */
export type KeyUsage =
  | "digitalSignature"
  | "nonRepudiation"
  | "contentCommitment"
  | "keyEncipherment"
  | "dataEncipherment"
  | "keyAgreement"
  | "keyCertSign"
  | "cRLSign"
  | "encipherOnly"
  | "decipherOnly";
/**
 * TLS library of the device model's firmware: its X.509 parser decides which certificates the device can load (FG-CA-003; docs/pki-interop.md).
 */
export type TlsStack = "mbedtls" | "wolfssl" | "openssl" | "boringssl" | "aws-lc" | "rustls" | "go" | "other";
/**
 * An extended key usage (RFC 5280 4.2.1.12) by name (clientAuth, serverAuth, codeSigning, emailProtection, timeStamping, OCSPSigning, manifestSigning), or any other as a dotted OID.
 *
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "ExtKeyUsage".
 */
export type ExtKeyUsage = string;
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "StringOrList".
 */
export type StringOrList = string | string[];

/**
 * A declarative fleet file (fleet.yaml): the CAs, batches, rotation schedules and hub settings a platform repo declares, plus optional inventory of what is deployed. `fleet policy check` and `fleet policy review` evaluate it against a FleetPolicy.
 */
export interface FleetDeclaration {
  apiVersion: "fleetguard.io/v1";
  kind: "Fleet";
  metadata: FleetMetadata;
  spec: FleetSpec;
}
export interface FleetMetadata {
  name: string;
  description?: string;
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "FleetSpec".
 */
export interface FleetSpec {
  /**
   * Policy file this fleet is held to, relative to the fleet file.
   */
  policy?: string;
  cas?: DeclaredCa[];
  batches?: DeclaredBatch[];
  rotation?: DeclaredRotation[];
  hubs?: DeclaredHubs;
  inventory?: Inventory;
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "DeclaredCa".
 */
export interface DeclaredCa {
  name: Name;
  role: "root" | "intermediate" | "issuing";
  parent?: Name1;
  subject?: string;
  algorithm: KeyAlgorithm;
  validityDays: number;
  pathLen?: number;
  keyUsage?: KeyUsage[];
  nameConstraints?: NameConstraints;
  crlIntervalHours?: number;
}
export interface NameConstraints {
  permitted?: string[];
  excluded?: string[];
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "DeclaredBatch".
 */
export interface DeclaredBatch {
  id: Name;
  deviceModel?: string;
  tlsStack?: TlsStack;
  issuingCa: Name;
  identitySource: "puf" | "injected";
  count: number;
  profile: CertificateProfile;
  hsmCounter?: HsmCounter;
  puf?: PufSettings;
}
export interface CertificateProfile {
  algorithm: KeyAlgorithm;
  validityDays: number;
  keyUsage?: KeyUsage[];
  /**
   * Extended key usages of the device certificates; absent: clientAuth (what core/enroll/profile issues by default).
   */
  extKeyUsage?: ExtKeyUsage[];
}
/**
 * The HSM production counter bounding how many chips a factory may provision.
 */
export interface HsmCounter {
  limit: number;
  hsm?: string;
}
export interface PufSettings {
  keyFailureRate?: number;
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "DeclaredRotation".
 */
export interface DeclaredRotation {
  name: Name;
  /**
   * @minItems 1
   */
  batches: Name[];
  waveFraction: number;
  renewBeforeDays?: number;
  rekeyAfterDays?: number;
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "DeclaredHubs".
 */
export interface DeclaredHubs {
  aws?: DeclaredAwsHub;
  azure?: DeclaredAzureHub;
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "DeclaredAwsHub".
 */
export interface DeclaredAwsHub {
  logging?: AwsLogging;
  policies?: DeclaredIotPolicy[];
}
export interface AwsLogging {
  enabled: boolean;
  level?: "ERROR" | "WARN" | "INFO" | "DEBUG";
}
export interface DeclaredIotPolicy {
  name: string;
  batches?: Name[];
  document: IotPolicyDocument;
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "IotPolicyDocument".
 */
export interface IotPolicyDocument {
  Version?: string;
  Statement: IotPolicyStatement[];
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "IotPolicyStatement".
 */
export interface IotPolicyStatement {
  Sid?: string;
  Effect: "Allow" | "Deny";
  Action?: StringOrList;
  NotAction?: StringOrList;
  Resource?: StringOrList;
  NotResource?: StringOrList;
  /**
   * IAM condition block (free form, as AWS defines it).
   */
  Condition?: {};
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "DeclaredAzureHub".
 */
export interface DeclaredAzureHub {
  enrollmentGroups?: DeclaredEnrollmentGroup[];
}
export interface DeclaredEnrollmentGroup {
  name: string;
  attestation: "x509-ca" | "x509-individual" | "tpm" | "symmetric-key";
  caVerified?: boolean;
  batches?: Name[];
}
/**
 * What is deployed (from the registry or a hub export), when known.
 *
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "Inventory".
 */
export interface Inventory {
  certificates?: InventoryCertificate[];
  crls?: InventoryCrl[];
  batches?: InventoryBatch[];
  hubs?: DeclaredHubs;
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "InventoryCertificate".
 */
export interface InventoryCertificate {
  /**
   * Registry id: a CA name or a device id.
   */
  id: string;
  role: "root" | "intermediate" | "issuing" | "device";
  /**
   * The certificate, PEM.
   */
  pem?: string;
  /**
   * Or a PEM file, relative to the fleet file.
   */
  pemFile?: string;
  deviceId?: string;
  batch?: Name;
  /**
   * Registered and allowed to connect at the hub (default true).
   */
  active?: boolean;
  /**
   * When the key was generated, if older than the certificate.
   */
  keyCreatedAt?: string;
  /**
   * The registry's status of the certificate (fleet audit).
   */
  status?: "live" | "revoked";
  /**
   * RFC 5280 reason name, when the registry holds it as revoked.
   */
  revocationReason?: string;
  /**
   * The registry's state of the device that holds it (active, revoked, decommissioned, ...).
   */
  deviceState?: string;
  /**
   * The device's key epoch (PUF devices: which derived key).
   */
  epoch?: number;
  /**
   * Where hubs admit or refuse the certificate: the registry's hub records, and the local hub's state files.
   */
  hubs?: InventoryHubRegistration[];
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "InventoryHubRegistration".
 */
export interface InventoryHubRegistration {
  /**
   * The hub registration's name (local hub: local:<registration>).
   */
  hub: string;
  /**
   * Where the fact was read.
   */
  source?: "registry" | "local-state";
  /**
   * The hub record's status (registering, active, disabled, ...) or, in a local hub's state, allowed or disabled.
   */
  status: string;
  /**
   * True when the hub lets this certificate connect.
   */
  accepts: boolean;
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "InventoryCrl".
 */
export interface InventoryCrl {
  /**
   * Inventory id of the CA certificate that signed it.
   */
  issuer: string;
  pem?: string;
  pemFile?: string;
}
/**
 * This interface was referenced by `FleetDeclaration`'s JSON-Schema
 * via the `definition` "InventoryBatch".
 */
export interface InventoryBatch {
  id: Name;
  states: DeviceStateCounts;
}
export interface DeviceStateCounts {
  pending?: number;
  attested?: number;
  issued?: number;
  installed?: number;
  active?: number;
  quarantined?: number;
  revoked?: number;
  decommissioned?: number;
}
