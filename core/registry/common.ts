/**
 * What both registry backends share: input validation (every transition is checked against the
 * state machine in types.ts before any SQL runs), the error messages ("<field>: got X, want Y",
 * naming the device), the audit detail encoding, and the split of one `apply` call into rounds in
 * which each device appears once, so a backend can write a round with set-based statements and
 * still give the same result as applying the transitions one by one, in order. The same for hub
 * registration changes (`applyHub`): validation, the next record's values, the errors.
 */
import { FleetError, invalid, phrase } from "../errors";
import { REVOCATION_REASONS } from "../x509/crl";
import {
  DEVICE_STATES,
  type DeviceState,
  HUB_STATUSES,
  HUB_TRANSITIONS,
  type HubChange,
  type HubCounts,
  type HubQuery,
  type HubStatus,
  type StateCounts,
  TRANSITIONS,
  type Transition,
} from "./types";

const STATE_SET: ReadonlySet<string> = new Set(DEVICE_STATES);
const HEX = /^[0-9a-f]+$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

export function emptyCounts(): StateCounts {
  const c = {} as StateCounts;
  for (const s of DEVICE_STATES) c[s] = 0;
  return c;
}

export function isState(s: unknown): s is DeviceState {
  return typeof s === "string" && STATE_SET.has(s);
}

export function checkDate(field: string, d: unknown): Date {
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) throw invalid(field, d, "a valid Date");
  return d;
}

export function checkName(field: string, v: unknown): string {
  if (typeof v !== "string" || v.length === 0 || v.length > 256)
    throw invalid(field, v, "a non-empty string of at most 256 characters");
  return v;
}

export function checkLimit(field: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw invalid(field, v, "an integer >= 0");
  return v;
}

export function checkStates(field: string, v: readonly unknown[] | undefined): DeviceState[] | undefined {
  if (v === undefined) return undefined;
  for (const s of v) if (!isState(s)) throw invalid(field, s, `one of ${DEVICE_STATES.join(", ")}`);
  return v as DeviceState[];
}

/** Is `from -> to` allowed? A transition to the same state is an allowed no-op. */
export function isLegal(from: DeviceState, to: DeviceState): boolean {
  return from === to || TRANSITIONS[from].includes(to);
}

/** JSON for the audit row; binary values are refused so key material cannot slip into the log. */
export function detailJson(field: string, detail: Record<string, unknown> | undefined): string | null {
  if (detail === undefined || detail === null) return null;
  if (typeof detail !== "object" || Array.isArray(detail)) throw invalid(field, detail, "a JSON object");
  return JSON.stringify(detail, function (this: unknown, key, value) {
    const raw = (this as Record<string, unknown>)[key];
    if (raw instanceof Uint8Array || raw instanceof ArrayBuffer)
      throw invalid(`${field}.${key}`, phrase("binary data"), "JSON values (never key material)");
    if (typeof value === "bigint") return value.toString();
    return value;
  });
}

/** Validate every transition of an `apply` call before anything is written. */
export function validateTransitions(ts: readonly Transition[]): void {
  if (!Array.isArray(ts)) throw invalid("transitions", ts, "an array of transitions");
  (ts as readonly Transition[]).forEach((t, i) => {
    const f = `transitions[${i}]`;
    if (t === null || typeof t !== "object") throw invalid(f, t, "a transition object");
    checkName(`${f}.deviceId`, t.deviceId);
    checkName(`${f}.batch`, t.batch);
    const dev = `${f} (device ${t.deviceId})`;
    if (!isState(t.from)) throw invalid(`${dev}.from`, t.from, `one of ${DEVICE_STATES.join(", ")}`);
    if (!isState(t.to)) throw invalid(`${dev}.to`, t.to, `one of ${DEVICE_STATES.join(", ")}`);
    if (!isLegal(t.from, t.to)) {
      const next = TRANSITIONS[t.from];
      throw invalid(
        dev,
        phrase(`${t.from} -> ${t.to}`),
        next.length
          ? `${t.from} -> one of ${next.join(", ")} (or ${t.from}, a no-op)`
          : `nothing: ${t.from} is terminal`,
      );
    }
    // the two steps that stand for two: what each skipped state would have recorded must be there
    if (
      t.from === "pending" &&
      t.to === "issued" &&
      (t.publicKey === undefined || t.certificate === undefined)
    )
      throw invalid(
        dev,
        phrase(`pending -> issued without ${t.publicKey === undefined ? "publicKey" : "certificate"}`),
        "pending -> issued carrying the attested publicKey and the certificate (attested and issued in one step)",
      );
    if (t.from === "issued" && t.to === "active" && t.epoch === undefined)
      throw invalid(
        dev,
        phrase("issued -> active without epoch"),
        "issued -> active carrying the epoch the device confirmed the install at (installed and active in one step)",
      );
    if (t.reason !== undefined && typeof t.reason !== "string")
      throw invalid(`${dev}.reason`, t.reason, "a string");
    if (t.publicKey !== undefined && !(Buffer.isBuffer(t.publicKey) && t.publicKey.length > 0))
      throw invalid(`${dev}.publicKey`, t.publicKey, "a non-empty Buffer (SubjectPublicKeyInfo DER)");
    if (t.epoch !== undefined && !(Number.isInteger(t.epoch) && t.epoch >= 0 && t.epoch <= 0x7fffffff))
      throw invalid(`${dev}.epoch`, t.epoch, "an integer in 0..2^31-1");
    if (t.certificate !== undefined) {
      const c = t.certificate;
      const cf = `${dev}.certificate`;
      if (c === null || typeof c !== "object") throw invalid(cf, c, "a certificate record");
      if (typeof c.serial !== "string" || !HEX.test(c.serial) || c.serial.length > 64)
        throw invalid(`${cf}.serial`, c.serial, "lowercase hex, at most 64 digits");
      if (c.deviceId !== t.deviceId) throw invalid(`${cf}.deviceId`, c.deviceId, JSON.stringify(t.deviceId));
      if (c.batch !== t.batch) throw invalid(`${cf}.batch`, c.batch, JSON.stringify(t.batch));
      if (typeof c.issuer !== "string" || !SHA256_HEX.test(c.issuer))
        throw invalid(`${cf}.issuer`, c.issuer, "a SHA-256 fingerprint, 64 lowercase hex digits");
      if (!Buffer.isBuffer(c.der) || c.der.length === 0)
        throw invalid(`${cf}.der`, c.der, "a non-empty Buffer");
      checkDate(`${cf}.notBefore`, c.notBefore);
      checkDate(`${cf}.notAfter`, c.notAfter);
      checkDate(`${cf}.issuedAt`, c.issuedAt);
    }
    if (t.revoke !== undefined) {
      const rf = `${dev}.revoke`;
      if (t.revoke === null || typeof t.revoke !== "object") throw invalid(rf, t.revoke, "{ at, reason }");
      checkDate(`${rf}.at`, t.revoke.at);
      if (!Object.hasOwn(REVOCATION_REASONS, t.revoke.reason))
        throw invalid(
          `${rf}.reason`,
          t.revoke.reason,
          `one of ${Object.keys(REVOCATION_REASONS).join(", ")}`,
        );
    }
    if (t.detail && typeof t.detail === "object" && Object.hasOwn(t.detail, "hub"))
      throw invalid(`${dev}.detail.hub`, t.detail.hub, "no such key (reserved for hub registration rows)");
    detailJson(`${dev}.detail`, t.detail);
  });
}

const HUB_STATUS_SET: ReadonlySet<string> = new Set(HUB_STATUSES);

export function isHubStatus(s: unknown): s is HubStatus {
  return typeof s === "string" && HUB_STATUS_SET.has(s);
}

export function emptyHubCounts(): HubCounts {
  const c = {} as HubCounts;
  for (const s of HUB_STATUSES) c[s] = 0;
  return c;
}

/** Is `from -> to` allowed for a hub record (from null: no record yet)? The same status is a no-op. */
export function isHubLegal(from: HubStatus | null, to: HubStatus): boolean {
  return from === to || HUB_TRANSITIONS[from ?? "none"].includes(to);
}

/** Validate every change of an `applyHub` call before anything is written. */
export function validateHubChanges(cs: readonly HubChange[]): void {
  if (!Array.isArray(cs)) throw invalid("changes", cs, "an array of hub changes");
  const one = HUB_STATUSES.join(", ");
  (cs as readonly HubChange[]).forEach((c, i) => {
    const f = `changes[${i}]`;
    if (c === null || typeof c !== "object") throw invalid(f, c, "a hub change object");
    checkName(`${f}.hub`, c.hub);
    checkName(`${f}.deviceId`, c.deviceId);
    checkName(`${f}.batch`, c.batch);
    const at = `${f} (hub ${c.hub}, device ${c.deviceId})`;
    if (typeof c.serial !== "string" || !HEX.test(c.serial) || c.serial.length > 64)
      throw invalid(`${at}.serial`, c.serial, "lowercase hex, at most 64 digits");
    if (c.from !== null && !isHubStatus(c.from)) throw invalid(`${at}.from`, c.from, `null or one of ${one}`);
    if (!isHubStatus(c.to)) throw invalid(`${at}.to`, c.to, `one of ${one}`);
    if (!isHubLegal(c.from, c.to)) {
      const from = c.from ?? "none";
      throw invalid(
        at,
        phrase(`${from} -> ${c.to}`),
        `${from} -> one of ${HUB_TRANSITIONS[from].join(", ")}${c.from ? ` (or ${c.from}, a no-op)` : ""}`,
      );
    }
    if (
      c.remoteId !== undefined &&
      (typeof c.remoteId !== "string" || c.remoteId === "" || c.remoteId.length > 1024)
    )
      throw invalid(`${at}.remoteId`, c.remoteId, "a non-empty string of at most 1024 characters");
    if (c.reason !== undefined && typeof c.reason !== "string")
      throw invalid(`${at}.reason`, c.reason, "a string");
    if (
      c.detail !== undefined &&
      c.detail !== null &&
      typeof c.detail === "object" &&
      Object.hasOwn(c.detail, "hub")
    )
      throw invalid(`${at}.detail.hub`, c.detail.hub, "no such key (fleetguard writes it)");
    detailJson(`${at}.detail`, c.detail);
  });
}

/** A hub record's values after a change (validated, compare-and-set passed): remoteId kept unless given; reason like a device's. */
export function nextHub(
  c: HubChange,
  cur: { remoteId: string | null; reason: string | null } | undefined,
): { remoteId: string | null; reason: string | null } {
  return {
    remoteId: c.remoteId ?? cur?.remoteId ?? null,
    reason: c.from !== c.to ? (c.reason ?? null) : (c.reason ?? cur?.reason ?? null),
  };
}

/** What a hub change's target looks like in the database, read inside the write transaction. */
export interface HubTarget {
  /** the device's state and batch (undefined: no such device) */
  device?: { state: string; batch: string };
  /** the device the certificate belongs to (undefined: no such certificate) */
  certDevice?: string;
  /** the current record (undefined: none) */
  record?: { status: string; remoteId: string | null; reason: string | null };
}

const hubWhere = (c: HubChange) => `hub ${c.hub}, device ${c.deviceId}, certificate ${c.serial}`;

/** The error for a change whose target does not match it (nothing is written), or undefined if it does. */
export function hubTargetError(c: HubChange, t: HubTarget): FleetError | undefined {
  if (!t.device)
    return new FleetError(
      "NOT_FOUND",
      `${hubWhere(c)}: device: got no such device, want a device of batch ${JSON.stringify(c.batch)}`,
      "deviceId",
    );
  if (t.device.batch !== c.batch)
    return new FleetError(
      "CONFLICT",
      `${hubWhere(c)}: batch: got ${JSON.stringify(t.device.batch)}, want ${JSON.stringify(c.batch)}`,
      "batch",
    );
  if (t.certDevice !== c.deviceId)
    return new FleetError(
      "NOT_FOUND",
      `${hubWhere(c)}: serial: got ${t.certDevice === undefined ? "no such certificate" : `a certificate of device ${t.certDevice}`}, want a certificate of device ${c.deviceId}`,
      "serial",
    );
  const found = t.record?.status ?? null;
  if (found !== c.from) return hubStaleError(c, found);
  return undefined;
}

/** The compare-and-set of a hub change failed: the record has `found` (null: none), not `from`. */
export function hubStaleError(c: HubChange, found: string | null): FleetError {
  return new FleetError(
    "CONFLICT",
    `${hubWhere(c)}: status: got ${found ?? "none (no record)"}, want ${c.from ?? "none (no record)"} (stale change ${c.from ?? "none"} -> ${c.to}; nothing was written)`,
    "from",
  );
}

/** Validate a hubRegistrations query; returns the statuses and limit. */
export function checkHubQuery(q: HubQuery | undefined): HubQuery {
  const o = q ?? {};
  if (typeof o !== "object") throw invalid("q", o, "{ batch?, deviceId?, statuses?, after?, limit? }");
  checkLimit("q.limit", o.limit);
  if (o.statuses !== undefined) {
    if (!Array.isArray(o.statuses)) throw invalid("q.statuses", o.statuses, "an array of hub statuses");
    for (const s of o.statuses)
      if (!isHubStatus(s)) throw invalid("q.statuses", s, `one of ${HUB_STATUSES.join(", ")}`);
  }
  if (o.after !== undefined) {
    const a = o.after;
    if (a === null || typeof a !== "object" || typeof a.deviceId !== "string" || typeof a.serial !== "string")
      throw invalid("q.after", a, "{ deviceId, serial } (the last record of the previous page)");
  }
  return o;
}

/** Split items into rounds in which each key appears at most once, keeping each key's order. */
export function roundsBy<T>(items: readonly T[], key: (t: T) => string): T[][] {
  const seen = new Map<string, number>();
  const out: T[][] = [];
  for (const t of items) {
    const k0 = key(t);
    const k = seen.get(k0) ?? 0;
    seen.set(k0, k + 1);
    if (k === out.length) out.push([]);
    out[k]!.push(t);
  }
  return out;
}

/**
 * Split transitions into rounds in which each device appears at most once, keeping the order of a
 * device's transitions: round k holds every device's (k+1)-th transition.
 */
export function rounds<T extends { deviceId: string }>(ts: readonly T[]): T[][] {
  const seen = new Map<string, number>();
  const out: T[][] = [];
  for (const t of ts) {
    const k = seen.get(t.deviceId) ?? 0;
    seen.set(t.deviceId, k + 1);
    if (k === out.length) out.push([]);
    out[k]!.push(t);
  }
  return out;
}

/** The error for a stale transition (compare-and-set failed), naming what the device really is. */
export function staleError(t: Transition, actual: { state: string; batch: string } | undefined): FleetError {
  if (!actual)
    return new FleetError(
      "NOT_FOUND",
      `device ${t.deviceId}: got no such device, want a device of batch ${JSON.stringify(t.batch)}`,
      "deviceId",
    );
  if (actual.batch !== t.batch)
    return new FleetError(
      "CONFLICT",
      `device ${t.deviceId}: got batch ${JSON.stringify(actual.batch)}, want ${JSON.stringify(t.batch)}`,
      "batch",
    );
  return new FleetError(
    "CONFLICT",
    `device ${t.deviceId}: got state ${actual.state}, want ${t.from} (stale transition ${t.from} -> ${t.to}; nothing was written)`,
    "from",
  );
}

export function crossBatchError(deviceId: string, owner: string, batch: string): FleetError {
  return new FleetError(
    "CONFLICT",
    `device ${deviceId}: got a device of live batch ${JSON.stringify(owner)}, want a device free to join ${JSON.stringify(batch)}`,
    "deviceIds",
  );
}

export function duplicateSerialError(serial: string): FleetError {
  return new FleetError(
    "CONFLICT",
    `certificate.serial: got ${serial}, already recorded, want a serial never used before`,
    "certificate.serial",
  );
}

export function unknownBatchError(name: string): FleetError {
  return new FleetError("NOT_FOUND", `batch: got ${JSON.stringify(name)}, want an existing batch`, "batch");
}

/** Unique IDs in first-seen order, each checked. */
export function uniqueIds(field: string, ids: readonly string[]): string[] {
  if (!Array.isArray(ids)) throw invalid(field, ids, "an array of device IDs");
  const seen = new Set<string>();
  ids.forEach((id, i) => {
    checkName(`${field}[${i}]`, id);
    seen.add(id);
  });
  return [...seen];
}

export function checkBatchInput(b: { name: string; model: string; source: string; spec: string }): void {
  if (b === null || typeof b !== "object") throw invalid("batch", b, "{ name, model, source, spec }");
  checkName("batch.name", b.name);
  checkName("batch.model", b.model);
  if (b.source !== "puf" && b.source !== "injected")
    throw invalid("batch.source", b.source, '"puf" or "injected"');
  if (typeof b.spec !== "string") throw invalid("batch.spec", b.spec, "canonical JSON text");
}

/** A Postgres URL with its password (and every query parameter) removed, for logs and errors. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    u.search = "";
    u.hash = "";
    return u.toString();
  } catch {
    return `${url.slice(0, url.indexOf(":") + 1)}//<unparsable URL>`;
  }
}
