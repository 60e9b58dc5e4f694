/**
 * Certificate assembly (RFC 5280 4.1) by concatenation of DER parts, signed with Node's
 * crypto. `LeafTemplate` precomputes everything constant for a batch (version, signature
 * algorithm, issuer name, validity, fixed extensions) so issuing one more certificate costs
 * a few small encodings, one buffer concat and one signature.
 */
import * as crypto from "node:crypto";
import { invalid } from "../errors";
import { bitString, explicit, oid, seq, set, time, uint, uintBytes, utf8 } from "./der";
import {
  type AltNames,
  authorityKeyIdentifier,
  basicConstraints,
  crlDistributionPoints,
  extKeyUsage,
  type KeyUsage,
  keyIdentifier,
  keyUsage,
  subjectAltName,
  subjectKeyIdentifier,
} from "./ext";
import { algInfo, type KeyAlgorithm, type SigningKey, signWith } from "./keys";

/**
 * A positive serial with at least 120 bits from the CSPRNG (CA/B Forum asks 64), 16 octets,
 * DER-minimal by construction: top bit clear so no 0x00 pad, first octet non-zero.
 */
export function randomSerial(rng: (n: number) => Uint8Array = crypto.randomBytes): Buffer {
  const b = Buffer.from(rng(16));
  if (b.length !== 16) throw invalid("rng", `${b.length} bytes`, "16 bytes");
  b[0] = b[0]! & 0x7f;
  if (b[0] === 0) b[0] = 1;
  return b;
}

export interface TbsFields {
  serial: Uint8Array;
  /** DER Name of the issuer: taken byte for byte from the issuer certificate's subject */
  issuer: Uint8Array;
  subject: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  spki: Uint8Array;
  extensions: Uint8Array[];
}

const V3 = explicit(0, uint(2));

export function encodeTbs(f: TbsFields, signer: KeyAlgorithm): Buffer {
  return seq(
    V3,
    uintBytes(f.serial),
    algInfo(signer).sigAlgId,
    f.issuer,
    seq(time(f.notBefore), time(f.notAfter)),
    f.subject,
    f.spki,
    explicit(3, seq(...f.extensions)),
  );
}

/** Certificate ::= SEQ { tbsCertificate, signatureAlgorithm, signatureValue } */
export function signTbs(tbs: Uint8Array, signer: KeyAlgorithm, key: SigningKey): Buffer {
  return seq(tbs, algInfo(signer).sigAlgId, bitString(signWith(signer, key, tbs)));
}

export interface LeafProfile {
  /** constant subject attributes placed before the per-device CN, e.g. O and OU */
  organization?: string;
  organizationalUnit?: string;
  notBefore: Date;
  notAfter: Date;
  keyUsage: readonly KeyUsage[];
  extKeyUsage: readonly string[];
  crlUrls?: readonly string[];
}

export interface LeafIssuer {
  algorithm: KeyAlgorithm;
  key: SigningKey;
  /** DER Name of the issuing CA (its certificate's subject) */
  subject: Uint8Array;
  keyId: Uint8Array;
}

/** Per-batch precomputed certificate template for device (end-entity) certificates. */
export class LeafTemplate {
  private readonly head: Buffer; // version + (serial goes between) ...
  private readonly afterSerial: Buffer; // sigAlg + issuer + validity
  private readonly subjectPrefix: Buffer[]; // RDNs before CN
  private readonly fixedExt: Buffer[];
  private readonly sigAlgId: Buffer;

  constructor(
    private readonly issuer: LeafIssuer,
    profile: LeafProfile,
  ) {
    if (profile.notAfter <= profile.notBefore) {
      throw invalid(
        "profile.notAfter",
        profile.notAfter.toISOString(),
        `after notBefore ${profile.notBefore.toISOString()}`,
      );
    }
    this.sigAlgId = algInfo(issuer.algorithm).sigAlgId;
    this.head = V3;
    this.afterSerial = Buffer.concat([
      this.sigAlgId,
      issuer.subject,
      seq(time(profile.notBefore), time(profile.notAfter)),
    ]);
    this.subjectPrefix = [];
    if (profile.organization) this.subjectPrefix.push(set(seq(oid("2.5.4.10"), utf8(profile.organization))));
    if (profile.organizationalUnit)
      this.subjectPrefix.push(set(seq(oid("2.5.4.11"), utf8(profile.organizationalUnit))));
    this.fixedExt = [
      basicConstraints(false),
      keyUsage(profile.keyUsage),
      ...(profile.extKeyUsage.length ? [extKeyUsage(profile.extKeyUsage)] : []),
      authorityKeyIdentifier(issuer.keyId),
      ...(profile.crlUrls?.length ? [crlDistributionPoints(profile.crlUrls)] : []),
    ];
  }

  /** The TBSCertificate for one device: patches serial, subject CN, SPKI, SKI and SAN. */
  tbs(serial: Uint8Array, commonName: string, spki: Uint8Array, san?: AltNames): Buffer {
    const subject = seq(...this.subjectPrefix, set(seq(oid("2.5.4.3"), utf8(commonName))));
    const ext = [...this.fixedExt, subjectKeyIdentifier(keyIdentifier(spki))];
    if (san && (san.dns?.length || san.uri?.length || san.email?.length)) ext.push(subjectAltName(san));
    return seq(this.head, uintBytes(serial), this.afterSerial, subject, spki, explicit(3, seq(...ext)));
  }

  issue(serial: Uint8Array, commonName: string, spki: Uint8Array, san?: AltNames): Buffer {
    const tbs = this.tbs(serial, commonName, spki, san);
    return seq(tbs, this.sigAlgId, bitString(signWith(this.issuer.algorithm, this.issuer.key, tbs)));
  }
}
