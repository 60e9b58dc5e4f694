/**
 * Certification path checks for manifests (RFC 5280 6.1, the subset that matters here):
 * each certificate valid at `now`, issued by the next one (name chaining and signature, through
 * OpenSSL's X509_check_issued, which also enforces the issuer's keyCertSign), every issuer a CA
 * whose pathLen allows the CAs below it, and the top one issued by a trust anchor. Revocation
 * is not checked here (CRLs are core/x509/crl's business).
 */
import * as crypto from "node:crypto";
import { invalid, phrase } from "../errors";
import { basicConstraintsOf, parseCertificate } from "../x509/parse";
import { pemBlocks } from "../x509/pem";

export interface Cert {
  x: crypto.X509Certificate;
  der: Buffer;
  /** basicConstraints pathLen, undefined when absent or no limit */
  pathLen?: number;
}

export function readCert(der: Buffer, field: string): Cert {
  const parsed = parseCertificate(der, field);
  let x: crypto.X509Certificate;
  try {
    x = new crypto.X509Certificate(der);
  } catch {
    throw invalid(field, phrase("bytes OpenSSL cannot parse as a certificate"), "a DER X.509 certificate");
  }
  return { x, der, pathLen: basicConstraintsOf(parsed)?.pathLen };
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
