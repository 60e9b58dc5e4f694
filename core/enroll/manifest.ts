/**
 * Export a batch as a signed manifest (docs/manifests.md): every active device of the batch, from
 * the registry, as one JWS entry (device ID, identity key as JWK, certificate chain without the
 * root), signed by a fresh short-lived manifest-signer certificate from the issuing CA. Streamed
 * page by page (100,000 devices never sit in memory at once) into a temporary file that is
 * fsync'd and renamed into place, so a reader never sees half a manifest.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { commitFile, ensurePrivateDir, PUBLIC_FILE } from "../durable";
import { createManifestSigner, type DeviceManifestInput, ManifestDigest, writeManifest } from "../manifest";
import type { Registry } from "../registry/types";
import type { SigningKey } from "../x509/keys";
import { parseCertificate } from "../x509/parse";
import { pemBlocks } from "../x509/pem";

export interface ExportedManifest {
  path: string;
  signerPath: string;
  entries: number;
  digest: string;
}

export async function exportManifest(
  registry: Registry,
  batch: { name: string; model: string },
  issuer: { certificatePem: string; chainPem: string; key: SigningKey },
  file: string,
): Promise<ExportedManifest> {
  const signer = createManifestSigner(issuer);
  const chain = pemBlocks(issuer.chainPem, "CERTIFICATE", "issuer.chainPem");
  const above = chain.slice(0, -1); // the issuing CA and intermediates, not the root
  async function* devices(): AsyncGenerator<DeviceManifestInput> {
    let after: string | undefined;
    for (;;) {
      const page = await registry.certificates({ batch: batch.name, status: ["live"], after, limit: 1000 });
      for (const c of page) {
        const d = await registry.getDevice(c.deviceId);
        if (d?.state !== "active" || d.certSerial !== c.serial) continue;
        yield {
          deviceId: c.deviceId,
          model: batch.model,
          batch: batch.name,
          publicKeySpki: parseCertificate(c.der, `certificates[${c.serial}]`).spki,
          chain: [c.der, ...above],
          issuedAt: c.issuedAt,
        };
      }
      if (page.length < 1000) return;
      after = page[page.length - 1]!.serial;
    }
  }
  ensurePrivateDir(path.dirname(file));
  const tmp = `${file}.tmp-${process.pid}`;
  const out = fs.createWriteStream(tmp);
  const digest = new ManifestDigest();
  const { count } = await writeManifest(devices(), signer, out, digest);
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
  commitFile(tmp, file, PUBLIC_FILE); // a manifest is public; its folder decides who reads it
  const signerPath = `${file}.signer.pem`;
  fs.writeFileSync(signerPath, signer.signerChainPem);
  return { path: file, signerPath, entries: count, digest: digest.digest() };
}
