/**
 * Body of one renewal-bound worker thread (bench/lib/renew-bound.ts). Per device, the
 * cryptography a renewal cannot avoid, in the order a renewal does it, with no protocol and no
 * registry: device: PKCS#10 CSR built and signed with its existing key, attestation signature
 * over SHA-256(domain | fresh | CSR); fleetguard: CSR parsed and verified against the recorded
 * key, attestation verified (the recorded SPKI imported, as renew() does), the certificate
 * issued from the compiled template; device: the new chain checked as on install (leaf parsed,
 * its key, issuer link and signature, the CA cache warm). Time is split between the two sides.
 * Protocol: parent -> "go"; worker -> ready, done {count, seconds, deviceMs, fleetMs}, or error.
 */
import * as crypto from "node:crypto";
import { parentPort, workerData } from "node:worker_threads";
import { compileTemplate, deviceNames, resolveProfile } from "../../core/enroll/profile";
import { bindNonce } from "../../core/enroll/renew";
import { attestationMessage, verifyAttestation } from "../../core/station/attest";
import { verifyCsr } from "../../core/station/csr";
import { randomSerial } from "../../core/x509/cert";
import { loadPrivateKey } from "../../core/x509/keys";
import { pemBlocks } from "../../core/x509/pem";
import { CaCache, sha256, verifyChain } from "../../devices/firmware/chain";
import { buildCsr } from "../../devices/firmware/pkix";
import { p256KeyPair } from "./enroll";

export interface RenewBoundWorkerData {
  issuingPem: string;
  chainPem: string;
  keyPem: string;
  first: number;
  count: number;
  warmup: number;
  /** distinct device keys cycled through (a renewal's key exists already: not generated per device) */
  keys: number;
}

export type RenewBoundMessage =
  | { type: "ready" }
  | { type: "done"; count: number; seconds: number; deviceMs: number; fleetMs: number }
  | { type: "error"; message: string };

const port = parentPort;
if (!port) throw new Error("bench/lib/renew-bound-worker.ts: run as a worker thread");
const data = workerData as RenewBoundWorkerData;
const post = (m: RenewBoundMessage) => port.postMessage(m);

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
  const keys = Array.from({ length: data.keys }, () => p256KeyPair());
  let deviceMs = 0;
  let fleetMs = 0;
  const one = (i: number) => {
    const id = `fg100-${String(data.first + i).padStart(7, "0")}`;
    const k = keys[i % keys.length]!;
    const t0 = performance.now();
    // device: CSR with its existing key, attestation over the bound nonce
    const n = deviceNames(profile, id, "rot", "fg100");
    const csr = buildCsr([["CN", n.commonName]], k.spki, k.privateKey);
    const nonce = bindNonce(csr);
    const sig = crypto.sign("sha256", attestationMessage(id, 0, nonce), k.privateKey);
    const t1 = performance.now();
    // fleetguard: CSR and attestation verified against the recorded key, certificate signed
    const spki = verifyCsr(csr, k.spki).spki;
    if (!verifyAttestation(k.spki, id, 0, nonce, sig)) throw new Error(`attestation of ${id} refused`);
    const der = template.issue(
      randomSerial(),
      n.commonName,
      spki,
      n.san.uri.length || n.san.dns.length ? n.san : undefined,
    );
    const t2 = performance.now();
    // device: the chain check of the install
    verifyChain([der, ...installChain], anchors, k.spki, new Date(), cache);
    const t3 = performance.now();
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
      post({ type: "done", count: data.count, seconds: (performance.now() - t0) / 1000, deviceMs, fleetMs });
    } catch (e) {
      post({ type: "error", message: e instanceof Error ? e.message : String(e) });
    }
  });
  post({ type: "ready" });
} catch (e) {
  post({ type: "error", message: e instanceof Error ? e.message : String(e) });
}
