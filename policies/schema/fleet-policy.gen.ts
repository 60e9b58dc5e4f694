// GENERATED FILE, do not edit: produced from policies/schema/fleet-policy.schema.json by `npm run gen:policy-types`.
/* biome-ignore-all lint: generated */
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "IdentitySource".
 */
export type IdentitySource = "puf" | "injected";
/**
 * An extended key usage (RFC 5280 4.2.1.12) by name (clientAuth, serverAuth, codeSigning, emailProtection, timeStamping, OCSPSigning, manifestSigning), or any other as a dotted OID. manifestSigning is fleetguard's manifest-signer purpose (docs/pki-interop.md).
 *
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "ExtKeyUsage".
 */
export type ExtKeyUsage = string;
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "AzureAttestation".
 */
export type AzureAttestation = "x509-ca" | "x509-individual" | "tpm" | "symmetric-key";

/**
 * A fleetguard policy: what a device fleet must obey. The single source of truth for policy files; TypeScript types are generated from it (npm run gen:policy-types). Annotations: x-check names the check a field feeds (a waiver for that check may loosen it); x-tighten says which direction is stricter (max: lower, min: higher, subset: fewer items, true/false: that value, order: later in x-order, keys-subset: fewer keys); x-merge replace means a product-line value replaces the baseline's instead of merging into it.
 */
export interface FleetPolicy {
  /**
   * Policy format version.
   */
  apiVersion: "fleetguard.io/v1";
  kind: "FleetPolicy";
  metadata: PolicyMetadata;
  spec: PolicySpec;
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "PolicyMetadata".
 */
export interface PolicyMetadata {
  /**
   * Stable policy name, used in messages.
   */
  name: string;
  description?: string;
  /**
   * Path of the policy this one tightens, relative to this file (e.g. ../baseline.yaml).
   */
  extends?: string;
  /**
   * Team accountable for this policy.
   */
  owner?: string;
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "PolicySpec".
 */
export interface PolicySpec {
  identity?: IdentityRules;
  keys?: KeyRules;
  validity?: ValidityRules;
  names?: NameRules;
  renewal?: RenewalRules;
  caConstraints?: CaConstraintRules;
  revocation?: RevocationRules;
  rotation?: RotationRules;
  hubs?: HubRules;
  enforcement?: EnforcementOverrides;
  waivers?: Waiver[];
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "IdentityRules".
 */
export interface IdentityRules {
  /**
   * Where device identities may come from.
   */
  allowedSources?: IdentitySource[];
  injected?: {
    /**
     * Injected keys only under an HSM production counter (stops over-production by a contract manufacturer).
     */
    requireHsmCounter?: boolean;
  };
  puf?: {
    /**
     * Largest accepted fuzzy-extractor key failure rate (e.g. 1e-6).
     */
    maxKeyFailureRate?: number;
  };
  /**
   * Largest fraction of a batch that may end quarantined (clones, unreadable PUFs) before the run fails.
   */
  maxQuarantinedFraction?: number;
  /**
   * Refresh attests this many active devices of a batch, drawn at random (absent: every active device). A larger sample is tighter.
   */
  refreshAttestSample?: number;
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "KeyRules".
 */
export interface KeyRules {
  root?: AlgorithmRule;
  intermediate?: AlgorithmRule;
  issuing?: AlgorithmRule;
  device?: AlgorithmRule;
}
/**
 * Allowed key algorithms for one role and their minimum sizes; an algorithm not listed is not allowed.
 *
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "AlgorithmRule".
 */
export interface AlgorithmRule {
  ecdsa?: EcdsaRule;
  rsa?: RsaRule;
  ed25519?: Ed25519Rule;
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "EcdsaRule".
 */
export interface EcdsaRule {
  minBits: 256 | 384 | 521;
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "RsaRule".
 */
export interface RsaRule {
  minBits: number;
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "Ed25519Rule".
 */
export interface Ed25519Rule {}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "ValidityRules".
 */
export interface ValidityRules {
  /**
   * Longest certificate validity per role, in days.
   */
  maxDays?: {
    root?: number;
    intermediate?: number;
    issuing?: number;
    device?: number;
  };
  /**
   * A CA must outlive every certificate it signs by at least this many days.
   */
  caMarginDays?: number;
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "NameRules".
 */
export interface NameRules {
  /**
   * Accept wildcard DNS names (*.example.com) in device certificates. Default false: a wildcard identifies no single device.
   */
  allowWildcardDns?: boolean;
  /**
   * URI schemes allowed in the URI SANs of device certificates (RFC 3986). Default: urn, https, spiffe.
   */
  allowedUriSchemes?: string[];
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "RenewalRules".
 */
export interface RenewalRules {
  /**
   * Renew a CA certificate this many days before it expires.
   */
  caWindowDays?: number;
  /**
   * Renew a device certificate this many days before it expires.
   */
  deviceWindowDays?: number;
  /**
   * Re-key a device whose key or certificate is older than this.
   */
  maxKeyAgeDays?: number;
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "CaConstraintRules".
 */
export interface CaConstraintRules {
  /**
   * Every CA states pathLenConstraint (issuing CAs 0).
   */
  requirePathLen?: boolean;
  /**
   * Issuing CAs carry name constraints.
   */
  requireNameConstraints?: boolean;
  /**
   * What issuing CAs may issue.
   */
  issuing?: {
    /**
     * Extended key usages an issuing CA may put in the certificates it signs, and carry itself if its certificate has the extension; absent: clientAuth and manifestSigning (device TLS client authentication and fleetguard's manifest signers).
     *
     * @minItems 1
     */
    allowedExtKeyUsages?: ExtKeyUsage[];
  };
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "RevocationRules".
 */
export interface RevocationRules {
  /**
   * Longest time between two CRLs of a CA (also the longest thisUpdate-to-nextUpdate span).
   */
  crlIntervalHours?: number;
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "RotationRules".
 */
export interface RotationRules {
  /**
   * Largest fraction of a batch re-issued or re-keyed in one run.
   */
  maxWaveFraction?: number;
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "HubRules".
 */
export interface HubRules {
  aws?: AwsHubRules;
  azure?: AzureHubRules;
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "AwsHubRules".
 */
export interface AwsHubRules {
  /**
   * Allow iot:* or action wildcards in Allow statements.
   */
  allowWildcardActions?: boolean;
  /**
   * Allow * resources in Allow statements.
   */
  allowWildcardResources?: boolean;
  /**
   * iot:Connect must be limited to client IDs tied to ${iot:Connection.Thing.ThingName}.
   */
  requireThingNameClientId?: boolean;
  /**
   * No MQTT wildcards (+, #) in Deny statements, where they match literally and deny nothing.
   */
  forbidDenyWildcards?: boolean;
  /**
   * Least verbose hub logging accepted; DISABLED accepts no logging.
   */
  minLogLevel?: "DISABLED" | "ERROR" | "WARN" | "INFO" | "DEBUG";
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "AzureHubRules".
 */
export interface AzureHubRules {
  allowedAttestation?: AzureAttestation[];
  /**
   * Enrollment-group CAs must have passed proof of possession.
   */
  requireCaVerified?: boolean;
}
/**
 * Per-check enforcement level, overriding the default from the check's severity (critical/high: mandatory, medium/low: advisory).
 *
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "EnforcementOverrides".
 */
export interface EnforcementOverrides {
  [k: string]: "disabled" | "advisory" | "mandatory" | undefined;
}
/**
 * This interface was referenced by `FleetPolicy`'s JSON-Schema
 * via the `definition` "Waiver".
 */
export interface Waiver {
  /**
   * The check id the waiver applies to.
   */
  check: string;
  /**
   * Why, in words a reviewer can judge.
   */
  reason: string;
  /**
   * Last day (UTC) the waiver holds, YYYY-MM-DD.
   */
  expires: string;
  /**
   * Subjects (e.g. batch:gw-2024, ca:issuing-eu) the waiver covers; all when absent.
   *
   * @minItems 1
   */
  scope?: string[];
  approvedBy?: string;
}
