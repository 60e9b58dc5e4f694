/**
 * The PostgreSQL registry backend (node-postgres 8), for teams that share one registry. Same
 * schema and semantics as the SQLite backend (see index.ts). Writes are set-based: one `apply`
 * call is split into rounds in which each device appears once (common.ts `rounds`), and each
 * round is a handful of multi-row statements over `unnest($n::type[])` arrays (compare-and-set
 * UPDATE ... FROM unnest, INSERT ... SELECT FROM unnest), not one round trip per device. The
 * compare-and-set stays correct under concurrent writers at READ COMMITTED: PostgreSQL re-checks
 * `state = from` on the latest row version before it updates. Migrations run under
 * `pg_advisory_xact_lock`, so concurrent openers apply them once. The audit rows of a call are
 * chained and inserted at its end under a second advisory lock held to commit (appendAudit), so
 * concurrent writers extend one chain; `verify` reads in a REPEATABLE READ READ ONLY transaction.
 */
import { Pool, type PoolClient } from "pg";
import { FleetError } from "../errors";
import {
  baselineRow,
  type ChainRow,
  canonicalJson,
  chain,
  checkVerifyOptions,
  declareRow,
  GENESIS,
  hubRow,
  type NewRow,
  rowHash,
  runVerify,
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
  type HubTarget,
  hubStaleError,
  hubTargetError,
  isHubStatus,
  isState,
  redactUrl,
  rounds,
  roundsBy,
  staleError,
  uniqueIds,
  unknownBatchError,
  validateHubChanges,
  validateTransitions,
} from "./common";
import { LATEST_VERSION, MIGRATIONS, MIGRATIONS_TABLE } from "./schema";
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

export interface PostgresOptions {
  poolSize?: number;
  connectTimeoutMs?: number;
}

type Row = Record<string, unknown>;

const MIGRATION_LOCK = "fleetguard.registry.migrations";

function toBatch(r: Row): BatchRecord {
  return {
    name: r.name as string,
    model: r.model as string,
    source: r.source as BatchRecord["source"],
    spec: r.spec as string,
    createdAt: r.created_at as Date,
    updatedAt: r.updated_at as Date,
    deletedAt: (r.deleted_at as Date | null) ?? null,
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
    updatedAt: r.updated_at as Date,
  };
}

function toCert(r: Row): CertificateRecord {
  const c: CertificateRecord = {
    serial: r.serial as string,
    deviceId: r.device_id as string,
    batch: r.batch as string,
    issuer: r.issuer as string,
    der: r.der as Buffer,
    notBefore: r.not_before as Date,
    notAfter: r.not_after as Date,
    issuedAt: r.issued_at as Date,
    status: r.status as CertificateStatus,
  };
  if (r.revoked_at) c.revokedAt = r.revoked_at as Date;
  if (r.revocation_reason !== null && r.revocation_reason !== undefined)
    c.revocationReason = r.revocation_reason as string;
  return c;
}

function toAudit(r: Row): AuditRecord {
  return {
    seq: Number(r.seq),
    at: r.at as Date,
    batch: r.batch as string,
    deviceId: r.device_id as string,
    from: (r.from_state as DeviceState | null) ?? null,
    to: r.to_state as DeviceState,
    reason: (r.reason as string | null) ?? null,
    detail: (r.detail as Record<string, unknown> | null) ?? null,
    prevHash: (r.prev_hash as string | null) ?? null,
    hash: (r.hash as string | null) ?? null,
  };
}

const AUDIT_LOCK = "fleetguard.registry.audit";
const AUDIT_COLUMNS = `seq, at, batch, device_id, from_state, to_state, reason, detail, public_key_sha256, epoch,
  cert_serial, cert_sha256, cert_issuer, revoke_reason, revoke_at, baseline, prev_hash, hash`;
// detail only where it may be a hub row's (the replay's; the others' is pass 1's)
const REPLAY_COLUMNS = `seq, at, batch, device_id, from_state, to_state, reason,
  CASE WHEN from_state = to_state AND detail ? 'hub' THEN detail END AS detail, public_key_sha256, epoch,
  cert_serial, cert_sha256, cert_issuer, revoke_reason, revoke_at, baseline`;
const DEVICE_COLUMNS = `device_id, batch, state, reason,
  CASE WHEN public_key IS NULL THEN NULL ELSE encode(sha256(public_key), 'hex') END AS public_key_sha256,
  epoch, cert_serial`;
const CERT_COLUMNS = `serial, device_id, batch, issuer, encode(sha256(der), 'hex') AS sha256, status,
  revoked_at, revocation_reason`;
const HUB_COLUMNS = "hub, device_id, batch, serial, remote_id, status, reason";
const ms = (v: unknown): number | null => (v === null || v === undefined ? null : (v as Date).getTime());

/** An audit row as read back, as the chain hashes it (exported for the tests that play the attacker). */
export function toChainRow(r: Row): ChainRow {
  return {
    seq: Number(r.seq),
    at: ms(r.at)!,
    batch: r.batch as string,
    deviceId: r.device_id as string,
    from: (r.from_state as string | null) ?? null,
    to: r.to_state as string,
    reason: (r.reason as string | null) ?? null,
    // jsonb comes back parsed, its keys reordered: canonical JSON gives what was hashed
    detail: r.detail === null || r.detail === undefined ? null : canonicalJson(r.detail),
    publicKeySha256: (r.public_key_sha256 as string | null) ?? null,
    epoch: (r.epoch as number | null) ?? null,
    certSerial: (r.cert_serial as string | null) ?? null,
    certSha256: (r.cert_sha256 as string | null) ?? null,
    certIssuer: (r.cert_issuer as string | null) ?? null,
    revokeReason: (r.revoke_reason as string | null) ?? null,
    revokeAt: ms(r.revoke_at),
    baseline: (r.baseline as string | null) ?? null,
    prevHash: (r.prev_hash as string | null) ?? null,
    hash: (r.hash as string | null) ?? null,
  };
}

function toTableDevice(r: Row): TableDevice {
  return {
    deviceId: r.device_id as string,
    batch: r.batch as string,
    state: r.state as string,
    reason: (r.reason as string | null) ?? null,
    publicKeySha256: (r.public_key_sha256 as string | null) ?? null,
    epoch: (r.epoch as number | null) ?? null,
    certSerial: (r.cert_serial as string | null) ?? null,
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

function toTableCert(r: Row): TableCert {
  return {
    serial: r.serial as string,
    deviceId: r.device_id as string,
    batch: r.batch as string,
    issuer: r.issuer as string,
    sha256: r.sha256 as string,
    status: r.status as string,
    revokedAt: ms(r.revoked_at),
    reason: (r.revocation_reason as string | null) ?? null,
  };
}

/**
 * Chain rows onto the head and insert them, inside the caller's transaction. The advisory lock
 * serialises appenders (held to commit), so every writer chains onto the head the previous one
 * committed; it is taken last, after the compare-and-set, so writers on other devices still run
 * their device updates side by side.
 */
async function appendAudit(c: PoolClient, rows: readonly NewRow[]): Promise<void> {
  if (rows.length === 0) return;
  await c.query("SELECT pg_advisory_xact_lock(hashtext($1))", [AUDIT_LOCK]);
  const h = (await c.query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")).rows[0];
  const head = h ? { seq: Number(h.seq), hash: h.hash as string } : { seq: 0, hash: GENESIS };
  const cs = chain(head, rows);
  const t = (v: number | null) => (v === null ? null : new Date(v).toISOString());
  await c.query(
    `INSERT INTO audit (${AUDIT_COLUMNS})
     SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
       $7::text[], $8::jsonb[], $9::text[], $10::int[], $11::text[], $12::text[], $13::text[], $14::text[],
       $15::timestamptz[], $16::text[], $17::text[], $18::text[])`,
    [
      cs.map((r) => r.seq),
      cs.map((r) => t(r.at)),
      cs.map((r) => r.batch),
      cs.map((r) => r.deviceId),
      cs.map((r) => r.from),
      cs.map((r) => r.to),
      cs.map((r) => r.reason),
      cs.map((r) => r.detail),
      cs.map((r) => r.publicKeySha256),
      cs.map((r) => r.epoch),
      cs.map((r) => r.certSerial),
      cs.map((r) => r.certSha256),
      cs.map((r) => r.certIssuer),
      cs.map((r) => r.revokeReason),
      cs.map((r) => t(r.revokeAt)),
      cs.map((r) => r.baseline),
      cs.map((r) => r.prevHash),
      cs.map((r) => r.hash),
    ],
  );
}

/** Migration 2: hash the rows already there, then a baseline row per device (see chain.ts). */
async function chainExisting(c: PoolClient): Promise<void> {
  await c.query("ALTER TABLE audit DISABLE TRIGGER audit_no_update_delete");
  let head = { seq: 0, hash: GENESIS };
  for (;;) {
    const page = (
      await c.query(`SELECT ${AUDIT_COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT 10000`, [head.seq])
    ).rows.map(toChainRow);
    if (page.length === 0) break;
    const upd: { s: number[]; p: string[]; h: string[] } = { s: [], p: [], h: [] };
    for (const r of page) {
      const hash = rowHash({ ...r, prevHash: head.hash });
      upd.s.push(r.seq);
      upd.p.push(head.hash);
      upd.h.push(hash);
      head = { seq: r.seq, hash };
    }
    await c.query(
      `UPDATE audit a SET prev_hash = u.p, hash = u.h
       FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(s, p, h) WHERE a.seq = u.s`,
      [upd.s, upd.p, upd.h],
    );
  }
  await c.query("ALTER TABLE audit ENABLE TRIGGER audit_no_update_delete");
  const at = Date.now();
  for (let after = ""; ; ) {
    const ds = (
      await c.query(
        `SELECT ${DEVICE_COLUMNS} FROM devices WHERE device_id > $1 ORDER BY device_id LIMIT 5000`,
        [after],
      )
    ).rows.map(toTableDevice);
    if (ds.length === 0) break;
    const last = ds[ds.length - 1]!.deviceId;
    const byDevice = new Map<string, TableCert[]>();
    for (const r of (
      await c.query(
        `SELECT ${CERT_COLUMNS} FROM certificates WHERE device_id > $1 AND device_id <= $2 ORDER BY device_id, serial`,
        [after, last],
      )
    ).rows.map(toTableCert)) {
      const l = byDevice.get(r.deviceId) ?? [];
      l.push(r);
      byDevice.set(r.deviceId, l);
    }
    await appendAudit(
      c,
      ds.map((d) => baselineRow(at, d, byDevice.get(d.deviceId) ?? [])),
    );
    after = last;
  }
  await c.query("ALTER TABLE audit ALTER COLUMN prev_hash SET NOT NULL, ALTER COLUMN hash SET NOT NULL");
}

/** The verifier's reads, on one connection in one REPEATABLE READ READ ONLY transaction (a snapshot). */
function postgresSource(c: PoolClient): VerifySource {
  const q = async (sql: string, args: unknown[]) => (await c.query(sql, args)).rows as Row[];
  const range = (table: string, cols: string, order: string) => async (after: string, upTo: string | null) =>
    upTo === null
      ? q(`SELECT ${cols} FROM ${table} WHERE device_id > $1 ORDER BY ${order}`, [after])
      : q(`SELECT ${cols} FROM ${table} WHERE device_id > $1 AND device_id <= $2 ORDER BY ${order}`, [
          after,
          upTo,
        ]);
  const dev = range("devices", DEVICE_COLUMNS, "device_id");
  // what the replay needs (detail and the hashes are pass 1's)
  const aud = range("audit", REPLAY_COLUMNS, "device_id, seq");
  const crt = range("certificates", CERT_COLUMNS, "device_id, serial");
  const hub = range("hub_registrations", HUB_COLUMNS, "device_id, hub, serial");
  return {
    countAudit: async () => Number((await q("SELECT count(*) AS n FROM audit", []))[0]!.n),
    chainPage: async (afterSeq, limit) =>
      (
        await q(`SELECT ${AUDIT_COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2`, [afterSeq, limit])
      ).map(toChainRow),
    rangeEnd: async (table, after, offset) =>
      ((
        await q(`SELECT device_id FROM ${table} WHERE device_id > $1 ORDER BY device_id LIMIT 1 OFFSET $2`, [
          after,
          offset - 1,
        ])
      )[0]?.device_id as string | undefined) ?? null,
    devices: async (after, upTo) => (await dev(after, upTo)).map(toTableDevice),
    audit: async (after, upTo) => (await aud(after, upTo)).map(toChainRow),
    certificates: async (after, upTo) => (await crt(after, upTo)).map(toTableCert),
    hubs: async (after, upTo) => (await hub(after, upTo)).map(toTableHub),
  };
}

const iso = (d: Date) => d.toISOString();

/** The compare-and-set of one round (exported for the test that pins its query plan). */
export const CAS_SQL = `UPDATE devices d SET
   state = i.to_state,
   reason = CASE WHEN d.state <> i.to_state THEN i.reason ELSE COALESCE(i.reason, d.reason) END,
   public_key = COALESCE(i.public_key, d.public_key),
   epoch = COALESCE(i.epoch, d.epoch),
   cert_serial = CASE WHEN i.cert_serial IS NOT NULL THEN i.cert_serial
                      WHEN i.revoke THEN NULL ELSE d.cert_serial END,
   updated_at = $10
 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::int[],
             $8::text[], $9::bool[])
   AS i(device_id, batch, from_state, to_state, reason, public_key, epoch, cert_serial, revoke)
 WHERE d.device_id = i.device_id AND d.batch = i.batch AND d.state = i.from_state
 RETURNING d.device_id`;

/**
 * One page of hub changes (each (hub, serial) at most once) in one statement, one round trip:
 * `chk` reads every change's target (device, certificate owner, current record); only if every
 * one matches (device in the batch, certificate of the device, status = from) do `upd` (a
 * compare-and-set UPDATE, re-checked by PostgreSQL on the latest row version) and `ins` (new
 * records; a concurrent insert makes it do nothing) write, computing remoteId and reason from the
 * row they change (common.ts nextHub). The result is chk's rows ('c') then the written ones ('w').
 */
export const HUB_PAGE_SQL = `WITH i AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::text[])
    WITH ORDINALITY AS i(hub, device_id, batch, serial, from_status, to_status, remote_id, reason, n)
), chk AS (
  SELECT i.*, d.state, d.batch AS device_batch, c.device_id AS cert_device, h.status AS cur_status
  FROM i
  LEFT JOIN devices d ON d.device_id = i.device_id
  LEFT JOIN certificates c ON c.serial = i.serial
  LEFT JOIN hub_registrations h ON h.hub = i.hub AND h.serial = i.serial
), ok AS (
  SELECT * FROM chk
  WHERE state IS NOT NULL AND device_batch = batch AND cert_device = device_id
    AND cur_status IS NOT DISTINCT FROM from_status
), go AS (
  SELECT (SELECT count(*) FROM ok) = (SELECT count(*) FROM i) AS ok
), upd AS (
  UPDATE hub_registrations h SET
    device_id = ok.device_id, batch = ok.batch, status = ok.to_status,
    remote_id = COALESCE(ok.remote_id, h.remote_id),
    reason = CASE WHEN h.status <> ok.to_status THEN ok.reason ELSE COALESCE(ok.reason, h.reason) END,
    updated_at = $9
  FROM ok
  WHERE (SELECT ok FROM go) AND ok.from_status IS NOT NULL
    AND h.hub = ok.hub AND h.serial = ok.serial AND h.status = ok.from_status
  RETURNING h.hub, h.serial, h.remote_id, h.reason
), ins AS (
  INSERT INTO hub_registrations (hub, device_id, batch, serial, remote_id, status, reason, updated_at)
  SELECT hub, device_id, batch, serial, remote_id, to_status, reason, $9 FROM ok
  WHERE (SELECT ok FROM go) AND from_status IS NULL
  ORDER BY n
  ON CONFLICT (hub, serial) DO NOTHING
  RETURNING hub, serial, remote_id, reason
)
SELECT 'c' AS k, n, hub, serial, state, device_batch, cert_device, cur_status, NULL AS remote_id, NULL AS reason
  FROM chk
UNION ALL
SELECT 'w', NULL, hub, serial, NULL, NULL, NULL, NULL, remote_id, reason FROM upd
UNION ALL
SELECT 'w', NULL, hub, serial, NULL, NULL, NULL, NULL, remote_id, reason FROM ins`;

const HUB_PAGE = 5000;

function toHub(r: Row): HubRegistrationRecord {
  return {
    hub: r.hub as string,
    deviceId: r.device_id as string,
    batch: r.batch as string,
    serial: r.serial as string,
    remoteId: (r.remote_id as string | null) ?? null,
    status: r.status as HubStatus,
    reason: (r.reason as string | null) ?? null,
    updatedAt: r.updated_at as Date,
  };
}

/** Set at the start of every apply transaction: joins against unnest() probe indexes. */
export const APPLY_SESSION_SQL = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/** Connection-level failures become UNAVAILABLE naming the (redacted) location; others pass through. */
function mapError(err: unknown, location: string): unknown {
  if (err instanceof FleetError) return err;
  const e = err as { code?: string; message?: string };
  const code = e?.code ?? "";
  // two writers crossing on the same devices: the loser's call is rolled back and may be retried
  if (code === "40P01" || code === "40001")
    return new FleetError(
      "CONFLICT",
      `registry: got a concurrent write to the same devices (${code === "40P01" ? "deadlock" : "serialization failure"}), want one writer per device; nothing was written, retry`,
      "registry",
    );
  if (
    /^(ECONN|ENOTFOUND|ETIMEDOUT|EHOSTUNREACH|EAI_)/.test(code) ||
    /^(08|57P|53)/.test(code) ||
    code === "28P01"
  )
    return new FleetError(
      "UNAVAILABLE",
      `registry: got ${location} unreachable or refusing (${code}: ${e.message ?? "error"}), want a reachable PostgreSQL`,
      "registry",
    );
  if (!code && /timeout|terminated|Connection/i.test(e?.message ?? ""))
    return new FleetError(
      "UNAVAILABLE",
      `registry: got ${location} unreachable (${e.message}), want a reachable PostgreSQL`,
      "registry",
    );
  return err;
}

export class PostgresRegistry implements Registry {
  readonly kind = "postgres";
  readonly location: string;
  private closed = false;

  constructor(
    private readonly pool: Pool,
    location: string,
  ) {
    this.location = location;
  }

  private open(): void {
    if (this.closed)
      throw new FleetError(
        "UNAVAILABLE",
        `registry: got a closed registry (${this.location}), want an open one`,
      );
  }

  private async q(sql: string, args: unknown[] = []): Promise<Row[]> {
    this.open();
    try {
      return (await this.pool.query(sql, args)).rows as Row[];
    } catch (err) {
      throw mapError(err, this.location);
    }
  }

  /** Run fn in one transaction on one connection; any throw rolls it back. */
  async tx<T>(fn: (c: PoolClient) => Promise<T>): Promise<T> {
    this.open();
    let c: PoolClient;
    try {
      c = await this.pool.connect();
    } catch (err) {
      throw mapError(err, this.location);
    }
    let broken = false;
    try {
      await c.query("BEGIN");
      const out = await fn(c);
      await c.query("COMMIT");
      return out;
    } catch (err) {
      try {
        await c.query("ROLLBACK");
      } catch {
        broken = true;
      }
      throw mapError(err, this.location);
    } finally {
      c.release(broken);
    }
  }

  async migrate(): Promise<void> {
    await this.tx(async (c) => {
      await c.query("SELECT pg_advisory_xact_lock(hashtext($1))", [MIGRATION_LOCK]);
      await c.query(MIGRATIONS_TABLE.postgres);
      const cur = Number(
        (await c.query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")).rows[0].v,
      );
      if (cur > LATEST_VERSION)
        throw new FleetError(
          "UNAVAILABLE",
          `registry schema version: got ${cur}, want at most ${LATEST_VERSION} (the registry was written by a newer fleetguard)`,
          "registry",
        );
      for (const m of MIGRATIONS) {
        if (m.version <= cur) continue;
        await c.query(m.postgres);
        if (m.step === "audit-chain") await chainExisting(c);
        await c.query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, now())", [
          m.version,
          m.name,
        ]);
      }
    });
  }

  async schemaVersion(): Promise<number> {
    const rows = await this.q("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations");
    return Number(rows[0]!.v);
  }

  async putBatch(
    b: Omit<BatchRecord, "createdAt" | "updatedAt" | "deletedAt">,
    at = new Date(),
  ): Promise<void> {
    checkBatchInput(b);
    checkDate("at", at);
    await this.q(
      `INSERT INTO batches (name, model, source, spec, created_at, updated_at, deleted_at)
       VALUES ($1, $2, $3, $4, $5, $5, NULL)
       ON CONFLICT (name) DO UPDATE SET model = excluded.model, source = excluded.source,
         spec = excluded.spec, updated_at = excluded.updated_at, deleted_at = NULL`,
      [b.name, b.model, b.source, b.spec, iso(at)],
    );
  }

  async getBatch(name: string): Promise<BatchRecord | undefined> {
    const rows = await this.q("SELECT * FROM batches WHERE name = $1", [name]);
    return rows[0] ? toBatch(rows[0]) : undefined;
  }

  async listBatches(): Promise<BatchRecord[]> {
    return (await this.q("SELECT * FROM batches ORDER BY name")).map(toBatch);
  }

  async markBatchDeleted(name: string, at = new Date()): Promise<void> {
    checkDate("at", at);
    const rows = await this.q(
      "UPDATE batches SET deleted_at = COALESCE(deleted_at, $1), updated_at = $1 WHERE name = $2 RETURNING name",
      [iso(at), name],
    );
    if (rows.length === 0) throw unknownBatchError(name);
  }

  async addDevices(batch: string, deviceIds: readonly string[], at = new Date()): Promise<number> {
    checkName("batch", batch);
    const ids = uniqueIds("deviceIds", deviceIds);
    checkDate("at", at);
    const when = iso(at);
    return this.tx(async (c) => {
      const b = (await c.query("SELECT deleted_at FROM batches WHERE name = $1 FOR SHARE", [batch])).rows[0];
      if (!b) throw unknownBatchError(batch);
      if (b.deleted_at !== null)
        throw new FleetError(
          "CONFLICT",
          `batch: got ${JSON.stringify(batch)}, deleted, want a live batch (declare it again first)`,
          "batch",
        );
      if (ids.length === 0) return 0;
      // insert first (ON CONFLICT waits for a concurrent inserter of the same ID), then look at
      // the IDs that turned out to belong to another batch
      const inserted = new Set(
        (
          await c.query(
            `INSERT INTO devices (device_id, batch, state, updated_at)
             SELECT id, $2, 'pending', $3 FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n) ORDER BY n
             ON CONFLICT (device_id) DO NOTHING RETURNING device_id`,
            [ids, batch, when],
          )
        ).rows.map((r) => r.device_id as string),
      );
      const others = new Map<string, { batch: string; state: string; deleted: boolean }>();
      if (inserted.size < ids.length) {
        const rows = (
          await c.query(
            `SELECT d.device_id, d.batch, d.state, b.deleted_at IS NOT NULL AS deleted
             FROM devices d JOIN batches b ON b.name = d.batch
             WHERE d.device_id = ANY($1::text[]) AND d.batch <> $2 FOR UPDATE OF d`,
            [ids, batch],
          )
        ).rows;
        for (const r of rows) others.set(r.device_id, { batch: r.batch, state: r.state, deleted: r.deleted });
      }
      for (const id of ids) {
        const o = others.get(id);
        if (o && !o.deleted) throw crossBatchError(id, o.batch, batch);
      }
      if (others.size > 0)
        await c.query(
          `UPDATE devices SET batch = $2, state = 'pending', reason = NULL, public_key = NULL, epoch = NULL,
             cert_serial = NULL, updated_at = $3 WHERE device_id = ANY($1::text[])`,
          [[...others.keys()], batch, when],
        );
      const a: { d: string[]; f: (string | null)[]; r: (string | null)[]; x: (string | null)[] } = {
        d: [],
        f: [],
        r: [],
        x: [],
      };
      for (const id of ids) {
        const o = others.get(id);
        if (inserted.has(id)) {
          a.d.push(id);
          a.f.push(null);
          a.r.push(null);
          a.x.push(null);
        } else if (o) {
          a.d.push(id);
          a.f.push(o.state);
          a.r.push("moved from a deleted batch");
          a.x.push(JSON.stringify({ fromBatch: o.batch }));
        }
      }
      const atMs = at.getTime();
      await appendAudit(
        c,
        a.d.map((d, i) => declareRow(atMs, batch, d, a.f[i] ?? null, a.r[i] ?? null, a.x[i] ?? null)),
      );
      return a.d.length;
    });
  }

  async getDevice(deviceId: string): Promise<DeviceRecord | undefined> {
    const rows = await this.q("SELECT * FROM devices WHERE device_id = $1", [deviceId]);
    return rows[0] ? toDevice(rows[0]) : undefined;
  }

  async listDevices(batch: string, q: DeviceQuery = {}): Promise<DeviceRecord[]> {
    const states = checkStates("q.states", q.states);
    const limit = checkLimit("q.limit", q.limit);
    const args: unknown[] = [batch];
    const where = ["batch = $1"];
    if (states) {
      args.push(states);
      where.push(`state = ANY($${args.length}::text[])`);
    }
    if (q.after !== undefined) {
      args.push(q.after);
      where.push(`device_id > $${args.length}`);
    }
    let sql = `SELECT * FROM devices WHERE ${where.join(" AND ")} ORDER BY device_id`;
    if (limit !== undefined) {
      args.push(limit);
      sql += ` LIMIT $${args.length}`;
    }
    return (await this.q(sql, args)).map(toDevice);
  }

  async counts(batch: string): Promise<StateCounts> {
    const c = emptyCounts();
    for (const r of await this.q(
      "SELECT state, count(*)::int AS n FROM devices WHERE batch = $1 GROUP BY state",
      [batch],
    ))
      if (isState(r.state)) c[r.state] = r.n as number;
    return c;
  }

  async apply(transitions: readonly Transition[], at = new Date()): Promise<void> {
    validateTransitions(transitions);
    checkDate("at", at);
    if (transitions.length === 0) return;
    const when = iso(at);
    await this.tx(async (c) => {
      // Joins against unnest() must probe the indexes: left to itself the planner hashes the
      // whole devices table for every chunk once it holds ~100k rows (O(batch) per chunk).
      await c.query(APPLY_SESSION_SQL);
      const rows: NewRow[] = [];
      for (const round of rounds(transitions)) {
        await this.applyRound(c, round, when);
        for (const t of round) rows.push(transitionRow(t, at.getTime(), detailJson("detail", t.detail)));
      }
      await appendAudit(c, rows);
    });
  }

  /** One round: each device at most once, so set-based statements equal sequential application. */
  private async applyRound(c: PoolClient, ts: Transition[], at: string): Promise<void> {
    const updated = await c.query(CAS_SQL, [
      ts.map((t) => t.deviceId),
      ts.map((t) => t.batch),
      ts.map((t) => t.from),
      ts.map((t) => t.to),
      ts.map((t) => t.reason ?? null),
      ts.map((t) => t.publicKey ?? null),
      ts.map((t) => t.epoch ?? null),
      ts.map((t) => t.certificate?.serial ?? null),
      ts.map((t) => t.revoke !== undefined),
      at,
    ]);
    if (updated.rowCount !== ts.length) {
      const done = new Set(updated.rows.map((r) => r.device_id as string));
      const t = ts.find((x) => !done.has(x.deviceId))!;
      const actual = (await c.query("SELECT state, batch FROM devices WHERE device_id = $1", [t.deviceId]))
        .rows[0];
      throw staleError(t, actual);
    }
    const rev = ts.filter((t) => t.revoke);
    if (rev.length)
      await c.query(
        `UPDATE certificates c SET status = 'revoked', revoked_at = r.at, revocation_reason = r.reason
         FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS r(device_id, at, reason)
         WHERE c.device_id = r.device_id AND c.status = 'live'`,
        [rev.map((t) => t.deviceId), rev.map((t) => iso(t.revoke!.at)), rev.map((t) => t.revoke!.reason)],
      );
    const certs = ts.filter((t) => t.certificate).map((t) => t.certificate!);
    if (certs.length) {
      try {
        await c.query(
          `INSERT INTO certificates (serial, device_id, batch, issuer, der, not_before, not_after, issued_at, status)
           SELECT s, d, b, i, der, nb, na, ia, 'live'
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::timestamptz[],
                       $7::timestamptz[], $8::timestamptz[]) AS x(s, d, b, i, der, nb, na, ia)`,
          [
            certs.map((x) => x.serial),
            certs.map((x) => x.deviceId),
            certs.map((x) => x.batch),
            certs.map((x) => x.issuer),
            certs.map((x) => x.der),
            certs.map((x) => iso(x.notBefore)),
            certs.map((x) => iso(x.notAfter)),
            certs.map((x) => iso(x.issuedAt)),
          ],
        );
      } catch (err) {
        const e = err as { code?: string; constraint?: string; detail?: string };
        if (e.code === "23505" && e.constraint === "certificates_pkey") {
          const m = /\(serial\)=\(([^)]*)\)/.exec(e.detail ?? "");
          throw duplicateSerialError(m?.[1] ?? "?");
        }
        throw err;
      }
    }
    const act = ts.filter((t) => t.to === "active").map((t) => t.deviceId);
    if (act.length)
      await c.query(
        `UPDATE certificates c SET status = 'revoked', revoked_at = $2, revocation_reason = 'superseded'
         FROM devices d
         WHERE d.device_id = ANY($1::text[]) AND c.device_id = d.device_id AND c.status = 'live'
           AND c.serial IS DISTINCT FROM d.cert_serial`,
        [act, at],
      );
  }

  async applyHub(changes: readonly HubChange[], at = new Date()): Promise<void> {
    validateHubChanges(changes);
    checkDate("at", at);
    if (changes.length === 0) return;
    const when = iso(at);
    const atMs = at.getTime();
    await this.tx(async (c) => {
      await c.query(APPLY_SESSION_SQL);
      // audit rows in the call's order (a record's changes keep theirs: round k holds its k-th)
      const rows: NewRow[] = new Array(changes.length);
      const items = changes.map((ch, i) => ({ ch, i }));
      for (const round of roundsBy(items, (x) => `${x.ch.hub}\u0000${x.ch.serial}`))
        for (let p = 0; p < round.length; p += HUB_PAGE) {
          const slice = round.slice(p, p + HUB_PAGE);
          const page = slice.map((x) => x.ch);
          const res = (
            await c.query(HUB_PAGE_SQL, [
              page.map((x) => x.hub),
              page.map((x) => x.deviceId),
              page.map((x) => x.batch),
              page.map((x) => x.serial),
              page.map((x) => x.from),
              page.map((x) => x.to),
              page.map((x) => x.remoteId ?? null),
              page.map((x) => x.reason ?? null),
              when,
            ])
          ).rows as Row[];
          const checked: Row[] = new Array(page.length);
          const written = new Map<string, Row>();
          for (const r of res) {
            if (r.k === "c") checked[Number(r.n) - 1] = r;
            else written.set(`${r.hub}\u0000${r.serial}`, r);
          }
          for (let j = 0; j < page.length; j++) {
            const ch = page[j]!;
            const r = checked[j]!;
            const target: HubTarget = {
              ...(r.state === null
                ? {}
                : { device: { state: r.state as string, batch: r.device_batch as string } }),
              ...(r.cert_device === null ? {} : { certDevice: r.cert_device as string }),
              ...(r.cur_status === null
                ? {}
                : { record: { status: r.cur_status as string, remoteId: null, reason: null } }),
            };
            const err = hubTargetError(ch, target);
            if (err) throw err;
          }
          for (let j = 0; j < page.length; j++) {
            const ch = page[j]!;
            const w = written.get(`${ch.hub}\u0000${ch.serial}`);
            if (!w) {
              // changed by a concurrent writer between the read and the write
              const now = (
                await c.query("SELECT status FROM hub_registrations WHERE hub = $1 AND serial = $2", [
                  ch.hub,
                  ch.serial,
                ])
              ).rows[0];
              throw hubStaleError(ch, (now?.status as string | undefined) ?? null);
            }
            rows[slice[j]!.i] = hubRow(
              ch,
              atMs,
              checked[j]!.state as string,
              (w.remote_id as string | null) ?? null,
              detailJson("detail", ch.detail),
            );
          }
        }
      await appendAudit(c, rows);
    });
  }

  async hubRegistrations(hub: string, q?: HubQuery): Promise<HubRegistrationRecord[]> {
    checkName("hub", hub);
    const o = checkHubQuery(q);
    const args: unknown[] = [hub];
    const where = ["hub = $1"];
    const eq = (col: string, v: unknown) => {
      if (v === undefined) return;
      args.push(v);
      where.push(`${col} = $${args.length}`);
    };
    eq("batch", o.batch);
    eq("device_id", o.deviceId);
    if (o.statuses) {
      args.push(o.statuses);
      where.push(`status = ANY($${args.length}::text[])`);
    }
    if (o.after !== undefined) {
      args.push(o.after.deviceId, o.after.serial);
      where.push(`(device_id, serial) > ($${args.length - 1}, $${args.length})`);
    }
    let sql = `SELECT * FROM hub_registrations WHERE ${where.join(" AND ")} ORDER BY device_id, serial`;
    if (o.limit !== undefined) {
      args.push(o.limit);
      sql += ` LIMIT $${args.length}`;
    }
    return (await this.q(sql, args)).map(toHub);
  }

  async hubCounts(hub: string, batch?: string): Promise<HubCounts> {
    checkName("hub", hub);
    if (batch !== undefined) checkName("batch", batch);
    const c = emptyHubCounts();
    const rows =
      batch === undefined
        ? await this.q(
            "SELECT status, count(*)::int AS n FROM hub_registrations WHERE hub = $1 GROUP BY status",
            [hub],
          )
        : await this.q(
            "SELECT status, count(*)::int AS n FROM hub_registrations WHERE hub = $1 AND batch = $2 GROUP BY status",
            [hub, batch],
          );
    for (const r of rows) if (isHubStatus(r.status)) c[r.status] = r.n as number;
    return c;
  }

  async hubs(): Promise<string[]> {
    return (await this.q("SELECT DISTINCT hub FROM hub_registrations ORDER BY hub")).map(
      (r) => r.hub as string,
    );
  }

  async certificates(q: {
    batch?: string;
    deviceId?: string;
    issuer?: string;
    status?: readonly CertificateStatus[];
    after?: string;
    limit?: number;
  }): Promise<CertificateRecord[]> {
    const limit = checkLimit("q.limit", q.limit);
    const args: unknown[] = [];
    const where: string[] = [];
    const eq = (col: string, v: unknown) => {
      if (v === undefined) return;
      args.push(v);
      where.push(`${col} = $${args.length}`);
    };
    eq("batch", q.batch);
    eq("device_id", q.deviceId);
    eq("issuer", q.issuer);
    if (q.status) {
      for (const s of q.status)
        if (s !== "live" && s !== "revoked")
          throw new FleetError("INVALID_INPUT", `q.status: got ${JSON.stringify(s)}, want live or revoked`);
      args.push(q.status);
      where.push(`status = ANY($${args.length}::text[])`);
    }
    if (q.after !== undefined) {
      args.push(q.after);
      where.push(`serial > $${args.length}`);
    }
    let sql = `SELECT * FROM certificates${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY serial`;
    if (limit !== undefined) {
      args.push(limit);
      sql += ` LIMIT $${args.length}`;
    }
    return (await this.q(sql, args)).map(toCert);
  }

  async revokedBy(
    issuer: string,
  ): Promise<Array<{ serial: string; revokedAt: Date; reason: string | null }>> {
    return (
      await this.q(
        `SELECT serial, revoked_at, revocation_reason FROM certificates
         WHERE issuer = $1 AND status = 'revoked' ORDER BY serial`,
        [issuer],
      )
    ).map((r) => ({
      serial: r.serial as string,
      revokedAt: r.revoked_at as Date,
      reason: (r.revocation_reason as string | null) ?? null,
    }));
  }

  async audit(q: {
    batch?: string;
    deviceId?: string;
    afterSeq?: number;
    limit?: number;
  }): Promise<AuditRecord[]> {
    const limit = checkLimit("q.limit", q.limit);
    const afterSeq = checkLimit("q.afterSeq", q.afterSeq);
    const args: unknown[] = [];
    const where: string[] = [];
    if (q.batch !== undefined) {
      args.push(q.batch);
      where.push(`batch = $${args.length}`);
    }
    if (q.deviceId !== undefined) {
      args.push(q.deviceId);
      where.push(`device_id = $${args.length}`);
    }
    if (afterSeq !== undefined) {
      args.push(afterSeq);
      where.push(`seq > $${args.length}`);
    }
    let sql = `SELECT * FROM audit${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY seq`;
    if (limit !== undefined) {
      args.push(limit);
      sql += ` LIMIT $${args.length}`;
    }
    return (await this.q(sql, args)).map(toAudit);
  }

  async auditHead(): Promise<AuditHead> {
    const h = (await this.q("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"))[0];
    return h ? { seq: Number(h.seq), hash: h.hash as string } : { seq: 0, hash: GENESIS };
  }

  async verify(opts?: VerifyOptions): Promise<VerifyReport> {
    const o = checkVerifyOptions(opts);
    this.open();
    let c: PoolClient;
    try {
      c = await this.pool.connect();
    } catch (err) {
      throw mapError(err, this.location);
    }
    let broken = false;
    try {
      await c.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      const report = await runVerify(postgresSource(c), o);
      await c.query("COMMIT");
      return report;
    } catch (err) {
      await c.query("ROLLBACK").catch(() => {
        broken = true;
      });
      throw mapError(err, this.location);
    } finally {
      c.release(broken);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}

export async function openPostgres(url: string, opts: PostgresOptions = {}): Promise<Registry> {
  const location = redactUrl(url);
  const poolSize = opts.poolSize ?? 4;
  if (!Number.isInteger(poolSize) || poolSize < 1 || poolSize > 100)
    throw new FleetError("INVALID_INPUT", `poolSize: got ${poolSize}, want an integer in 1..100`, "poolSize");
  const pool = new Pool({
    connectionString: url,
    max: poolSize,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000,
    application_name: "fleetguard-registry",
  });
  // an idle connection that dies (server restart) must not crash the process; the next query reports it
  pool.on("error", () => {});
  const reg = new PostgresRegistry(pool, location);
  try {
    await reg.migrate();
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
  return reg;
}
