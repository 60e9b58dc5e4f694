/**
 * Publishing an issuing CA's CRL (RFC 5280 section 5) from the registry: every certificate the
 * registry holds as revoked for that CA, signed by it, written atomically (core/durable) as `<dir>/<issuer fingerprint>.crl.pem` with a sidecar
 * `.json` that remembers the cRLNumber, which only ever grows.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { signCrl } from "../ca";
import { ensurePrivateDir, PUBLIC_FILE, writeFileDurably } from "../durable";
import { FleetError } from "../errors";
import type { Registry } from "../registry/types";
import { REVOCATION_REASONS, type RevocationReason } from "../x509/crl";
import type { SigningKey } from "../x509/keys";

export interface PublishedCrl {
  path: string;
  crlNumber: number;
  revoked: number;
  /** SHA-256 over the revoked serials it lists: what the registry held when it was signed */
  revokedDigest: string;
}

interface CrlMeta {
  crlNumber: number;
  thisUpdate: string;
  nextUpdate?: string;
  revokedDigest?: string;
}

const filesOf = (dir: string, fingerprint: string) => {
  const file = path.join(dir, `${fingerprint}.crl.pem`);
  return { file, meta: `${file.slice(0, -4)}.json` };
};

function readMeta(meta: string): CrlMeta | undefined {
  try {
    return JSON.parse(fs.readFileSync(meta, "utf8")) as CrlMeta;
  } catch {
    return undefined;
  }
}

const digestOf = (serials: string[]) =>
  crypto
    .createHash("sha256")
    .update([...serials].sort().join("\n"))
    .digest("hex");

/** Create the CRL folder, or say which field is wrong (a file in the way, no permission). */
function ensureDir(dir: string): void {
  try {
    ensurePrivateDir(dir);
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new FleetError(
      "INVALID_INPUT",
      `crlDir: got ${JSON.stringify(dir)} that cannot be a folder (${why}), want a folder fleetguard can write CRLs into`,
      "crlDir",
    );
  }
}

/**
 * Is the published CRL of `issuer` what the registry holds now? False when it is missing, lists
 * other serials than the registry's revocations, or is past half of its validity: every run
 * republishes then, so a failed publish is retried and a CRL never goes stale.
 */
export async function crlCurrent(
  registry: Registry,
  issuer: { fingerprint: string },
  dir: string,
  intervalHours = 168,
  now = new Date(),
): Promise<boolean> {
  const { file, meta } = filesOf(dir, issuer.fingerprint);
  const m = readMeta(meta);
  if (!m?.revokedDigest || !m.nextUpdate || !fs.existsSync(file)) return false;
  if (Date.parse(m.nextUpdate) - now.getTime() < (intervalHours * 3_600_000) / 2) return false;
  const revoked = await registry.revokedBy(issuer.fingerprint);
  return digestOf(revoked.map((r) => r.serial)) === m.revokedDigest;
}

export async function publishCrl(
  registry: Registry,
  issuer: { certificatePem: string; key: SigningKey; fingerprint: string },
  dir: string,
  intervalHours = 168,
): Promise<PublishedCrl> {
  ensureDir(dir);
  const { file, meta } = filesOf(dir, issuer.fingerprint);
  const previous = Number(readMeta(meta)?.crlNumber) || 0;
  const revoked = await registry.revokedBy(issuer.fingerprint);
  const crl = signCrl(
    { certificatePem: issuer.certificatePem, key: issuer.key },
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
  const revokedDigest = digestOf(revoked.map((r) => r.serial));
  // the number is remembered first: a crash between the two writes skips a number, never reuses
  // one; the digest is remembered with it, and a crash before the CRL is written leaves the
  // file older than the meta, which crlCurrent() sees through the missing or older file
  const tmp = (f: string) => `${f}.tmp-${process.pid}`; // two providers may publish at once
  writeFileDurably(
    meta,
    JSON.stringify({ crlNumber: crl.crlNumber, thisUpdate: crl.thisUpdate, nextUpdate: crl.nextUpdate }),
    { tmp: tmp(meta) },
  );
  writeFileDurably(file, crl.crlPem, { tmp: tmp(file), mode: PUBLIC_FILE }); // a CRL is public
  writeFileDurably(
    meta,
    JSON.stringify({
      crlNumber: crl.crlNumber,
      thisUpdate: crl.thisUpdate,
      nextUpdate: crl.nextUpdate,
      revokedDigest,
    }),
    { tmp: tmp(meta) },
  );
  return { path: file, crlNumber: crl.crlNumber, revoked: revoked.length, revokedDigest };
}
