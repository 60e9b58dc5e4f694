/**
 * Distinguished names (RFC 5280 4.1.2.4): a small typed subject, encoded one attribute per
 * RDN in a fixed order. countryName is a PrintableString (X.520), everything else UTF8String.
 */
import { invalid } from "../errors";
import { oid, printable, seq, set, utf8 } from "./der";

export interface Subject {
  commonName: string;
  organization?: string;
  organizationalUnit?: string;
  country?: string;
  state?: string;
  locality?: string;
  serialNumber?: string;
}

const ATTRS: [keyof Subject, string, number][] = [
  ["country", "2.5.4.6", 2],
  ["state", "2.5.4.8", 128],
  ["locality", "2.5.4.7", 128],
  ["organization", "2.5.4.10", 64],
  ["organizationalUnit", "2.5.4.11", 64],
  ["commonName", "2.5.4.3", 64],
  ["serialNumber", "2.5.4.5", 64],
];
const KNOWN = new Set(ATTRS.map((a) => a[0]));

/** Validate a declared subject; returns errors as "field: got X, want Y" strings. */
export function subjectErrors(subject: unknown, field: string): string[] {
  if (typeof subject !== "object" || subject === null)
    return [invalid(field, subject, "an object with commonName").message];
  const errs: string[] = [];
  const s = subject as Record<string, unknown>;
  for (const k of Object.keys(s)) {
    if (!KNOWN.has(k as keyof Subject))
      errs.push(invalid(`${field}.${k}`, k, `one of ${[...KNOWN].join(", ")}`).message);
  }
  for (const [k, , max] of ATTRS) {
    const v = s[k];
    if (v === undefined && k !== "commonName") continue;
    if (typeof v !== "string" || v.length === 0 || v.length > max) {
      errs.push(invalid(`${field}.${k}`, v, `a non-empty string of at most ${max} characters`).message);
    } else if (k === "country" && !/^[A-Z]{2}$/.test(v)) {
      errs.push(invalid(`${field}.${k}`, v, "an ISO 3166 two-letter code like DE").message);
    }
  }
  return errs;
}

export function encodeSubject(s: Subject): Buffer {
  const rdns: Buffer[] = [];
  for (const [k, o] of ATTRS) {
    const v = s[k];
    if (v === undefined) continue;
    rdns.push(set(seq(oid(o), k === "country" ? printable(v) : utf8(v))));
  }
  return seq(...rdns);
}

/** One-line rendering in OpenSSL's RFC 2253-like order, for summaries. */
export function subjectString(s: Subject): string {
  const short: Record<string, string> = {
    country: "C",
    state: "ST",
    locality: "L",
    organization: "O",
    organizationalUnit: "OU",
    commonName: "CN",
    serialNumber: "serialNumber",
  };
  return ATTRS.filter(([k]) => s[k] !== undefined)
    .map(([k]) => `${short[k]}=${s[k]}`)
    .join(", ");
}
