/**
 * Body of one raw-bound worker thread (bench/lib/bound.ts): set up the issuer, warm up, wait
 * for "go", enroll its share of devices, report. Protocol: parent -> {go}; worker -> ready,
 * progress {done}, done {count, seconds}, or error {message}.
 */
import { parentPort, workerData } from "node:worker_threads";
import { type BenchIssuer, deviceName, enrollContext, enrollDevice } from "./enroll";

export interface BoundWorkerData {
  issuer: BenchIssuer;
  first: number;
  count: number;
  warmup: number;
  progressEvery: number;
}

export type BoundWorkerMessage =
  | { type: "ready" }
  | { type: "progress"; done: number }
  | { type: "done"; count: number; seconds: number }
  | { type: "error"; message: string };

const port = parentPort;
if (!port) throw new Error("bench/lib/bound-worker.ts: run as a worker thread");
const data = workerData as BoundWorkerData;
const post = (m: BoundWorkerMessage) => port.postMessage(m);

try {
  const ctx = enrollContext(data.issuer);
  // warm-up: JIT, OpenSSL's first-use tables; not counted
  for (let i = 0; i < data.warmup; i++) enrollDevice(ctx, deviceName(data.first + i));
  port.once("message", () => {
    try {
      const t0 = performance.now();
      for (let i = 0; i < data.count; i++) {
        enrollDevice(ctx, deviceName(data.first + i));
        if ((i + 1) % data.progressEvery === 0) post({ type: "progress", done: i + 1 });
      }
      post({ type: "done", count: data.count, seconds: (performance.now() - t0) / 1000 });
    } catch (e) {
      post({ type: "error", message: e instanceof Error ? e.message : String(e) });
    }
  });
  post({ type: "ready" });
} catch (e) {
  post({ type: "error", message: e instanceof Error ? e.message : String(e) });
}
