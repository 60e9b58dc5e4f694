/**
 * A revocation in its own process, for the crash test of revoke.test.ts: `tsx revoke-writer.ts
 * JOB.json` applies the job's declared revocations to the registry (core/enroll/revoke.ts, one
 * transaction per wave) and then SIGKILLs itself before the CRL is published: the kill -9 between
 * the registry write and the CRL publication.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import { BatchEngine } from "../../../core/enroll/engine";
import { resolveProfile } from "../../../core/enroll/profile";
import { openRegistry } from "../../../core/registry";
import { loadPrivateKey } from "../../../core/x509/keys";
import { pemBlocks } from "../../../core/x509/pem";

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2]!, "utf8"));
  const chain = pemBlocks(job.chainPem, "CERTIFICATE", "chainPem");
  const registry = await openRegistry(job.registry);
  const engine = new BatchEngine(
    {
      registry,
      station: undefined as never, // revoke asks the station nothing
      issuer: {
        certificate: chain[0]!,
        chain: chain.slice(1),
        key: loadPrivateKey(job.keyPem, "keyPem"),
        fingerprint: crypto.createHash("sha256").update(chain[0]!).digest("hex"),
      },
      waveSize: 2,
    },
    { ...job.spec, profile: resolveProfile(job.spec.profile) },
  );
  const n = await engine.revoke();
  process.stdout.write(`${n}\n`);
  process.kill(process.pid, "SIGKILL");
}
void main();
