/**
 * Body of one enrollment-bound worker thread (bench/lib/enroll-bound.ts, issue 13 point 1). Per
 * device, the cryptography a first-contact PUF enrollment cannot avoid, in the order an
 * enrollment does it, with no protocol, no registry and no Pulumi:
 *   device:     PUF reconstruction (the emulated silicon of that device read at the configured
 *               conditions, votes, BCH decode, tag check, HKDF) and the P-256 key derivation
 *               (FIPS 186-5 A.2.1 and the JWK import), the attestation signature over a fresh
 *               nonce, the PKCS#10 CSR built and signed;
 *   fleetguard: the identified key imported, the attestation verified, the CSR parsed and
 *               verified against that key, the certificate issued from the compiled template;
 *   device:     the chain check of INSTALL (leaf parsed, its key, issuer link and signature;
 *               the CA certificates' own checks are cached, as on a device they are done once).
 * The PUF helper data (made once per chip at manufacture: the farm does it at first contact) is
 * made before the clock starts, for `helpers` distinct device IDs cycled through; a fresh PUF
 * object per device, so deriving its cells is counted as a device read would be. The PUF
 * enrollment itself is timed apart (pufEnrollMs), not in the bound. The split between the sides
 * is this thread's CPU time (process.threadCpuUsage), not wall time, so it stays comparable with
 * the end-to-end run's per-process CPU when other work shares the cores.
 * Protocol: parent -> "go"; worker -> ready, done {count, seconds, deviceMs, fleetMs, pufEnrollMs}, or error.
 */
import * as crypto from "node:crypto";
import { parentPort, workerData } from "node:worker_threads";
import { compileTemplate, deviceNames, resolveProfile } from "../../core/enroll/profile";
import { attestationMessage, importP256SpkiFresh, verifyAttestation } from "../../core/station/attest";
import { verifyCsr } from "../../core/station/csr";
import { randomSerial } from "../../core/x509/cert";
import { loadPrivateKey } from "../../core/x509/keys";
import { pemBlocks } from "../../core/x509/pem";
import { CaCache, sha256, verifyChain } from "../../devices/firmware/chain";
import { buildCsr } from "../../devices/firmware/pkix";
import * as puf from "../../devices/puf";

export interface EnrollBoundWorkerData {
  /** issuing CA certificate then the chain up to the root, PEM */
  chainPem: string;
  keyPem: string;
  /** the farm seed the PUFs derive from */
  seed: Uint8Array;
  model: string;
  batch: string;
  first: number;
  count: number;
  warmup: number;
  /** distinct devices (PUF helper data made up front) cycled through */
  helpers: number;
  conditions?: puf.PufConditions;
  cells?: number;
}

export type EnrollBoundMessage =
  | { type: "ready" }
  | {
      type: "done";
      count: number;
      seconds: number;
      deviceMs: number;
      fleetMs: number;
      /** CPU ms of one PUF enrollment (helper data), averaged over the helpers made */
      pufEnrollMs: number;
    }
  | { type: "error"; message: string };

const port = parentPort;
if (!port) throw new Error("bench/lib/enroll-bound-worker.ts: run as a worker thread");
const data = workerData as EnrollBoundWorkerData;
const post = (m: EnrollBoundMessage) => port.postMessage(m);
/** this thread's CPU time, ms */
const cpu = () => {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1000;
};

try {
  const chain = pemBlocks(data.chainPem, "CERTIFICATE", "chain");
  const material = {
    certificate: chain[0]!,
    chain: chain.slice(1),
    key: loadPrivateKey(data.keyPem, "key"),
    fingerprint: crypto.createHash("sha256").update(chain[0]!).digest("hex"),
  };
  const profile = resolveProfile({ subject: { organization: "Acme" }, validityDays: 365 });
  const template = compileTemplate(profile, material, new Date());
  const installChain = [material.certificate, ...material.chain];
  const anchors = [sha256(installChain[installChain.length - 1]!)];
  const cache = new CaCache();
  const seed = Buffer.from(data.seed);
  const conditions = data.conditions ?? puf.NOMINAL;
  const opts = data.cells ? { cells: data.cells } : undefined;
  const id = (i: number) => `${data.model}-${String(data.first + (i % data.helpers)).padStart(7, "0")}`;
  const e0 = cpu();
  const helpers = Array.from({ length: data.helpers }, (_, k) => {
    const dev = puf.createPufDevice(seed, id(k), opts);
    return puf.enroll(dev).helper;
  });
  const pufEnrollMs = (cpu() - e0) / data.helpers;
  let deviceMs = 0;
  let fleetMs = 0;
  const one = (i: number) => {
    const deviceId = id(i);
    const t0 = cpu();
    // device: reconstruct the identity key from its PUF, attest, CSR
    const secret = puf.reconstruct(
      puf.createPufDevice(seed, deviceId, opts),
      helpers[i % data.helpers]!,
      conditions,
    );
    const key = puf.deriveP256(secret, puf.IDENTITY_CONTEXT);
    secret.fill(0);
    const nonce = crypto.randomBytes(32);
    const signature = crypto.sign("sha256", attestationMessage(deviceId, 0, nonce), key.privateKey);
    const n = deviceNames(profile, deviceId, data.batch, data.model);
    const csr = buildCsr(n.subject, key.spki, key.privateKey);
    const t1 = cpu();
    // fleetguard: attestation and CSR verified against the identified key, certificate signed
    // a fresh import: helpers repeat, a first-contact enrollment meets every key once
    const pub = importP256SpkiFresh(key.spki);
    if (!verifyAttestation(pub, deviceId, 0, nonce, signature))
      throw new Error(`attestation of ${deviceId} refused`);
    const spki = verifyCsr(csr, key.spki, pub).spki;
    const der = template.issue(
      randomSerial(),
      n.commonName,
      spki,
      n.san.uri.length || n.san.dns.length ? n.san : undefined,
    );
    const t2 = cpu();
    // device: the chain check of the install
    verifyChain([der, ...installChain], anchors, key.spki, new Date(), cache);
    const t3 = cpu();
    deviceMs += t1 - t0 + (t3 - t2);
    fleetMs += t2 - t1;
  };
  for (let i = 0; i < data.warmup; i++) one(i);
  deviceMs = 0;
  fleetMs = 0;
  port.once("message", () => {
    try {
      const t0 = performance.now();
      for (let i = 0; i < data.count; i++) one(i);
      post({
        type: "done",
        count: data.count,
        seconds: (performance.now() - t0) / 1000,
        deviceMs,
        fleetMs,
        pufEnrollMs,
      });
    } catch (e) {
      post({ type: "error", message: e instanceof Error ? e.message : String(e) });
    }
  });
  post({ type: "ready" });
} catch (e) {
  post({ type: "error", message: e instanceof Error ? e.message : String(e) });
}
