/**
 * The device registry: the source of truth for every device of every batch (brief, rules 1-2).
 * Pulumi state holds one summary per batch; every per-device fact lives here: the device's state
 * in the lifecycle below, its identity key, every certificate ever issued to it, and an
 * append-only audit log with one row per transition, hash-chained (chain.ts) so that a database
 * changed behind fleetguard's back is found by `verify`.
 *
 * Two backends implement this interface with one schema and one set of migrations: SQLite
 * (better-sqlite3 12, WAL, the default: a file next to the program) and PostgreSQL (`postgres://`).
 * Every write is a transaction; `apply` takes many transitions at once (one transaction per
 * wave of devices), checks each device's current state (compare-and-set), and either applies all
 * of them or none.
 */

/** The per-device state machine. */
export const DEVICE_STATES = [
  "pending", // declared in a batch, not yet seen by the station
  "attested", // identified; attestation verified against the chip or PUF key
  "issued", // a certificate was signed and recorded (not yet on the device)
  "installed", // the device accepted the chain
  "active", // confirmed: the device reports the installed chain, closed
  "quarantined", // refused: clone, unreadable PUF, failed attestation or CSR; never certified
  "revoked", // its certificates are revoked (batch deleted, compromise)
  "decommissioned", // zeroized on the device, or removed from the batch; terminal
] as const;
export type DeviceState = (typeof DEVICE_STATES)[number];

/** Legal transitions: from -> allowed next states. A transition to the same state is a no-op. */
export const TRANSITIONS: Readonly<Record<DeviceState, readonly DeviceState[]>> = {
  // pending -> issued and issued -> active: an enrollment's attest+issue and install+confirm, each
  // recorded as one step (apply requires the facts of both: key and certificate, the epoch)
  pending: ["attested", "issued", "quarantined", "decommissioned"],
  attested: ["pending", "issued", "quarantined", "decommissioned"],
  issued: ["installed", "active", "attested", "revoked", "quarantined", "decommissioned"],
  installed: ["active", "issued", "revoked", "quarantined", "decommissioned"],
  // active -> issued: a re-issue (profile or CA changed); the old certificate is superseded
  active: ["issued", "attested", "revoked", "quarantined", "decommissioned"],
  quarantined: ["pending", "decommissioned"],
  revoked: ["decommissioned", "pending"],
  decommissioned: [],
};

export type CertificateStatus = "live" | "revoked";

export interface CertificateRecord {
  /** serial number, lowercase hex without leading zero octets */
  serial: string;
  deviceId: string;
  batch: string;
  /** SHA-256 fingerprint (lowercase hex) of the issuing CA certificate */
  issuer: string;
  der: Buffer;
  notBefore: Date;
  notAfter: Date;
  issuedAt: Date;
  status: CertificateStatus;
  revokedAt?: Date;
  /** RFC 5280 reason name, as in core/x509/crl REVOCATION_REASONS */
  revocationReason?: string;
}

export interface DeviceRecord {
  deviceId: string;
  batch: string;
  state: DeviceState;
  /** why the device is quarantined / revoked / decommissioned */
  reason: string | null;
  /** SubjectPublicKeyInfo DER of the identity key (known once attested) */
  publicKey: Buffer | null;
  epoch: number | null;
  /** serial of the live certificate, if any */
  certSerial: string | null;
  updatedAt: Date;
}

export interface BatchRecord {
  name: string;
  model: string;
  source: "puf" | "injected";
  /** canonical JSON of the declaration the batch was last converged to (no secrets) */
  spec: string;
  createdAt: Date;
  updatedAt: Date;
  /** set when the batch was deleted (its devices revoked and decommissioned) */
  deletedAt: Date | null;
}

/** One device's change of state, with what it carries. Applied atomically with the others. */
export interface Transition {
  deviceId: string;
  batch: string;
  /** the state the caller believes the device is in; the write fails (CONFLICT) otherwise */
  from: DeviceState;
  to: DeviceState;
  reason?: string;
  publicKey?: Buffer;
  epoch?: number;
  /**
   * A newly issued certificate: inserted as live and made the device's current one (certSerial).
   * The previous certificate stays live until the device confirms the new one: a transition to
   * `active` revokes, with reason "superseded", every live certificate of the device other than
   * its current one, in the same transaction.
   */
  certificate?: Omit<CertificateRecord, "status" | "revokedAt" | "revocationReason">;
  /** revoke every live certificate of the device (reason as in RFC 5280, e.g. "cessationOfOperation") */
  revoke?: { at: Date; reason: string };
  /** free-form JSON-able detail for the audit row (never key material) */
  detail?: Record<string, unknown>;
}

export interface AuditRecord {
  seq: number;
  at: Date;
  batch: string;
  deviceId: string;
  from: DeviceState | null;
  to: DeviceState;
  reason: string | null;
  detail: Record<string, unknown> | null;
  /** the previous row's hash (chain.ts GENESIS for the first row) */
  prevHash: string | null;
  /** SHA-256 over the row's canonical encoding and prevHash (chain.ts) */
  hash: string | null;
}

/** The head of the audit log: its last row's seq and hash ({ 0, GENESIS } when empty). */
export interface AuditHead {
  seq: number;
  hash: string;
}

/**
 * A head recorded outside the registry (a batch's `auditHead` output in Pulumi state, `fleet registry
 * verify --anchor`): the row at `seq` must still hash to `hash`. With `tables`, also a verified
 * checkpoint: the digest of the devices, certificates and hub_registrations tables that a verify
 * of the same batch found equal to the log replayed up to `seq` (chain.ts tablesDigest). A later
 * verify whose log still ends at that row and whose tables still have that digest returns the
 * same report without replaying the log; anything else replays it in full.
 */
export interface Anchor extends AuditHead {
  /** 64 lowercase hex digits (chain.ts tablesDigest) */
  tables?: string;
}

export interface VerifyOptions {
  /** compare only the devices of this batch (by the tables or by the audit); the chain is always checked whole */
  batch?: string;
  /**
   * a head recorded earlier (Pulumi state): the row at anchor.seq must still have anchor.hash; with
   * anchor.tables, the checkpoint that lets the replay be skipped while nothing changed (Anchor)
   */
  anchor?: Anchor;
  /** work done and total (audit rows hashed plus audit rows replayed), after every page */
  onProgress?: (done: number, total: number) => void;
  /** findings kept in the report (default 10,000); `count` counts them all */
  maxFindings?: number;
  /**
   * run the verify on a worker thread of its own, so that this thread can do other work meanwhile
   * (a preview plans while its registry is verified). SQLite: the thread opens its own read-only
   * connection, the same snapshot read as without it. Other backends ignore it (PostgreSQL's verify
   * is already I/O on a connection of its own, overlapping whatever else awaits).
   */
  thread?: boolean;
}

/** One difference verify found. `message` is the same in words, for people. */
export type VerifyFinding =
  | {
      /** the first broken link of the chain: a row whose prev_hash or hash is not what it should be */
      kind: "chain";
      seq: number;
      field: "prev_hash" | "hash";
      stored: string | null;
      expected: string;
      message: string;
    }
  | {
      /** the row at the anchor's seq does not have the anchor's hash, or is gone */
      kind: "anchor";
      seq: number;
      field: "hash" | "seq";
      stored: string | null;
      anchor: string;
      message: string;
    }
  | {
      /** a device whose table row differs from what its audit rows derive (field "device": one side has none) */
      kind: "device";
      deviceId: string;
      field: string;
      table: string | null;
      audit: string | null;
      message: string;
    }
  | {
      /** a certificate whose table row differs from what the audit derives (field "certificate": one side has none) */
      kind: "certificate";
      deviceId: string;
      serial: string;
      field: string;
      table: string | null;
      audit: string | null;
      message: string;
    }
  | {
      /**
       * a hub registration whose table row differs from what the audit derives (field "registration":
       * one side has none; else status, remoteId, reason or batch)
       */
      kind: "hub";
      hub: string;
      deviceId: string;
      serial: string;
      field: string;
      table: string | null;
      audit: string | null;
      message: string;
    };

export interface VerifyReport {
  /** no finding at all */
  ok: boolean;
  /** every finding, including those beyond maxFindings */
  count: number;
  findings: VerifyFinding[];
  /** more findings than maxFindings were found */
  truncated: boolean;
  /** the head of the log as verified (anchor it to detect a later rewrite) */
  head: AuditHead;
  /** audit rows hashed */
  rows: number;
  /** devices compared */
  devices: number;
  batch?: string;
  /**
   * when ok: the digest of the tables as verified at `head` (chain.ts tablesDigest), to record with
   * the head as the next anchor's `tables` (formatAnchor)
   */
  checkpoint?: string;
  /** "replayed": every device re-derived from the log; "checkpoint": log and tables unchanged since anchor.tables */
  mode: "replayed" | "checkpoint";
}

export type StateCounts = Record<DeviceState, number>;

export interface DeviceQuery {
  states?: readonly DeviceState[];
  /** keyset pagination: device IDs strictly greater than this */
  after?: string;
  limit?: number;
}

/**
 * A certificate's registration at one hub (HubRegistration, core/hubs). Keyed by (hub, serial): a
 * device may have two certificates registered at once while it rotates. `registering` and
 * `disabling` are intents written BEFORE the hub is called, so a run killed mid-call is retried
 * idempotently by the next one; `failed` is a refusal by the hub (reason says why).
 */
export const HUB_STATUSES = ["registering", "active", "disabling", "disabled", "failed", "removed"] as const;
export type HubStatus = (typeof HUB_STATUSES)[number];

/** Legal hub transitions: from (null: no record yet) -> allowed next statuses. Same status: a no-op that may carry remoteId/reason. */
export const HUB_TRANSITIONS: Readonly<Record<HubStatus | "none", readonly HubStatus[]>> = {
  none: ["registering", "active", "failed"],
  registering: ["active", "failed", "disabling", "disabled", "removed"],
  // failed: refresh found it deactivated or deleted at the hub behind fleetguard's back (the next run registers it again)
  active: ["disabling", "disabled", "removed", "failed"],
  disabling: ["disabled", "removed", "failed"],
  // registering again: a certificate that is live again for a device in good standing (never a revoked one)
  disabled: ["registering", "removed", "disabling"],
  failed: ["registering", "active", "disabling", "disabled", "removed"],
  // a record of a hub registration that was destroyed; registering again starts over
  removed: ["registering", "active"],
};

export interface HubRegistrationRecord {
  /** the hub registration's name (one HubRegistration resource per hub and batch shares it) */
  hub: string;
  deviceId: string;
  batch: string;
  /** the certificate registered (serial, lowercase hex, as in certificates) */
  serial: string;
  /** the hub's id of it: AWS certificate id, Azure registration id, local: certificate SHA-256 */
  remoteId: string | null;
  status: HubStatus;
  /** why it failed or was disabled */
  reason: string | null;
  /** last sync: when the record last changed */
  updatedAt: Date;
}

/** One change of a hub registration, applied atomically with the others (compare-and-set on `from`). */
export interface HubChange {
  hub: string;
  deviceId: string;
  batch: string;
  serial: string;
  /** the status the caller believes the record has (null: no record); CONFLICT otherwise */
  from: HubStatus | null;
  to: HubStatus;
  remoteId?: string;
  reason?: string;
  /** free-form JSON-able detail for the audit row (never key material or credentials) */
  detail?: Record<string, unknown>;
}

export type HubCounts = Record<HubStatus, number>;

export interface HubQuery {
  batch?: string;
  deviceId?: string;
  statuses?: readonly HubStatus[];
  /** keyset pagination in (device_id, serial) order: rows strictly after this pair */
  after?: { deviceId: string; serial: string };
  limit?: number;
}

export interface Registry {
  /** "sqlite" or "postgres" */
  readonly kind: string;
  /** where it is, without credentials (for logs) */
  readonly location: string;
  /** schema version after migrations */
  schemaVersion(): Promise<number>;

  putBatch(b: Omit<BatchRecord, "createdAt" | "updatedAt" | "deletedAt">, at?: Date): Promise<void>;
  getBatch(name: string): Promise<BatchRecord | undefined>;
  listBatches(): Promise<BatchRecord[]>;
  markBatchDeleted(name: string, at?: Date): Promise<void>;

  /**
   * Declare devices in a batch as pending; devices already known are left as they are.
   * A device that belongs to another (live) batch is refused with CONFLICT naming it.
   * Returns how many were added. One transaction per call.
   */
  addDevices(batch: string, deviceIds: readonly string[], at?: Date): Promise<number>;
  getDevice(deviceId: string): Promise<DeviceRecord | undefined>;
  /** devices of a batch in device ID order */
  listDevices(batch: string, q?: DeviceQuery): Promise<DeviceRecord[]>;
  counts(batch: string): Promise<StateCounts>;

  /** Apply transitions in one transaction: all or none. Illegal or stale ones throw (CONFLICT / INVALID_INPUT). */
  apply(transitions: readonly Transition[], at?: Date): Promise<void>;

  certificates(q: {
    batch?: string;
    deviceId?: string;
    issuer?: string;
    status?: readonly CertificateStatus[];
    after?: string;
    limit?: number;
  }): Promise<CertificateRecord[]>;
  /** revoked certificates of an issuer, for its CRL (serial, time, reason) */
  revokedBy(issuer: string): Promise<Array<{ serial: string; revokedAt: Date; reason: string | null }>>;

  /**
   * Apply hub registration changes in ONE transaction, all or none (like `apply`): each is a
   * compare-and-set on the record's status (HUB_TRANSITIONS; CONFLICT naming hub, device, serial,
   * the status found and the one expected; NOT_FOUND for an unknown device or certificate; the
   * device must be in `batch` and `serial` one of its certificates). Every change appends one
   * hash-chained audit row for the device: from_state = to_state = the device's current state,
   * reason = change.reason, detail = { ...change.detail, hub: { name, serial, from, to, remoteId } }
   * (the reserved key `hub`), so `verify` re-derives every hub record from the log.
   */
  applyHub(changes: readonly HubChange[], at?: Date): Promise<void>;
  /** hub records in (device_id, serial) order */
  hubRegistrations(hub: string, q?: HubQuery): Promise<HubRegistrationRecord[]>;
  /** every status, zeros included; of one batch when given */
  hubCounts(hub: string, batch?: string): Promise<HubCounts>;
  /** names of every hub that has records (sorted) */
  hubs(): Promise<string[]>;

  audit(q: { batch?: string; deviceId?: string; afterSeq?: number; limit?: number }): Promise<AuditRecord[]>;

  /** The head of the whole audit log (the value to anchor in Pulumi state). */
  auditHead(): Promise<AuditHead>;
  /**
   * Check the registry against its own audit log, in one snapshot: re-hash the chain (the first
   * broken link), check the anchor, and re-derive every device's state, key and certificates, and
   * every hub registration, from the audit rows alone, comparing them with the devices,
   * certificates and hub_registrations tables. Reads in pages: memory stays bounded whatever the
   * registry's size.
   */
  verify(opts?: VerifyOptions): Promise<VerifyReport>;

  close(): Promise<void>;
}
