/**
 * Distinguished names (RFC 5280 4.1.2.4): a small typed subject, encoded one attribute per
 * RDN in a fixed order. Values are checked by core/x509/validate-names (no control characters,
 * well-formed Unicode, the upper bounds of RFC 5280 Appendix A). countryName and serialNumber
 * have PrintableString syntax (X.520, RFC 5280 Appendix A) and are refused when they do not fit
 * it (serialNumber was encoded as a UTF8String before, against that syntax). Every other
 * attribute is a UTF8String even when PrintableString would fit: that is the encoding of every
 * CA fleetguard issued so far, a CA's name is copied byte for byte into the certificates below
 * it, and Go finds a parent by those bytes, so a CA re-issued or cross-signed under the same
 * name must keep them.
 */
import { invalid } from "../errors";
import { oid, printable, seq, set, utf8 } from "./der";
import { checkDirectoryString, checkPrintableString, escapeHidden } from "./validate-names";

export interface Subject {
  commonName: string;
  organization?: string;
  organizationalUnit?: string;
  country?: string;
  state?: string;
  locality?: string;
  serialNumber?: string;
}

/** [attribute, OID, RFC 5280 Appendix A upper bound, PrintableString syntax] */
const ATTRS: [keyof Subject, string, number, boolean][] = [
  ["country", "2.5.4.6", 2, true],
  ["state", "2.5.4.8", 128, false],
  ["locality", "2.5.4.7", 128, false],
  ["organization", "2.5.4.10", 64, false],
  ["organizationalUnit", "2.5.4.11", 64, false],
  ["commonName", "2.5.4.3", 64, false],
  ["serialNumber", "2.5.4.5", 64, true],
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
  for (const [k, , max, printableSyntax] of ATTRS) {
    const v = s[k];
    if (v === undefined && k !== "commonName") continue;
    try {
      if (printableSyntax) checkPrintableString(v, `${field}.${k}`, max);
      else checkDirectoryString(v, `${field}.${k}`, max);
      if (k === "country" && !/^[A-Z]{2}$/.test(v as string))
        errs.push(invalid(`${field}.${k}`, v, "an ISO 3166 two-letter code like DE").message);
    } catch (e) {
      errs.push((e as Error).message);
    }
  }
  return errs;
}

/** DER Name of a subject; throws INVALID_INPUT for a value subjectErrors refuses. */
export function encodeSubject(s: Subject): Buffer {
  const rdns: Buffer[] = [];
  for (const [k, o, max, printableSyntax] of ATTRS) {
    const v = s[k];
    if (v === undefined) continue;
    const value = printableSyntax
      ? printable(checkPrintableString(v, `subject.${k}`, max))
      : utf8(checkDirectoryString(v, `subject.${k}`, max));
    rdns.push(set(seq(oid(o), value)));
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
    .map(([k]) => `${short[k]}=${escapeHidden(String(s[k]))}`)
    .join(", ");
}
