/**
 * The body of the verify thread (verify-thread.ts): the job from workerData, the verify on a
 * read-only connection of this thread's own (sqlite.ts verifySnapshot), one message back.
 */
import { parentPort, workerData } from "node:worker_threads";
import { verifySnapshot } from "./sqlite";
import type { VerifyJob, VerifyMessage } from "./verify-thread";

const job = (workerData as { fleetVerifyJob?: VerifyJob } | null)?.fleetVerifyJob;
const port = parentPort;
const post = (m: VerifyMessage) => port?.postMessage(m);

async function main(j: VerifyJob) {
  try {
    const report = await verifySnapshot(j.location, {
      ...j.opts,
      ...(j.progress ? { onProgress: (done, total) => post({ type: "progress", done, total }) } : {}),
    });
    post({ type: "report", report });
  } catch (err) {
    const e = err as { name?: string; code?: string; field?: string; message?: string; stack?: string };
    post({
      type: "error",
      name: String(e?.name ?? "Error"),
      ...(typeof e?.code === "string" ? { code: e.code } : {}),
      ...(typeof e?.field === "string" ? { field: e.field } : {}),
      message: String(e?.message ?? err),
      ...(typeof e?.stack === "string" ? { stack: e.stack } : {}),
    });
  }
}

if (job && port) void main(job);
else throw new Error("verify-worker: got no verify job, want to be started by verify-thread.ts");
