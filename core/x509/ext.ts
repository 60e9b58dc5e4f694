/**
 * X.509 v3 extensions (RFC 5280 4.2) as ready-made DER. Criticality follows RFC 5280:
 * basicConstraints critical in CA certificates, keyUsage critical, nameConstraints critical,
 * SKI/AKI/CRLDP/SAN non-critical (SAN critical only when the subject is empty).
 */
import * as crypto from "node:crypto";
import { invalid } from "../errors";
import {
  bool,
  children,
  content,
  implicitCons,
  implicitPrim,
  namedBits,
  octets,
  oid,
  read,
  seq,
  uint,
} from "./der";

export const OID = {
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectKeyIdentifier: "2.5.29.14",
  authorityKeyIdentifier: "2.5.29.35",
  nameConstraints: "2.5.29.30",
  crlDistributionPoints: "2.5.29.31",
  subjectAltName: "2.5.29.17",
  crlNumber: "2.5.29.20",
} as const;

export function extension(id: string, critical: boolean, value: Uint8Array): Buffer {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}

export function basicConstraints(ca: boolean, pathLen?: number): Buffer {
  const parts: Buffer[] = [];
  if (ca) parts.push(bool(true));
  if (ca && pathLen !== undefined) parts.push(uint(pathLen));
  return extension(OID.basicConstraints, true, seq(...parts));
}

export const KEY_USAGES = [
  "digitalSignature",
  "contentCommitment",
  "keyEncipherment",
  "dataEncipherment",
  "keyAgreement",
  "keyCertSign",
  "cRLSign",
  "encipherOnly",
  "decipherOnly",
] as const;
export type KeyUsage = (typeof KEY_USAGES)[number];

export function keyUsage(usages: readonly KeyUsage[]): Buffer {
  const bits = usages.map((u) => {
    const i = KEY_USAGES.indexOf(u);
    if (i < 0) throw invalid("keyUsage", u, `one of ${KEY_USAGES.join(", ")}`);
    return i;
  });
  return extension(OID.keyUsage, true, namedBits(bits));
}

export const EKU = {
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  codeSigning: "1.3.6.1.5.5.7.3.3",
  OCSPSigning: "1.3.6.1.5.5.7.3.9",
} as const;

export function extKeyUsage(oids: readonly string[]): Buffer {
  return extension(OID.extKeyUsage, false, seq(...oids.map((o) => oid(o))));
}

/** RFC 7093 section 2 method 1: leftmost 160 bits of SHA-256 over the subjectPublicKey bits. */
export function keyIdentifier(spki: Uint8Array): Buffer {
  // SPKI = SEQ { AlgorithmIdentifier, BIT STRING }: hash the BIT STRING's value minus its unused-bits byte
  const root = read(spki);
  const bits = children(spki, root)[1]!;
  // one-shot: a Hash object per key was half of this function's time (a preview rebuilds every TBS)
  return crypto.hash("sha256", content(spki, bits).subarray(1), "buffer").subarray(0, 20);
}

export const subjectKeyIdentifier = (kid: Uint8Array): Buffer =>
  extension(OID.subjectKeyIdentifier, false, octets(kid));
export const authorityKeyIdentifier = (kid: Uint8Array): Buffer =>
  extension(OID.authorityKeyIdentifier, false, seq(implicitPrim(0, kid)));

export interface NameConstraints {
  permittedDNS?: string[];
  excludedDNS?: string[];
  permittedEmail?: string[];
  excludedEmail?: string[];
  permittedURI?: string[];
  excludedURI?: string[];
}

function subtrees(dns: string[] = [], email: string[] = [], uri: string[] = []): Buffer[] {
  // GeneralSubtree ::= SEQ { base GeneralName, minimum [0] DEFAULT 0, maximum [1] OPTIONAL }
  return [
    ...email.map((e) => seq(implicitPrim(1, Buffer.from(e, "ascii")))),
    ...dns.map((d) => seq(implicitPrim(2, Buffer.from(d, "ascii")))),
    ...uri.map((u) => seq(implicitPrim(6, Buffer.from(u, "ascii")))),
  ];
}

export function nameConstraints(nc: NameConstraints): Buffer {
  const parts: Buffer[] = [];
  const permitted = subtrees(nc.permittedDNS, nc.permittedEmail, nc.permittedURI);
  const excluded = subtrees(nc.excludedDNS, nc.excludedEmail, nc.excludedURI);
  if (permitted.length) parts.push(implicitCons(0, ...permitted));
  if (excluded.length) parts.push(implicitCons(1, ...excluded));
  return extension(OID.nameConstraints, true, seq(...parts));
}

export function crlDistributionPoints(urls: readonly string[]): Buffer {
  // DistributionPoint ::= SEQ { distributionPoint [0] { fullName [0] GeneralNames } }
  return extension(
    OID.crlDistributionPoints,
    false,
    seq(...urls.map((u) => seq(implicitCons(0, implicitCons(0, implicitPrim(6, Buffer.from(u, "ascii"))))))),
  );
}

export interface AltNames {
  dns?: string[];
  uri?: string[];
  email?: string[];
}

export function subjectAltName(names: AltNames, critical = false): Buffer {
  const gn = [
    ...(names.email ?? []).map((e) => implicitPrim(1, Buffer.from(e, "ascii"))),
    ...(names.dns ?? []).map((d) => implicitPrim(2, Buffer.from(d, "ascii"))),
    ...(names.uri ?? []).map((u) => implicitPrim(6, Buffer.from(u, "ascii"))),
  ];
  return extension(OID.subjectAltName, critical, seq(...gn));
}
