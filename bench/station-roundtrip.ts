/**
 * Station round-trip benchmark (issue 3, point 8). One command:
 *
 *   npx tsx bench/station-roundtrip.ts [--devices 3000] [--count 100000] [--concurrency 128]
 *                                      [--batch 64] [--batches-in-flight 4]
 *
 * 1. Raw bound, in this process, no protocol: for each device the same cryptography an
 *    enrollment does (attestation sign + verify, CSR build/sign + parse/verify, import of the
 *    device key), (a) with ready keys, (b) also with the device-side PUF work (fuzzy-extractor
 *    reconstruction + P-256 derivation).
 * 2. A farm of --count devices in a separate process (`fleet devices serve`), and a station
 *    client enrolling --devices of them: identify, attest (nonce verified), CSR (verified
 *    against the identified key) per device.
 *      A  first contact: the PUF is enrolled on first use (helper data made and logged)
 *      B  after a farm restart (power cycle: no key in RAM): pipelined single requests
 *      C  after another restart: the same through batches of --batch devices
 *      D  again without a restart (keys still in RAM): protocol + crypto, no PUF work
 *    Fuzzy-extractor reconstructions are counted in the farm (STATS).
 * Results go to stdout (and bench/out/station-roundtrip.json); docs/benchmarks.md quotes them.
 */
import { createPublicKey, generateKeyPairSync, type KeyObject, randomBytes, sign } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { attestationMessage, importP256Spki, verifyAttestation } from "../core/station/attest";
import { StationClient } from "../core/station/client";
import { verifyCsr } from "../core/station/csr";
import type { FarmStats, Subject } from "../core/station/messages";
import { deviceId } from "../devices/farm/ids";
import { startFarmProcess, stopFarmProcess } from "../devices/farm/process";
import { buildCsr } from "../devices/firmware/pkix";
import * as puf from "../devices/puf";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2)
  args.set(process.argv[i]!.replace(/^--/, ""), process.argv[i + 1]!);
const DEVICES = Number(args.get("devices") ?? 3000);
const COUNT = Number(args.get("count") ?? 100_000);
const CONCURRENCY = Number(args.get("concurrency") ?? 128);
const BATCH = Number(args.get("batch") ?? 64);
const BATCHES_IN_FLIGHT = Number(args.get("batches-in-flight") ?? 4);
const SEED = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
const MODEL = "fg100";
const ROOT = join(__dirname, "..");

const subjectOf = (d: string): Subject => [
  ["O", "Acme"],
  ["CN", d],
];
// spread the sample over the whole farm
const sample = Array.from({ length: DEVICES }, (_, i) => deviceId(MODEL, Math.floor((i * COUNT) / DEVICES)));

function progress(label: string, done: number, total: number, t0: number): void {
  const s = (performance.now() - t0) / 1000;
  const rate = done / s;
  const eta = rate > 0 ? (total - done) / rate : 0;
  process.stderr.write(`\r${label}: ${done}/${total}  ${rate.toFixed(0)}/s  ETA ${eta.toFixed(0)} s   `);
}

// ---------------------------------------------------------------- raw bound

function rawBound(n: number, withPuf: boolean): number {
  const seed = Buffer.from(SEED, "hex");
  const ids = Array.from({ length: n }, (_, i) => deviceId(MODEL, i));
  let keys: Array<{ privateKey: KeyObject; spki: Buffer }> = [];
  let helpers: Uint8Array[] = [];
  if (withPuf) {
    const t0 = performance.now();
    helpers = ids.map((d, i) => {
      if (i % 20 === 0) progress("raw bound setup: PUF enrollment", i, n, t0);
      return puf.enroll(puf.createPufDevice(seed, d)).helper;
    });
    process.stderr.write("\n");
  } else {
    keys = ids.map(() => {
      const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      return { privateKey, spki: createPublicKey(privateKey).export({ type: "spki", format: "der" }) };
    });
  }
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const d = ids[i]!;
    let k: { privateKey: KeyObject; spki: Buffer };
    if (withPuf) {
      const secret = puf.reconstruct(puf.createPufDevice(seed, d), helpers[i]!, puf.NOMINAL);
      const kp = puf.deriveP256(secret, "identity");
      k = { privateKey: kp.privateKey, spki: kp.publicKey.export({ type: "spki", format: "der" }) };
    } else {
      k = keys[i]!;
    }
    // device: attestation signature and CSR
    const nonce = randomBytes(32);
    const sig = sign("sha256", attestationMessage(d, 0, nonce), k.privateKey);
    const csr = buildCsr(subjectOf(d), k.spki, k.privateKey);
    // station: import the key, verify both
    const pub = importP256Spki(k.spki);
    if (!verifyAttestation(pub, d, 0, nonce, sig)) throw new Error("raw bound: attestation did not verify");
    verifyCsr(csr, k.spki, pub);
  }
  return n / ((performance.now() - t0) / 1000);
}

// ---------------------------------------------------------------- farm

const startFarm = (state: string) =>
  startFarmProcess({ count: COUNT, state, seed: SEED, model: MODEL, inheritStderr: true });
const stopFarm = stopFarmProcess;

async function enrollOne(c: StationClient, d: string): Promise<void> {
  const ident = await c.identify(d);
  const key = importP256Spki(ident.publicKey!);
  const nonce = randomBytes(32);
  const att = await c.attest(d, nonce);
  if (!verifyAttestation(key, d, att.epoch, nonce, att.signature))
    throw new Error(`${d}: attestation did not verify`);
  const { csr } = await c.csr(d, subjectOf(d));
  verifyCsr(csr, ident.publicKey!, key);
}

async function pipelined(c: StationClient, label: string): Promise<number> {
  const t0 = performance.now();
  let next = 0;
  let done = 0;
  const tick = setInterval(() => progress(label, done, DEVICES, t0), 1000);
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < DEVICES) {
        await enrollOne(c, sample[next++]!);
        done++;
      }
    }),
  );
  clearInterval(tick);
  progress(label, done, DEVICES, t0);
  process.stderr.write("\n");
  return DEVICES / ((performance.now() - t0) / 1000);
}

async function batched(c: StationClient, label: string): Promise<number> {
  const t0 = performance.now();
  let done = 0;
  const tick = setInterval(() => progress(label, done, DEVICES, t0), 1000);
  const chunks: string[][] = [];
  for (let i = 0; i < DEVICES; i += BATCH) chunks.push(sample.slice(i, i + BATCH));
  let next = 0;
  // a few batches in flight, so the farm works while the station verifies
  await Promise.all(
    Array.from({ length: BATCHES_IN_FLIGHT }, async () => {
      while (next < chunks.length) {
        const ids = chunks[next++]!;
        const idents = await c.identifyBatch(ids);
        const keys = idents.map((r) => {
          if (!r.ok) throw r.error;
          return { spki: r.value.publicKey!, key: importP256Spki(r.value.publicKey!) };
        });
        const nonces = ids.map(() => randomBytes(32));
        const atts = await c.attestBatch(ids.map((device, i) => ({ device, nonce: nonces[i]! })));
        atts.forEach((r, i) => {
          if (!r.ok) throw r.error;
          if (!verifyAttestation(keys[i]!.key, ids[i]!, r.value.epoch, nonces[i]!, r.value.signature))
            throw new Error(`${ids[i]}: attestation did not verify`);
        });
        const csrs = await c.csrBatch(ids.map((device) => ({ device, subject: subjectOf(device) })));
        csrs.forEach((r, i) => {
          if (!r.ok) throw r.error;
          verifyCsr(r.value.csr, keys[i]!.spki, keys[i]!.key);
        });
        done += ids.length;
      }
    }),
  );
  clearInterval(tick);
  progress(label, done, DEVICES, t0);
  process.stderr.write("\n");
  return DEVICES / ((performance.now() - t0) / 1000);
}

interface Phase {
  name: string;
  rate: number;
  reconstructions: number;
  reconstructionsPerSec: number;
  enrollments: number;
  walSyncs: number;
  seconds: number;
}

async function phase(
  name: string,
  port: number,
  run: (c: StationClient, label: string) => Promise<number>,
): Promise<Phase> {
  const c = new StationClient({ port, poolSize: 2, maxInFlight: 256, timeoutMs: 120_000 });
  const before: FarmStats = await c.stats();
  const t0 = performance.now();
  const rate = await run(c, name);
  const seconds = (performance.now() - t0) / 1000;
  const after = await c.stats();
  await c.close();
  const reconstructions = after.reconstructions - before.reconstructions;
  if (after.reconstructionFailures !== before.reconstructionFailures)
    throw new Error(`${name}: reconstruction failures`);
  return {
    name,
    rate,
    reconstructions,
    reconstructionsPerSec: reconstructions / seconds,
    enrollments: after.enrollments - before.enrollments,
    walSyncs: after.walSyncs - before.walSyncs,
    seconds,
  };
}

async function main(): Promise<void> {
  const machine = `${cpus().length} x ${cpus()[0]?.model.trim()}, Node ${process.version}, OpenSSL ${process.versions.openssl}`;
  const load0 = loadavg()[0]!.toFixed(2);
  console.log(`machine: ${machine}; load average at start ${load0}`);
  console.log(
    `farm: ${COUNT} devices; sample: ${DEVICES} devices; concurrency ${CONCURRENCY}; batch ${BATCH}`,
  );

  const rawCrypto = rawBound(Math.min(DEVICES, 3000), false);
  console.log(
    `raw bound, crypto only (sign+verify attestation, CSR build+verify, key import): ${rawCrypto.toFixed(0)} devices/s`,
  );
  const rawPuf = rawBound(Math.min(DEVICES, 300), true);
  console.log(`raw bound, + PUF reconstruction and key derivation: ${rawPuf.toFixed(0)} devices/s`);

  const state = mkdtempSync(join(tmpdir(), "fg-bench-"));
  const phases: Phase[] = [];
  try {
    let farm = await startFarm(state);
    phases.push(await phase("A first contact (PUF enrolled on first use), pipelined", farm.port, pipelined));
    await stopFarm(farm.child);
    farm = await startFarm(state);
    phases.push(await phase("B enrolled devices after a power cycle, pipelined", farm.port, pipelined));
    await stopFarm(farm.child);
    farm = await startFarm(state);
    phases.push(
      await phase(`C enrolled devices after a power cycle, batches of ${BATCH}`, farm.port, batched),
    );
    phases.push(await phase("D keys still in RAM (no PUF work), pipelined", farm.port, pipelined));
    await stopFarm(farm.child);
  } finally {
    rmSync(state, { recursive: true, force: true });
  }
  const load1 = loadavg()[0]!.toFixed(2);
  console.log("");
  console.log(
    "| phase | devices/s (identify+attest+CSR) | round trips/s | reconstructions/s in farm | ratio to crypto bound | ratio to crypto+PUF bound |",
  );
  console.log("|---|---|---|---|---|---|");
  for (const p of phases) {
    const rt = p.name.startsWith("C") ? (3 * p.rate) / BATCH : 3 * p.rate;
    console.log(
      `| ${p.name} | ${p.rate.toFixed(0)} | ${rt.toFixed(0)}${p.name.startsWith("C") ? " (batch frames)" : ""} | ${p.reconstructionsPerSec.toFixed(0)} (${p.reconstructions}) | ${(p.rate / rawCrypto).toFixed(3)} | ${(p.rate / rawPuf).toFixed(2)} |`,
    );
  }
  console.log(`\nload average at end ${load1}`);
  const out = {
    machine,
    load: [load0, load1],
    COUNT,
    DEVICES,
    CONCURRENCY,
    BATCH,
    rawCrypto,
    rawPuf,
    phases,
  };
  mkdirSync(join(ROOT, "bench", "out"), { recursive: true });
  writeFileSync(join(ROOT, "bench", "out", "station-roundtrip.json"), `${JSON.stringify(out, null, 2)}\n`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
