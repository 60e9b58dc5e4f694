/**
 * What a batch declares about revocation (docs/batches.md, Revocation), checked and read without
 * the enrollment engine (the component loads only this under the program's TypeScript): devices
 * named with an RFC 5280 section 5.3.1 reason (core/x509/crl REVOCATION_REASONS) and an optional
 * date, or the whole batch; a YAML/JSON revocation file with every problem at file:line:column.
 * The step that applies them is revoke.ts.
 */
import * as fs from "node:fs";
import { isMap, isSeq, LineCounter, parseDocument } from "yaml";
import { FleetError, invalid } from "../errors";
import { deviceId, SERIAL_DIGITS } from "../station/ids";
import { REVOCATION_REASONS, type RevocationReason } from "../x509/crl";

/** One device declared revoked: its live certificates go on its CA's CRL with `reason` (RFC 5280). */
export interface DeviceRevocation {
  device: string;
  reason: RevocationReason;
  /** revocation date (ISO 8601); default the run's time */
  at?: string;
}

/** The whole batch declared revoked. */
export interface BatchRevocation {
  reason: RevocationReason;
  /** revocation date (ISO 8601); default the run's time */
  at?: string;
}

/** The batch a revocation is checked against, and what it declares. */
export interface RevocationScope {
  name: string;
  model: string;
  firstSerial: number;
  count: number;
  revocations?: readonly DeviceRevocation[];
  revoked?: BatchRevocation;
}

const REASONS = Object.keys(REVOCATION_REASONS).join(", ");
const checkReason = (field: string, r: unknown) => {
  if (typeof r !== "string" || !Object.keys(REVOCATION_REASONS).includes(r))
    throw invalid(field, r, `an RFC 5280 reason: one of ${REASONS}`);
};
const checkAt = (field: string, at: unknown) => {
  if (at !== undefined && (typeof at !== "string" || !Number.isFinite(Date.parse(at))))
    throw invalid(field, at, "an ISO 8601 date and time (2026-12-01T20:00:00Z)");
};

/** Revocations name devices of this batch (model prefix, declared serial range) with RFC 5280 reasons. */
export function validateRevocations(s: RevocationScope): void {
  if (s.revoked !== undefined) {
    if (!s.revoked || typeof s.revoked !== "object") throw invalid("revoked", s.revoked, "{ reason, at? }");
    checkReason("revoked.reason", s.revoked.reason);
    checkAt("revoked.at", s.revoked.at);
  }
  if (s.revocations === undefined) return;
  if (!Array.isArray(s.revocations))
    throw invalid("revocations", s.revocations, "a list of { device, reason, at? }");
  const seen = new Set<string>();
  const last = s.firstSerial + s.count - 1;
  const range =
    s.count > 0
      ? `${deviceId(s.model, s.firstSerial)} .. ${deviceId(s.model, last)}`
      : "none: the batch declares no device";
  s.revocations.forEach((r, i) => {
    const f = `revocations[${i}]`;
    if (!r || typeof r !== "object") throw invalid(f, r, "{ device, reason, at? }");
    const dev = r.device;
    const tail =
      typeof dev === "string" && dev.startsWith(`${s.model}-`) ? dev.slice(s.model.length + 1) : "";
    const n = /^\d+$/.test(tail) && tail.length === SERIAL_DIGITS ? Number(tail) : -1;
    if (n < s.firstSerial || n > last)
      throw invalid(`${f}.device`, dev, `a device of batch ${s.name} (${range})`);
    if (seen.has(dev)) throw invalid(`${f}.device`, dev, "a device named once (it is revoked already above)");
    seen.add(dev);
    checkReason(`${f}.reason`, r.reason);
    checkAt(`${f}.at`, r.at);
  });
}

/**
 * A revocation file (YAML or JSON): a list of `{ device, reason, at? }`, or `{ revocations: [...] }`.
 * Every problem is reported as `file:line:column: revocations[i].field: got X, want Y`.
 */
export function loadRevocationFile(
  file: string,
  batch: Omit<RevocationScope, "revocations" | "revoked">,
  shownAs = file,
): DeviceRevocation[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw invalid(
      "revocations",
      shownAs,
      `a readable revocation file (${(e as NodeJS.ErrnoException).code ?? "unreadable"})`,
    );
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (node: unknown) => {
    const range = (node as { range?: [number, number] } | undefined)?.range;
    const p = range ? lines.linePos(range[0]) : { line: 1, col: 1 };
    return `${shownAs}:${p.line}:${p.col}`;
  };
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    const p = lines.linePos(e.pos[0]);
    throw new FleetError(
      "INVALID_INPUT",
      `${shownAs}:${p.line}:${p.col}: revocations: got invalid YAML (${e.code}), want a list of { device, reason, at? }`,
      "revocations",
    );
  }
  const root = doc.contents;
  const list = isMap(root) ? root.get("revocations", true) : root;
  if (!isSeq(list))
    throw new FleetError(
      "INVALID_INPUT",
      `${at(list ?? root)}: revocations: got ${list === undefined || list === null ? "nothing" : "no list"}, want a list of { device, reason, at? } (or { revocations: [...] })`,
      "revocations",
    );
  const plain = list.toJSON() as DeviceRevocation[];
  try {
    validateRevocations({ ...batch, revocations: plain });
  } catch (e) {
    if (!(e instanceof FleetError) || !e.field) throw e;
    // revocations[3].reason -> the node of item 3, key reason
    const m = /^revocations\[(\d+)\](?:\.(\w+))?/.exec(e.field);
    const item = m ? list.items[Number(m[1])] : undefined;
    const node = m?.[2] && isMap(item) ? (item.get(m[2], true) ?? item) : item;
    throw new FleetError("INVALID_INPUT", `${at(node ?? list)}: ${e.message}`, e.field);
  }
  return plain.map((r) => ({ device: r.device, reason: r.reason, ...(r.at ? { at: String(r.at) } : {}) }));
}
