/**
 * Certification path checks for manifests (RFC 5280 6.1, the subset that matters here):
 * each certificate valid at `now`, issued by the next one (name chaining and signature, through
 * OpenSSL's X509_check_issued, which also enforces the issuer's keyCertSign), every issuer a CA
 * whose pathLen allows the CAs below it, and the top one issued by a trust anchor. Revocation
 * is not checked here (CRLs are core/x509/crl's business).
 */
import * as crypto from "node:crypto";
import { invalid, phrase } from "../errors";
import { children, content, decodeOid, read } from "../x509/der";
import { OID } from "../x509/ext";
import { basicConstraintsOf, parseCertificate } from "../x509/parse";
import { pemBlocks } from "../x509/pem";

export interface Cert {
  x: crypto.X509Certificate;
  der: Buffer;
  /** basicConstraints pathLen, undefined when absent or no limit */
  pathLen?: number;
  spki: Buffer;
  /** DER subject Name, for byte-exact name chaining of the leaves below it */
  subject: Buffer;
  /** keyUsage absent or with keyCertSign */
  keyCertSign: boolean;
  /** the public key as a KeyObject, made once (X509Certificate.publicKey makes a new one per call) */
  key: crypto.KeyObject;
}

export function readCert(der: Buffer, field: string): Cert {
  const parsed = parseCertificate(der, field);
  let x: crypto.X509Certificate;
  try {
    x = new crypto.X509Certificate(der);
  } catch {
    throw invalid(field, phrase("bytes OpenSSL cannot parse as a certificate"), "a DER X.509 certificate");
  }
  const ku = parsed.extensions.get(OID.keyUsage);
  const kuBits = ku ? content(ku.value, read(ku.value)) : undefined;
  return {
    x,
    der,
    pathLen: basicConstraintsOf(parsed)?.pathLen,
    spki: parsed.spki,
    subject: parsed.subject,
    // keyCertSign is bit 5: first octet after the unused-bits count, mask 0x04
    keyCertSign: !kuBits || (kuBits.length > 1 && (kuBits[1]! & 0x04) !== 0),
    key: x.publicKey,
  };
}

/** Signature algorithms of certificates we verify (RFC 5758, RFC 8410, RFC 4055). */
const SIG_HASH: Record<string, string | null> = {
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.3.101.112": null,
  "1.2.840.113549.1.1.11": "sha256",
};

/** UTCTime (YYMMDDHHMMSSZ, RFC 5280 4.1.2.5.1) or GeneralizedTime (YYYYMMDDHHMMSSZ). */
function decodeTime(tag: number, b: Buffer): Date {
  const t = b.toString("ascii");
  const m = tag === 0x17 ? /^(\d{2})(\d{10})Z$/.exec(t) : /^(\d{4})(\d{10})Z$/.exec(t);
  if (!m) throw new Error("time");
  const year = tag === 0x17 ? (Number(m[1]) < 50 ? 2000 : 1900) + Number(m[1]) : Number(m[1]);
  const r = m[2]!;
  return new Date(
    Date.UTC(
      year,
      Number(r.slice(0, 2)) - 1,
      +r.slice(2, 4),
      +r.slice(4, 6),
      +r.slice(6, 8),
      +r.slice(8, 10),
    ),
  );
}

/**
 * An end-entity certificate read with core's DER walker alone: what the per-device check
 * needs, at a fraction of the cost of crypto.X509Certificate (which dominated verification).
 */
export interface LeafCert {
  der: Buffer;
  tbs: Buffer;
  issuer: Buffer;
  subject: Buffer;
  spki: Buffer;
  notBefore: Date;
  notAfter: Date;
  ca: boolean;
  sigAlg: string;
  signature: Buffer;
}

export function readLeaf(der: Buffer, field: string): LeafCert {
  const p = parseCertificate(der, field);
  try {
    const [tbsN, algN, sigN] = children(der, read(der));
    const t = children(der, tbsN!);
    const validity = children(der, t[t[0]!.tag === 0xa0 ? 4 : 3]!);
    const sig = content(der, sigN!);
    if (sig[0] !== 0) throw new Error("unused bits");
    return {
      der,
      tbs: p.tbs,
      issuer: p.issuer,
      subject: p.subject,
      spki: p.spki,
      notBefore: decodeTime(validity[0]!.tag, content(der, validity[0]!)),
      notAfter: decodeTime(validity[1]!.tag, content(der, validity[1]!)),
      ca: basicConstraintsOf(p)?.ca ?? false,
      sigAlg: decodeOid(content(der, children(der, algN!)[0]!)),
      signature: sig.subarray(1),
    };
  } catch {
    throw invalid(
      field,
      phrase("bytes that are not a DER X.509 certificate"),
      "a DER-encoded X.509 certificate",
    );
  }
}

/** Name chaining by DER bytes (stricter than RFC 5280 7.1 matching) and the issuer's signature. */
function leafIssuedBy(leaf: LeafCert, issuer: Cert): boolean {
  if (!issuer.keyCertSign || !leaf.issuer.equals(issuer.subject)) return false;
  const hash = SIG_HASH[leaf.sigAlg];
  if (hash === undefined) return false;
  try {
    return crypto.verify(hash, leaf.tbs, issuer.key, leaf.signature);
  } catch {
    return false;
  }
}

const subjectOf = (c: crypto.X509Certificate) => c.subject.split("\n").join(", ");

function issuedBy(c: crypto.X509Certificate, issuer: crypto.X509Certificate): boolean {
  try {
    return c.checkIssued(issuer) && c.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** Why `c` is not valid at `now`, or undefined. */
export function validityProblem(c: crypto.X509Certificate, label: string, now: Date): string | undefined {
  const from = new Date(c.validFrom);
  const to = new Date(c.validTo);
  if (now < from) return `${label} (${subjectOf(c)}) is not valid before ${from.toISOString()}`;
  if (now > to) return `${label} (${subjectOf(c)}) expired ${to.toISOString()}`;
  return undefined;
}

export class TrustAnchors {
  readonly anchors: Cert[];

  constructor(
    pems: unknown,
    readonly now: Date,
    field = "trustAnchorsPem",
  ) {
    if (!Array.isArray(pems) || pems.length === 0) throw invalid(field, pems, "a non-empty list of PEMs");
    this.anchors = pems.flatMap((p, i) =>
      pemBlocks(p, "CERTIFICATE", `${field}[${i}]`).map((der) => readCert(der, `${field}[${i}]`)),
    );
  }

  /** The anchor that issued `c` and is valid now, or undefined. */
  issuerOf(c: crypto.X509Certificate): Cert | undefined {
    return this.anchors.find((a) => issuedBy(c, a.x) && !validityProblem(a.x, "anchor", this.now));
  }

  /**
   * Check CA certificates ordered from the one nearest the leaf up to the one below an anchor.
   * Returns the problem, or undefined when the path holds. `labels[i]` names `cas[i]` in messages.
   */
  caPathProblem(cas: Cert[], labels: string[]): string | undefined {
    for (let i = 0; i < cas.length; i++) {
      const c = cas[i]!;
      const v = validityProblem(c.x, labels[i]!, this.now);
      if (v) return v;
      if (!c.x.ca) return `${labels[i]} (${subjectOf(c.x)}) is not a CA certificate`;
      // RFC 5280 4.2.1.9: pathLen counts the CA certificates that may follow it, leaf excluded
      if (c.pathLen !== undefined && c.pathLen < i)
        return `${labels[i]} (${subjectOf(c.x)}) has pathLen ${c.pathLen} with ${i} CA certificates below it`;
      if (i + 1 < cas.length && !issuedBy(c.x, cas[i + 1]!.x))
        return `${labels[i]} (${subjectOf(c.x)}) is not issued by ${labels[i + 1]}`;
    }
    if (cas.length === 0) return undefined;
    const top = cas[cas.length - 1]!;
    const anchor = this.issuerOf(top.x);
    if (!anchor)
      return `${labels[cas.length - 1]} (${subjectOf(top.x)}) is not issued by any trust anchor valid now`;
    if (anchor.pathLen !== undefined && anchor.pathLen < cas.length)
      return `trust anchor (${subjectOf(anchor.x)}) has pathLen ${anchor.pathLen} with ${cas.length} CA certificates below it`;
    return undefined;
  }

  /** `leafProblem` for a certificate read by `readLeaf`: same checks, no X509Certificate. */
  leafDerProblem(leaf: LeafCert, issuer: Cert | undefined, label: string): string | undefined {
    const name = () => new crypto.X509Certificate(leaf.der).subject.split("\n").join(", ");
    if (this.now < leaf.notBefore)
      return `${label} (${name()}) is not valid before ${leaf.notBefore.toISOString()}`;
    if (this.now > leaf.notAfter) return `${label} (${name()}) expired ${leaf.notAfter.toISOString()}`;
    if (leaf.ca) return `${label} (${name()}) is a CA certificate, want an end-entity certificate`;
    if (issuer)
      return leafIssuedBy(leaf, issuer)
        ? undefined
        : `${label} (${name()}) is not issued by the next certificate`;
    const anchor = this.anchors.find(
      (a) => leafIssuedBy(leaf, a) && !validityProblem(a.x, "anchor", this.now),
    );
    return anchor ? undefined : `${label} (${name()}) is not issued by any trust anchor valid now`;
  }

  /** Check an end-entity certificate against its issuer (`undefined`: look among the anchors). */
  leafProblem(leaf: crypto.X509Certificate, issuer: Cert | undefined, label: string): string | undefined {
    const v = validityProblem(leaf, label, this.now);
    if (v) return v;
    if (leaf.ca) return `${label} (${subjectOf(leaf)}) is a CA certificate, want an end-entity certificate`;
    if (issuer) {
      if (!issuedBy(leaf, issuer.x))
        return `${label} (${subjectOf(leaf)}) is not issued by the next certificate`;
      return undefined;
    }
    if (!this.issuerOf(leaf))
      return `${label} (${subjectOf(leaf)}) is not issued by any trust anchor valid now`;
    return undefined;
  }
}
