/**
 * Open the device registry (types.ts) at a location: a file path or `sqlite:PATH` opens SQLite
 * (the parent directory is created), `postgres://` or `postgresql://` opens PostgreSQL. Opening
 * applies the schema's missing migrations (schema.ts) under the database's write lock.
 *
 * Semantics shared by both backends, exactly:
 * - `apply(transitions, at)` validates every transition first (legal per TRANSITIONS; a transition
 *   to the same state is an allowed no-op that still applies what it carries: reason, publicKey,
 *   epoch, certificate, revoke), then applies them in order in ONE transaction. Each is a
 *   compare-and-set: the device must be in batch `batch` and in state `from`, else CONFLICT naming
 *   the device, the state it has and the one expected (NOT_FOUND for an unknown device), and the
 *   whole call is rolled back: nothing of it is written. Within a transition: `revoke` revokes
 *   every live certificate of the device (and clears certSerial); then `certificate` is inserted
 *   live and becomes certSerial (a serial already recorded is a CONFLICT); then a transition to
 *   `active` revokes with reason "superseded" every other live certificate of the device; then one
 *   audit row (from, to, reason, detail JSON, and the facts the transition carried: key hash,
 *   epoch, certificate serial, fingerprint and issuer, revocation) is appended, hash-chained onto
 *   the log's head in the same transaction (chain.ts). Every transition appends exactly one
 *   audit row. The device's `reason` is set by a change of state (null if none is given) and kept
 *   by a no-op that gives none.
 * - `addDevices(batch, ids)` declares devices pending (audit row from null to pending); devices
 *   already in the batch are left alone; a device of another live batch is refused (CONFLICT) and
 *   nothing is added; a device of a deleted batch moves to this one, pending again. Adding to an
 *   unknown batch is NOT_FOUND, to a deleted one CONFLICT.
 * - `putBatch` upserts (createdAt kept; a deleted batch declared again is live again);
 *   `markBatchDeleted` keeps the first deletion time.
 * - The audit table is append-only, enforced by the database (triggers refuse UPDATE and DELETE;
 *   SQLite also an INSERT at or below the head, i.e. INSERT OR REPLACE), and tamper-evident:
 *   `auditHead()` is the head to anchor elsewhere, `verify()` re-hashes the chain, checks an anchor
 *   and re-derives every device and certificate from the log (chain.ts).
 * - `applyHub(changes, at)` validates every change first (legal per HUB_TRANSITIONS, `from` null
 *   for no record; the same status is an allowed no-op; `detail.hub` is reserved, and `apply`
 *   refuses it too), then applies them in order in ONE transaction, all or none. Each is a
 *   compare-and-set on the (hub, serial) record's status: the device must exist (NOT_FOUND), be in
 *   `batch` (CONFLICT) and `serial` must be one of its certificates (NOT_FOUND); a record whose
 *   status is not `from` is CONFLICT naming hub, device, serial, the status found and the one
 *   expected. The record's remoteId is kept unless the change gives one; its reason is set by a
 *   change of status (null if none given) and kept by a no-op that gives none. Each change appends
 *   one audit row for the device: from = to = the device's current state, reason = change.reason,
 *   detail = canonical JSON of { ...change.detail, hub: { name, serial, from, to, remoteId } }
 *   (remoteId as stored after the change); `verify` re-derives every hub record from these rows.
 *   `hubRegistrations` lists in (deviceId, serial) order, keyset paged by `after`; `hubCounts`
 *   has all six statuses, zeros included; `hubs()` the names with records, sorted.
 * - `counts` has all eight states, zeros included. Lists are ordered by their key (device ID,
 *   certificate serial, audit seq) and paginate by keyset (`after` / `afterSeq`).
 * - Times are stored in UTC (epoch ms in SQLite, timestamptz in PostgreSQL), returned as Date;
 *   bytes are BLOB / bytea, returned as Buffer.
 */
import * as path from "node:path";
import { invalid } from "../errors";
import { redactUrl } from "./common";
// static imports: a dynamic import() breaks under tsx's CommonJS hook (the provider process) and a
// lazy require() of a .ts file breaks under vitest; both drivers load in a few tens of ms
import { openPostgres } from "./postgres";
import { SqliteRegistry } from "./sqlite";
import type { Registry } from "./types";

export { formatAnchor, GENESIS, integrityError, parseAnchor } from "./chain";
export * from "./types";
export { redactUrl };

export interface OpenOptions {
  /** SQLite: FULL (default) or NORMAL; see sqlite.ts */
  synchronous?: "FULL" | "NORMAL";
  /** SQLite: how long to wait for another process's write lock (ms) */
  busyTimeoutMs?: number;
  /** SQLite: page cache in MiB (default 64) */
  cacheMiB?: number;
  /** PostgreSQL: connections in the pool (default 4) */
  poolSize?: number;
  /** PostgreSQL: connection timeout (ms, default 10 s) */
  connectTimeoutMs?: number;
}

const WANT = "a file path, sqlite:PATH, or postgres://user@host:port/database";

export type RegistryKind = { kind: "sqlite"; file: string } | { kind: "postgres"; url: string };

/** Parse a registry location; invalid input names the field `registry`. */
export function parseLocation(location: string): RegistryKind {
  if (typeof location !== "string" || location.trim() === "") throw invalid("registry", location, WANT);
  if (/^postgres(ql)?:\/\//i.test(location)) {
    let u: URL;
    try {
      u = new URL(location);
    } catch {
      throw invalid("registry", redactUrl(location), WANT);
    }
    if (!u.hostname) throw invalid("registry", redactUrl(location), `${WANT} (a host is missing)`);
    if (u.pathname.length <= 1)
      throw invalid("registry", redactUrl(location), `${WANT} (a database is missing)`);
    return { kind: "postgres", url: location };
  }
  if (/^sqlite:/i.test(location)) {
    const file = location.slice("sqlite:".length).replace(/^\/\/(?=\/)/, "");
    if (!file) throw invalid("registry", location, WANT);
    return { kind: "sqlite", file: path.resolve(file) };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) throw invalid("registry", redactUrl(location), WANT);
  return { kind: "sqlite", file: path.resolve(location) };
}

export async function openRegistry(location: string, opts: OpenOptions = {}): Promise<Registry> {
  const where = parseLocation(location);
  if (where.kind === "sqlite") return new SqliteRegistry(where.file, opts);
  return openPostgres(where.url, opts);
}
