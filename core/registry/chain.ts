/**
 * The audit log's hash chain and the verifier both registry backends share (brief, rule 6).
 *
 * Every audit row carries `prev_hash` (the hash of the row before it; GENESIS for the first) and
 * `hash` = SHA-256 over a canonical encoding of the row: the JSON array, in this order, of
 * `["fleetguard.audit.v1", seq, at (epoch ms), batch, device_id, from_state, to_state, reason,
 * detail (canonical JSON: keys sorted, no spaces), public_key_sha256, epoch, cert_serial,
 * cert_sha256, cert_issuer, revoke_reason, revoke_at (epoch ms), baseline, prev_hash]`, every
 * absent value `null`. JSON.stringify of strings and integers is deterministic, so the encoding
 * is the same whichever backend stored the row (SQLite text, PostgreSQL jsonb, which reorders
 * keys, both canonicalised the same way). A row changed, inserted or removed breaks the chain at
 * that row; a log rewritten and hashed again from the start is caught by an anchor (a seq and its
 * hash kept elsewhere: the batch's outputs in Pulumi state).
 *
 * The rows also carry the facts each transition recorded (the key's SHA-256, the epoch, the new
 * certificate's serial, fingerprint and issuer, the revocation), so that replaying a device's rows
 * in order re-derives its state, key and certificates with the exact semantics of `apply`
 * (index.ts) and the verifier can compare them with the devices and certificates tables. Rows
 * written before migration 2 carry no facts; migration 2 appended one `baseline` row per device
 * (its state, key, epoch, current serial and every certificate as the tables held them then), from
 * which the replay starts.
 *
 * A hub registration change (`applyHub`) is an audit row of its device that changes nothing of
 * the device: from_state = to_state = the device's state, no facts, its reason the change's, and
 * a detail whose reserved key `hub` is `{ name, serial, from, to, remoteId }` (remoteId as the
 * record holds it after the change). The device replay skips these rows (hubOf); the hub replay
 * (deriveHubs) re-derives every (hub, serial) record from them alone, and the verifier compares
 * them with the hub_registrations table. The encoding is the one above: detail was hashed already.
 *
 * The verifier reads in pages within one snapshot: pass 1 re-hashes the log in seq order (O(1)
 * memory), pass 2 walks device-ID ranges bounded by a number of rows of each table, so memory is
 * bounded by a page whatever the registry's size.
 */
import * as crypto from "node:crypto";
import { FleetError, invalid } from "../errors";
import type {
  Anchor,
  AuditHead,
  CertificateStatus,
  HubChange,
  Transition,
  VerifyFinding,
  VerifyOptions,
  VerifyReport,
} from "./types";

/** The prev_hash of the first row of every log. */
export const GENESIS = "0".repeat(64);
/** The first element of every hashed row's array. */
export const AUDIT_DOMAIN = "fleetguard.audit.v1";
const DOMAIN = AUDIT_DOMAIN;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** One-shot (crypto.hash): for the short inputs hashed per row, about twice createHash's speed. */
export const sha256Hex = (b: Uint8Array | string): string => crypto.hash("sha256", b);

/** JSON with object keys sorted (recursively), so equal values encode to equal text. */
export function canonicalJson(v: unknown): string {
  return JSON.stringify(sortKeys(v));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(o).sort()) out[k] = sortKeys(o[k]);
    return out;
  }
  return v;
}

/** An audit row as hashed and replayed: times in epoch ms, detail and baseline as canonical JSON. */
export interface ChainRow {
  seq: number;
  at: number;
  batch: string;
  deviceId: string;
  from: string | null;
  to: string;
  reason: string | null;
  detail: string | null;
  publicKeySha256: string | null;
  epoch: number | null;
  certSerial: string | null;
  certSha256: string | null;
  certIssuer: string | null;
  revokeReason: string | null;
  revokeAt: number | null;
  /** JSON array of BaselineCert, only in the rows migration 2 appended */
  baseline: string | null;
  prevHash: string | null;
  hash: string | null;
}

/** A row before it is chained: what a write knows. */
export type NewRow = Omit<ChainRow, "seq" | "prevHash" | "hash">;

/** A row's chained content in its one fixed order: what the hash covers, and the audit columns' order. */
export function chainValues(r: Omit<ChainRow, "hash">): unknown[] {
  return [
    r.seq,
    r.at,
    r.batch,
    r.deviceId,
    r.from,
    r.to,
    r.reason,
    r.detail,
    r.publicKeySha256,
    r.epoch,
    r.certSerial,
    r.certSha256,
    r.certIssuer,
    r.revokeReason,
    r.revokeAt,
    r.baseline,
    r.prevHash,
  ];
}

export function rowHash(r: Omit<ChainRow, "hash">): string {
  // the array of chainValues, written out: the verifier hashes every row of the log on every call
  return crypto.hash(
    "sha256",
    JSON.stringify([
      DOMAIN,
      r.seq,
      r.at,
      r.batch,
      r.deviceId,
      r.from,
      r.to,
      r.reason,
      r.detail,
      r.publicKeySha256,
      r.epoch,
      r.certSerial,
      r.certSha256,
      r.certIssuer,
      r.revokeReason,
      r.revokeAt,
      r.baseline,
      r.prevHash,
    ]),
  );
}

/** Give rows their seqs and hashes after `head` (in place); returns them. */
export function chain(head: { seq: number; hash: string }, rows: readonly NewRow[]): ChainRow[] {
  let { seq, hash } = head;
  // the rows are this call's own: completed in place (no copies on the write path)
  return rows.map((r) => {
    const c = r as ChainRow;
    c.seq = ++seq;
    c.prevHash = hash;
    hash = rowHash(c);
    c.hash = hash;
    return c;
  });
}

const NO_FACTS = {
  publicKeySha256: null,
  epoch: null,
  certSerial: null,
  certSha256: null,
  certIssuer: null,
  revokeReason: null,
  revokeAt: null,
  baseline: null,
} as const;

/** The audit row of a transition (validated already), with the facts it records. */
export function transitionRow(t: Transition, at: number, detail: string | null): NewRow {
  return {
    at,
    batch: t.batch,
    deviceId: t.deviceId,
    from: t.from,
    to: t.to,
    reason: t.reason ?? null,
    detail: detail === null ? null : canonicalJson(JSON.parse(detail)),
    publicKeySha256: t.publicKey ? sha256Hex(t.publicKey) : null,
    epoch: t.epoch ?? null,
    certSerial: t.certificate?.serial ?? null,
    certSha256: t.certificate ? sha256Hex(t.certificate.der) : null,
    certIssuer: t.certificate?.issuer ?? null,
    revokeReason: t.revoke?.reason ?? null,
    revokeAt: t.revoke ? t.revoke.at.getTime() : null,
    baseline: null,
  };
}

/** The audit row of a device declared in, or moved into, a batch (addDevices). */
export function declareRow(
  at: number,
  batch: string,
  deviceId: string,
  from: string | null,
  reason: string | null,
  detail: string | null,
): NewRow {
  return {
    at,
    batch,
    deviceId,
    from,
    to: "pending",
    reason,
    detail: detail === null ? null : canonicalJson(JSON.parse(detail)),
    ...NO_FACTS,
  };
}

/** The audit row of a hub registration change (validated; the device is in `state`; `detail` from detailJson). */
export function hubRow(
  c: HubChange,
  at: number,
  state: string,
  remoteId: string | null,
  detail: string | null,
): NewRow {
  const base = detail === null ? {} : (JSON.parse(detail) as Record<string, unknown>);
  const hub = { name: c.hub, serial: c.serial, from: c.from, to: c.to, remoteId };
  return {
    at,
    batch: c.batch,
    deviceId: c.deviceId,
    from: state,
    to: state,
    reason: c.reason ?? null,
    detail: canonicalJson({ ...base, hub }),
    ...NO_FACTS,
  };
}

/** What a hub row says (detail.hub), or null for a row that is not one. */
export interface HubFact {
  name: string;
  serial: string;
  from: string | null;
  to: string;
  remoteId: string | null;
}

/**
 * The hub change a row records, or null if it is none: a row from a state to the same state, with
 * no facts and a detail whose `hub` is an object naming a hub and a serial (apply refuses
 * `detail.hub`, so no transition looks like one).
 */
export function hubOf(r: ChainRow): HubFact | null {
  if (r.detail === null || r.from !== r.to || r.baseline !== null) return null;
  if (r.certSerial !== null || r.publicKeySha256 !== null || r.revokeReason !== null || r.epoch !== null)
    return null;
  let h: unknown;
  try {
    h = (JSON.parse(r.detail) as Record<string, unknown>)?.hub;
  } catch {
    return null;
  }
  if (h === null || typeof h !== "object" || Array.isArray(h)) return null;
  const o = h as Record<string, unknown>;
  if (typeof o.name !== "string" || typeof o.serial !== "string" || typeof o.to !== "string") return null;
  return {
    name: o.name,
    serial: o.serial,
    from: typeof o.from === "string" ? o.from : null,
    to: o.to,
    remoteId: typeof o.remoteId === "string" ? o.remoteId : null,
  };
}

/** A hub registration as the hub_registrations table holds it. */
export interface TableHub {
  hub: string;
  deviceId: string;
  batch: string;
  serial: string;
  remoteId: string | null;
  status: string;
  reason: string | null;
}

/** The key of a hub record in the maps below. */
const hubKey = (hub: string, serial: string) => JSON.stringify([hub, serial]);

/** Replay the hub rows of one device (seq order) with the semantics of applyHub (common.ts nextHub). */
export function deriveHubs(rows: readonly ChainRow[]): Map<string, TableHub> {
  const out = new Map<string, TableHub>();
  for (const r of rows) {
    const h = hubOf(r);
    if (!h) continue;
    const k = hubKey(h.name, h.serial);
    const prev = out.get(k);
    out.set(k, {
      hub: h.name,
      deviceId: r.deviceId,
      batch: r.batch,
      serial: h.serial,
      remoteId: h.remoteId,
      status: h.to,
      reason: h.from !== h.to ? r.reason : (r.reason ?? prev?.reason ?? null),
    });
  }
  return out;
}

/** Every difference between a device's hub_registrations rows and what its audit rows derive. */
export function compareHubs(
  deviceId: string,
  derived: ReadonlyMap<string, TableHub>,
  table: readonly TableHub[],
): VerifyFinding[] {
  const out: VerifyFinding[] = [];
  const add = (
    h: { hub: string; serial: string },
    field: string,
    t: string | null,
    a: string | null,
    what = "",
  ) =>
    out.push({
      kind: "hub",
      hub: h.hub,
      deviceId,
      serial: h.serial,
      field,
      table: t,
      audit: a,
      message: `hub ${h.hub}, certificate ${h.serial} of device ${deviceId}: ${field}: table ${t ?? "none"}, audit ${a ?? "none"}${what}`,
    });
  const seen = new Set<string>();
  for (const t of table) {
    const k = hubKey(t.hub, t.serial);
    seen.add(k);
    const a = derived.get(k);
    if (!a) {
      add(
        t,
        "registration",
        t.status,
        null,
        " (a hub registration the audit log never recorded for this device)",
      );
      continue;
    }
    const fields: Array<[string, string | null, string | null]> = [
      ["status", t.status, a.status],
      ["remoteId", t.remoteId, a.remoteId],
      ["reason", t.reason, a.reason],
      ["batch", t.batch, a.batch],
    ];
    for (const [f, tv, av] of fields) if (tv !== av) add(t, f, tv, av);
  }
  for (const [k, a] of derived)
    if (!seen.has(k))
      add(a, "registration", null, a.status, " (missing from the hub_registrations table for this device)");
  return out;
}

/** What a baseline row records of each certificate of its device. */
export interface BaselineCert {
  serial: string;
  batch: string;
  issuer: string;
  sha256: string;
  status: CertificateStatus;
  revokedAt: number | null;
  reason: string | null;
}

/** A device as the devices table holds it, reduced to what the audit can re-derive. */
export interface TableDevice {
  deviceId: string;
  batch: string;
  state: string;
  reason: string | null;
  publicKeySha256: string | null;
  epoch: number | null;
  certSerial: string | null;
}

/** A certificate as the certificates table holds it (fingerprint instead of DER). */
export interface TableCert {
  serial: string;
  deviceId: string;
  batch: string;
  issuer: string;
  sha256: string;
  status: string;
  revokedAt: number | null;
  reason: string | null;
}

/** The baseline row of one device, from the tables as they are (migration 2). */
export function baselineRow(at: number, d: TableDevice, certs: readonly TableCert[]): NewRow {
  const list: BaselineCert[] = [...certs]
    .sort((a, b) => cmp(a.serial, b.serial))
    .map((c) => ({
      serial: c.serial,
      batch: c.batch,
      issuer: c.issuer,
      sha256: c.sha256,
      status: c.status as CertificateStatus,
      revokedAt: c.revokedAt,
      reason: c.reason,
    }));
  return {
    at,
    batch: d.batch,
    deviceId: d.deviceId,
    from: d.state,
    to: d.state,
    reason: d.reason,
    detail: null,
    publicKeySha256: d.publicKeySha256,
    epoch: d.epoch,
    certSerial: d.certSerial,
    certSha256: null,
    certIssuer: null,
    revokeReason: null,
    revokeAt: null,
    baseline: canonicalJson(list),
  };
}

interface DerivedCert {
  batch: string;
  issuer: string | null;
  sha256: string | null;
  status: CertificateStatus;
  revokedAt: number | null;
  reason: string | null;
}

/** A device as its audit rows say it is. */
export interface Derived {
  batch: string;
  state: string;
  reason: string | null;
  publicKeySha256: string | null;
  epoch: number | null;
  certSerial: string | null;
  certs: Map<string, DerivedCert>;
}

/**
 * Replay one device's rows (in seq order) with the semantics of addDevices and apply. A row from
 * null declares the device; a row into another batch is a move from a deleted batch (the device
 * starts over, its certificates stay as they were); a baseline row sets everything it lists.
 */
export function replay(rows: readonly ChainRow[]): Derived | undefined {
  let d: Derived | undefined;
  for (const r of rows) {
    // a hub registration row changes nothing of the device (deriveHubs reads it)
    if (r.detail !== null && hubOf(r)) continue;
    if (r.baseline !== null) {
      const certs = new Map<string, DerivedCert>();
      let list: BaselineCert[] = [];
      try {
        list = JSON.parse(r.baseline) as BaselineCert[];
      } catch {
        // an unparsable baseline is a changed row; pass 1 reports it
      }
      for (const c of Array.isArray(list) ? list : [])
        certs.set(c.serial, {
          batch: c.batch,
          issuer: c.issuer,
          sha256: c.sha256,
          status: c.status,
          revokedAt: c.revokedAt,
          reason: c.reason,
        });
      d = {
        batch: r.batch,
        state: r.to,
        reason: r.reason,
        publicKeySha256: r.publicKeySha256,
        epoch: r.epoch,
        certSerial: r.certSerial,
        certs,
      };
      continue;
    }
    if (r.from === null || !d) {
      d = {
        batch: r.batch,
        state: r.to,
        reason: r.reason,
        publicKeySha256: null,
        epoch: null,
        certSerial: null,
        certs: d?.certs ?? new Map(),
      };
      continue;
    }
    if (r.batch !== d.batch) {
      // the device row starts over (reason cleared); the row's reason says why it moved
      d = {
        ...d,
        batch: r.batch,
        state: r.to,
        reason: null,
        publicKeySha256: null,
        epoch: null,
        certSerial: null,
      };
      continue;
    }
    d.reason = d.state !== r.to ? r.reason : (r.reason ?? d.reason);
    d.state = r.to;
    if (r.publicKeySha256 !== null) d.publicKeySha256 = r.publicKeySha256;
    if (r.epoch !== null) d.epoch = r.epoch;
    if (r.revokeReason !== null) {
      for (const c of d.certs.values())
        if (c.status === "live") {
          c.status = "revoked";
          c.revokedAt = r.revokeAt;
          c.reason = r.revokeReason;
        }
      d.certSerial = null;
    }
    if (r.certSerial !== null) {
      d.certs.set(r.certSerial, {
        batch: r.batch,
        issuer: r.certIssuer,
        sha256: r.certSha256,
        status: "live",
        revokedAt: null,
        reason: null,
      });
      d.certSerial = r.certSerial;
    }
    if (r.to === "active")
      for (const [serial, c] of d.certs)
        if (c.status === "live" && serial !== d.certSerial) {
          c.status = "revoked";
          c.revokedAt = r.at;
          c.reason = "superseded";
        }
  }
  return d;
}

/** Code-point order (= UTF-8 byte order, the registry's collation), not JS's UTF-16 order. */
export function cmp(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800) x += x < 0xe000 ? 0x2000 : -0x800;
    if (y >= 0xd800) y += y < 0xe000 ? 0x2000 : -0x800;
    return x - y;
  }
  return a.length - b.length;
}

const time = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
const show = (v: string | number | null) => (v === null ? null : String(v));

/** Every difference between a device's tables and its audit rows. */
export function compareDevice(
  deviceId: string,
  derived: Derived | undefined,
  table: TableDevice | undefined,
  certs: readonly TableCert[],
): VerifyFinding[] {
  const out: VerifyFinding[] = [];
  const dev = (field: string, t: string | null, a: string | null, what: string) =>
    out.push({
      kind: "device",
      deviceId,
      field,
      table: t,
      audit: a,
      message: `device ${deviceId}: ${field}: table ${t ?? "none"}, audit ${a ?? "none"}${what}`,
    });
  if (!derived && table) dev("device", table.state, null, " (a device the audit log never recorded)");
  if (derived && !table) dev("device", null, derived.state, " (a device missing from the devices table)");
  if (derived && table) {
    const fields: Array<[string, string | number | null, string | number | null]> = [
      ["batch", table.batch, derived.batch],
      ["state", table.state, derived.state],
      ["reason", table.reason, derived.reason],
      ["publicKey.sha256", table.publicKeySha256, derived.publicKeySha256],
      ["epoch", table.epoch, derived.epoch],
      ["certSerial", table.certSerial, derived.certSerial],
    ];
    for (const [f, t, a] of fields) if (t !== a) dev(f, show(t), show(a), "");
  }
  const seen = new Set<string>();
  const cert = (serial: string, field: string, t: string | null, a: string | null, what = "") =>
    out.push({
      kind: "certificate",
      deviceId,
      serial,
      field,
      table: t,
      audit: a,
      message: `certificate ${serial} of device ${deviceId}: ${field}: table ${t ?? "none"}, audit ${a ?? "none"}${what}`,
    });
  for (const c of certs) {
    seen.add(c.serial);
    const a = derived?.certs.get(c.serial);
    if (!a) {
      cert(
        c.serial,
        "certificate",
        c.status,
        null,
        " (a certificate the audit log never recorded for this device)",
      );
      continue;
    }
    const fields: Array<[string, string | null, string | null]> = [
      ["status", c.status, a.status],
      ["sha256", c.sha256, a.sha256],
      ["issuer", c.issuer, a.issuer],
      ["batch", c.batch, a.batch],
      ["revokedAt", time(c.revokedAt), time(a.revokedAt)],
      ["revocationReason", c.reason, a.reason],
    ];
    for (const [f, t, v] of fields) if (t !== v) cert(c.serial, f, t, v);
  }
  if (derived)
    for (const [serial, a] of derived.certs)
      if (!seen.has(serial))
        cert(serial, "certificate", null, a.status, " (missing from the certificates table for this device)");
  return out;
}

/** A row of the chain as [seq, prev_hash, hash, the text its hash should cover] (VerifySource.chainText). */
export type ChainText = [number, string | null, string | null, string];

/** What a backend gives the verifier: reads within one snapshot, in pages. */
export interface VerifySource {
  countAudit(): Promise<number>;
  /** rows with seq > afterSeq, in seq order */
  chainPage(afterSeq: number, limit: number): Promise<ChainRow[]>;
  /**
   * Optional, the same rows as [seq, prev_hash, hash, text]: `text` the database's own rendering of
   * the JSON array the row's hash covers (SQLite json_array), so that pass 1 makes no row objects.
   * Only a shortcut: a row whose text does not hash to its hash is read again with chainPage and
   * judged by rowHash, so a rendering that differs from JSON.stringify costs time, never a finding.
   */
  chainText?(afterSeq: number, limit: number): Promise<ChainText[]>;
  /** the device ID `offset` rows past `after` in a table's device-ID order, or null if fewer remain */
  rangeEnd(
    table: "devices" | "audit" | "certificates" | "hub_registrations",
    after: string,
    offset: number,
  ): Promise<string | null>;
  /** rows with after < device_id <= upTo (no upper bound when null), in device ID (then seq) order */
  devices(after: string, upTo: string | null): Promise<TableDevice[]>;
  /** audit rows as the replay needs them: detail only for rows that may be hub rows (null otherwise) */
  audit(after: string, upTo: string | null): Promise<ChainRow[]>;
  certificates(after: string, upTo: string | null): Promise<TableCert[]>;
  hubs(after: string, upTo: string | null): Promise<TableHub[]>;
}

/**
 * An anchor as text: `SEQ:HASH`, or `SEQ:HASH:TABLES` with a verified checkpoint (Anchor): how a
 * batch's outputs and `fleet registry verify --anchor` carry it.
 */
export function formatAnchor(h: Anchor): string {
  return h.tables === undefined ? `${h.seq}:${h.hash}` : `${h.seq}:${h.hash}:${h.tables}`;
}

/** Parse `SEQ:HASH` or `SEQ:HASH:TABLES`; bad input names `field`. */
export function parseAnchor(v: unknown, field = "anchor"): Anchor {
  const m = typeof v === "string" ? /^(\d{1,15}):([0-9a-f]{64})(?::([0-9a-f]{64}))?$/.exec(v) : null;
  if (!m)
    throw invalid(
      field,
      v,
      "SEQ:HASH, a seq and a 64-digit lowercase hex SHA-256 (the batch's audit head), optionally :TABLES (another 64 hex digits, its verified checkpoint)",
    );
  return { seq: Number(m[1]), hash: m[2]!, ...(m[3] !== undefined ? { tables: m[3] } : {}) };
}

/**
 * The error for a report that is not ok (for callers that must stop, such as a preview): INTEGRITY,
 * the count, the first few findings, and what to run for all of them.
 */
export function integrityError(report: VerifyReport, location: string, shown = 3): FleetError {
  const first = report.findings.slice(0, shown).map((f) => f.message);
  const more = report.count - first.length;
  return new FleetError(
    "INTEGRITY",
    `registry: got ${report.count} difference${report.count === 1 ? "" : "s"} from its audit log (${first.join("; ")}${more > 0 ? `; and ${more} more` : ""}), ` +
      `want none: it was changed outside fleetguard; \`fleet registry verify --registry ${location}\` lists them all`,
    "registry",
  );
}

export const PAGE = { chain: 2000, devices: 1000, audit: 5000, certificates: 2000, hub_registrations: 2000 };

export function checkVerifyOptions(opts: VerifyOptions | undefined): VerifyOptions {
  const o = opts ?? {};
  if (typeof o !== "object")
    throw invalid("opts", o, "{ batch?, anchor?, onProgress?, maxFindings?, thread? }");
  if (o.batch !== undefined && (typeof o.batch !== "string" || o.batch === ""))
    throw invalid("opts.batch", o.batch, "a batch name");
  if (o.anchor !== undefined) {
    const a = o.anchor;
    if (a === null || typeof a !== "object") throw invalid("opts.anchor", a, "{ seq, hash }");
    if (!Number.isSafeInteger(a.seq) || a.seq < 0) throw invalid("opts.anchor.seq", a.seq, "an integer >= 0");
    if (typeof a.hash !== "string" || !SHA256_HEX.test(a.hash))
      throw invalid("opts.anchor.hash", a.hash, "a SHA-256, 64 lowercase hex digits");
    if (a.tables !== undefined && (typeof a.tables !== "string" || !SHA256_HEX.test(a.tables)))
      throw invalid("opts.anchor.tables", a.tables, "a SHA-256, 64 lowercase hex digits (tablesDigest)");
  }
  if (o.onProgress !== undefined && typeof o.onProgress !== "function")
    throw invalid("opts.onProgress", o.onProgress, "a function (done, total)");
  if (o.maxFindings !== undefined && !(Number.isInteger(o.maxFindings) && o.maxFindings >= 0))
    throw invalid("opts.maxFindings", o.maxFindings, "an integer >= 0");
  if (o.thread !== undefined && typeof o.thread !== "boolean")
    throw invalid("opts.thread", o.thread, "a boolean");
  return o;
}

/**
 * The digest of the tables a verify compares with the log: SHA-256 over a domain, the batch the
 * verify was of (null: all), the head it was taken at, and one SHA-256 per table over its rows as
 * the verifier reads them (TableDevice, TableCert with the DER's SHA-256, TableHub: every field the
 * comparison reads, and nothing else), each row a JSON array on a line of its own, in device-ID
 * order (then serial; then hub and serial), which is the order of the verifier's ranges.
 * JSON arrays of strings, integers and null joined by newlines are an injective encoding.
 */
class TablesDigest {
  private readonly h = {
    devices: crypto.createHash("sha256"),
    certificates: crypto.createHash("sha256"),
    hubs: crypto.createHash("sha256"),
  };
  devices(ds: readonly TableDevice[]): void {
    const h = this.h.devices;
    for (const d of ds)
      h.update(
        `${JSON.stringify([d.deviceId, d.batch, d.state, d.reason, d.publicKeySha256, d.epoch, d.certSerial])}\n`,
      );
  }
  certificates(cs: readonly TableCert[]): void {
    const h = this.h.certificates;
    for (const c of cs)
      h.update(
        `${JSON.stringify([c.serial, c.deviceId, c.batch, c.issuer, c.sha256, c.status, c.revokedAt, c.reason])}\n`,
      );
  }
  hubs(hs: readonly TableHub[]): void {
    const h = this.h.hubs;
    for (const x of hs)
      h.update(`${JSON.stringify([x.hub, x.deviceId, x.batch, x.serial, x.remoteId, x.status, x.reason])}\n`);
  }
  digest(batch: string | undefined, head: AuditHead): string {
    return sha256Hex(
      JSON.stringify([
        TABLES_DOMAIN,
        batch ?? null,
        head.seq,
        head.hash,
        this.h.devices.digest("hex"),
        this.h.certificates.digest("hex"),
        this.h.hubs.digest("hex"),
      ]),
    );
  }
}
const TABLES_DOMAIN = "fleetguard.verify.tables.v1";

/** The devices a verify of `batch` counts in one range (the ones its comparison would not skip). */
function counted(batch: string | undefined, ds: readonly TableDevice[], hs: readonly TableHub[]): number {
  if (batch === undefined) return new Set([...ds.map((d) => d.deviceId), ...hs.map((h) => h.deviceId)]).size;
  const ids = new Set<string>();
  for (const d of ds) if (d.batch === batch) ids.add(d.deviceId);
  for (const h of hs) if (h.batch === batch) ids.add(h.deviceId);
  return ids.size;
}

/**
 * Pass 1 (the chain and the anchor), then pass 2 (every device re-derived and compared), or, when
 * the anchor carries a verified checkpoint and the log still ends at its row, the checkpoint's
 * tables digest instead of pass 2.
 *
 * Why the checkpoint is sound (threat model: someone who can write the database, SQLite file or
 * PostgreSQL role, but not the Pulumi state nor fleetguard's code). A verify's report is a
 * deterministic function of what it reads: the audit log and the three tables. The checkpoint
 * (Anchor.tables) is the digest of the tables a verify read when its report was ok, at the head it
 * read (seq, hash), for the same batch. It lives only outside the database, with the head, in the
 * batch's outputs in Pulumi state: the database holds nothing the verifier takes on trust, so there
 * is no stored checkpoint to forge, roll back or delete. A later verify always re-hashes the whole
 * chain (pass 1: every row's content and every link, so an edited, inserted, removed or reordered
 * log row is found exactly as before) and always reads every row of every table and digests it.
 * Only when the chain is intact, its last row is the anchor's row with the anchor's hash (so the
 * log is the one the checkpoint's verify replayed, by the chain's collision resistance) and the
 * tables' digest equals the checkpoint (so are the tables) is pass 2 skipped: it would re-derive
 * the same devices from the same rows and compare them with the same table rows, and return ok
 * again. Any difference (a device, certificate or hub row edited, added or removed; a log row
 * appended by anyone, this batch's next run included) makes the verify replay in full, which
 * reports what differs as it always did. What the checkpoint saves is the replay (reading the log
 * a second time in device order and re-deriving every device), not the reading: a change to any
 * row is found by every verify, not by some later one.
 * What it does not cover, as before: someone who can also write the Pulumi state (they can write
 * any anchor), and a log extended with rows hashed correctly after the anchor, which the replay
 * judges on their own (they must still derive the tables).
 */
export async function runVerify(src: VerifySource, opts: VerifyOptions): Promise<VerifyReport> {
  const max = opts.maxFindings ?? 10_000;
  const findings: VerifyFinding[] = [];
  let count = 0;
  const add = (f: VerifyFinding) => {
    count++;
    if (findings.length < max) findings.push(f);
  };
  const rows = await src.countAudit();
  const total = 2 * rows;
  let done = 0;
  const progress = (n: number) => {
    done += n;
    opts.onProgress?.(Math.min(done, total), total);
  };

  // pass 1: the chain, in seq order
  let prev = GENESIS;
  let broken = false;
  let head = { seq: 0, hash: GENESIS };
  const anchor = opts.anchor;
  let anchorSeen = anchor?.seq === 0;
  if (anchor && anchor.seq === 0 && anchor.hash !== GENESIS)
    add({
      kind: "anchor",
      seq: 0,
      field: "hash",
      stored: GENESIS,
      anchor: anchor.hash,
      message: `anchor 0: hash: the empty log is ${GENESIS}, the anchor says ${anchor.hash}`,
    });
  for (let after = 0; ; ) {
    const texts = src.chainText ? await src.chainText(after, PAGE.chain) : undefined;
    // without chainText, or where a text does not hash to its row's hash, the rows themselves
    let page: ChainRow[] | undefined;
    if (texts) {
      let i = 0;
      for (; i < texts.length; i++) {
        const [seq, prevHash, hash, text] = texts[i]!;
        if (broken || prevHash !== prev || hash === null || crypto.hash("sha256", text) !== hash) break;
        if (anchor && seq === anchor.seq) {
          anchorSeen = true;
          if (hash !== anchor.hash) break;
        }
        prev = hash;
        head = { seq, hash };
      }
      if (i < texts.length) page = await src.chainPage(texts[i - 1]?.[0] ?? after, PAGE.chain - i);
    } else page = await src.chainPage(after, PAGE.chain);
    for (const r of page ?? []) {
      if (!broken) {
        if (r.prevHash !== prev) {
          broken = true;
          add({
            kind: "chain",
            seq: r.seq,
            field: "prev_hash",
            stored: r.prevHash,
            expected: prev,
            message: `audit row ${r.seq}: prev_hash: stored ${r.prevHash ?? "none"}, the previous row's hash is ${prev} (a row before it was removed, inserted or rewritten)`,
          });
        } else {
          const again = rowHash(r);
          if (r.hash !== again) {
            broken = true;
            add({
              kind: "chain",
              seq: r.seq,
              field: "hash",
              stored: r.hash,
              expected: again,
              message: `audit row ${r.seq} (device ${r.deviceId}): hash: stored ${r.hash ?? "none"}, its content hashes to ${again} (the row was changed after it was written)`,
            });
          }
        }
      }
      if (anchor && r.seq === anchor.seq) {
        anchorSeen = true;
        if (r.hash !== anchor.hash)
          add({
            kind: "anchor",
            seq: r.seq,
            field: "hash",
            stored: r.hash,
            anchor: anchor.hash,
            message: `anchor ${anchor.seq}: hash: the log holds ${r.hash ?? "none"}, the anchor says ${anchor.hash} (the log was rewritten up to the anchor)`,
          });
      }
      prev = r.hash ?? "";
      head = { seq: r.seq, hash: r.hash ?? "" };
    }
    const n = texts ? texts.length : page!.length;
    progress(n);
    if (n < PAGE.chain) break;
    after = texts ? texts[n - 1]![0] : page![n - 1]!.seq;
  }
  if (anchor && !anchorSeen)
    add({
      kind: "anchor",
      seq: anchor.seq,
      field: "seq",
      stored: null,
      anchor: anchor.hash,
      message: `anchor ${anchor.seq}: seq: the log has no such row (head ${head.seq}), the anchor says it holds ${anchor.hash} (rows were removed)`,
    });
  const report = (devices: number, mode: VerifyReport["mode"], checkpoint: string | undefined) => ({
    ok: count === 0,
    count,
    findings,
    truncated: count > findings.length,
    head,
    rows,
    devices,
    ...(opts.batch !== undefined ? { batch: opts.batch } : {}),
    ...(count === 0 && checkpoint !== undefined ? { checkpoint } : {}),
    mode,
  });

  // the checkpoint: the same log (intact, ending at the anchor's row) and the same tables
  if (anchor?.tables !== undefined && count === 0 && head.seq === anchor.seq && head.hash === anchor.hash) {
    const digest = new TablesDigest();
    let devices = 0;
    for (let after = ""; ; ) {
      const upTo = await rangeEnds(src, after, ["devices", "certificates", "hub_registrations"]);
      const ds = await src.devices(after, upTo);
      const cs = await src.certificates(after, upTo);
      const hs = await src.hubs(after, upTo);
      digest.devices(ds);
      digest.certificates(cs);
      digest.hubs(hs);
      devices += counted(opts.batch, ds, hs);
      if (upTo === null) break;
      after = upTo;
    }
    const tables = digest.digest(opts.batch, head);
    if (tables === anchor.tables) {
      progress(rows);
      return report(devices, "checkpoint", tables);
    }
    // something changed since the checkpoint: the replay says what
  }

  // pass 2: device-ID ranges, each bounded by a page of every table
  const digest = new TablesDigest();
  let devices = 0;
  for (let after = ""; ; ) {
    const upTo = await rangeEnds(src, after, ["devices", "audit", "certificates", "hub_registrations"]);
    const [ds, as, cs, hs] = [
      await src.devices(after, upTo),
      await src.audit(after, upTo),
      await src.certificates(after, upTo),
      await src.hubs(after, upTo),
    ];
    digest.devices(ds);
    digest.certificates(cs);
    digest.hubs(hs);
    const byDevice = new Map<string, { t?: TableDevice; a: ChainRow[]; c: TableCert[]; h: TableHub[] }>();
    const slot = (id: string) => {
      let s = byDevice.get(id);
      if (!s) {
        s = { a: [], c: [], h: [] };
        byDevice.set(id, s);
      }
      return s;
    };
    for (const d of ds) slot(d.deviceId).t = d;
    for (const r of as) slot(r.deviceId).a.push(r);
    for (const c of cs) slot(c.deviceId).c.push(c);
    for (const h of hs) slot(h.deviceId).h.push(h);
    for (const [id, s] of byDevice) {
      const derived = replay(s.a);
      const hubs = deriveHubs(s.a);
      if (
        opts.batch !== undefined &&
        s.t?.batch !== opts.batch &&
        derived?.batch !== opts.batch &&
        !s.h.some((h) => h.batch === opts.batch)
      )
        continue;
      devices++;
      for (const f of compareDevice(id, derived, s.t, s.c)) add(f);
      for (const f of compareHubs(id, hubs, s.h)) add(f);
    }
    progress(as.length);
    if (upTo === null) break;
    after = upTo;
  }
  return report(devices, "replayed", digest.digest(opts.batch, head));
}

/** The end of the next device-ID range after `after`: at most a page of each table (null: the rest). */
async function rangeEnds(
  src: VerifySource,
  after: string,
  tables: ReadonlyArray<"devices" | "audit" | "certificates" | "hub_registrations">,
): Promise<string | null> {
  // one after the other: a PostgreSQL source runs them on its one snapshot connection
  const hs: string[] = [];
  for (const t of tables) {
    const h = await src.rangeEnd(t, after, PAGE[t]);
    if (h !== null) hs.push(h);
  }
  return hs.length ? hs.reduce((m, h) => (cmp(h, m) < 0 ? h : m)) : null;
}
