/**
 * Device certificate profiles: what a batch's device certificates look like (RFC 5280 end-entity
 * profile: subject, subjectAltName, validity, keyUsage, extKeyUsage, CRL distribution points),
 * validated once per batch and compiled into a core/x509 LeafTemplate so that each device costs
 * one patch of serial, CN, SPKI, SKI and SAN plus one signature.
 *
 * Templates in the subject and SANs may use `{deviceId}`, `{batch}` and `{model}`.
 */
import * as crypto from "node:crypto";
import { canonicalJson } from "../canonical";
import { invalid } from "../errors";
import type { Subject } from "../station/messages";
import { LeafTemplate } from "../x509/cert";
import { EKU, KEY_USAGES, type KeyUsage, keyIdentifier } from "../x509/ext";
import { algorithmOf, type SigningKey } from "../x509/keys";
import { parseCertificate, subjectKeyIdOf } from "../x509/parse";

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
  if (typeof v !== "string" || v.length === 0 || v.length > 200)
    throw invalid(field, v, "a string of 1..200 characters");
  for (const m of v.matchAll(/\{([^}]*)\}/g)) {
    if (!TEMPLATE_VARS.has(m[1]!))
      throw invalid(field, v, "only {deviceId}, {batch} and {model} as placeholders");
  }
  return v;
}

function stringList(v: unknown, field: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > 16) throw invalid(field, v, "a list of at most 16 strings");
  return v.map((x, i) => template(x, `${field}[${i}]`));
}

/** Validate a profile and fill in defaults. Field names in errors start with `field`. */
export function resolveProfile(p: unknown, field = "profile"): ResolvedProfile {
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
        subject[k],
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
  crlUrls.forEach((u, i) => {
    if (!/^https?:\/\//.test(u)) throw invalid(`${field}.crlUrls[${i}]`, u, "an http(s) URL");
  });
  return { subject, sans, validityDays, keyUsage: [...keyUsage], extKeyUsage, crlUrls };
}

export const profileDigest = (p: ResolvedProfile): string =>
  crypto.createHash("sha256").update(canonicalJson(p)).digest("hex");

export interface DeviceNames {
  commonName: string;
  subject: Subject;
  san: { uri: string[]; dns: string[] };
}

const fill = (t: string, vars: Record<string, string>) =>
  t.replace(/\{(\w+)\}/g, (_, k: string) => vars[k] ?? "");

/** The names of one device under a profile. */
export function deviceNames(p: ResolvedProfile, deviceId: string, batch: string, model: string): DeviceNames {
  const vars = { deviceId, batch, model };
  const commonName = fill(p.subject.commonName, vars);
  const subject: Subject = [];
  if (p.subject.organization) subject.push(["O", p.subject.organization]);
  if (p.subject.organizationalUnit) subject.push(["OU", p.subject.organizationalUnit]);
  subject.push(["CN", commonName]);
  return {
    commonName,
    subject,
    san: { uri: p.sans.uri.map((u) => fill(u, vars)), dns: p.sans.dns.map((d) => fill(d, vars)) },
  };
}

export interface IssuerMaterial {
  /** issuing CA certificate (DER) */
  certificate: Buffer;
  /** the issuing CA's private key (absent for read-only work: plan, refresh) */
  key?: SigningKey;
  /** chain above the issuing CA up to and including the root (DER), nearest first */
  chain: Buffer[];
  fingerprint: string;
}

export interface CompiledTemplate {
  notBefore: Date;
  notAfter: Date;
  issue: LeafTemplate["issue"];
}

/** A template for the device certificates of one run (one validity window for all of them). */
export function compileTemplate(p: ResolvedProfile, issuer: IssuerMaterial, now: Date): CompiledTemplate {
  const c = parseCertificate(issuer.certificate, "issuer.certificatePem");
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
      crlUrls: p.crlUrls,
    },
  );
  return { notBefore, notAfter, issue: t.issue.bind(t) };
}
