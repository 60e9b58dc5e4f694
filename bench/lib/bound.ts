/**
 * The raw enrollment bound: how many devices per second plain Node crypto can enroll on this
 * machine with no protocol, no registry and no Pulumi, doing per device exactly the
 * cryptography an enrollment does (bench/lib/enroll.ts: P-256 key generation, PKCS#10 CSR
 * built and signed, CSR parsed and verified, device certificate issued from the LeafTemplate).
 * End-to-end enrollment rates are reported as a ratio to this number.
 *
 * Each thread is a worker_thread (also for threads = 1, so the caller's event loop stays free
 * for progress output and memory sampling). Workers set up and warm up first; the clock runs
 * from a common start signal to the last worker's finish, so thread start-up is not counted.
 */
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { invalid } from "../../core/errors";
import type { BoundWorkerData, BoundWorkerMessage } from "./bound-worker";
import { type BenchIssuer, makeBenchIssuer } from "./enroll";

export interface BoundOptions {
  devices: number;
  threads: number;
  /** the issuing CA to sign under; default: a fresh P-256 root + issuing CA */
  issuer?: BenchIssuer;
  /** devices per worker enrolled before the clock starts (default 200) */
  warmup?: number;
  /** called about every 1,000 devices per worker with the total so far */
  onProgress?: (done: number, total: number, elapsedSeconds: number) => void;
}

export interface BoundResult {
  threads: number;
  devices: number;
  seconds: number;
  perSecond: number;
}

const WORKER_ENTRY = path.join(__dirname, "bound-worker.js");

export async function measureBound(o: BoundOptions): Promise<BoundResult> {
  if (!Number.isInteger(o.devices) || o.devices < 1) throw invalid("devices", o.devices, "an integer >= 1");
  if (!Number.isInteger(o.threads) || o.threads < 1 || o.threads > 64)
    throw invalid("threads", o.threads, "an integer in 1..64");
  const issuer = o.issuer ?? makeBenchIssuer();
  const warmup = o.warmup ?? 200;
  const per = Math.floor(o.devices / o.threads);
  const shares = Array.from({ length: o.threads }, (_, t) => per + (t < o.devices % o.threads ? 1 : 0));
  const workers: Worker[] = [];
  const done = new Array<number>(o.threads).fill(0);
  let t0 = 0;
  try {
    const finished: Promise<void>[] = [];
    const ready: Promise<void>[] = [];
    let first = 0;
    for (let t = 0; t < o.threads; t++) {
      const data: BoundWorkerData = { issuer, first, count: shares[t]!, warmup, progressEvery: 1000 };
      first += shares[t]!;
      const w = new Worker(WORKER_ENTRY, { workerData: data });
      workers.push(w);
      let onReady!: () => void;
      let onDone!: () => void;
      let fail!: (e: Error) => void;
      ready.push(new Promise<void>((r) => (onReady = r)));
      finished.push(
        new Promise<void>((resolve, reject) => {
          onDone = resolve;
          fail = reject;
        }),
      );
      w.on("message", (m: BoundWorkerMessage) => {
        if (m.type === "ready") onReady();
        else if (m.type === "progress") {
          done[t] = m.done;
          o.onProgress?.(
            done.reduce((a, b) => a + b, 0),
            o.devices,
            (performance.now() - t0) / 1000,
          );
        } else if (m.type === "done") {
          done[t] = m.count;
          onDone();
        } else fail(new Error(`bound worker ${t}: ${m.message}`));
      });
      w.on("error", (e) => fail(e));
      w.on("exit", (code) => fail(new Error(`bound worker ${t} exited with ${code} before finishing`)));
      // a worker failing during set-up must not leave the barrier waiting
      finished[t]!.catch(() => onReady());
    }
    await Promise.all(ready);
    t0 = performance.now();
    for (const w of workers) w.postMessage("go");
    await Promise.all(finished);
    const seconds = (performance.now() - t0) / 1000;
    return { threads: o.threads, devices: o.devices, seconds, perSecond: o.devices / seconds };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
