/**
 * The raw renewal bound (issue 12, point 9): devices per second plain Node crypto renews on this
 * machine with no protocol, no registry and no Pulumi, doing per device the cryptography a
 * renewal cannot avoid (bench/lib/renew-bound-worker.ts), on `threads` worker threads. Workers
 * set up and warm up first; the clock runs from a common start to the last worker's finish.
 * Also returns the CPU per device of each side (device, fleetguard) measured inside the loop.
 */
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import type { RenewBoundMessage, RenewBoundWorkerData } from "./renew-bound-worker";

export interface RenewBoundResult {
  threads: number;
  devices: number;
  seconds: number;
  perSecond: number;
  /** CPU ms per device in the loop: the device's part and fleetguard's */
  deviceMsPerDevice: number;
  fleetMsPerDevice: number;
}

export async function measureRenewBound(o: {
  devices: number;
  threads: number;
  issuer: { issuingPem: string; chainPem: string; keyPem: string };
}): Promise<RenewBoundResult> {
  const per = Math.floor(o.devices / o.threads);
  const workers: Worker[] = [];
  try {
    const ready: Promise<void>[] = [];
    const done: Promise<Extract<RenewBoundMessage, { type: "done" }>>[] = [];
    for (let t = 0; t < o.threads; t++) {
      const data: RenewBoundWorkerData = { ...o.issuer, first: t * per, count: per, warmup: 300, keys: 500 };
      const w = new Worker(path.join(__dirname, "renew-bound-worker.js"), { workerData: data });
      workers.push(w);
      let onReady!: () => void;
      let onDone!: (m: Extract<RenewBoundMessage, { type: "done" }>) => void;
      let fail!: (e: Error) => void;
      ready.push(new Promise<void>((r) => (onReady = r)));
      done.push(
        new Promise((res, rej) => {
          onDone = res;
          fail = rej;
        }),
      );
      done[t]!.catch(() => onReady());
      w.on("message", (m: RenewBoundMessage) => {
        if (m.type === "ready") onReady();
        else if (m.type === "done") onDone(m);
        else fail(new Error(`renew bound worker ${t}: ${m.message}`));
      });
      w.on("error", (e) => fail(e));
      w.on("exit", (c) => fail(new Error(`renew bound worker ${t} exited with ${c}`)));
    }
    await Promise.all(ready);
    const t0 = performance.now();
    for (const w of workers) w.postMessage("go");
    const r = await Promise.all(done);
    const seconds = (performance.now() - t0) / 1000;
    const n = per * o.threads;
    return {
      threads: o.threads,
      devices: n,
      seconds,
      perSecond: n / seconds,
      deviceMsPerDevice: r.reduce((a, m) => a + m.deviceMs, 0) / n,
      fleetMsPerDevice: r.reduce((a, m) => a + m.fleetMs, 0) / n,
    };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
