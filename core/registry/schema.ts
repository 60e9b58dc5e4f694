/**
 * The registry's one schema, as numbered migrations written side by side for both dialects
 * (SQLite 3.35+ and PostgreSQL 12+). A migration is applied once, in order, inside the same
 * transaction that records it in `schema_migrations`; opening a registry applies whatever is
 * missing while holding the database's write lock (SQLite `BEGIN IMMEDIATE`, PostgreSQL
 * `pg_advisory_xact_lock`), so two processes opening the same registry at once are safe.
 * Never edit a published migration: add the next one.
 *
 * Device IDs and serials compare bytewise in both (SQLite BINARY, PostgreSQL COLLATE "C"), so
 * keyset pagination gives the same pages whatever the database's locale.
 * There is deliberately no index leading with (batch, state): it would let a planner with stale
 * statistics answer a compare-and-set by scanning every device of a state; the (batch, device_id)
 * index covers state, so counts still read only the index.
 * Representation: SQLite stores times as epoch milliseconds (INTEGER) and bytes as BLOB;
 * PostgreSQL uses timestamptz and bytea. The audit table is append-only, enforced by the database
 * itself (triggers), not only by this code, and hash-chained (migration 2, chain.ts): every row
 * carries prev_hash and hash, written by fleetguard in the transaction of the row; SQLite refuses
 * a row whose seq is not above the head (INSERT OR REPLACE, or a row without an explicit seq) or
 * that has no hash; PostgreSQL's seq is a plain key given by the writer and hash is NOT NULL
 * (upserts already fire the UPDATE trigger). A database owner can still drop the triggers: the
 * chain and its anchor are what notice that.
 * Migration 3 adds hub_registrations: one row per (hub, certificate serial), the hub's remote id
 * and status; every change of a row is also an audit row of its device (detail.hub, chain.ts), so
 * the table is re-derivable from the log like the others. Its (hub, batch, device_id, serial)
 * index serves listing and counts of one batch at one hub; (device_id, hub, serial) serves
 * verify's device-ID ranges.
 */
import { DEVICE_STATES, HUB_STATUSES } from "./types";

export interface Migration {
  version: number;
  name: string;
  sqlite: string;
  postgres: string;
  /**
   * A step in code that each backend runs after the SQL, in the same transaction: "audit-chain"
   * hashes the rows already there in seq order and appends one baseline row per device (chain.ts).
   */
  step?: "audit-chain";
}

const states = DEVICE_STATES.map((s) => `'${s}'`).join(", ");
const hubStatuses = HUB_STATUSES.map((s) => `'${s}'`).join(", ");

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "batches, devices, certificates, audit",
    sqlite: `
CREATE TABLE batches (
  name        TEXT PRIMARY KEY,
  model       TEXT NOT NULL,
  source      TEXT NOT NULL CHECK (source IN ('puf', 'injected')),
  spec        TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  deleted_at  INTEGER
);
CREATE TABLE devices (
  device_id   TEXT PRIMARY KEY,
  batch       TEXT NOT NULL REFERENCES batches(name),
  state       TEXT NOT NULL CHECK (state IN (${states})),
  reason      TEXT,
  public_key  BLOB,
  epoch       INTEGER,
  cert_serial TEXT,
  updated_at  INTEGER NOT NULL
);
CREATE INDEX devices_batch ON devices(batch, device_id, state);
CREATE TABLE certificates (
  serial            TEXT PRIMARY KEY,
  device_id         TEXT NOT NULL REFERENCES devices(device_id),
  batch             TEXT NOT NULL,
  issuer            TEXT NOT NULL,
  der               BLOB NOT NULL,
  not_before        INTEGER NOT NULL,
  not_after         INTEGER NOT NULL,
  issued_at         INTEGER NOT NULL,
  status            TEXT NOT NULL CHECK (status IN ('live', 'revoked')),
  revoked_at        INTEGER,
  revocation_reason TEXT
);
CREATE INDEX certificates_device ON certificates(device_id, status);
CREATE INDEX certificates_issuer ON certificates(issuer, status, serial);
CREATE INDEX certificates_batch ON certificates(batch, serial);
CREATE TABLE audit (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  at         INTEGER NOT NULL,
  batch      TEXT NOT NULL,
  device_id  TEXT NOT NULL,
  from_state TEXT,
  to_state   TEXT NOT NULL,
  reason     TEXT,
  detail     TEXT
);
CREATE INDEX audit_device ON audit(device_id, seq);
CREATE INDEX audit_batch ON audit(batch, seq);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit is append-only: DELETE refused'); END;
`,
    postgres: `
CREATE TABLE batches (
  name        text PRIMARY KEY,
  model       text NOT NULL,
  source      text NOT NULL CHECK (source IN ('puf', 'injected')),
  spec        text NOT NULL,
  created_at  timestamptz NOT NULL,
  updated_at  timestamptz NOT NULL,
  deleted_at  timestamptz
);
CREATE TABLE devices (
  device_id   text COLLATE "C" PRIMARY KEY,
  batch       text NOT NULL REFERENCES batches(name),
  state       text NOT NULL CHECK (state IN (${states})),
  reason      text,
  public_key  bytea,
  epoch       integer,
  cert_serial text,
  updated_at  timestamptz NOT NULL
);
CREATE INDEX devices_batch ON devices(batch, device_id) INCLUDE (state);
CREATE TABLE certificates (
  serial            text COLLATE "C" PRIMARY KEY,
  device_id         text COLLATE "C" NOT NULL REFERENCES devices(device_id),
  batch             text NOT NULL,
  issuer            text NOT NULL,
  der               bytea NOT NULL,
  not_before        timestamptz NOT NULL,
  not_after         timestamptz NOT NULL,
  issued_at         timestamptz NOT NULL,
  status            text NOT NULL CHECK (status IN ('live', 'revoked')),
  revoked_at        timestamptz,
  revocation_reason text
);
CREATE INDEX certificates_device ON certificates(device_id, status);
CREATE INDEX certificates_issuer ON certificates(issuer, status, serial);
CREATE INDEX certificates_batch ON certificates(batch, serial);
CREATE TABLE audit (
  seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at         timestamptz NOT NULL,
  batch      text NOT NULL,
  device_id  text NOT NULL,
  from_state text,
  to_state   text NOT NULL,
  reason     text,
  detail     jsonb
);
CREATE INDEX audit_device ON audit(device_id, seq);
CREATE INDEX audit_batch ON audit(batch, seq);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON audit
  FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
  FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
`,
  },
  {
    version: 2,
    name: "audit hash chain and recorded facts",
    step: "audit-chain",
    sqlite: `
ALTER TABLE audit ADD COLUMN public_key_sha256 TEXT;
ALTER TABLE audit ADD COLUMN epoch INTEGER;
ALTER TABLE audit ADD COLUMN cert_serial TEXT;
ALTER TABLE audit ADD COLUMN cert_sha256 TEXT;
ALTER TABLE audit ADD COLUMN cert_issuer TEXT;
ALTER TABLE audit ADD COLUMN revoke_reason TEXT;
ALTER TABLE audit ADD COLUMN revoke_at INTEGER;
ALTER TABLE audit ADD COLUMN baseline TEXT;
ALTER TABLE audit ADD COLUMN prev_hash TEXT;
ALTER TABLE audit ADD COLUMN hash TEXT;
CREATE TRIGGER audit_append_at_head BEFORE INSERT ON audit
  WHEN NEW.seq <= (SELECT COALESCE(MAX(seq), 0) FROM audit)
  BEGIN SELECT RAISE(ABORT, 'audit is append-only: INSERT at or below the head refused (INSERT OR REPLACE, or no explicit seq)'); END;
CREATE TRIGGER audit_hash_required BEFORE INSERT ON audit
  WHEN NEW.hash IS NULL OR NEW.prev_hash IS NULL
  BEGIN SELECT RAISE(ABORT, 'audit is append-only: a row without prev_hash and hash refused'); END;
`,
    postgres: `
ALTER TABLE audit ALTER COLUMN seq DROP IDENTITY;
ALTER TABLE audit ALTER COLUMN device_id TYPE text COLLATE "C";
ALTER TABLE audit
  ADD COLUMN public_key_sha256 text,
  ADD COLUMN epoch integer,
  ADD COLUMN cert_serial text,
  ADD COLUMN cert_sha256 text,
  ADD COLUMN cert_issuer text,
  ADD COLUMN revoke_reason text,
  ADD COLUMN revoke_at timestamptz,
  ADD COLUMN baseline text,
  ADD COLUMN prev_hash text,
  ADD COLUMN hash text;
`,
  },
  {
    version: 3,
    name: "hub registrations",
    sqlite: `
CREATE TABLE hub_registrations (
  hub        TEXT NOT NULL,
  device_id  TEXT NOT NULL REFERENCES devices(device_id),
  batch      TEXT NOT NULL,
  serial     TEXT NOT NULL REFERENCES certificates(serial),
  remote_id  TEXT,
  status     TEXT NOT NULL CHECK (status IN (${hubStatuses})),
  reason     TEXT,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (hub, serial)
);
CREATE INDEX hub_registrations_list ON hub_registrations(hub, batch, device_id, serial, status);
CREATE INDEX hub_registrations_device ON hub_registrations(device_id, hub, serial);
`,
    postgres: `
CREATE TABLE hub_registrations (
  hub        text COLLATE "C" NOT NULL,
  device_id  text COLLATE "C" NOT NULL REFERENCES devices(device_id),
  batch      text NOT NULL,
  serial     text COLLATE "C" NOT NULL REFERENCES certificates(serial),
  remote_id  text,
  status     text NOT NULL CHECK (status IN (${hubStatuses})),
  reason     text,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (hub, serial)
);
CREATE INDEX hub_registrations_list ON hub_registrations(hub, batch, device_id, serial) INCLUDE (status);
CREATE INDEX hub_registrations_device ON hub_registrations(device_id, hub, serial);
`,
  },
];

/** The SQLite update trigger of migration 1, dropped and created again while migration 2 hashes old rows. */
export const SQLITE_AUDIT_NO_UPDATE = `CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit is append-only: UPDATE refused'); END`;

export const LATEST_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

export const MIGRATIONS_TABLE = {
  sqlite: `CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`,
  postgres: `CREATE TABLE IF NOT EXISTS schema_migrations (
  version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)`,
};
