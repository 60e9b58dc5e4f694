/**
 * Certificate revocation lists, X.509 v2 (RFC 5280 section 5): thisUpdate/nextUpdate, a
 * monotonically increasing cRLNumber and the authorityKeyIdentifier, signed by the CA whose
 * certificates it lists. Revoked entries carry their date and, optionally, a reasonCode.
 */
import { invalid } from "../errors";
import { bitString, explicit, seq, time, tlv, uint, uintBytes } from "./der";
import { authorityKeyIdentifier, extension, OID } from "./ext";
import { algInfo, type KeyAlgorithm, type SigningKey, signWith } from "./keys";

export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  privilegeWithdrawn: 9,
} as const;
export type RevocationReason = keyof typeof REVOCATION_REASONS;

export interface RevokedEntry {
  /** serial number as hex (as in IssuedCa.serialNumber) */
  serialHex: string;
  revokedAt: Date;
  reason?: RevocationReason;
}

export interface CrlSpec {
  issuerName: Uint8Array;
  issuerKeyId: Uint8Array;
  signer: KeyAlgorithm;
  key: SigningKey;
  thisUpdate: Date;
  nextUpdate: Date;
  crlNumber: bigint | number;
  revoked?: RevokedEntry[];
}

export function buildCrl(spec: CrlSpec): Buffer {
  if (spec.nextUpdate <= spec.thisUpdate) {
    throw invalid(
      "nextUpdate",
      spec.nextUpdate.toISOString(),
      `a time after thisUpdate ${spec.thisUpdate.toISOString()}`,
    );
  }
  const entries = (spec.revoked ?? []).map((r, i) => {
    if (!/^[0-9a-f]+$/i.test(r.serialHex))
      throw invalid(`revoked[${i}].serialHex`, r.serialHex, "a hexadecimal serial number");
    const parts = [
      uintBytes(Buffer.from(r.serialHex.length % 2 ? `0${r.serialHex}` : r.serialHex, "hex")),
      time(r.revokedAt),
    ];
    if (r.reason !== undefined) {
      const code = REVOCATION_REASONS[r.reason];
      if (code === undefined)
        throw invalid(
          `revoked[${i}].reason`,
          r.reason,
          `one of ${Object.keys(REVOCATION_REASONS).join(", ")}`,
        );
      parts.push(seq(extension("2.5.29.21", false, tlv(0x0a, Buffer.from([code])))));
    }
    return seq(...parts);
  });
  const sigAlg = algInfo(spec.signer).sigAlgId;
  const tbs = seq(
    uint(1), // v2
    sigAlg,
    spec.issuerName,
    time(spec.thisUpdate),
    time(spec.nextUpdate),
    // one concatenated buffer: spreading 100,000 entries as arguments overflows the stack
    ...(entries.length ? [seq(Buffer.concat(entries))] : []),
    explicit(
      0,
      seq(authorityKeyIdentifier(spec.issuerKeyId), extension(OID.crlNumber, false, uint(spec.crlNumber))),
    ),
  );
  return seq(tbs, sigAlg, bitString(signWith(spec.signer, spec.key, tbs)));
}
