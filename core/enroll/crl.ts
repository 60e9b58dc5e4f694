/**
 * Publishing an issuing CA's CRL (RFC 5280 section 5) from the registry: every certificate the
 * registry holds as revoked for that CA, signed by it, written atomically (core/durable) as `<dir>/<issuer fingerprint>.crl.pem` with a sidecar
 * `.json` that remembers the cRLNumber, which only ever grows.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { signCrl } from "../ca";
import { writeFileDurably } from "../durable";
import type { Registry } from "../registry/types";
import { REVOCATION_REASONS, type RevocationReason } from "../x509/crl";

export interface PublishedCrl {
  path: string;
  crlNumber: number;
  revoked: number;
}

export async function publishCrl(
  registry: Registry,
  issuer: { certificatePem: string; keyPem: string; fingerprint: string },
  dir: string,
  intervalHours = 168,
): Promise<PublishedCrl> {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${issuer.fingerprint}.crl.pem`);
  const meta = `${file.slice(0, -4)}.json`;
  let previous = 0;
  try {
    previous = Number(JSON.parse(fs.readFileSync(meta, "utf8")).crlNumber) || 0;
  } catch {
    // first CRL of this issuer
  }
  const revoked = await registry.revokedBy(issuer.fingerprint);
  const crl = signCrl(
    { certificatePem: issuer.certificatePem, keyPem: issuer.keyPem },
    {
      previousNumber: previous,
      intervalHours,
      revoked: revoked.map((r) => ({
        serialHex: r.serial,
        revokedAt: new Date(Math.floor(r.revokedAt.getTime() / 1000) * 1000),
        ...(r.reason && r.reason in REVOCATION_REASONS ? { reason: r.reason as RevocationReason } : {}),
      })),
    },
  );
  // the number is remembered first: a crash between the two writes skips a number, never reuses one
  const tmp = (f: string) => `${f}.tmp-${process.pid}`; // two providers may publish at once
  writeFileDurably(meta, JSON.stringify({ crlNumber: crl.crlNumber, thisUpdate: crl.thisUpdate }), {
    tmp: tmp(meta),
  });
  writeFileDurably(file, crl.crlPem, { tmp: tmp(file) });
  return { path: file, crlNumber: crl.crlNumber, revoked: revoked.length };
}
