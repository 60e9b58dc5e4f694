/**
 * Certificate chain check a device runs before it installs an identity certificate: the
 * chain (leaf first) must end in a root whose SHA-256 is burned into the device's trust-anchor
 * fuses, every link must be issued and signed by the next certificate, issuers must be CAs,
 * every certificate must be valid at the device's time, and the leaf must certify the
 * device's own key. A simplified RFC 5280 section 6 path validation (no policies, name
 * constraints or revocation, which a constrained device typically leaves to the backend),
 * using Node's X509Certificate for parsing and signature checks.
 */
import { createHash, X509Certificate } from "node:crypto";
import { StationError, Status } from "../../core/station/frame";

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
  for (let i = 0; i < certs.length; i++) {
    const c = certs[i]!;
    const from = new Date(c.validFrom);
    const to = new Date(c.validTo);
    if (!(from <= now && now <= to))
      throw new StationError(
        Status.BAD_CERTIFICATE,
        `chain[${i}].validity: got ${from.toISOString()}..${to.toISOString()}, want it to include ${now.toISOString()}`,
      );
    if (i > 0 && !c.ca)
      throw new StationError(Status.BAD_CERTIFICATE, `chain[${i}]: got an end entity, want a CA`);
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
