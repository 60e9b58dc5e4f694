/**
 * What both registry backends share: input validation (every transition is checked against the
 * state machine in types.ts before any SQL runs), the error messages ("<field>: got X, want Y",
 * naming the device), the audit detail encoding, and the split of one `apply` call into rounds in
 * which each device appears once, so a backend can write a round with set-based statements and
 * still give the same result as applying the transitions one by one, in order.
 */
import { FleetError, invalid, phrase } from "../errors";
import { REVOCATION_REASONS } from "../x509/crl";
import { DEVICE_STATES, type DeviceState, type StateCounts, TRANSITIONS, type Transition } from "./types";

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
    detailJson(`${dev}.detail`, t.detail);
  });
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
