/**
 * A CRL writer in its own process, for the crash and two-writer tests of crl-unified.test.ts:
 * `tsx crl-writer.ts JOB.json` publishes `times` CRLs for the CA of the job (as source `source`,
 * with the job's entries), prints each cRLNumber it got on one line, and with `killAt` SIGKILLs
 * itself at that step of its first publication (kill -9 between the sidecar and the CRL files).
 */
import * as fs from "node:fs";
import { publishCaCrl } from "../../../core/enroll/crl";
import { loadPrivateKey } from "../../../core/x509/keys";

const job = JSON.parse(fs.readFileSync(process.argv[2]!, "utf8"));
const key = loadPrivateKey(job.keyPem, "keyPem");
for (let i = 0; i < job.times; i++) {
  const r = publishCaCrl(
    job.dir,
    { certificatePem: job.certificatePem, key },
    {
      source: job.source,
      entries: job.entries,
      urls: job.urls,
      onStep: (step) => {
        if (step === job.killAt) process.kill(process.pid, "SIGKILL");
      },
    },
  );
  process.stdout.write(`${r.crlNumber}\n`);
}
