/**
 * Station-side reading of the PKCS#10 certification requests (RFC 2986) devices return from
 * CSR and ROTATE: split the DER into its signed part, subject, key and signature, check the
 * proof of possession (ecdsa-with-SHA256 only, RFC 5758), and optionally that the key is the
 * one the device identified with. The issuing CA does its own, stricter checks; this is what
 * a station does before it forwards a request.
 */
import { type KeyObject, verify } from "node:crypto";
import { FleetError, invalid } from "../errors";
import { children, contentOf, decodeOid, expect, read, TAG, wholeOf } from "../x509/der";
import { importP256Spki } from "./attest";

export const OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2";

const ATTR_OIDS: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.5": "serialNumber",
};

export interface ParsedCsr {
  /** the DER CertificationRequestInfo, i.e. the signed bytes */
  info: Buffer;
  /** subject attributes in order, by short name (or dotted OID if unknown) */
  subject: Array<[string, string]>;
  /** SubjectPublicKeyInfo DER */
  spki: Buffer;
  signatureAlgorithm: string;
  signature: Buffer;
}

export function parseCsr(der: Uint8Array): ParsedCsr {
  const top = expect(der, TAG.SEQUENCE, 0, der.length, "csr");
  if (top.end !== der.length) throw invalid("csr", `${der.length - top.end} trailing bytes`, "none");
  const [infoN, algN, sigN, ...rest] = children(der, top);
  if (!infoN || !algN || !sigN || rest.length) throw invalid("csr", "a malformed request", "3 elements");
  if (infoN.tag !== TAG.SEQUENCE || algN.tag !== TAG.SEQUENCE || sigN.tag !== TAG.BIT_STRING)
    throw invalid("csr", "unexpected element types", "SEQUENCE, SEQUENCE, BIT STRING");
  const [versionN, nameN, spkiN] = children(der, infoN);
  if (!versionN || versionN.tag !== TAG.INTEGER || contentOf(der, versionN).toString("hex") !== "00")
    throw invalid("csr.version", "other", "v1 (0)");
  if (!nameN || nameN.tag !== TAG.SEQUENCE) throw invalid("csr.subject", "missing", "a Name");
  if (!spkiN || spkiN.tag !== TAG.SEQUENCE) throw invalid("csr.subjectPKInfo", "missing", "a SEQUENCE");
  const subject: Array<[string, string]> = [];
  for (const rdn of children(der, nameN)) {
    for (const atv of children(der, rdn)) {
      const [t, v] = children(der, atv);
      if (!t || !v || t.tag !== TAG.OID)
        throw invalid("csr.subject", "a malformed attribute", "type and value");
      const o = decodeOid(contentOf(der, t));
      subject.push([ATTR_OIDS[o] ?? o, contentOf(der, v).toString("utf8")]);
    }
  }
  const algOid = read(der, algN.contentStart, algN.end);
  if (algOid.tag !== TAG.OID) throw invalid("csr.signatureAlgorithm", "no OID", "an AlgorithmIdentifier");
  const sigBits = contentOf(der, sigN);
  if (sigBits.length < 2 || sigBits[0] !== 0)
    throw invalid("csr.signature", "unused bits", "a whole-byte BIT STRING");
  return {
    info: wholeOf(der, infoN),
    subject,
    spki: wholeOf(der, spkiN),
    signatureAlgorithm: decodeOid(contentOf(der, algOid)),
    signature: sigBits.subarray(1),
  };
}

/**
 * Parse and check a CSR's signature. With `expected`, also require the CSR's key to be that
 * key (the one the device identified or attested with; pass its KeyObject as `expectedKey` to
 * skip a key import). Throws INTEGRITY on a bad signature or a different key.
 */
export function verifyCsr(der: Uint8Array, expected?: Uint8Array, expectedKey?: KeyObject): ParsedCsr {
  const csr = parseCsr(der);
  if (csr.signatureAlgorithm !== OID_ECDSA_SHA256)
    throw invalid(
      "csr.signatureAlgorithm",
      csr.signatureAlgorithm,
      `ecdsa-with-SHA256 (${OID_ECDSA_SHA256})`,
    );
  if (expected && !csr.spki.equals(expected))
    throw new FleetError(
      "INTEGRITY",
      "csr.subjectPKInfo: got a different key, want the device's identity key",
    );
  // `expectedKey`: the already imported form of `expected`, saving an import per request
  const key: KeyObject = expected && expectedKey ? expectedKey : importP256Spki(csr.spki);
  let ok = false;
  try {
    ok = verify("sha256", csr.info, key, csr.signature);
  } catch {
    ok = false;
  }
  if (!ok)
    throw new FleetError("INTEGRITY", "csr.signature: got an invalid signature, want proof of possession");
  return csr;
}
