/**
 * Certificate chain check a device runs before it installs an identity certificate: the
 * chain (leaf first) must end in a root whose SHA-256 is burned into the device's trust-anchor
 * fuses, every link must be issued and signed by the next certificate, issuers must be CAs,
 * every certificate must be valid at the device's time, issuers must allow certificate signing
 * (keyUsage keyCertSign) and the path length their basicConstraints permit, and the leaf must
 * certify the device's own key. A simplified RFC 5280 section 6 path validation (no policies,
 * name constraints or revocation, which a constrained device typically leaves to the backend),
 * using Node's X509Certificate for parsing and signature checks.
 */
import { createHash, X509Certificate } from "node:crypto";
import { StationError, Status } from "../../core/station/frame";
import { basicConstraintsOf, parseCertificate } from "../../core/x509/parse";

/** keyUsage keyCertSign (bit 5), or true when the certificate has no keyUsage extension. */
function allowsCertSign(der: Uint8Array): boolean {
  const ku = parseCertificate(der).extensions.get("2.5.29.15");
  if (!ku) return true;
  // BIT STRING: tag, length, unused-bits octet, then the bits; bit 5 is 0x04 of the first octet
  return ku.value.length > 3 && (ku.value[3]! & 0x04) !== 0;
}

export function sha256(b: Uint8Array): Buffer {
  return createHash("sha256").update(b).digest();
}

function parse(der: Uint8Array, i: number): X509Certificate {
  try {
    return new X509Certificate(Buffer.from(der.buffer, der.byteOffset, der.length));
  } catch {
    throw new StationError(
      Status.BAD_CERTIFICATE,
      `chain[${i}]: got bytes that do not parse, want a DER certificate`,
    );
  }
}

/**
 * Validate `chain` for a device whose key is `leafSpki`. Throws StationError BAD_SIGNATURE
 * for a signature that does not verify, BAD_CERTIFICATE for anything else wrong with it.
 */
export function verifyChain(chain: Uint8Array[], anchors: Buffer[], leafSpki: Buffer, now: Date): void {
  const certs = chain.map(parse);
  const root = certs[certs.length - 1]!;
  const rootHash = sha256(chain[chain.length - 1]!);
  if (!anchors.some((a) => a.equals(rootHash)))
    throw new StationError(
      Status.BAD_CERTIFICATE,
      "chain root: got an untrusted root, want a fused trust anchor",
    );
  if (!root.verify(root.publicKey))
    throw new StationError(
      Status.BAD_SIGNATURE,
      `chain[${certs.length - 1}]: root self-signature does not verify`,
    );
  // issuers first: what each CA may sign (X509Certificate.checkIssued would only say "no")
  for (let i = 1; i < certs.length; i++) {
    // basicConstraints itself: X509Certificate.ca also folds in keyUsage
    const bc = basicConstraintsOf(parseCertificate(chain[i]!));
    if (!bc?.ca) throw new StationError(Status.BAD_CERTIFICATE, `chain[${i}]: got an end entity, want a CA`);
    if (!allowsCertSign(chain[i]!))
      throw new StationError(
        Status.BAD_CERTIFICATE,
        `chain[${i}].keyUsage: got a CA without keyCertSign, want keyCertSign`,
      );
    // RFC 5280 4.2.1.9: pathLen bounds the CA certificates that may follow below this one
    const pathLen = basicConstraintsOf(parseCertificate(chain[i]!))?.pathLen;
    if (pathLen !== undefined && i - 1 > pathLen)
      throw new StationError(
        Status.BAD_CERTIFICATE,
        `chain[${i}].pathLen: got ${i - 1} CA(s) below a CA with pathLen ${pathLen}, want at most ${pathLen}`,
      );
  }
  for (let i = 0; i < certs.length; i++) {
    const c = certs[i]!;
    const from = new Date(c.validFrom);
    const to = new Date(c.validTo);
    if (!(from <= now && now <= to))
      throw new StationError(
        Status.BAD_CERTIFICATE,
        `chain[${i}].validity: got ${from.toISOString()}..${to.toISOString()}, want it to include ${now.toISOString()}`,
      );
    if (i === 0 && c.ca)
      throw new StationError(Status.BAD_CERTIFICATE, "chain[0]: got a CA, want an end entity");
    if (i + 1 < certs.length) {
      const issuer = certs[i + 1]!;
      if (!c.checkIssued(issuer))
        throw new StationError(
          Status.BAD_CERTIFICATE,
          `chain[${i}]: got issuer names that do not chain to chain[${i + 1}]`,
        );
      if (!c.verify(issuer.publicKey))
        throw new StationError(
          Status.BAD_SIGNATURE,
          `chain[${i}]: signature does not verify under chain[${i + 1}]`,
        );
    }
  }
  const leafKey = certs[0]!.publicKey.export({ type: "spki", format: "der" });
  if (!leafKey.equals(leafSpki))
    throw new StationError(
      Status.BAD_CERTIFICATE,
      "chain[0].subjectPublicKey: got another key, want this device's key",
    );
}
