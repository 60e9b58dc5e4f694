/**
 * The contract between the hub synchronisation (core/hubs/sync.ts, one lifecycle step: keep a
 * hub's registrations in step with the registry) and the hubs themselves. A driver speaks to one
 * hub: the embedded local MQTT hub (local.ts: files in the hub's state folder), AWS IoT Core
 * (aws.ts: @aws-sdk/client-iot) or Azure IoT Hub through DPS (azure-dps.ts: the DPS service REST
 * API). Drivers are plain TypeScript (no @pulumi import), created inside the provider process.
 *
 * Every call is idempotent against the hub: a certificate already registered is reported as
 * registered (with its remote id), one already disabled as disabled, so a run killed between the
 * hub's answer and the registry's record converges on the next one without duplicates. A driver
 * enforces what the real service enforces even where an emulator does not (AWS: a REVOKED
 * certificate is never made ACTIVE again; a CA is registered before its certificates).
 */

/** A CA the hub must trust (an issuing CA of the batch, with the chain up to its root). */
export interface TrustedCa {
  /** CA name in the CaHierarchy */
  name: string;
  /**
   * The CA's generation (CaHierarchy `generation`; absent: 1). During a rollover ensureTrust gets
   * two CAs with one name and subject, the successor (higher generation) and its predecessor; both
   * must be trusted (AWS: two CA certificates with one subject; DPS: the group's primary slot holds
   * the successor, the secondary the predecessor; local: both in the bundle). Once no live
   * certificate depends on the predecessor, ensureTrust gets the successor alone and the hub stops
   * trusting the predecessor.
   */
  generation?: number;
  /** SHA-256 fingerprint of the DER, lowercase hex */
  fingerprint: string;
  certificatePem: string;
  /** the CA's chain up to and including the root, PEM, leaf (this CA) first */
  chainPem: string;
  /** current CRLs of every CA of the chain (PEM), this CA's first */
  crlPems: string[];
}

/** One certificate to register: a device's live, current certificate. */
export interface DeviceCert {
  deviceId: string;
  batch: string;
  serial: string;
  der: Buffer;
  /** SHA-256 of the DER, lowercase hex */
  sha256: string;
  /** the issuing CA's fingerprint */
  issuer: string;
}

/** A registration the hub holds, as the registry recorded it (for disable, remove, read). */
export interface RemoteRef {
  deviceId: string;
  serial: string;
  remoteId: string | null;
  /** the certificate (sync gives it on disable: a hub that never saw it can still be told to refuse it) */
  der?: Buffer;
  /** revoked for cause (compromise, decommission), not only superseded: AWS marks it REVOKED, not INACTIVE */
  revoked?: boolean;
}

export type Outcome =
  | { serial: string; ok: true; remoteId: string }
  /** `retryable`: throttled, unreachable, credentials: the next run tries again; else the hub refused it */
  | { serial: string; ok: false; reason: string; retryable: boolean };

export interface HubTrustSummary {
  /** what devices connect to (host:port, an AWS data endpoint, a DPS global endpoint + id scope) */
  endpoint: string;
  /** the CA ids (AWS certificate ids, DPS certificate names) or fingerprints trusted at the hub */
  caIds: string[];
}

/** What the hub holds of one registration, for drift (refresh). */
export interface RemoteStatus {
  serial: string;
  remoteId: string;
  /** active: may connect; inactive: disabled at the hub; missing: the hub does not know it */
  status: "active" | "inactive" | "revoked" | "missing";
}

export interface HubDriver {
  readonly kind: "local" | "aws" | "azure";
  /** for messages and plans: "local hub 'demo'", "AWS IoT 'prod'" */
  readonly label: string;
  /**
   * per-device: one call (or a few) per certificate; ca: the hub registers devices itself on first
   * connect (AWS JITP, DPS enrollment group), so sync records no per-device call
   */
  readonly mode: "per-device" | "ca";
  /** calls per second the driver holds itself to (plans estimate time from it); Infinity when local */
  readonly ratePerSecond: number;
  /** make the hub trust exactly these CAs (and their CRLs); idempotent */
  ensureTrust(cas: readonly TrustedCa[]): Promise<HubTrustSummary>;
  /** register certificates (and their things/enrollments); one outcome per certificate, in any order */
  register(certs: readonly DeviceCert[], onProgress?: (done: number) => void): Promise<Outcome[]>;
  /** stop certificates from connecting (AWS INACTIVE + detach, Azure enrollment disabled, local: refused + session closed) */
  disable(refs: readonly RemoteRef[], onProgress?: (done: number) => void): Promise<Outcome[]>;
  /** delete what the registration created at the hub (destroy) */
  remove(refs: readonly RemoteRef[], onProgress?: (done: number) => void): Promise<Outcome[]>;
  /** what the hub holds of these (drift); drivers may read in bulk */
  read(refs: readonly RemoteRef[]): Promise<RemoteStatus[]>;
  /** registrations at the hub under this registration's CAs that `known` does not hold (drift) */
  unknown?(known: ReadonlySet<string>): Promise<string[]>;
  /** write what was buffered (local: the registration file), after register/disable calls */
  flush?(): Promise<void>;
  close(): Promise<void>;
}
