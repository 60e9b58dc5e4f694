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
 * 3. Full session (issue 5), on a fresh farm: --session-devices blank PUF devices, each through
 *    the five steps of an enrollment, all as batches of --session-batch devices:
 *    IDENTIFY, ATTEST (nonce verified), CSR (verified), SET_TRUST (root DER), INSTALL (leaf,
 *    issuing, intermediate, root); the leaf is issued here by a core/x509 LeafTemplate under a
 *    3-level CA chain from core/ca issueCa (root and intermediate P-384, issuing P-256, as in
 *    index.ts). Then a re-run: STATUS of every device. Reported: devices/s, the farm's CPU per
 *    device (STATS cpuUserMs + cpuSystemMs) and this process's CPU per device.
 *    `--only session` runs just this part (and the raw bounds are skipped).
 * `--farm-prof DIR` runs every farm under `node --cpu-prof` and leaves the profiles in DIR.
 * `--farm-workers N` starts every farm with `--workers N` (worker threads for the device-side
 * cryptography; 0 = all in the farm's main thread; default: the farm's default, one per CPU).
 * Results go to stdout (and bench/out/station-roundtrip.json); docs/benchmarks.md quotes them.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
} from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { type IssuedCa, issueCa } from "../core/ca";
import { attestationMessage, importP256Spki, verifyAttestation } from "../core/station/attest";
import { StationClient } from "../core/station/client";
import { verifyCsr } from "../core/station/csr";
import { deviceId } from "../core/station/ids";
import type { FarmStats, Subject } from "../core/station/messages";
import { LeafTemplate, randomSerial } from "../core/x509/cert";
import { EKU } from "../core/x509/ext";
import { parseCertificate } from "../core/x509/parse";
import { pemOne } from "../core/x509/pem";
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
const ONLY = args.get("only");
const SESSION_DEVICES = Number(args.get("session-devices") ?? 5000);
const SESSION_BATCH = Number(args.get("session-batch") ?? 256);
const SESSION_IN_FLIGHT = Number(args.get("session-in-flight") ?? 2);
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

const FARM_PROF = args.get("farm-prof");
const FARM_WORKERS = args.get("farm-workers");
if (FARM_WORKERS !== undefined && !/^\d+$/.test(FARM_WORKERS))
  throw new Error(`--farm-workers: got ${FARM_WORKERS}, want an integer >= 0`);
const startFarm = (state: string) =>
  startFarmProcess({
    count: COUNT,
    state,
    seed: SEED,
    model: MODEL,
    inheritStderr: true,
    extraArgs: FARM_WORKERS === undefined ? [] : ["--workers", FARM_WORKERS],
    nodeArgs: FARM_PROF ? ["--cpu-prof", "--cpu-prof-dir", FARM_PROF] : [],
  });
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

// ---------------------------------------------------------------- full session (issue 5)

interface CaChain {
  template: LeafTemplate;
  /** DER: issuing, intermediate, root */
  cas: Buffer[];
  root: Buffer;
}

function makeCaChain(): CaChain {
  const root = issueCa({
    name: "root",
    role: "root",
    algorithm: "ecdsa-p384",
    subject: { commonName: "Bench Root", organization: "Acme" },
    validityDays: 3650,
    pathLen: 2,
  });
  const inter = issueCa(
    {
      name: "inter",
      role: "intermediate",
      algorithm: "ecdsa-p384",
      subject: { commonName: "Bench Intermediate", organization: "Acme" },
      validityDays: 1825,
    },
    { name: "root", ...root },
  );
  const iss: IssuedCa = issueCa(
    {
      name: "iss",
      role: "issuing",
      algorithm: "ecdsa-p256",
      subject: { commonName: "Bench Issuing", organization: "Acme" },
      validityDays: 700,
    },
    { name: "inter", ...inter },
  );
  const der = (c: IssuedCa) => pemOne(c.certificatePem, "CERTIFICATE", "bench");
  const issDer = der(iss);
  const template = new LeafTemplate(
    {
      algorithm: "ecdsa-p256",
      key: createPrivateKey(iss.keyPem),
      subject: parseCertificate(issDer).subject,
      keyId: Buffer.from(iss.subjectKeyId, "hex"),
    },
    {
      organization: "Acme",
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 365 * 86400_000),
      keyUsage: ["digitalSignature"],
      extKeyUsage: [EKU.clientAuth],
    },
  );
  return { template, cas: [issDer, der(inter), der(root)], root: der(root) };
}

function ok<T>(r: { ok: true; value: T } | { ok: false; error: Error }): T {
  if (!r.ok) throw r.error;
  return r.value;
}

/** All five steps for `ids`, through batch requests; throws on any failure. */
async function sessionBatch(c: StationClient, ids: string[], ca: CaChain): Promise<void> {
  const idents = (await c.identifyBatch(ids)).map(ok);
  const keys = idents.map((r) => ({ spki: r.publicKey!, key: importP256Spki(r.publicKey!) }));
  const nonces = ids.map(() => randomBytes(32));
  const atts = await c.attestBatch(ids.map((device, i) => ({ device, nonce: nonces[i]! })));
  atts.forEach((r, i) => {
    const v = ok(r);
    if (!verifyAttestation(keys[i]!.key, ids[i]!, v.epoch, nonces[i]!, v.signature))
      throw new Error(`${ids[i]}: attestation did not verify`);
  });
  const csrs = await c.csrBatch(ids.map((device) => ({ device, subject: subjectOf(device) })));
  csrs.forEach((r, i) => {
    verifyCsr(ok(r).csr, keys[i]!.spki, keys[i]!.key);
  });
  for (const r of await c.setTrustAnchorBatch(ids.map((device) => ({ device, anchor: ca.root })))) ok(r);
  const chains = ids.map((device, i) => ({
    device,
    chain: [ca.template.issue(randomSerial(), device, keys[i]!.spki), ...ca.cas],
  }));
  for (const r of await c.installBatch(chains)) {
    const v = ok(r);
    if (v.lifecycle !== "closed")
      throw new Error(`${v.device}: got ${v.lifecycle} after install, want closed`);
  }
}

async function statusBatch(c: StationClient, ids: string[]): Promise<void> {
  for (const r of await c.statusBatch(ids)) {
    const v = ok(r);
    if (v.lifecycle !== "closed" || v.chain.length !== 4)
      throw new Error(
        `${v.device}: got ${v.lifecycle} with ${v.chain.length} certificates, want closed with 4`,
      );
  }
}

interface SessionResult {
  name: string;
  devices: number;
  rate: number;
  seconds: number;
  /** farm CPU per device, microseconds (undefined if the farm does not report CPU) */
  farmUs?: number;
  clientUs: number;
  enrollments: number;
  reconstructions: number;
  walRecords: number;
  walBytesPerDevice: number;
  walSyncs: number;
}

async function sessionPhase(
  name: string,
  port: number,
  ids: string[],
  run: (c: StationClient, chunk: string[]) => Promise<void>,
): Promise<SessionResult> {
  const c = new StationClient({ port, poolSize: 2, maxInFlight: 256, timeoutMs: 120_000 });
  const chunks: string[][] = [];
  for (let i = 0; i < ids.length; i += SESSION_BATCH) chunks.push(ids.slice(i, i + SESSION_BATCH));
  const before = await c.stats();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let done = 0;
  let next = 0;
  const tick = setInterval(() => progress(name, done, ids.length, t0), 1000);
  try {
    await Promise.all(
      Array.from({ length: SESSION_IN_FLIGHT }, async () => {
        while (next < chunks.length) {
          const chunk = chunks[next++]!;
          await run(c, chunk);
          done += chunk.length;
        }
      }),
    );
  } finally {
    clearInterval(tick);
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  progress(name, done, ids.length, t0);
  process.stderr.write("\n");
  const after = await c.stats();
  await c.close();
  if (after.reconstructionFailures !== before.reconstructionFailures)
    throw new Error(`${name}: reconstruction failures`);
  const farmMs =
    after.cpuUserMs !== undefined && before.cpuUserMs !== undefined
      ? after.cpuUserMs + after.cpuSystemMs! - before.cpuUserMs - before.cpuSystemMs!
      : undefined;
  return {
    name,
    devices: ids.length,
    rate: ids.length / seconds,
    seconds,
    farmUs: farmMs === undefined ? undefined : (farmMs * 1000) / ids.length,
    clientUs: (cpu.user + cpu.system) / ids.length,
    enrollments: after.enrollments - before.enrollments,
    reconstructions: after.reconstructions - before.reconstructions,
    walRecords: after.walRecords - before.walRecords,
    // a compaction during the phase resets the log size; then this is not meaningful (< 0)
    walBytesPerDevice: (after.walBytes - before.walBytes) / ids.length,
    walSyncs: after.walSyncs - before.walSyncs,
  };
}

async function fullSession(): Promise<SessionResult[]> {
  const ca = makeCaChain();
  const ids = Array.from({ length: SESSION_DEVICES }, (_, i) =>
    deviceId(MODEL, Math.floor((i * COUNT) / SESSION_DEVICES)),
  );
  const state = mkdtempSync(join(tmpdir(), "fg-bench-session-"));
  try {
    const farm = await startFarm(state);
    try {
      const first = await sessionPhase(
        `full session (5 steps), batches of ${SESSION_BATCH}`,
        farm.port,
        ids,
        (c, chunk) => sessionBatch(c, chunk, ca),
      );
      const rerun = await sessionPhase("re-run: STATUS", farm.port, ids, statusBatch);
      return [first, rerun];
    } finally {
      await stopFarm(farm.child);
    }
  } finally {
    rmSync(state, { recursive: true, force: true });
  }
}

function printSessions(rs: SessionResult[]): void {
  console.log("");
  console.log(
    "| phase | devices | devices/s | farm CPU us/device | client CPU us/device | PUF enrollments | reconstructions | WAL records | WAL bytes/device | WAL syncs |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rs)
    console.log(
      `| ${r.name} | ${r.devices} | ${r.rate.toFixed(0)} | ${r.farmUs === undefined ? "n/a" : r.farmUs.toFixed(0)} | ${r.clientUs.toFixed(0)} | ${r.enrollments} | ${r.reconstructions} | ${r.walRecords} | ${r.walBytesPerDevice.toFixed(0)} | ${r.walSyncs} |`,
    );
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

  if (ONLY === "session") {
    console.log(
      `full session: ${SESSION_DEVICES} devices, batches of ${SESSION_BATCH}, ${SESSION_IN_FLIGHT} in flight, farm workers ${FARM_WORKERS ?? "default"}`,
    );
    const rs = await fullSession();
    printSessions(rs);
    console.log(`\nload average at end ${loadavg()[0]!.toFixed(2)}`);
    mkdirSync(join(ROOT, "bench", "out"), { recursive: true });
    writeFileSync(
      join(ROOT, "bench", "out", "station-session.json"),
      `${JSON.stringify({ machine, load: [load0, loadavg()[0]!.toFixed(2)], COUNT, SESSION_BATCH, SESSION_IN_FLIGHT, farmWorkers: FARM_WORKERS ?? "default", sessions: rs }, null, 2)}\n`,
    );
    return;
  }
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
  const sessions = await fullSession();
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
  printSessions(sessions);
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
    sessions,
  };
  mkdirSync(join(ROOT, "bench", "out"), { recursive: true });
  writeFileSync(join(ROOT, "bench", "out", "station-roundtrip.json"), `${JSON.stringify(out, null, 2)}\n`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
