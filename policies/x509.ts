/**
 * Just enough X.509 (RFC 5280) for audits: Node's crypto.X509Certificate parses certificates and keys,
 * and a small DER walker reads what it does not expose (basicConstraints with pathLenConstraint, the
 * keyUsage bits, nameConstraints presence, the raw issuer/subject Names) plus CRLs (RFC 5280 section 5),
 * whose signatures are verified against the issuing CA's public key. Read-only: nothing here issues.
 */
import { createHash, verify as cryptoVerify, type KeyObject, X509Certificate } from "node:crypto";
import { curveBits, type KeySpec } from "./algorithms";
import type { CertRole, DeployedCertificate, DeployedCrl } from "./context";

interface Tlv {
  tag: number;
  /** offset of the tag byte */
  start: number;
  /** offset of the content */
  content: number;
  /** offset just past the content */
  end: number;
}

function readTlv(buf: Uint8Array, off: number): Tlv {
  if (off + 2 > buf.length) throw new Error("DER: truncated");
  const tag = buf[off]!;
  let len = buf[off + 1]!;
  let content = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error("DER: unsupported length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[content + i]!;
    content += n;
  }
  const end = content + len;
  if (end > buf.length) throw new Error("DER: length past end");
  return { tag, start: off, content, end };
}

function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let off = parent.content; off < parent.end; ) {
    const t = readTlv(buf, off);
    out.push(t);
    off = t.end;
  }
  return out;
}

function hex(buf: Uint8Array): string {
  return Buffer.from(buf).toString("hex").toUpperCase();
}

/** Serial numbers compared as upper-case hex without leading zeros. */
export function normalizeSerial(s: string): string {
  const h = s
    .replace(/[^0-9a-fA-F]/g, "")
    .toUpperCase()
    .replace(/^0+/, "");
  return h === "" ? "0" : h;
}

function oidString(buf: Uint8Array, t: Tlv): string {
  const b = buf.subarray(t.content, t.end);
  const parts: number[] = [Math.floor(b[0]! / 40), b[0]! % 40];
  let v = 0;
  for (let i = 1; i < b.length; i++) {
    v = v * 128 + (b[i]! & 0x7f);
    if (!(b[i]! & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  return parts.join(".");
}

function parseTime(buf: Uint8Array, t: Tlv): Date {
  const s = Buffer.from(buf.subarray(t.content, t.end)).toString("latin1");
  let y: number;
  let rest: string;
  if (t.tag === 0x17) {
    const yy = Number(s.slice(0, 2));
    y = yy >= 50 ? 1900 + yy : 2000 + yy;
    rest = s.slice(2);
  } else if (t.tag === 0x18) {
    y = Number(s.slice(0, 4));
    rest = s.slice(4);
  } else throw new Error("DER: want UTCTime or GeneralizedTime");
  const [mo, d, h, mi, se] = [0, 2, 4, 6, 8].map((i) => Number(rest.slice(i, i + 2)));
  return new Date(Date.UTC(y, mo! - 1, d, h, mi, se));
}

export type KeyUsageName =
  | "digitalSignature"
  | "nonRepudiation"
  | "keyEncipherment"
  | "dataEncipherment"
  | "keyAgreement"
  | "keyCertSign"
  | "cRLSign"
  | "encipherOnly"
  | "decipherOnly";

const kuBits: KeyUsageName[] = [
  "digitalSignature",
  "nonRepudiation",
  "keyEncipherment",
  "dataEncipherment",
  "keyAgreement",
  "keyCertSign",
  "cRLSign",
  "encipherOnly",
  "decipherOnly",
];

export interface PublicKeyInfo extends Partial<KeySpec> {
  /** asymmetricKeyType as Node reports it (ec, rsa, ed25519, ...). */
  type: string;
  curve?: string;
  /** RSA modulus and exponent, for weak-key tests. */
  modulus?: bigint;
  exponent?: bigint;
  /** SHA-256 of the SubjectPublicKeyInfo DER: compares keys across certificates. */
  spkiSha256: string;
}

export interface CertInfo {
  id: string;
  role: CertRole;
  deviceId?: string;
  batch?: string;
  active: boolean;
  subject: string;
  issuer: string;
  /** DER of the issuer and subject Names, hex: exact comparison for chains and CRLs. */
  issuerDer: string;
  subjectDer: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  keyCreatedAt?: Date;
  fingerprint256: string;
  key: PublicKeyInfo;
  publicKey: KeyObject;
  basicConstraints?: { ca: boolean; pathLen?: number; critical: boolean };
  keyUsage?: { usages: KeyUsageName[]; critical: boolean };
  hasNameConstraints: boolean;
  x509: X509Certificate;
}

function b64urlToBigInt(s: string): bigint {
  return BigInt(`0x${Buffer.from(s, "base64url").toString("hex") || "0"}`);
}

export function publicKeyInfo(key: KeyObject): PublicKeyInfo {
  const spki = key.export({ type: "spki", format: "der" });
  const info: PublicKeyInfo = {
    type: key.asymmetricKeyType ?? "unknown",
    spkiSha256: createHash("sha256").update(spki).digest("hex"),
  };
  const det = key.asymmetricKeyDetails ?? {};
  if (info.type === "ec") {
    info.family = "ecdsa";
    info.curve = det.namedCurve;
    info.bits = curveBits(det.namedCurve);
  } else if (info.type === "rsa" || info.type === "rsa-pss") {
    info.family = "rsa";
    info.bits = det.modulusLength;
    const jwk = key.export({ format: "jwk" });
    if (jwk.n) info.modulus = b64urlToBigInt(jwk.n);
    if (jwk.e) info.exponent = b64urlToBigInt(jwk.e);
  } else if (info.type === "ed25519") {
    info.family = "ed25519";
    info.bits = 256;
  }
  return info;
}

/** Parse one deployed certificate; throws on a malformed PEM (the engine turns that into CHECK_ERROR). */
export function parseCertificate(c: DeployedCertificate): CertInfo {
  const x509 = new X509Certificate(c.pem);
  const der = new Uint8Array(x509.raw);
  const cert = readTlv(der, 0);
  const tbs = children(der, cert)[0]!;
  const f = children(der, tbs);
  let i = 0;
  if (f[i]!.tag === 0xa0) i++; // version
  i++; // serial
  i++; // signature algorithm
  const issuerT = f[i++]!;
  i++; // validity
  const subjectT = f[i++]!;
  i++; // spki
  const info: CertInfo = {
    id: c.id,
    role: c.role,
    deviceId: c.deviceId,
    batch: c.batch,
    active: c.active ?? true,
    subject: x509.subject.replace(/\n/g, ", "),
    issuer: x509.issuer.replace(/\n/g, ", "),
    issuerDer: hex(der.subarray(issuerT.start, issuerT.end)),
    subjectDer: hex(der.subarray(subjectT.start, subjectT.end)),
    serial: normalizeSerial(x509.serialNumber),
    notBefore: new Date(x509.validFrom),
    notAfter: new Date(x509.validTo),
    keyCreatedAt: c.keyCreatedAt ? new Date(c.keyCreatedAt) : undefined,
    fingerprint256: x509.fingerprint256,
    key: publicKeyInfo(x509.publicKey),
    publicKey: x509.publicKey,
    hasNameConstraints: false,
    x509,
  };
  for (; i < f.length; i++) {
    if (f[i]!.tag !== 0xa3) continue;
    const exts = children(der, children(der, f[i]!)[0]!);
    for (const ext of exts) {
      const parts = children(der, ext);
      const oid = oidString(der, parts[0]!);
      let critical = false;
      let valueT = parts[1]!;
      if (valueT.tag === 0x01) {
        critical = der[valueT.content] !== 0;
        valueT = parts[2]!;
      }
      const inner = readTlv(der, valueT.content);
      if (oid === "2.5.29.19") {
        const bc = { ca: false, pathLen: undefined as number | undefined, critical };
        for (const t of children(der, inner)) {
          if (t.tag === 0x01) bc.ca = der[t.content] !== 0;
          if (t.tag === 0x02) bc.pathLen = Number(BigInt(`0x${hex(der.subarray(t.content, t.end)) || "0"}`));
        }
        info.basicConstraints = bc;
      } else if (oid === "2.5.29.15") {
        const bits = der.subarray(inner.content + 1, inner.end);
        const usages: KeyUsageName[] = [];
        kuBits.forEach((name, bit) => {
          const byte = bits[bit >> 3] ?? 0;
          if (byte & (0x80 >> (bit & 7))) usages.push(name);
        });
        info.keyUsage = { usages, critical };
      } else if (oid === "2.5.29.30") {
        info.hasNameConstraints = true;
      }
    }
  }
  return info;
}

export interface CrlInfo {
  issuerId: string;
  issuerDer: string;
  thisUpdate: Date;
  nextUpdate?: Date;
  revokedSerials: Set<string>;
  /** true when the signature verified against the issuer's key; false when it did not; undefined: no issuer. */
  signatureValid?: boolean;
}

const sigHashes: Record<string, string | null> = {
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.2.840.113549.1.1.11": "sha256",
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
  "1.3.101.112": null,
};

function pemToDer(pem: string, label: string): Uint8Array {
  const m = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`).exec(pem);
  if (!m) throw new Error(`want a PEM block "${label}"`);
  return new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
}

/** Parse a CRL; `issuer`, when given, is the CA certificate its signature is checked against. */
export function parseCrl(c: DeployedCrl, issuer?: CertInfo): CrlInfo {
  const der = pemToDer(c.pem, "X509 CRL");
  const top = readTlv(der, 0);
  const [tbs, sigAlg, sigVal] = children(der, top);
  if (!tbs || !sigAlg || !sigVal) throw new Error("CRL: want tbsCertList, signatureAlgorithm, signature");
  const f = children(der, tbs);
  let i = 0;
  if (f[i]!.tag === 0x02) i++; // version
  i++; // signature
  const issuerT = f[i++]!;
  const thisUpdate = parseTime(der, f[i++]!);
  let nextUpdate: Date | undefined;
  if (f[i] && (f[i]!.tag === 0x17 || f[i]!.tag === 0x18)) nextUpdate = parseTime(der, f[i++]!);
  const revoked = new Set<string>();
  if (f[i] && f[i]!.tag === 0x30) {
    for (const entry of children(der, f[i]!)) {
      const serialT = children(der, entry)[0]!;
      revoked.add(normalizeSerial(hex(der.subarray(serialT.content, serialT.end))));
    }
  }
  const info: CrlInfo = {
    issuerId: c.issuer,
    issuerDer: hex(der.subarray(issuerT.start, issuerT.end)),
    thisUpdate,
    nextUpdate,
    revokedSerials: revoked,
  };
  if (issuer) {
    const oid = oidString(der, children(der, sigAlg)[0]!);
    const hash = sigHashes[oid];
    const signature = der.subarray(sigVal.content + 1, sigVal.end);
    info.signatureValid =
      hash !== undefined &&
      info.issuerDer === issuer.subjectDer &&
      cryptoVerify(hash, der.subarray(tbs.start, tbs.end), issuer.publicKey, signature);
  }
  return info;
}
