/**
 * The SQLite registry backend (better-sqlite3 12), the default: one file next to the program.
 * Semantics as in index.ts. The file is opened in WAL mode (readers never block the writer) with
 * `synchronous=FULL` by default: the WAL is fsynced at every commit, so once `apply` returns, an
 * issued certificate is recorded even if the machine loses power before it is installed on the
 * device (NORMAL would only lose the last commits on power loss, never corrupt, and is offered as
 * an option; with one commit per wave of thousands of transitions the fsync is a small share of
 * the cost, see docs/benchmarks.md). Every write is one `BEGIN IMMEDIATE` transaction, so two
 * processes serialize on the write lock (`busy_timeout` waits for it) instead of failing on a lock
 * upgrade. Statements are prepared once and reused. The audit rows of a call are chained onto
 * the head inside that write transaction; `verify` reads on a connection of its own (a WAL
 * snapshot), so it neither blocks writers nor sees half of a write.
 */
import * as path from "node:path";
import Database from "better-sqlite3";
import { createPrivateFile } from "../durable";
import { FleetError, invalid } from "../errors";
import {
  AUDIT_DOMAIN,
  baselineRow,
  type ChainRow,
  type ChainText,
  canonicalJson,
  chain,
  chainValues,
  checkVerifyOptions,
  declareRow,
  GENESIS,
  hubRow,
  type NewRow,
  rowHash,
  runVerify,
  sha256Hex,
  type TableCert,
  type TableDevice,
  type TableHub,
  transitionRow,
  type VerifySource,
} from "./chain";
import {
  checkBatchInput,
  checkDate,
  checkHubQuery,
  checkLimit,
  checkName,
  checkStates,
  crossBatchError,
  detailJson,
  duplicateSerialError,
  emptyCounts,
  emptyHubCounts,
  hubTargetError,
  isHubStatus,
  isState,
  nextHub,
  staleError,
  uniqueIds,
  unknownBatchError,
  validateHubChanges,
  validateTransitions,
} from "./common";
import { LATEST_VERSION, MIGRATIONS, MIGRATIONS_TABLE, SQLITE_AUDIT_NO_UPDATE } from "./schema";
import type {
  AuditHead,
  AuditRecord,
  BatchRecord,
  CertificateRecord,
  CertificateStatus,
  DeviceQuery,
  DeviceRecord,
  DeviceState,
  HubChange,
  HubCounts,
  HubQuery,
  HubRegistrationRecord,
  HubStatus,
  Registry,
  StateCounts,
  Transition,
  VerifyOptions,
  VerifyReport,
} from "./types";
import { verifyOnThread } from "./verify-thread";

export interface SqliteOptions {
  /** FULL (default): every commit is durable. NORMAL: faster; a power loss may drop the last commits. */
  synchronous?: "FULL" | "NORMAL";
  /** how long to wait for another process's write lock (default 10 s) */
  busyTimeoutMs?: number;
  /** page cache per connection in MiB (default 64) */
  cacheMiB?: number;
}

type Row = Record<string, unknown>;

const date = (v: unknown): Date => new Date(v as number);
const optDate = (v: unknown): Date | undefined => (v === null || v === undefined ? undefined : date(v));

function toBatch(r: Row): BatchRecord {
  return {
    name: r.name as string,
    model: r.model as string,
    source: r.source as BatchRecord["source"],
    spec: r.spec as string,
    createdAt: date(r.created_at),
    updatedAt: date(r.updated_at),
    deletedAt: r.deleted_at === null ? null : date(r.deleted_at),
  };
}

function toDevice(r: Row): DeviceRecord {
  return {
    deviceId: r.device_id as string,
    batch: r.batch as string,
    state: r.state as DeviceState,
    reason: (r.reason as string | null) ?? null,
    publicKey: (r.public_key as Buffer | null) ?? null,
    epoch: (r.epoch as number | null) ?? null,
    certSerial: (r.cert_serial as string | null) ?? null,
    updatedAt: date(r.updated_at),
  };
}

const CERT_RECORD_COLUMNS =
  "serial, device_id, batch, issuer, der, not_before, not_after, issued_at, status, revoked_at, revocation_reason";

/** A certificate record from a raw row (CERT_RECORD_COLUMNS order). */
function arrayCert(a: unknown[]): CertificateRecord {
  const c: CertificateRecord = {
    serial: a[0] as string,
    deviceId: a[1] as string,
    batch: a[2] as string,
    issuer: a[3] as string,
    der: a[4] as Buffer,
    notBefore: date(a[5]),
    notAfter: date(a[6]),
    issuedAt: date(a[7]),
    status: a[8] as CertificateStatus,
  };
  const revokedAt = optDate(a[9]);
  if (revokedAt) c.revokedAt = revokedAt;
  if (a[10] !== null && a[10] !== undefined) c.revocationReason = a[10] as string;
  return c;
}

function toAudit(r: Row): AuditRecord {
  return {
    seq: r.seq as number,
    at: date(r.at),
    batch: r.batch as string,
    deviceId: r.device_id as string,
    from: (r.from_state as DeviceState | null) ?? null,
    to: r.to_state as DeviceState,
    reason: (r.reason as string | null) ?? null,
    detail: r.detail === null ? null : (JSON.parse(r.detail as string) as Record<string, unknown>),
    prevHash: (r.prev_hash as string | null) ?? null,
    hash: (r.hash as string | null) ?? null,
  };
}

/** Detail text as hashed: canonical JSON (text that is not JSON is hashed as it is, and so differs). */
function hashedDetail(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  try {
    return canonicalJson(JSON.parse(v as string));
  } catch {
    return String(v);
  }
}

const AUDIT_COLUMNS = `seq, at, batch, device_id, from_state, to_state, reason, detail, public_key_sha256, epoch,
  cert_serial, cert_sha256, cert_issuer, revoke_reason, revoke_at, baseline, prev_hash, hash`;
/** the columns a row's hash covers, in chainValues order */
const CHAINED_COLUMNS = AUDIT_COLUMNS.replace(/, hash$/, "");

/** An audit row as read back, as the chain hashes it (exported for the tests that play the attacker). */
export function toChainRow(r: Row): ChainRow {
  return {
    seq: r.seq as number,
    at: r.at as number,
    batch: r.batch as string,
    deviceId: r.device_id as string,
    from: (r.from_state as string | null) ?? null,
    to: r.to_state as string,
    reason: (r.reason as string | null) ?? null,
    detail: hashedDetail(r.detail),
    publicKeySha256: (r.public_key_sha256 as string | null) ?? null,
    epoch: (r.epoch as number | null) ?? null,
    certSerial: (r.cert_serial as string | null) ?? null,
    certSha256: (r.cert_sha256 as string | null) ?? null,
    certIssuer: (r.cert_issuer as string | null) ?? null,
    revokeReason: (r.revoke_reason as string | null) ?? null,
    revokeAt: (r.revoke_at as number | null) ?? null,
    baseline: (r.baseline as string | null) ?? null,
    prevHash: (r.prev_hash as string | null) ?? null,
    hash: (r.hash as string | null) ?? null,
  };
}

/** The same from a raw row (an array in AUDIT_COLUMNS order): the verifier reads ~1M of them. */
function arrayChainRow(a: unknown[]): ChainRow {
  return {
    seq: a[0] as number,
    at: a[1] as number,
    batch: a[2] as string,
    deviceId: a[3] as string,
    from: a[4] as string | null,
    to: a[5] as string,
    reason: a[6] as string | null,
    detail: hashedDetail(a[7]),
    publicKeySha256: a[8] as string | null,
    epoch: a[9] as number | null,
    certSerial: a[10] as string | null,
    certSha256: a[11] as string | null,
    certIssuer: a[12] as string | null,
    revokeReason: a[13] as string | null,
    revokeAt: a[14] as number | null,
    baseline: a[15] as string | null,
    prevHash: a[16] as string | null,
    hash: a[17] as string | null,
  };
}

/**
 * What the replay needs, in AUDIT_COLUMNS positions (the hashes left out: pass 1 has them; detail
 * only where it may be a hub row's, the others' is pass 1's too).
 */
const REPLAY_COLUMNS = `seq, at, batch, device_id, from_state, to_state, reason,
  CASE WHEN from_state = to_state AND instr(detail, '"hub"') > 0 THEN detail END, public_key_sha256, epoch,
  cert_serial, cert_sha256, cert_issuer, revoke_reason, revoke_at, baseline, NULL, NULL`;

function toTableDevice(r: Row): TableDevice {
  return {
    deviceId: r.device_id as string,
    batch: r.batch as string,
    state: r.state as string,
    reason: (r.reason as string | null) ?? null,
    publicKeySha256: r.public_key ? sha256Hex(r.public_key as Buffer) : null,
    epoch: (r.epoch as number | null) ?? null,
    certSerial: (r.cert_serial as string | null) ?? null,
  };
}

/** toTableDevice of a raw row (DEVICE_COLUMNS order): the verifier reads every device */
function arrayTableDevice(a: unknown[]): TableDevice {
  return {
    deviceId: a[0] as string,
    batch: a[1] as string,
    state: a[2] as string,
    reason: a[3] as string | null,
    publicKeySha256: a[4] ? sha256Hex(a[4] as Buffer) : null,
    epoch: a[5] as number | null,
    certSerial: a[6] as string | null,
  };
}

/** toTableCert of a raw row (CERT_COLUMNS order) */
function arrayTableCert(a: unknown[]): TableCert {
  return {
    serial: a[0] as string,
    deviceId: a[1] as string,
    batch: a[2] as string,
    issuer: a[3] as string,
    sha256: sha256Hex(a[4] as Buffer),
    status: a[5] as string,
    revokedAt: a[6] as number | null,
    reason: a[7] as string | null,
  };
}

function toTableCert(r: Row): TableCert {
  return {
    serial: r.serial as string,
    deviceId: r.device_id as string,
    batch: r.batch as string,
    issuer: r.issuer as string,
    sha256: sha256Hex(r.der as Buffer),
    status: r.status as string,
    revokedAt: (r.revoked_at as number | null) ?? null,
    reason: (r.revocation_reason as string | null) ?? null,
  };
}

function toTableHub(r: Row): TableHub {
  return {
    hub: r.hub as string,
    deviceId: r.device_id as string,
    batch: r.batch as string,
    serial: r.serial as string,
    remoteId: (r.remote_id as string | null) ?? null,
    status: r.status as string,
    reason: (r.reason as string | null) ?? null,
  };
}

function toHub(r: Row): HubRegistrationRecord {
  return {
    hub: r.hub as string,
    deviceId: r.device_id as string,
    batch: r.batch as string,
    serial: r.serial as string,
    remoteId: (r.remote_id as string | null) ?? null,
    status: r.status as HubStatus,
    reason: (r.reason as string | null) ?? null,
    updatedAt: date(r.updated_at),
  };
}

const DEVICE_COLUMNS = "device_id, batch, state, reason, public_key, epoch, cert_serial";
const HUB_COLUMNS = "hub, device_id, batch, serial, remote_id, status, reason";
const CERT_COLUMNS = "serial, device_id, batch, issuer, der, status, revoked_at, revocation_reason";

/**
 * The verifier's reads, on a connection of their own inside one read transaction (WAL: a
 * snapshot that writers do not disturb). Range queries come in two forms (bounded, open) so that
 * each is an index range scan.
 */
function sqliteSource(db: Database.Database): VerifySource {
  const p = (sql: string) => db.prepare(sql);
  const range = (table: string, cols: string, order: string) => ({
    bounded: p(`SELECT ${cols} FROM ${table} WHERE device_id > ? AND device_id <= ? ORDER BY ${order}`),
    open: p(`SELECT ${cols} FROM ${table} WHERE device_id > ? ORDER BY ${order}`),
  });
  const rows = <T = Row>(
    q: { bounded: Database.Statement; open: Database.Statement },
    after: string,
    upTo: string | null,
  ) => (upTo === null ? q.open.all(after) : q.bounded.all(after, upTo)) as T[];
  const dev = range("devices", DEVICE_COLUMNS, "device_id");
  const aud = range("audit", REPLAY_COLUMNS, "device_id, seq");
  aud.bounded.raw(true);
  aud.open.raw(true);
  const crt = range("certificates", CERT_COLUMNS, "device_id, serial");
  for (const q of [dev, crt]) {
    q.bounded.raw(true);
    q.open.raw(true);
  }
  const hub = range("hub_registrations", HUB_COLUMNS, "device_id, hub, serial");
  const ends = {
    hub_registrations: p(
      "SELECT device_id FROM hub_registrations WHERE device_id > ? ORDER BY device_id LIMIT 1 OFFSET ?",
    ),
    devices: p("SELECT device_id FROM devices WHERE device_id > ? ORDER BY device_id LIMIT 1 OFFSET ?"),
    audit: p("SELECT device_id FROM audit WHERE device_id > ? ORDER BY device_id LIMIT 1 OFFSET ?"),
    certificates: p(
      "SELECT device_id FROM certificates WHERE device_id > ? ORDER BY device_id LIMIT 1 OFFSET ?",
    ),
  };
  const page = p(`SELECT ${AUDIT_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?`).raw(true);
  // SQLite's json_array renders integers, strings and null as JSON.stringify does (runVerify checks)
  const texts = p(
    `SELECT seq, prev_hash, hash, json_array('${AUDIT_DOMAIN}', ${CHAINED_COLUMNS}) FROM audit WHERE seq > ? ORDER BY seq LIMIT ?`,
  ).raw(true);
  const count = p("SELECT COUNT(*) AS n FROM audit");
  return {
    countAudit: async () => (count.get() as { n: number }).n,
    chainPage: async (afterSeq, limit) => (page.all(afterSeq, limit) as unknown[][]).map(arrayChainRow),
    chainText: async (afterSeq, limit) => texts.all(afterSeq, limit) as ChainText[],
    rangeEnd: async (table, after, offset) =>
      (ends[table].get(after, offset - 1) as { device_id: string } | undefined)?.device_id ?? null,
    devices: async (after, upTo) => rows<unknown[]>(dev, after, upTo).map(arrayTableDevice),
    audit: async (after, upTo) => rows<unknown[]>(aud, after, upTo).map(arrayChainRow),
    certificates: async (after, upTo) => rows<unknown[]>(crt, after, upTo).map(arrayTableCert),
    hubs: async (after, upTo) => rows(hub, after, upTo).map(toTableHub),
  };
}

/**
 * A verify of the SQLite file at `location` on a connection of its own: its read transaction is a
 * snapshot, and the registry's writes go on. Also the body of the verify thread (verify-thread.ts),
 * which opens the file itself: a better-sqlite3 connection cannot cross threads.
 */
export async function verifySnapshot(location: string, o: VerifyOptions): Promise<VerifyReport> {
  const db = new Database(location, { readonly: true, fileMustExist: true });
  try {
    db.pragma("cache_size = -65536");
    db.exec("BEGIN");
    const report = await runVerify(sqliteSource(db), o);
    db.exec("COMMIT");
    return report;
  } finally {
    db.close();
  }
}

/** Positional, in AUDIT_COLUMNS order (named binding of 18 values costs more than the insert). */
function auditArgs(r: ChainRow): unknown[] {
  const v = chainValues(r);
  v.push(r.hash);
  return v;
}

function isConstraint(err: unknown, code: string): boolean {
  return err instanceof Error && (err as { code?: string }).code === code;
}

export class SqliteRegistry implements Registry {
  readonly kind = "sqlite";
  readonly location: string;
  private readonly db: Database.Database;
  private closed = false;
  private readonly cache = new Map<string, Database.Statement>();
  private readonly st: ReturnType<SqliteRegistry["prepareAll"]>;
  private readonly applyTx: (ts: readonly Transition[], at: number) => void;
  private readonly addTx: (batch: string, ids: string[], at: number) => number;
  private readonly hubTx: (cs: readonly HubChange[], at: number) => void;

  constructor(file: string, opts: SqliteOptions = {}) {
    this.location = path.resolve(file);
    createPrivateFile(this.location); // 0600 in a 0700 folder; SQLite gives -wal and -shm its mode
    const busy = opts.busyTimeoutMs ?? 10_000;
    const cacheMiB = opts.cacheMiB ?? 64;
    if (!Number.isInteger(busy) || busy < 0) throw invalid("busyTimeoutMs", busy, "an integer >= 0");
    if (!Number.isInteger(cacheMiB) || cacheMiB < 1 || cacheMiB > 4096)
      throw invalid("cacheMiB", cacheMiB, "an integer in 1..4096");
    try {
      this.db = new Database(this.location, { timeout: busy });
    } catch (err) {
      throw new FleetError(
        "UNAVAILABLE",
        `registry: got ${this.location} that cannot be opened (${(err as Error).message}), want a writable SQLite file`,
        "registry",
      );
    }
    try {
      this.db.pragma(`busy_timeout = ${busy}`);
      this.db.pragma("journal_mode = WAL");
      this.db.pragma(`synchronous = ${opts.synchronous === "NORMAL" ? "NORMAL" : "FULL"}`);
      this.db.pragma("foreign_keys = ON");
      // 64 MiB of page cache (default 2 MiB): the indexes of a 100k-device batch stay in memory
      this.db.pragma(`cache_size = -${cacheMiB * 1024}`);
      this.migrate();
    } catch (err) {
      this.db.close();
      if (err instanceof FleetError) throw err;
      throw new FleetError(
        "UNAVAILABLE",
        `registry: got ${this.location} that is not a usable SQLite registry (${(err as Error).message}), want a registry file`,
        "registry",
      );
    }
    this.st = this.prepareAll();
    this.applyTx = this.db.transaction((ts: readonly Transition[], at: number) =>
      this.applyAll(ts, at),
    ).immediate;
    this.addTx = this.db.transaction((batch: string, ids: string[], at: number) =>
      this.addAll(batch, ids, at),
    ).immediate;
    this.hubTx = this.db.transaction((cs: readonly HubChange[], at: number) =>
      this.applyHubAll(cs, at),
    ).immediate;
  }

  private migrate(): void {
    const run = this.db.transaction(() => {
      this.db.exec(MIGRATIONS_TABLE.sqlite);
      const cur = (
        this.db.prepare("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").get() as { v: number }
      ).v;
      if (cur > LATEST_VERSION)
        throw new FleetError(
          "UNAVAILABLE",
          `registry schema version: got ${cur}, want at most ${LATEST_VERSION} (the registry was written by a newer fleetguard)`,
          "registry",
        );
      const record = this.db.prepare(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
      );
      for (const m of MIGRATIONS) {
        if (m.version <= cur) continue;
        this.db.exec(m.sqlite);
        if (m.step === "audit-chain") this.chainExisting(Date.now());
        record.run(m.version, m.name, Date.now());
      }
    });
    run.immediate();
  }

  /**
   * Migration 2: hash the rows already there, in seq order, then append a baseline row per
   * device (what the tables hold now), so that verify can re-derive every device from the log.
   */
  private chainExisting(at: number): void {
    const db = this.db;
    db.exec("DROP TRIGGER audit_no_update");
    const read = db.prepare(`SELECT ${AUDIT_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT 10000`);
    const write = db.prepare("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?");
    let head = { seq: 0, hash: GENESIS };
    for (;;) {
      const page = (read.all(head.seq) as Row[]).map(toChainRow);
      for (const r of page) {
        const hash = rowHash({ ...r, prevHash: head.hash });
        write.run(head.hash, hash, r.seq);
        head = { seq: r.seq, hash };
      }
      if (page.length < 10000) break;
    }
    db.exec(SQLITE_AUDIT_NO_UPDATE);
    const devs = db.prepare(
      `SELECT ${DEVICE_COLUMNS} FROM devices WHERE device_id > ? ORDER BY device_id LIMIT 5000`,
    );
    const certs = db.prepare(
      `SELECT ${CERT_COLUMNS} FROM certificates WHERE device_id > ? AND device_id <= ? ORDER BY device_id, serial`,
    );
    const insert = this.insertAuditStmt();
    for (let after = ""; ; ) {
      const ds = (devs.all(after) as Row[]).map(toTableDevice);
      if (ds.length === 0) break;
      const last = ds[ds.length - 1]!.deviceId;
      const byDevice = new Map<string, TableCert[]>();
      for (const c of (certs.all(after, last) as Row[]).map(toTableCert)) {
        const l = byDevice.get(c.deviceId) ?? [];
        l.push(c);
        byDevice.set(c.deviceId, l);
      }
      const rows = chain(
        head,
        ds.map((d) => baselineRow(at, d, byDevice.get(d.deviceId) ?? [])),
      );
      for (const r of rows) insert.run(...auditArgs(r));
      head = { seq: rows[rows.length - 1]!.seq, hash: rows[rows.length - 1]!.hash! };
      after = last;
    }
  }

  private insertAuditStmt(): Database.Statement {
    return this.db.prepare(
      `INSERT INTO audit (${AUDIT_COLUMNS}) VALUES (${Array.from({ length: 18 }, () => "?").join(", ")})`,
    );
  }

  /** Chain rows onto the head and insert them (inside the caller's write transaction). */
  private append(rows: readonly NewRow[]): void {
    if (rows.length === 0) return;
    const head = (this.st.head.get() as AuditHead | undefined) ?? { seq: 0, hash: GENESIS };
    for (const r of chain(head, rows)) this.st.insertAudit.run(...auditArgs(r));
  }

  private prepareAll() {
    const p = (sql: string) => this.db.prepare(sql);
    return {
      getBatch: p("SELECT * FROM batches WHERE name = ?"),
      putBatch: p(`INSERT INTO batches (name, model, source, spec, created_at, updated_at, deleted_at)
        VALUES (?, ?, ?, ?, ?, ?, NULL)
        ON CONFLICT (name) DO UPDATE SET model = excluded.model, source = excluded.source,
          spec = excluded.spec, updated_at = excluded.updated_at, deleted_at = NULL`),
      deleteBatch: p(
        "UPDATE batches SET deleted_at = COALESCE(deleted_at, ?), updated_at = ? WHERE name = ?",
      ),
      owner: p(`SELECT d.batch, d.state, b.deleted_at FROM devices d JOIN batches b ON b.name = d.batch
        WHERE d.device_id = ?`),
      insertDevice: p(
        `INSERT INTO devices (device_id, batch, state, updated_at) VALUES (?, ?, 'pending', ?)`,
      ),
      moveDevice: p(`UPDATE devices SET batch = ?, state = 'pending', reason = NULL, public_key = NULL,
        epoch = NULL, cert_serial = NULL, updated_at = ? WHERE device_id = ?`),
      getDevice: p("SELECT * FROM devices WHERE device_id = ?"),
      deviceState: p("SELECT state, batch FROM devices WHERE device_id = ?"),
      // compare-and-set: the row changes only if the device is in `from`; RETURNING gives its
      // current certificate (after this update) for the superseding step
      cas: p(`UPDATE devices SET
          state = @to,
          reason = CASE WHEN state <> @to THEN @reason ELSE COALESCE(@reason, reason) END,
          public_key = COALESCE(@pk, public_key),
          epoch = COALESCE(@epoch, epoch),
          cert_serial = CASE WHEN @serial IS NOT NULL THEN @serial WHEN @revoke THEN NULL ELSE cert_serial END,
          updated_at = @at
        WHERE device_id = @id AND batch = @batch AND state = @from
        RETURNING cert_serial`),
      revokeAll: p(`UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?
        WHERE device_id = ? AND status = 'live'`),
      supersede:
        p(`UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = 'superseded'
        WHERE device_id = ? AND status = 'live' AND serial IS NOT ?`),
      insertCert: p(`INSERT INTO certificates (serial, device_id, batch, issuer, der, not_before, not_after,
        issued_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'live')`),
      insertAudit: this.insertAuditStmt(),
      // a hub change's target: the device, the certificate's owner and the current record, at once
      hubTarget: p(`SELECT d.state, d.batch,
          (SELECT c.device_id FROM certificates c WHERE c.serial = @serial) AS cert_device,
          h.status, h.remote_id, h.reason
        FROM (SELECT 1) LEFT JOIN devices d ON d.device_id = @id
          LEFT JOIN hub_registrations h ON h.hub = @hub AND h.serial = @serial`),
      hubUpsert:
        p(`INSERT INTO hub_registrations (hub, device_id, batch, serial, remote_id, status, reason, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (hub, serial) DO UPDATE SET device_id = excluded.device_id, batch = excluded.batch,
          remote_id = excluded.remote_id, status = excluded.status, reason = excluded.reason,
          updated_at = excluded.updated_at`),
      hubCounts: p("SELECT status, COUNT(*) AS n FROM hub_registrations WHERE hub = ? GROUP BY status"),
      hubCountsBatch: p(
        "SELECT status, COUNT(*) AS n FROM hub_registrations WHERE hub = ? AND batch = ? GROUP BY status",
      ),
      hubs: p("SELECT DISTINCT hub FROM hub_registrations ORDER BY hub"),
      head: p("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"),
      counts: p("SELECT state, COUNT(*) AS n FROM devices WHERE batch = ? GROUP BY state"),
      revokedBy: p(`SELECT serial, revoked_at, revocation_reason FROM certificates
        WHERE issuer = ? AND status = 'revoked' ORDER BY serial`),
    };
  }

  private open(): void {
    if (this.closed)
      throw new FleetError(
        "UNAVAILABLE",
        `registry: got a closed registry (${this.location}), want an open one`,
      );
  }

  /** stmt, returning rows as arrays in the order of the columns selected */
  private rawStmt(sql: string): Database.Statement {
    const key = `raw:${sql}`;
    let s = this.cache.get(key);
    if (!s) {
      s = this.db.prepare(sql).raw(true);
      this.cache.set(key, s);
    }
    return s;
  }

  private stmt(sql: string): Database.Statement {
    let s = this.cache.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.cache.set(sql, s);
    }
    return s;
  }

  async schemaVersion(): Promise<number> {
    this.open();
    return (this.stmt("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").get() as { v: number })
      .v;
  }

  async putBatch(
    b: Omit<BatchRecord, "createdAt" | "updatedAt" | "deletedAt">,
    at = new Date(),
  ): Promise<void> {
    this.open();
    checkBatchInput(b);
    const ms = checkDate("at", at).getTime();
    this.st.putBatch.run(b.name, b.model, b.source, b.spec, ms, ms);
  }

  async getBatch(name: string): Promise<BatchRecord | undefined> {
    this.open();
    const r = this.st.getBatch.get(name) as Row | undefined;
    return r ? toBatch(r) : undefined;
  }

  async listBatches(): Promise<BatchRecord[]> {
    this.open();
    return (this.stmt("SELECT * FROM batches ORDER BY name").all() as Row[]).map(toBatch);
  }

  async markBatchDeleted(name: string, at = new Date()): Promise<void> {
    this.open();
    const ms = checkDate("at", at).getTime();
    if (this.st.deleteBatch.run(ms, ms, name).changes === 0) throw unknownBatchError(name);
  }

  async addDevices(batch: string, deviceIds: readonly string[], at = new Date()): Promise<number> {
    this.open();
    checkName("batch", batch);
    const ids = uniqueIds("deviceIds", deviceIds);
    const ms = checkDate("at", at).getTime();
    return this.addTx(batch, ids, ms);
  }

  private addAll(batch: string, ids: string[], at: number): number {
    const b = this.st.getBatch.get(batch) as Row | undefined;
    if (!b) throw unknownBatchError(batch);
    if (b.deleted_at !== null)
      throw new FleetError(
        "CONFLICT",
        `batch: got ${JSON.stringify(batch)}, deleted, want a live batch (declare it again first)`,
        "batch",
      );
    const rows: NewRow[] = [];
    for (const id of ids) {
      const o = this.st.owner.get(id) as
        | { batch: string; state: string; deleted_at: number | null }
        | undefined;
      if (!o) {
        this.st.insertDevice.run(id, batch, at);
        rows.push(declareRow(at, batch, id, null, null, null));
      } else if (o.batch === batch) {
        // already declared in this batch: nothing to record
      } else if (o.deleted_at === null) {
        throw crossBatchError(id, o.batch, batch);
      } else {
        this.st.moveDevice.run(batch, at, id);
        rows.push(
          declareRow(
            at,
            batch,
            id,
            o.state,
            "moved from a deleted batch",
            JSON.stringify({ fromBatch: o.batch }),
          ),
        );
      }
    }
    this.append(rows);
    return rows.length;
  }

  async getDevice(deviceId: string): Promise<DeviceRecord | undefined> {
    this.open();
    const r = this.st.getDevice.get(deviceId) as Row | undefined;
    return r ? toDevice(r) : undefined;
  }

  async listDevices(batch: string, q: DeviceQuery = {}): Promise<DeviceRecord[]> {
    this.open();
    const states = checkStates("q.states", q.states);
    const limit = checkLimit("q.limit", q.limit);
    const where = ["batch = ?"];
    const args: unknown[] = [batch];
    if (states) {
      where.push(`state IN (${states.map(() => "?").join(", ") || "NULL"})`);
      args.push(...states);
    }
    if (q.after !== undefined) {
      where.push("device_id > ?");
      args.push(q.after);
    }
    let sql = `SELECT * FROM devices WHERE ${where.join(" AND ")} ORDER BY device_id`;
    if (limit !== undefined) {
      sql += " LIMIT ?";
      args.push(limit);
    }
    return (this.stmt(sql).all(...args) as Row[]).map(toDevice);
  }

  async counts(batch: string): Promise<StateCounts> {
    this.open();
    const c = emptyCounts();
    for (const r of this.st.counts.all(batch) as Array<{ state: string; n: number }>)
      if (isState(r.state)) c[r.state] = r.n;
    return c;
  }

  async apply(transitions: readonly Transition[], at = new Date()): Promise<void> {
    this.open();
    validateTransitions(transitions);
    const ms = checkDate("at", at).getTime();
    if (transitions.length === 0) return;
    this.applyTx(transitions, ms);
  }

  private applyAll(ts: readonly Transition[], at: number): void {
    const st = this.st;
    const rows: NewRow[] = [];
    for (const t of ts) {
      const c = t.certificate;
      const row = st.cas.get({
        to: t.to,
        reason: t.reason ?? null,
        pk: t.publicKey ?? null,
        epoch: t.epoch ?? null,
        serial: c ? c.serial : null,
        revoke: t.revoke ? 1 : 0,
        at,
        id: t.deviceId,
        batch: t.batch,
        from: t.from,
      }) as { cert_serial: string | null } | undefined;
      if (!row)
        throw staleError(t, st.deviceState.get(t.deviceId) as { state: string; batch: string } | undefined);
      // order within one transition: revoke what was live, then record the new certificate,
      // then (on active) supersede everything live but the current one
      if (t.revoke) st.revokeAll.run(t.revoke.at.getTime(), t.revoke.reason, t.deviceId);
      if (c) {
        try {
          st.insertCert.run(
            c.serial,
            t.deviceId,
            t.batch,
            c.issuer,
            c.der,
            c.notBefore.getTime(),
            c.notAfter.getTime(),
            c.issuedAt.getTime(),
          );
        } catch (err) {
          if (isConstraint(err, "SQLITE_CONSTRAINT_PRIMARYKEY")) throw duplicateSerialError(c.serial);
          throw err;
        }
      }
      if (t.to === "active") st.supersede.run(at, t.deviceId, row.cert_serial);
      rows.push(transitionRow(t, at, detailJson("detail", t.detail)));
    }
    this.append(rows);
  }

  async applyHub(changes: readonly HubChange[], at = new Date()): Promise<void> {
    this.open();
    validateHubChanges(changes);
    const ms = checkDate("at", at).getTime();
    if (changes.length === 0) return;
    this.hubTx(changes, ms);
  }

  /** In order, one by one (a later change sees an earlier one of the same record), in one transaction. */
  private applyHubAll(cs: readonly HubChange[], at: number): void {
    const st = this.st;
    const rows: NewRow[] = [];
    for (const c of cs) {
      const r = st.hubTarget.get({ id: c.deviceId, hub: c.hub, serial: c.serial }) as Row;
      const record =
        r.status === null
          ? undefined
          : {
              status: r.status as string,
              remoteId: r.remote_id as string | null,
              reason: r.reason as string | null,
            };
      const err = hubTargetError(c, {
        device: r.state === null ? undefined : { state: r.state as string, batch: r.batch as string },
        certDevice: (r.cert_device as string | null) ?? undefined,
        record,
      });
      if (err) throw err;
      const next = nextHub(c, record);
      st.hubUpsert.run(c.hub, c.deviceId, c.batch, c.serial, next.remoteId, c.to, next.reason, at);
      rows.push(hubRow(c, at, r.state as string, next.remoteId, detailJson("detail", c.detail)));
    }
    this.append(rows);
  }

  async hubRegistrations(hub: string, q?: HubQuery): Promise<HubRegistrationRecord[]> {
    this.open();
    checkName("hub", hub);
    const o = checkHubQuery(q);
    const where = ["hub = ?"];
    const args: unknown[] = [hub];
    if (o.batch !== undefined) {
      where.push("batch = ?");
      args.push(o.batch);
    }
    if (o.deviceId !== undefined) {
      where.push("device_id = ?");
      args.push(o.deviceId);
    }
    if (o.statuses) {
      where.push(`status IN (${o.statuses.map(() => "?").join(", ") || "NULL"})`);
      args.push(...o.statuses);
    }
    if (o.after !== undefined) {
      where.push("(device_id, serial) > (?, ?)");
      args.push(o.after.deviceId, o.after.serial);
    }
    let sql = `SELECT * FROM hub_registrations WHERE ${where.join(" AND ")} ORDER BY device_id, serial`;
    if (o.limit !== undefined) {
      sql += " LIMIT ?";
      args.push(o.limit);
    }
    return (this.stmt(sql).all(...args) as Row[]).map(toHub);
  }

  async hubCounts(hub: string, batch?: string): Promise<HubCounts> {
    this.open();
    checkName("hub", hub);
    if (batch !== undefined) checkName("batch", batch);
    const c = emptyHubCounts();
    const rows = (
      batch === undefined ? this.st.hubCounts.all(hub) : this.st.hubCountsBatch.all(hub, batch)
    ) as Array<{
      status: string;
      n: number;
    }>;
    for (const r of rows) if (isHubStatus(r.status)) c[r.status] = r.n;
    return c;
  }

  async hubs(): Promise<string[]> {
    this.open();
    return (this.st.hubs.all() as Array<{ hub: string }>).map((r) => r.hub);
  }

  async certificates(q: {
    batch?: string;
    deviceId?: string;
    issuer?: string;
    status?: readonly CertificateStatus[];
    after?: string;
    limit?: number;
  }): Promise<CertificateRecord[]> {
    this.open();
    const limit = checkLimit("q.limit", q.limit);
    const where: string[] = [];
    const args: unknown[] = [];
    const eq = (col: string, v: unknown) => {
      if (v === undefined) return;
      where.push(`${col} = ?`);
      args.push(v);
    };
    eq("batch", q.batch);
    eq("device_id", q.deviceId);
    eq("issuer", q.issuer);
    if (q.status) {
      for (const s of q.status)
        if (s !== "live" && s !== "revoked")
          throw new FleetError("INVALID_INPUT", `q.status: got ${JSON.stringify(s)}, want live or revoked`);
      where.push(`status IN (${q.status.map(() => "?").join(", ") || "NULL"})`);
      args.push(...q.status);
    }
    if (q.after !== undefined) {
      where.push("serial > ?");
      args.push(q.after);
    }
    let sql = `SELECT ${CERT_RECORD_COLUMNS} FROM certificates${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY serial`;
    if (limit !== undefined) {
      sql += " LIMIT ?";
      args.push(limit);
    }
    // rows as arrays: a plan reads every live certificate, and named rows cost up to a fifth more
    return (this.rawStmt(sql).all(...args) as unknown[][]).map(arrayCert);
  }

  async revokedBy(
    issuer: string,
  ): Promise<Array<{ serial: string; revokedAt: Date; reason: string | null }>> {
    this.open();
    return (this.st.revokedBy.all(issuer) as Row[]).map((r) => ({
      serial: r.serial as string,
      revokedAt: date(r.revoked_at),
      reason: (r.revocation_reason as string | null) ?? null,
    }));
  }

  async audit(q: {
    batch?: string;
    deviceId?: string;
    afterSeq?: number;
    limit?: number;
  }): Promise<AuditRecord[]> {
    this.open();
    const limit = checkLimit("q.limit", q.limit);
    const afterSeq = checkLimit("q.afterSeq", q.afterSeq);
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.batch !== undefined) {
      where.push("batch = ?");
      args.push(q.batch);
    }
    if (q.deviceId !== undefined) {
      where.push("device_id = ?");
      args.push(q.deviceId);
    }
    if (afterSeq !== undefined) {
      where.push("seq > ?");
      args.push(afterSeq);
    }
    let sql = `SELECT * FROM audit${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY seq`;
    if (limit !== undefined) {
      sql += " LIMIT ?";
      args.push(limit);
    }
    return (this.stmt(sql).all(...args) as Row[]).map(toAudit);
  }

  async auditHead(): Promise<AuditHead> {
    this.open();
    const h = this.stmt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").get() as
      | AuditHead
      | undefined;
    return h ?? { seq: 0, hash: GENESIS };
  }

  async verify(opts?: VerifyOptions): Promise<VerifyReport> {
    this.open();
    const o = checkVerifyOptions(opts);
    // the same reads either way; on a thread they leave this one free (a preview plans meanwhile)
    return o.thread ? verifyOnThread(this.location, o) : verifySnapshot(this.location, o);
  }

  /** The underlying handle, for tests that must prove the database itself refuses a write. */
  raw(): Database.Database {
    this.open();
    return this.db;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cache.clear();
    this.db.close();
  }
}
