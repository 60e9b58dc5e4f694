/**
 * Device certificate profiles: what a batch's device certificates look like (RFC 5280 end-entity
 * profile: subject, subjectAltName, validity, keyUsage, extKeyUsage, CRL distribution points),
 * validated once per batch and compiled into a core/x509 LeafTemplate so that each device costs
 * one patch of serial, CN, SPKI, SKI and SAN plus one signature.
 *
 * Templates in the subject and SANs may use `{deviceId}`, `{batch}` and `{model}`. Names follow
 * RFC 5280 (core/x509/validate-names): a profile's literal parts are checked when it is resolved;
 * its expansion for one batch is checked once, for a representative device, and then reused:
 * a device ID differs from another of its batch only in its seven serial digits, and a digit is
 * valid wherever another is, so each further device costs a concatenation (plus the issuer's name
 * constraints, which can depend on the digits and are checked for every certificate).
 */
import * as crypto from "node:crypto";
import { canonicalJson } from "../canonical";
import { FleetError, invalid, phrase } from "../errors";
import { deviceId as deviceIdOf, SERIAL_DIGITS } from "../station/ids";
import type { Subject } from "../station/messages";
import { LeafTemplate } from "../x509/cert";
import { type AltNames, EKU, KEY_USAGES, type KeyUsage, keyIdentifier } from "../x509/ext";
import { algorithmOf, type SigningKey } from "../x509/keys";
import { parseCertificate, subjectKeyIdOf } from "../x509/parse";
import {
  type CaNameConstraints,
  chainNameConstraints,
  checkDirectoryString,
  checkDnsName,
  checkNameConstraints,
  checkUri,
  DEFAULT_URI_SCHEMES,
  type NameRules,
  shown,
} from "../x509/validate-names";

export type { NameRules } from "../x509/validate-names";

export interface DeviceCertificateProfile {
  /** subject attributes; commonName is a template (default `{deviceId}`) */
  subject?: { organization?: string; organizationalUnit?: string; commonName?: string };
  /** subjectAltName entries (templates), e.g. uri `urn:fleetguard:device:{deviceId}` */
  sans?: { uri?: string[]; dns?: string[] };
  validityDays?: number;
  keyUsage?: KeyUsage[];
  /** names (clientAuth, serverAuth) or dotted OIDs */
  extKeyUsage?: string[];
  crlUrls?: string[];
}

export interface ResolvedProfile {
  subject: { organization?: string; organizationalUnit?: string; commonName: string };
  sans: { uri: string[]; dns: string[] };
  validityDays: number;
  keyUsage: KeyUsage[];
  extKeyUsage: string[];
  crlUrls: string[];
}

const TEMPLATE_VARS = new Set(["deviceId", "batch", "model"]);
const OID_RE = /^[0-2](\.(0|[1-9]\d*))+$/;

function template(v: unknown, field: string): string {
  const got = typeof v === "string" ? phrase(shown(v)) : v;
  if (typeof v !== "string" || v.length === 0 || v.length > 200)
    throw invalid(field, got, "a string of 1..200 characters");
  for (const m of v.matchAll(/\{([^}]*)\}/g)) {
    if (!TEMPLATE_VARS.has(m[1]!))
      throw invalid(field, got, "only {deviceId}, {batch} and {model} as placeholders");
  }
  return v;
}

function stringList(v: unknown, field: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > 16) throw invalid(field, v, "a list of at most 16 strings");
  return v.map((x, i) => template(x, `${field}[${i}]`));
}

/** RFC 5280 Appendix A upper bounds of the subject attributes a profile sets. */
const UB = { organization: 64, organizationalUnit: 64, commonName: 64 } as const;
const NO_RULES: NameRules = Object.freeze({});
const CRL_RULES: NameRules = Object.freeze({ allowedUriSchemes: ["http", "https"] });

/**
 * Validate a profile and fill in defaults. Field names in errors start with `field`. `rules` are
 * the policy's rules for names (wildcard DNS names, URI schemes); without them, the strict
 * defaults apply. The result keeps the templates as declared (so its digest does not change when
 * only the normalization of a name does): deviceNames normalizes.
 */
export function resolveProfile(p: unknown, field = "profile", rules: NameRules = NO_RULES): ResolvedProfile {
  const o = (p ?? {}) as DeviceCertificateProfile;
  if (typeof o !== "object" || Array.isArray(o)) throw invalid(field, p, "an object");
  const known = new Set(["subject", "sans", "validityDays", "keyUsage", "extKeyUsage", "crlUrls"]);
  for (const k of Object.keys(o))
    if (!known.has(k)) throw invalid(`${field}.${k}`, k, `one of ${[...known].join(", ")}`);
  const s = o.subject ?? {};
  const subject = {
    ...(s.organization !== undefined
      ? { organization: template(s.organization, `${field}.subject.organization`) }
      : {}),
    ...(s.organizationalUnit !== undefined
      ? { organizationalUnit: template(s.organizationalUnit, `${field}.subject.organizationalUnit`) }
      : {}),
    commonName: template(s.commonName ?? "{deviceId}", `${field}.subject.commonName`),
  };
  for (const k of ["organization", "organizationalUnit"] as const) {
    if (subject[k]?.includes("{"))
      throw invalid(
        `${field}.subject.${k}`,
        phrase(shown(subject[k]!)),
        "a constant (only commonName and SANs take placeholders)",
      );
  }
  const validityDays = o.validityDays ?? 365;
  if (!Number.isInteger(validityDays) || validityDays < 1 || validityDays > 36500)
    throw invalid(`${field}.validityDays`, validityDays, "an integer number of days in 1..36500");
  const keyUsage = o.keyUsage ?? ["digitalSignature"];
  if (!Array.isArray(keyUsage) || keyUsage.length === 0)
    throw invalid(`${field}.keyUsage`, keyUsage, "a non-empty list");
  keyUsage.forEach((u, i) => {
    if (!KEY_USAGES.includes(u))
      throw invalid(`${field}.keyUsage[${i}]`, u, `one of ${KEY_USAGES.join(", ")}`);
    if (u === "keyCertSign" || u === "cRLSign")
      throw invalid(`${field}.keyUsage[${i}]`, u, "an end-entity usage (a device is not a CA)");
  });
  const ekuIn = o.extKeyUsage ?? ["clientAuth"];
  if (!Array.isArray(ekuIn)) throw invalid(`${field}.extKeyUsage`, ekuIn, "a list");
  const extKeyUsage = ekuIn.map((e, i) => {
    const named = (EKU as Record<string, string>)[e];
    if (named) return named;
    if (typeof e === "string" && OID_RE.test(e)) return e;
    throw invalid(`${field}.extKeyUsage[${i}]`, e, `one of ${Object.keys(EKU).join(", ")} or a dotted OID`);
  });
  const sans = {
    uri: stringList(o.sans?.uri, `${field}.sans.uri`),
    dns: stringList(o.sans?.dns, `${field}.sans.dns`),
  };
  const crlUrls = stringList(o.crlUrls, `${field}.crlUrls`);
  const resolved = { subject, sans, validityDays, keyUsage: [...keyUsage], extKeyUsage, crlUrls };
  checkConstantNames(resolved, field);
  checkLiteralNames(resolved, field, rules);
  return resolved;
}

export const profileDigest = (p: ResolvedProfile): string =>
  crypto.createHash("sha256").update(canonicalJson(p)).digest("hex");

export interface DeviceNames {
  commonName: string;
  subject: Subject;
  /** frozen: the certificate template takes it as checked only while it is unchanged */
  san: { uri: string[]; dns: string[] };
}

interface Vars {
  deviceId: string;
  batch: string;
  model: string;
}

const fill = (t: string, vars: Vars) =>
  t.replace(/\{(\w+)\}/g, (_, k: string) => (vars as unknown as Record<string, string>)[k] ?? "");

/** O, OU and the CRL URLs: constants, checked once per profile. */
function checkConstantNames(p: ResolvedProfile, field: string): void {
  for (const k of ["organization", "organizationalUnit"] as const) {
    const v = p.subject[k];
    if (v !== undefined) checkDirectoryString(v, `${field}.subject.${k}`, UB[k]);
  }
  for (const [i, u] of p.crlUrls.entries())
    checkUri(u, `${field}.crlUrls[${i}]`, CRL_RULES, "a CRL distribution point");
}

type NameKind = "commonName" | "dns" | "uri";
interface NameSlot {
  kind: NameKind;
  field: string;
  template: string;
}
interface Checked {
  name: string;
  /** a URI's host */
  host?: string;
}

function slotsOf(p: ResolvedProfile, field: string): NameSlot[] {
  return [
    { kind: "commonName", field: `${field}.subject.commonName`, template: p.subject.commonName },
    ...p.sans.dns.map((t, i): NameSlot => ({ kind: "dns", field: `${field}.sans.dns[${i}]`, template: t })),
    ...p.sans.uri.map((t, i): NameSlot => ({ kind: "uri", field: `${field}.sans.uri[${i}]`, template: t })),
  ];
}

function checkName(kind: NameKind, field: string, value: string, rules: NameRules): Checked {
  if (kind === "commonName") return { name: checkDirectoryString(value, field, UB.commonName) };
  if (kind === "dns") return { name: checkDnsName(value, field, rules) };
  const u = checkUri(value, field, rules);
  return u.host !== undefined ? { name: u.uri, host: u.host } : { name: u.uri };
}

/** checkName of a template's expansion; the message names the template and the device. */
function checkExpansion(slot: NameSlot, vars: Vars, rules: NameRules): Checked {
  const value = fill(slot.template, vars);
  try {
    return checkName(slot.kind, slot.field, value, rules);
  } catch (e) {
    if (e instanceof FleetError && value !== slot.template)
      throw new FleetError(
        e.code,
        `${e.message} (the expansion of ${shown(slot.template)} for device ${shown(vars.deviceId)})`,
        e.field,
      );
    throw e;
  }
}

/**
 * The literal parts of every name, before any batch is known: a template is refused when its
 * expansion fails for two unlike stand-ins (short, and long with digits), so that what it says
 * literally (a control character, a wildcard, a scheme) is refused at preview, while a problem
 * that depends on the real batch and model is left to the exact check of deviceNames.
 */
function checkLiteralNames(p: ResolvedProfile, field: string, rules: NameRules): void {
  const short: Vars = { deviceId: "a-0000000", batch: "a", model: "a" };
  const long: Vars = { deviceId: "b0b0b0b0-0000000", batch: "b0b0b0b0", model: "b0b0b0b0" };
  for (const slot of slotsOf(p, field)) {
    let first: unknown;
    try {
      checkExpansion(slot, short, rules);
      continue;
    } catch (e) {
      first = e;
    }
    try {
      checkExpansion(slot, long, rules);
    } catch {
      throw first;
    }
  }
}

// three serials of a device ID (core/station/ids): two to find where the digits land, one to confirm
const SERIALS = ["0", "1", "9876543210"].map((d) => d.repeat(SERIAL_DIGITS).slice(0, SERIAL_DIGITS));
const rulesKey = (r: NameRules) =>
  `${r.allowWildcardDns ? 1 : 0}|${(r.allowedUriSchemes ?? DEFAULT_URI_SCHEMES).join(",")}`;

/** What deviceNames produced and checked, so the certificate template need not check it again. */
interface Planned {
  commonName: string;
  hosts: ReadonlyArray<string | undefined>;
  rules: string;
}
const PLANNED = new WeakMap<object, Planned>();

interface PlannedSlot {
  slot: NameSlot;
  /** the checked name when it does not depend on the device */
  constant?: Checked;
  /** the checked name cut where the serial digits go, when only they vary */
  pieces?: string[];
  /** [start, end) of a URI's host inside the name */
  host?: [number, number];
}

/**
 * The constant parts of `a` and `b` (two expansions that differ only in serial 0000000 versus
 * 1111111) around the serial, or undefined when the normalization did not keep the serial as a
 * plain run of seven digits.
 */
function piecesOf(a: string, b: string): string[] | undefined {
  if (a.length !== b.length) return undefined;
  const pieces: string[] = [];
  let from = 0;
  let i = 0;
  while (i < a.length) {
    if (a[i] === b[i]) {
      i++;
      continue;
    }
    if (a.slice(i, i + SERIAL_DIGITS) !== SERIALS[0] || b.slice(i, i + SERIAL_DIGITS) !== SERIALS[1])
      return undefined;
    pieces.push(a.slice(from, i));
    i += SERIAL_DIGITS;
    from = i;
  }
  pieces.push(a.slice(from));
  return pieces.length > 1 ? pieces : undefined;
}

/** The names of every device of one batch under one profile and one set of rules. */
class NamePlan {
  private readonly prefix: string;
  private readonly slots: PlannedSlot[];
  private readonly o?: string;
  private readonly ou?: string;
  private readonly cn: string;
  private readonly dns: readonly string[];
  private readonly uri: readonly string[];
  readonly key: string;

  constructor(
    p: ResolvedProfile,
    readonly batch: string,
    readonly model: string,
    private readonly rules: NameRules,
  ) {
    checkConstantNames(p, "profile");
    this.o = p.subject.organization;
    this.ou = p.subject.organizationalUnit;
    this.cn = p.subject.commonName;
    this.dns = [...p.sans.dns];
    this.uri = [...p.sans.uri];
    this.key = rulesKey(rules);
    this.prefix = `${model}-`;
    this.slots = slotsOf(p, "profile").map((slot) => this.plan(slot));
  }

  private vars(serial: string): Vars {
    return { deviceId: this.prefix + serial, batch: this.batch, model: this.model };
  }

  private plan(slot: NameSlot): PlannedSlot {
    const r = SERIALS.map((s) => checkExpansion(slot, this.vars(s), this.rules));
    if (!slot.template.includes("{deviceId}")) return { slot, constant: r[0] };
    const pieces = piecesOf(r[0]!.name, r[1]!.name);
    // A-labels are re-derived per device: the proof that a digit is valid wherever another is
    // covers LDH and URI syntax, not the punycode of a label mixing them with non-ASCII
    if (!pieces || r[0]!.name.includes("xn--") || pieces.join(SERIALS[2]) !== r[2]!.name) return { slot };
    if (slot.kind === "uri") {
      const scheme = r[0]!.name.indexOf(":");
      if (pieces[0]!.length <= scheme) return { slot };
      if (r[0]!.host !== undefined) {
        const start = scheme + 3;
        return { slot, pieces, host: [start, start + r[0]!.host.length] };
      }
    }
    return { slot, pieces };
  }

  fits(p: ResolvedProfile, batch: string, model: string, rules: NameRules): boolean {
    const same = (a: readonly string[], b: readonly string[]) =>
      a.length === b.length && a.every((x, i) => x === b[i]);
    return (
      batch === this.batch &&
      model === this.model &&
      (rules === this.rules || rulesKey(rules) === this.key) &&
      p.subject.commonName === this.cn &&
      p.subject.organization === this.o &&
      p.subject.organizationalUnit === this.ou &&
      same(p.sans.dns, this.dns) &&
      same(p.sans.uri, this.uri)
    );
  }

  /** The serial digits of a device ID of this batch, or undefined for any other string. */
  private serialOf(deviceId: string): string | undefined {
    if (deviceId.length !== this.prefix.length + SERIAL_DIGITS || !deviceId.startsWith(this.prefix))
      return undefined;
    for (let i = this.prefix.length; i < deviceId.length; i++) {
      const c = deviceId.charCodeAt(i);
      if (c < 48 || c > 57) return undefined;
    }
    return deviceId.slice(this.prefix.length);
  }

  names(deviceId: string): DeviceNames {
    const serial = this.serialOf(deviceId);
    const vars: Vars = { deviceId, batch: this.batch, model: this.model };
    let commonName = "";
    const dns: string[] = [];
    const uri: string[] = [];
    const hosts: Array<string | undefined> = [];
    for (const s of this.slots) {
      let c: Checked;
      if (s.constant) c = s.constant;
      else if (s.pieces && serial !== undefined) {
        const name = s.pieces.join(serial);
        c = s.host ? { name, host: name.slice(s.host[0], s.host[1]) } : { name };
      } else c = checkExpansion(s.slot, vars, this.rules);
      if (s.slot.kind === "commonName") commonName = c.name;
      else if (s.slot.kind === "dns") dns.push(c.name);
      else {
        uri.push(c.name);
        hosts.push(c.host);
      }
    }
    const subject: Subject = [];
    if (this.o) subject.push(["O", this.o]);
    if (this.ou) subject.push(["OU", this.ou]);
    subject.push(["CN", commonName]);
    // no SAN (the common profile): one shared empty SAN, which callers give the template as none
    // at all, so it needs no entry in PLANNED (a WeakMap entry per device was most of this call)
    if (!uri.length && !dns.length) return { commonName, subject, san: NO_SAN };
    const san = Object.freeze({ uri: Object.freeze(uri) as string[], dns: Object.freeze(dns) as string[] });
    PLANNED.set(san, { commonName, hosts, rules: this.key });
    return { commonName, subject, san };
  }
}

const PLANS = new WeakMap<ResolvedProfile, NamePlan>();
const NO_SAN: DeviceNames["san"] = Object.freeze({
  uri: Object.freeze([]) as unknown as string[],
  dns: Object.freeze([]) as unknown as string[],
});

/**
 * Check a profile's names for one batch, exactly (the real batch name and model, every serial),
 * without issuing anything: what a preview can call to fail before `up`. With `issuer` (the
 * issuing CA's certificate and the chain above it, DER) and the batch's serial range, every
 * device's names are also checked against the chain's name constraints (about 1 µs a device).
 */
export function checkBatchNames(
  p: ResolvedProfile,
  batch: string,
  model: string,
  rules: NameRules = NO_RULES,
  issuer?: { certificates: readonly Uint8Array[]; firstSerial: number; count: number },
): void {
  deviceNames(p, deviceIdOf(model, 0), batch, model, rules);
  if (!issuer) return;
  const constraints = chainNameConstraints(issuer.certificates, "issuer");
  if (!constraints.length) return;
  const key = rulesKey(rules);
  for (let i = issuer.firstSerial; i < issuer.firstSerial + issuer.count; i++) {
    const n = deviceNames(p, deviceIdOf(model, i), batch, model, rules);
    const c = namesToIssue(n.commonName, n.san, rules, key);
    checkNameConstraints(
      { dns: n.san.dns, uris: n.san.uri, hosts: c.hosts, commonName: n.commonName, fields: FIELDS },
      constraints,
      () => `device ${shown(n.commonName, 40)}`,
    );
  }
}

/**
 * The names of one device under a profile, normalized (A-label, lower-case DNS names; lower-case
 * URI schemes and hosts) and checked per RFC 5280; throws INVALID_INPUT naming the profile field.
 * The first call for a batch checks the batch's templates once; later calls reuse that check.
 */
export function deviceNames(
  p: ResolvedProfile,
  deviceId: string,
  batch: string,
  model: string,
  rules: NameRules = NO_RULES,
): DeviceNames {
  let plan = PLANS.get(p);
  if (!plan?.fits(p, batch, model, rules)) {
    plan = new NamePlan(p, batch, model, rules);
    PLANS.set(p, plan);
  }
  return plan.names(deviceId);
}

/** Names given to a profile's template are the profile's names, whoever expanded them. */
const FIELDS = { dns: "profile.sans.dns", uri: "profile.sans.uri", commonName: "profile.subject.commonName" };

/**
 * The names a certificate is issued with: those deviceNames made are taken as checked; any other
 * (a caller that built its own) are checked and normalized here, so nothing unchecked is signed.
 */
function namesToIssue(
  commonName: string,
  san: AltNames | undefined,
  rules: NameRules,
  key: string,
): { commonName: string; san?: AltNames; hosts: ReadonlyArray<string | undefined> } {
  const planned = san ? PLANNED.get(san) : undefined;
  if (planned && planned.commonName === commonName && planned.rules === key)
    return { commonName, san, hosts: planned.hosts };
  const cn = checkDirectoryString(commonName, FIELDS.commonName, UB.commonName);
  if (!san) return { commonName: cn, hosts: [] };
  if (san.email?.length)
    throw invalid("profile.sans.email", san.email, "no email names (profiles declare none)");
  const dns = (san.dns ?? []).map((d, i) => checkDnsName(d, `${FIELDS.dns}[${i}]`, rules));
  const uris = (san.uri ?? []).map((u, i) => checkUri(u, `${FIELDS.uri}[${i}]`, rules));
  return {
    commonName: cn,
    san: { dns, uri: uris.map((u) => u.uri) },
    hosts: uris.map((u) => u.host),
  };
}

export interface IssuerMaterial {
  /** issuing CA certificate (DER) */
  certificate: Buffer;
  /** the issuing CA's private key (absent for read-only work: plan, refresh) */
  key?: SigningKey;
  /** chain above the issuing CA up to and including the root (DER), nearest first */
  chain: Buffer[];
  /**
   * After a root rollover: the chain above the issuing CA through the new root's cross
   * certificate to the old root (DER, nearest first), for commands to devices that trust only
   * the old root (core/enroll/authorize.ts)
   */
  cross?: Buffer[];
  fingerprint: string;
  /**
   * The issuing CA's generation (CaHierarchy `generation`, 1 when absent): a successor's
   * certificates name its own CRL (crlUrlsFor), not its predecessor's
   */
  generation?: number;
}

/**
 * The CRL distribution points of certificates issued by generation `g` of an issuing CA: the
 * profile's URLs for the first generation; for a successor, each URL's last path segment gets
 * `-g<g>` before its extension (`line-a.crl` -> `line-a-g2.crl`). During a CA rollover both CAs
 * issue under one profile and each has its own CRL: a relying party that fetches a device's
 * distribution point gets the CRL of the CA that issued it.
 */
export function crlUrlsFor(urls: readonly string[], generation: number | undefined): string[] {
  const g = generation ?? 1;
  if (g <= 1) return [...urls];
  return urls.map((u) =>
    u.replace(/([^/?#]*?)(\.[^./?#]*)?(?=[?#]|$)/, (_m, stem: string, ext = "") => `${stem}-g${g}${ext}`),
  );
}

export interface CompiledTemplate {
  notBefore: Date;
  notAfter: Date;
  issue: LeafTemplate["issue"];
}

/** A template for the device certificates of one run (one validity window for all of them). */
export function compileTemplate(
  p: ResolvedProfile,
  issuer: IssuerMaterial,
  now: Date,
  rules: NameRules = NO_RULES,
): CompiledTemplate {
  const c = parseCertificate(issuer.certificate, "issuer.certificatePem");
  checkConstantNames(p, "profile");
  const constraints = chainNameConstraints([issuer.certificate, ...issuer.chain], "issuer");
  if (!issuer.key)
    throw invalid("issuer.keyPem", undefined, "the issuing CA's private key to issue certificates");
  const notBefore = new Date(Math.floor(now.getTime() / 1000) * 1000 - 60_000);
  const notAfter = new Date(notBefore.getTime() + p.validityDays * 86_400_000);
  const t = new LeafTemplate(
    {
      algorithm: algorithmOf(issuer.key, "issuer.keyPem"),
      key: issuer.key,
      subject: c.subject,
      keyId: subjectKeyIdOf(c) ?? keyIdentifier(c.spki),
    },
    {
      organization: p.subject.organization,
      organizationalUnit: p.subject.organizationalUnit,
      notBefore,
      notAfter,
      keyUsage: p.keyUsage,
      extKeyUsage: p.extKeyUsage,
      crlUrls: crlUrlsFor(p.crlUrls, issuer.generation),
    },
  );
  return { notBefore, notAfter, issue: guardedIssue(t, constraints, rules) };
}

/**
 * LeafTemplate.issue behind the name checks: nothing is signed before its names are valid and
 * inside the name constraints of every CA above it (RFC 5280 4.2.1.10), which a verifier would
 * otherwise refuse the certificate for only after it was issued, recorded and installed.
 */
function guardedIssue(
  t: LeafTemplate,
  constraints: readonly CaNameConstraints[],
  rules: NameRules,
): LeafTemplate["issue"] {
  const key = rulesKey(rules);
  return (serial, commonName, spki, san) => {
    const n = namesToIssue(commonName, san, rules, key);
    if (constraints.length)
      checkNameConstraints(
        {
          dns: n.san?.dns ?? [],
          uris: n.san?.uri ?? [],
          hosts: n.hosts,
          commonName: n.commonName,
          fields: FIELDS,
        },
        constraints,
        () => `the certificate of ${shown(n.commonName, 40)}`,
      );
    return t.issue(serial, n.commonName, spki, n.san);
  };
}
