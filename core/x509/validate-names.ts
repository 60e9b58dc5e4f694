/**
 * Names that go into certificates, checked before anything is signed. DirectoryString
 * attributes follow RFC 5280 4.1.2.4 and the upper bounds of its Appendix A; dNSName
 * subjectAltNames the preferred name syntax of RFC 1034 3.5 as relaxed by RFC 1123 2.1 (LDH
 * labels), internationalized names as IDNA A-labels (RFC 5890/5891, via UTS #46 in
 * node:url's domainToASCII); uniformResourceIdentifier names RFC 3986 with an allowed scheme
 * list (RFC 5280 4.2.1.6); name constraints RFC 5280 4.2.1.10, matched the way OpenSSL and Go's
 * crypto/x509 match them, since those are what will judge the certificate.
 *
 * Each check returns the name to encode (normalized) or throws INVALID_INPUT naming the field.
 * A value is always shown escaped, so no control or format character of a hostile name reaches
 * a terminal or a log through an error message.
 */
import * as crypto from "node:crypto";
import { domainToASCII, domainToUnicode } from "node:url";
import { type FleetError, invalid, phrase } from "../errors";
import { nameConstraintsOf, parseCertificate } from "./parse";

/** What a policy may loosen or tighten about device names. */
export interface NameRules {
  /** accept `*.example.com` as a dNSName (default false: wildcards are refused) */
  allowWildcardDns?: boolean;
  /** URI schemes accepted in uniformResourceIdentifier names (default DEFAULT_URI_SCHEMES) */
  allowedUriSchemes?: readonly string[];
}

export const DEFAULT_URI_SCHEMES: readonly string[] = ["urn", "https", "spiffe"];

// ------------------------------------------------------------------ showing values

/**
 * Characters never printed raw: controls (C0, DEL, C1), lone surrogates, format characters
 * (bidi overrides, zero-width), line and paragraph separators, unassigned and private-use
 * code points, and every space but U+0020 (they hide in terminals and look like others).
 */
const HIDDEN = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]|(?! )\p{Zs}/u;

function escapeChar(ch: string): string {
  const c = ch.codePointAt(0)!;
  if (c === 0x0a) return "\\n";
  if (c === 0x0d) return "\\r";
  if (c === 0x09) return "\\t";
  if (c <= 0xffff) return `\\u${c.toString(16).toUpperCase().padStart(4, "0")}`;
  return `\\u{${c.toString(16).toUpperCase()}}`;
}

/** A value as an error shows it: quoted, escaped, at most `max` characters. */
export function shown(s: string, max = 60): string {
  let out = "";
  let n = 0;
  for (const ch of s) {
    if (n++ >= max) return `"${out}"...`;
    if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else if (HIDDEN.test(ch)) out += escapeChar(ch);
    else out += ch;
  }
  return `"${out}"`;
}

/** `s` with every hidden character escaped (for one-line renderings; not quoted, not cut). */
export function escapeHidden(s: string): string {
  let out = "";
  for (const ch of s) out += HIDDEN.test(ch) ? escapeChar(ch) : ch;
  return out;
}

const fail = (field: string, value: string, want: string): FleetError =>
  invalid(field, phrase(shown(value)), want);

/** `U+000A at position 5` for the first character of `s` that `re` matches. */
function where(s: string, re: RegExp): string {
  let i = 0;
  for (const ch of s) {
    if (re.test(ch)) {
      const c = ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
      return `U+${c} at position ${i + 1}`;
    }
    i++;
  }
  return "";
}

// ------------------------------------------------------------------ DirectoryString

/**
 * Refused in a DirectoryString: C0, DEL and C1 controls (NUL truncates names in C code, a
 * newline forges lines in logs and in `openssl x509 -text`), lone surrogates (not encodable as
 * UTF-8: Node would silently write U+FFFD), bidi controls and line separators (they reorder or
 * split what a person reads), and noncharacters.
 */
const DIRSTRING_BAD =
  /[\p{Cc}\p{Cs}\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069\u2028\u2029\uFDD0-\uFDEF\uFFFE\uFFFF]|[\u{1FFFE}-\u{1FFFF}\u{2FFFE}\u{2FFFF}\u{3FFFE}\u{3FFFF}\u{EFFFE}\u{EFFFF}\u{FFFFE}\u{FFFFF}\u{10FFFE}\u{10FFFF}]/u;

/** Characters of PrintableString (X.680 41.4). */
const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;
export const fitsPrintable = (s: string): boolean => PRINTABLE.test(s);

/** Length in characters, which is what ASN.1 SIZE constraints on UTF8String count. */
function chars(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/**
 * Check one DirectoryString attribute value: 1..`max` characters (the attribute's
 * RFC 5280 Appendix A upper bound), well-formed Unicode, no control characters.
 */
export function checkDirectoryString(v: unknown, field: string, max: number): string {
  if (typeof v !== "string" || v.length === 0)
    throw invalid(field, v, `a non-empty string of at most ${max} characters`);
  if (DIRSTRING_BAD.test(v))
    throw fail(
      field,
      v,
      `a name without control characters, bidi controls or unpaired surrogates (found ${where(v, DIRSTRING_BAD)})`,
    );
  const n = chars(v);
  if (n > max) throw fail(field, v, `at most ${max} characters (RFC 5280 upper bound; got ${n})`);
  return v;
}

/** Check a value of an attribute whose syntax is PrintableString (countryName, serialNumber). */
export function checkPrintableString(v: unknown, field: string, max: number): string {
  const s = checkDirectoryString(v, field, max);
  if (!fitsPrintable(s))
    throw fail(field, s, "PrintableString characters only: letters, digits, space and ' ( ) + , - . / : = ?");
  return s;
}

// ------------------------------------------------------------------ DNS names

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** What may appear in a host name before IDNA conversion: LDH, dots, and non-ASCII letters. */
const DNS_ASCII_BAD = /[^A-Za-z0-9.\-\u0080-\u{10FFFF}]/u;
// biome-ignore lint/suspicious/noControlCharactersInRegex: the test is for non-ASCII
const NON_ASCII = /[^\x00-\x7f]/;
const LDH_WANT = "an LDH host name";

/** Why an ASCII, lower-cased host name (no wildcard) is not LDH, or undefined. */
function ldhProblem(name: string): string | undefined {
  if (name.endsWith(".")) return "no trailing dot";
  if (name.length > 253) return `at most 253 characters (got ${name.length})`;
  const labels = name.split(".");
  for (const l of labels) {
    if (l.length === 0) return "no empty label";
    if (l.length > 63) return `labels of at most 63 characters ('${l.slice(0, 20)}...' has ${l.length})`;
    if (!LABEL.test(l)) {
      if (l.startsWith("-") || l.endsWith("-")) return `no label starting or ending with '-' ('${l}')`;
      return `'${l}' has a character that is not a letter, digit or '-'`;
    }
    // RFC 5891 4.2.3.1: '--' in positions 3-4 is reserved for A-labels (xn--)
    if (l[2] === "-" && l[3] === "-" && !l.startsWith("xn--"))
      return `'${l}' has '--' in positions 3-4, reserved for IDNA A-labels`;
  }
  if (/^\d+$/.test(labels[labels.length - 1]!))
    return "a last label that is not all digits (that reads as an IPv4 address; use an iPAddress name)";
  return undefined;
}

function aLabelRoundTrips(label: string): boolean {
  if (!label.startsWith("xn--")) return true;
  const u = domainToUnicode(label);
  return u !== "" && u !== label && domainToASCII(u) === label;
}

/** The normalized name, or `{ want }` saying what is wrong with it. */
function normalizeDns(v: string, allowWildcard: boolean): string | { want: string } {
  const want = (why: string) => ({ want: `${LDH_WANT}: ${why}` });
  if (v.length === 0) return want("a non-empty name");
  if (v.length > 1024) return want("at most 253 characters");
  // refused before IDNA, which would strip tabs and newlines and decode %-escapes silently
  if (HIDDEN.test(v)) return want(`no control or invisible characters (found ${where(v, HIDDEN)})`);
  let rest = v;
  let wildcard = false;
  if (v.startsWith("*.") && allowWildcard) {
    wildcard = true;
    rest = v.slice(2);
  }
  if (rest.includes("*"))
    return allowWildcard
      ? want("'*' only as the whole leftmost label")
      : { want: `${LDH_WANT} (wildcards are not allowed by policy)` };
  const badChar = DNS_ASCII_BAD.exec(rest);
  if (badChar) return want(`${badChar[0] === " " ? "' ' (space)" : `'${badChar[0]}'`} is not allowed`);
  let ascii: string;
  if (NON_ASCII.test(rest) || /(^|\.)xn--/i.test(rest)) {
    // UTS #46 (nontransitional, as IDNA2008) maps, normalizes and punycodes; '' means refused
    ascii = domainToASCII(rest);
    // Node 24 passes an xn-- label through without decoding it, where Node 20 refused
    // a bad one: an A-label must decode to a U-label that encodes back to the same A-label
    if (!ascii || ascii !== domainToASCII(ascii) || !ascii.split(".").every(aLabelRoundTrips))
      return want("an internationalized name that IDNA can convert to A-labels");
  } else {
    ascii = rest.toLowerCase();
  }
  const p = ldhProblem(ascii);
  if (p) return want(p);
  if (wildcard && !ascii.includes(".")) return want("a wildcard over at least two labels (*.example.com)");
  return wildcard ? `*.${ascii}` : ascii;
}

/**
 * Normalize and check a dNSName: internationalized labels become A-labels, everything is
 * lower-cased, and the result is LDH (so its IA5String bytes are ASCII). A leading `*.` label
 * is accepted only when `rules.allowWildcardDns`.
 */
export function checkDnsName(v: unknown, field: string, rules: NameRules = {}): string {
  if (typeof v !== "string") throw invalid(field, v, LDH_WANT);
  const r = normalizeDns(v, rules.allowWildcardDns === true);
  if (typeof r !== "string") throw fail(field, v, r.want);
  return r;
}

// ------------------------------------------------------------------ URIs

/** RFC 3986 2: unreserved, reserved and '%' (checked for two hex digits below). */
const URI_CHARS = /^[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]*$/;
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*$/;
const NID = /^[A-Za-z0-9][A-Za-z0-9-]{0,30}[A-Za-z0-9]$/;
const SPIFFE_SEGMENT = /^[A-Za-z0-9._-]+$/;
const URI_MAX = 2048;
const URI_HIDDEN = new RegExp(`${HIDDEN.source}| `, "u");

export interface CheckedUri {
  /** the URI to encode: scheme and host lower-cased */
  uri: string;
  scheme: string;
  /** the authority's host (an LDH name), when the URI has one */
  host?: string;
}

/** A suggestion for a non-ASCII URI: WHATWG's serialization percent-encodes and punycodes. */
function asciiSuggestion(v: string): string {
  try {
    const href = new URL(v).href;
    return URI_CHARS.test(href) ? `, e.g. ${shown(href, 120)}` : "";
  } catch {
    return "";
  }
}

/**
 * Check a uniformResourceIdentifier name: an absolute RFC 3986 URI in ASCII, with a scheme
 * from `rules.allowedUriSchemes`, no user information, and a DNS host when it has an authority.
 * urn (RFC 8141) and spiffe (SPIFFE ID) URIs are checked to their own grammar.
 */
export function checkUri(
  v: unknown,
  field: string,
  rules: NameRules = {},
  schemesFrom = "the policy's allowed URI schemes",
): CheckedUri {
  const schemes = rules.allowedUriSchemes ?? DEFAULT_URI_SCHEMES;
  const want = "an absolute URI (RFC 3986)";
  if (typeof v !== "string" || v.length === 0) throw invalid(field, v, want);
  if (v.length > URI_MAX) throw fail(field, v, `${want} of at most ${URI_MAX} characters`);
  if (URI_HIDDEN.test(v))
    throw fail(field, v, `${want} without spaces or control characters (found ${where(v, URI_HIDDEN)})`);
  if (NON_ASCII.test(v))
    throw fail(
      field,
      v,
      `an ASCII URI (RFC 3986: percent-encode other characters as UTF-8, write hosts as A-labels)${asciiSuggestion(v)}`,
    );
  if (!URI_CHARS.test(v)) {
    const c = /[^A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]/.exec(v)![0];
    throw fail(field, v, `${want}: '${c}' must be percent-encoded`);
  }
  if (/%(?![0-9A-Fa-f]{2})/.test(v)) throw fail(field, v, `${want}: '%' followed by two hex digits`);
  const colon = v.indexOf(":");
  const scheme = colon > 0 ? v.slice(0, colon) : "";
  if (!SCHEME.test(scheme)) throw fail(field, v, `${want} that starts with a scheme, like urn:`);
  const lower = scheme.toLowerCase();
  if (!schemes.includes(lower))
    throw fail(field, v, `a URI whose scheme is one of ${schemes.join(", ")} (${schemesFrom})`);
  let rest = v.slice(colon + 1);
  if (rest.length === 0) throw fail(field, v, `${want} with a scheme-specific part after '${scheme}:'`);
  const hash = rest.indexOf("#");
  if (hash >= 0 && rest.indexOf("#", hash + 1) >= 0) throw fail(field, v, `${want}: one '#' at most`);
  let host: string | undefined;
  let port = "";
  let path = rest;
  if (rest.startsWith("//")) {
    const end = rest.slice(2).search(/[/?#]/);
    const authority = end < 0 ? rest.slice(2) : rest.slice(2, 2 + end);
    path = end < 0 ? "" : rest.slice(2 + end);
    if (authority.includes("@"))
      throw fail(field, v, `${want} without user information ('@' in the authority)`);
    if (authority.startsWith("["))
      throw fail(
        field,
        v,
        `${want} whose host is a DNS name (an IP literal cannot be name-constrained here)`,
      );
    const m = /^([^:]*)(?::(\d*))?$/.exec(authority);
    if (!m) throw fail(field, v, `${want}: host[:port] as the authority`);
    if (m[2] !== undefined) {
      if (m[2] === "" || Number(m[2]) > 65535) throw fail(field, v, `${want}: a port of 0..65535`);
      port = `:${m[2]}`;
    }
    if (m[1] === "") throw fail(field, v, `${want} with a host after '//'`);
    if (m[1]!.includes("%")) throw fail(field, v, `${want} whose host is an LDH name (no %-escapes)`);
    const h = normalizeDns(m[1]!, false);
    if (typeof h !== "string") throw fail(field, v, `a URI whose host is ${h.want}`);
    host = h;
  }
  if (/[[\]]/.test(path)) throw fail(field, v, `${want}: '[' and ']' only around an IP literal host`);
  if (lower === "https" || lower === "http") {
    if (host === undefined) throw fail(field, v, `an ${lower} URI with a host (${lower}://host/...)`);
  }
  if (lower === "urn") {
    // RFC 8141: urn:<NID>:<NSS>, NID of 2..32 letters, digits and '-'
    const m = /^([^:]*):(.+)$/.exec(rest);
    if (!m || !NID.test(m[1]!)) throw fail(field, v, "a URN like urn:<namespace>:<name> (RFC 8141)");
    if (m[1]!.toLowerCase() === "urn") throw fail(field, v, "a URN whose namespace is not 'urn'");
  }
  if (lower === "spiffe") {
    // SPIFFE ID: spiffe://<trust domain>/<path>; no port, query or fragment; segments of [A-Za-z0-9._-]
    if (host === undefined || port) throw fail(field, v, "a SPIFFE ID like spiffe://example.org/device/1");
    if (/[?#]/.test(path)) throw fail(field, v, "a SPIFFE ID without query or fragment");
    if (path !== "") {
      for (const seg of path.slice(1).split("/"))
        if (!SPIFFE_SEGMENT.test(seg) || seg === "." || seg === "..")
          throw fail(field, v, "a SPIFFE ID whose path segments are non-empty [A-Za-z0-9._-], not . or ..");
    }
  }
  rest = host !== undefined ? `//${host}${port}${path}` : rest;
  return { uri: `${lower}:${rest}`, scheme: lower, ...(host !== undefined ? { host } : {}) };
}

// ------------------------------------------------------------------ name constraints

/** The DNS and URI name constraints of one CA of a chain, bases lower-cased. */
export interface CaNameConstraints {
  /** the CA's subject as shown in messages */
  ca: string;
  permittedDNS: string[];
  excludedDNS: string[];
  permittedURI: string[];
  excludedURI: string[];
}

function caLabel(der: Uint8Array): string {
  const s = new crypto.X509Certificate(der).subject;
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(s)?.[1];
  return shown(cn ?? s.replace(/\n/g, ", "), 64).slice(1, -1);
}

/**
 * The name constraints of every CA that will sit above a device certificate: the issuing
 * CA, then each CA above it up to the root (RFC 5280 6.1 applies each CA's constraints to every
 * certificate below it; OpenSSL and Go apply the trust anchor's too). CAs without constraints
 * are left out.
 */
export function chainNameConstraints(certs: readonly Uint8Array[], field = "issuer"): CaNameConstraints[] {
  const out: CaNameConstraints[] = [];
  certs.forEach((der, i) => {
    const nc = nameConstraintsOf(
      parseCertificate(der, i === 0 ? `${field}.certificate` : `${field}.chain[${i - 1}]`),
    );
    if (!nc) return;
    const { permittedDNS, excludedDNS, permittedURI, excludedURI } = nc;
    if (permittedDNS.length + excludedDNS.length + permittedURI.length + excludedURI.length === 0) return;
    // lower-cased once here, so the per-certificate check compares without allocating
    const lower = (l: string[]) => l.map((b) => b.toLowerCase());
    out.push({
      ca: caLabel(der),
      permittedDNS: lower(permittedDNS),
      excludedDNS: lower(excludedDNS),
      permittedURI: lower(permittedURI),
      excludedURI: lower(excludedURI),
    });
  });
  return out;
}

/**
 * RFC 5280 4.2.1.10 for dNSName: a name satisfies `base` when it is `base` with zero or more
 * labels added on the left; an empty base matches every name; a base with a leading '.' (an
 * OpenSSL and Go extension) matches only names below it.
 */
export function dnsWithin(name: string, base: string): boolean {
  return within(name.toLowerCase(), base.toLowerCase());
}

/** dnsWithin of names already lower-cased; allocates nothing (it runs per certificate). */
function within(n: string, b: string): boolean {
  if (b.length === 0 || n === b) return true;
  if (!n.endsWith(b)) return false;
  return b.charCodeAt(0) === 0x2e || n.charCodeAt(n.length - b.length - 1) === 0x2e;
}

/**
 * RFC 5280 4.2.1.10 for URIs, applied to the host: a base with a leading '.' matches hosts
 * below it (not the domain itself); any other base matches that one host.
 */
export function uriHostWithin(host: string, base: string): boolean {
  const h = host.toLowerCase();
  const b = base.toLowerCase();
  return b.startsWith(".") ? h.endsWith(b) : h === b;
}

/** Whether a wildcard `*.S` covers the single name `x` (one label in place of the '*'). */
function wildcardCovers(wild: string, x: string): boolean {
  const s = wild.slice(1); // ".S"
  const n = x.toLowerCase().replace(/^\./, "");
  return n.endsWith(s) && n.length > s.length && !n.slice(0, n.length - s.length).includes(".");
}

const lowerIfNeeded = (s: string) => (/[A-Z]/.test(s) ? s.toLowerCase() : s);

/** The names of one certificate that name constraints apply to. */
export interface ConstrainedNames {
  dns: readonly string[];
  uris: readonly string[];
  /** each URI's host, undefined for a URI without an authority */
  hosts: ReadonlyArray<string | undefined>;
  /** OpenSSL checks a host-like CN against DNS constraints when there is no dNSName */
  commonName?: string;
  /** field names for messages: `${fields.dns}[i]` and so on */
  fields: { dns: string; uri: string; commonName: string };
}

const HOST_LIKE_CN = /^(?=.{1,253}$)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/;

/**
 * Throw INVALID_INPUT for the first name outside a CA's permitted subtrees or inside one of its
 * excluded subtrees. `of()` (which certificate) goes into the message, since names are expansions.
 */
export function checkNameConstraints(
  names: ConstrainedNames,
  constraints: readonly CaNameConstraints[],
  of?: () => string,
): void {
  if (constraints.length === 0) return;
  const at = () => (of ? ` (${of()})` : "");
  // field names are built only for a failure: this runs once per certificate
  const cnAsDns =
    names.dns.length === 0 && names.commonName !== undefined && HOST_LIKE_CN.test(names.commonName);
  const dns = cnAsDns ? [names.commonName!.toLowerCase()] : names.dns.map(lowerIfNeeded);
  const fieldOf = (i: number) => (cnAsDns ? names.fields.commonName : `${names.fields.dns}[${i}]`);
  for (const c of constraints) {
    for (let i = 0; i < dns.length; i++) {
      const name = dns[i]!;
      if (c.permittedDNS.length && !c.permittedDNS.some((b) => within(name, b)))
        throw fail(
          fieldOf(i),
          name,
          `a name within issuer '${c.ca}' permitted subtrees [${c.permittedDNS.join(", ")}]${at()}`,
        );
      for (const b of c.excludedDNS)
        if (within(name, b) || (name.startsWith("*.") && wildcardCovers(name, b)))
          throw fail(fieldOf(i), name, `a name outside issuer '${c.ca}' excluded subtree ${b}${at()}`);
    }
    if (c.permittedURI.length + c.excludedURI.length === 0) continue;
    for (let i = 0; i < names.uris.length; i++) {
      const uri = names.uris[i]!;
      const host = names.hosts[i];
      const field = () => `${names.fields.uri}[${i}]`;
      // OpenSSL ("unsupported or invalid name syntax") and Go fail a host-less URI under any URI subtree
      if (host === undefined)
        throw fail(
          field(),
          uri,
          `a URI with a host: issuer '${c.ca}' has URI name constraints, which verifiers cannot apply to a URI without one${at()}`,
        );
      if (c.permittedURI.length && !c.permittedURI.some((b) => uriHostWithin(host, b)))
        throw fail(
          field(),
          uri,
          `a URI whose host is within issuer '${c.ca}' permitted URI subtrees [${c.permittedURI.join(", ")}]${at()}`,
        );
      const ex = c.excludedURI.find((b) => uriHostWithin(host, b));
      if (ex !== undefined)
        throw fail(
          field(),
          uri,
          `a URI whose host is outside issuer '${c.ca}' excluded URI subtree ${ex}${at()}`,
        );
    }
  }
}
