/**
 * The enrollment bound that counts all the work (issue 13, point 1): devices per second this
 * machine enrolls with no protocol, no registry and no Pulumi, doing per device the cryptography
 * a first-contact PUF enrollment cannot avoid on both sides (bench/lib/enroll-bound-worker.ts:
 * PUF reconstruction and key derivation, attestation and CSR signatures, the install's chain
 * check on the device; attestation and CSR verification and the certificate signature in
 * fleetguard), on `threads` worker threads. Workers set up and warm up first; the clock runs
 * from a common start to the last worker's finish. Also returns the CPU per device of each side
 * measured inside the loop, so fleetguard's own CPU can be set beside its own part.
 *
 * The older, smaller bound (bench/lib/bound.ts: keygen, CSR, CSR verify, certificate) left out
 * the PUF, the attestation and the install check: it is kept for the older tables.
 */
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { issueCa } from "../../core/ca";
import { invalid } from "../../core/errors";
import type { PufConditions } from "../../devices/puf";
import type { EnrollBoundMessage, EnrollBoundWorkerData } from "./enroll-bound-worker";

export interface EnrollBoundIssuer {
  /** issuing CA then its chain up to the root, PEM */
  chainPem: string;
  keyPem: string;
}

/** A P-384 root and a P-256 issuing CA, as in the batch benchmark's program (core/ca issueCa). */
export function makeBoundIssuer(): EnrollBoundIssuer {
  const root = issueCa({
    name: "bound-root",
    role: "root",
    algorithm: "ecdsa-p384",
    subject: { commonName: "fleetguard Bound Root" },
    validityDays: 3650,
    pathLen: 1,
  });
  const iss = issueCa(
    {
      name: "bound-line",
      role: "issuing",
      algorithm: "ecdsa-p256",
      subject: { commonName: "fleetguard Bound Line" },
      validityDays: 730,
    },
    { name: "bound-root", ...root },
  );
  return { chainPem: `${iss.certificatePem}${root.certificatePem}`, keyPem: iss.keyPem };
}

export interface EnrollBoundResult {
  threads: number;
  devices: number;
  seconds: number;
  perSecond: number;
  /** CPU ms per device inside the loop (thread CPU time): the device's part, fleetguard's, and both */
  deviceMsPerDevice: number;
  fleetMsPerDevice: number;
  totalMsPerDevice: number;
  /** one PUF enrollment (helper data, first contact in the farm), ms: not in the bound */
  pufEnrollMs: number;
}

export interface EnrollBoundOptions {
  devices: number;
  threads: number;
  issuer?: EnrollBoundIssuer;
  /** the farm's seed (default a fixed one) and model */
  seed?: Uint8Array;
  model?: string;
  conditions?: PufConditions;
  cells?: number;
  /** distinct devices per worker (default 256) */
  helpers?: number;
  warmup?: number;
}

const ENTRY = path.join(__dirname, "enroll-bound-worker.js");

export async function measureEnrollBound(o: EnrollBoundOptions): Promise<EnrollBoundResult> {
  if (!Number.isInteger(o.devices) || o.devices < 1) throw invalid("devices", o.devices, "an integer >= 1");
  if (!Number.isInteger(o.threads) || o.threads < 1 || o.threads > 64)
    throw invalid("threads", o.threads, "an integer in 1..64");
  const issuer = o.issuer ?? makeBoundIssuer();
  const per = Math.floor(o.devices / o.threads);
  const helpers = o.helpers ?? 256;
  const workers: Worker[] = [];
  try {
    const ready: Promise<void>[] = [];
    const done: Promise<Extract<EnrollBoundMessage, { type: "done" }>>[] = [];
    for (let t = 0; t < o.threads; t++) {
      const data: EnrollBoundWorkerData = {
        ...issuer,
        seed: o.seed ?? Buffer.alloc(32, 0xbe),
        model: o.model ?? "fg100",
        batch: "lot",
        first: t * helpers,
        count: per,
        warmup: o.warmup ?? 200,
        helpers,
        ...(o.conditions ? { conditions: o.conditions } : {}),
        ...(o.cells ? { cells: o.cells } : {}),
      };
      const w = new Worker(ENTRY, { workerData: data });
      workers.push(w);
      let onReady!: () => void;
      let onDone!: (m: Extract<EnrollBoundMessage, { type: "done" }>) => void;
      let fail!: (e: Error) => void;
      ready.push(new Promise<void>((r) => (onReady = r)));
      done.push(
        new Promise((res, rej) => {
          onDone = res;
          fail = rej;
        }),
      );
      // a worker failing during set-up must not leave the barrier waiting
      done[t]!.catch(() => onReady());
      w.on("message", (m: EnrollBoundMessage) => {
        if (m.type === "ready") onReady();
        else if (m.type === "done") onDone(m);
        else fail(new Error(`enroll bound worker ${t}: ${m.message}`));
      });
      w.on("error", (e) => fail(e));
      w.on("exit", (c) => fail(new Error(`enroll bound worker ${t} exited with ${c}`)));
    }
    await Promise.all(ready);
    const t0 = performance.now();
    for (const w of workers) w.postMessage("go");
    const r = await Promise.all(done);
    const seconds = (performance.now() - t0) / 1000;
    const n = per * o.threads;
    const deviceMs = r.reduce((a, m) => a + m.deviceMs, 0) / n;
    const fleetMs = r.reduce((a, m) => a + m.fleetMs, 0) / n;
    return {
      threads: o.threads,
      devices: n,
      seconds,
      perSecond: n / seconds,
      deviceMsPerDevice: deviceMs,
      fleetMsPerDevice: fleetMs,
      totalMsPerDevice: deviceMs + fleetMs,
      pufEnrollMs: r.reduce((a, m) => a + m.pufEnrollMs, 0) / r.length,
    };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
