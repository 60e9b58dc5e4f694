/**
 * The PKIX structures emulated devices and the emulated silicon vendor produce, built as DER
 * by hand (core/x509/der.ts) and signed with Node's crypto: PKCS#10 certification requests
 * (RFC 2986) for a device's identity key, and X.509 v3 certificates (RFC 5280) for the vendor
 * CA and its chip certificates (and for test CAs). ECDSA P-256 with SHA-256 only
 * (ecdsa-with-SHA256, RFC 5758: AlgorithmIdentifier without parameters). Both verify with
 * `openssl req -verify` / `openssl verify` (see the tests).
 */
import { createHash, type KeyObject, sign } from "node:crypto";
import { invalid } from "../../core/errors";
import type { Subject } from "../../core/station/messages";
import * as der from "../../core/x509/der";

const ATTR_OID: Record<string, string> = {
  CN: "2.5.4.3",
  O: "2.5.4.10",
  OU: "2.5.4.11",
  C: "2.5.4.6",
  L: "2.5.4.7",
  ST: "2.5.4.8",
  serialNumber: "2.5.4.5",
};

export const ECDSA_SHA256 = der.seq(der.oid("1.2.840.10045.4.3.2"));

/** Name: one attribute per RDN, in the given order; C and serialNumber are PrintableString. */
export function encodeName(subject: Subject): Buffer {
  return der.seq(
    ...subject.map(([a, v]) => {
      const o = ATTR_OID[a];
      if (!o) throw invalid("subject", a, Object.keys(ATTR_OID).join(", "));
      const value = a === "C" || a === "serialNumber" ? der.printable(v) : der.utf8(v);
      return der.set(der.seq(der.oid(o), value));
    }),
  );
}

function signed(tbs: Buffer, key: KeyObject): Buffer {
  return der.seq(tbs, ECDSA_SHA256, der.bits(sign("sha256", tbs, key)));
}

/** PKCS#10 request for `spki` (DER SubjectPublicKeyInfo), signed by its private key. */
export function buildCsr(subject: Subject, spki: Uint8Array, privateKey: KeyObject): Buffer {
  const info = der.seq(der.uint(0), encodeName(subject), spki, der.ctx(0));
  return signed(info, privateKey);
}

export interface CertificateSpec {
  serial: Uint8Array | bigint;
  issuer: Subject;
  subject: Subject;
  notBefore: Date;
  notAfter: Date;
  /** DER SubjectPublicKeyInfo of the subject */
  spki: Uint8Array;
  /** DER SubjectPublicKeyInfo of the issuer (for the authority key identifier) */
  issuerSpki: Uint8Array;
  ca: boolean;
  pathLen?: number;
  signer: KeyObject;
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING value. */
export function keyIdentifier(spki: Uint8Array): Buffer {
  const top = der.read(spki);
  const [, keyBits] = der.children(spki, top);
  if (!keyBits || keyBits.tag !== der.TAG.BIT_STRING) throw invalid("spki", spki, "a SubjectPublicKeyInfo");
  return createHash("sha1").update(der.contentOf(spki, keyBits).subarray(1)).digest();
}

function ext(oid: string, critical: boolean, value: Buffer): Buffer {
  return critical
    ? der.seq(der.oid(oid), der.bool(true), der.octets(value))
    : der.seq(der.oid(oid), der.octets(value));
}

/** An X.509 v3 certificate: CA (keyCertSign, cRLSign) or end entity (digitalSignature). */
export function buildCertificate(s: CertificateSpec): Buffer {
  if (s.notAfter <= s.notBefore) throw invalid("notAfter", s.notAfter.toISOString(), "after notBefore");
  const bc = s.ca
    ? der.seq(der.bool(true), ...(s.pathLen === undefined ? [] : [der.uint(s.pathLen)]))
    : der.seq();
  const extensions = der.seq(
    ext("2.5.29.19", true, bc),
    ext("2.5.29.15", true, s.ca ? der.namedBits([5, 6]) : der.namedBits([0])),
    ext("2.5.29.14", false, der.octets(keyIdentifier(s.spki))),
    ext("2.5.29.35", false, der.seq(der.tlv(0x80, keyIdentifier(s.issuerSpki)))),
  );
  const tbs = der.seq(
    der.ctx(0, der.uint(2)),
    der.uint(s.serial),
    ECDSA_SHA256,
    encodeName(s.issuer),
    der.seq(der.time(s.notBefore), der.time(s.notAfter)),
    encodeName(s.subject),
    s.spki,
    der.ctx(3, extensions),
  );
  return signed(tbs, s.signer);
}

export function toPem(derBytes: Uint8Array, label = "CERTIFICATE"): string {
  const b64 = Buffer.from(derBytes)
    .toString("base64")
    .replace(/(.{64})/g, "$1\n");
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith("\n") ? "" : "\n"}-----END ${label}-----\n`;
}
