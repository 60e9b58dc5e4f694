/**
 * Hub connect storm (issue 11, point 9). One command:
 *
 *   npx tsx bench/hub-connect.ts [--devices 10000] [--concurrency 256] [--bound 10000] [--work DIR]
 *
 * In one run, on this machine:
 *  1. the bound: mutual-TLS handshakes per second in plain Node with the same key types (P-256
 *     device keys and certificates under a P-256 CA, the hub's P-256 server key), the server in one
 *     worker thread and the clients in another (both cores), no MQTT, no farm: a handshake counts
 *     once the server has accepted the client certificate and said so (one byte), which is the
 *     point where a device would read its CONNACK;
 *  2. a device farm of --devices devices in its own process (`fleet devices serve`), enrolled by
 *     the real engine (BatchEngine.converge: attest, CSR, issue, install, SQLite registry), or
 *     reused from --work DIR when a previous run left them there;
 *  3. the local hub (hub/local/server.ts, startLocalHub) in its own process, its state written by
 *     the local hub driver (core/hubs/local.ts: the issuing CA with the CRLs of its chain, every
 *     device certificate registered);
 *  4. the storm: `connectDevices` (core/station/connect.ts, the code `fleet devices connect`
 *     runs) with --concurrency sessions at once: every device opens TLS with its own key, sends
 *     CONNECT, PUBLISHes at QoS 1, waits for PUBACK, DISCONNECTs; devices per second, the ratio
 *     to the bound, and the peak RSS of the farm and the hub (procfs).
 * Progress goes to stderr; the results to stdout as a Markdown table and to
 * bench/out/hub-connect.json.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { Worker } from "node:worker_threads";
import { issueCa, signCrl } from "../core/ca";
import { BatchEngine, type BatchSpec } from "../core/enroll/engine";
import { type IssuerMaterial, resolveProfile } from "../core/enroll/profile";
import { LocalHubDriver } from "../core/hubs/local";
import { openRegistry } from "../core/registry";
import { sha256Hex } from "../core/registry/chain";
import { StationClient } from "../core/station/client";
import { connectDevices } from "../core/station/connect";
import { loadPrivateKey } from "../core/x509/keys";
import { pemBlocks } from "../core/x509/pem";
import { startFarmProcess, stopFarmProcess } from "../devices/farm/process";
import { buildCertificate, toPem } from "../devices/firmware/pkix";
import { start as startSampler } from "./lib/procmem";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2)
  args.set(process.argv[i]!.replace(/^--/, ""), process.argv[i + 1]!);
const DEVICES = Number(args.get("devices") ?? 10_000);
const CONCURRENCY = Number(args.get("concurrency") ?? 256);
const BOUND = Number(args.get("bound") ?? 10_000);
const ROOT = path.join(__dirname, "..");
const log = (s: string) => process.stderr.write(`${s}\n`);
const n = (x: number) => Math.round(x).toLocaleString("en-US");

// ------------------------------------------------------------------ 1. the bound

/** A P-256 root and a leaf factory under it (devices/firmware/pkix, the DER builder). */
function pkiOf(name: string) {
  const kp = () => {
    const { privateKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    return {
      privateKey,
      spki: crypto.createPublicKey(privateKey).export({ type: "spki", format: "der" }) as Buffer,
    };
  };
  const rootKey = kp();
  const rootName: Array<["O" | "CN", string]> = [
    ["O", "fleetguard bench"],
    ["CN", `${name} Root`],
  ];
  const now = Date.now();
  const root = buildCertificate({
    serial: crypto.randomBytes(8),
    issuer: rootName,
    subject: rootName,
    notBefore: new Date(now - 86400_000),
    notAfter: new Date(now + 365 * 86400_000),
    spki: rootKey.spki,
    issuerSpki: rootKey.spki,
    ca: true,
    signer: rootKey.privateKey,
  });
  const leaf = (cn: string) => {
    const k = kp();
    const cert = buildCertificate({
      serial: crypto.randomBytes(12),
      issuer: rootName,
      subject: [["CN", cn]],
      notBefore: new Date(now - 3600_000),
      notAfter: new Date(now + 30 * 86400_000),
      spki: k.spki,
      issuerSpki: rootKey.spki,
      ca: false,
      signer: rootKey.privateKey,
    });
    return { keyPem: k.privateKey.export({ type: "sec1", format: "pem" }) as string, certPem: toPem(cert) };
  };
  return { rootPem: toPem(root), leaf };
}

const SERVER_JS = `
const tls = require("node:tls");
const { parentPort, workerData: w } = require("node:worker_threads");
const server = tls.createServer({ key: w.keyPem, cert: w.certPem, ca: w.caPem, requestCert: true, rejectUnauthorized: true },
  (s) => { s.on("error", () => {}); s.setNoDelay(true); s.end("k"); });
server.on("tlsClientError", () => {});
server.listen(0, "127.0.0.1", () => parentPort.postMessage({ port: server.address().port }));
parentPort.on("message", () => server.close(() => process.exit(0)));
`;

const CLIENT_JS = `
const tls = require("node:tls");
const { parentPort, workerData: w } = require("node:worker_threads");
// one secure context per device identity, made once (the handshake alone is measured), or, with
// w.fresh, one made per connection from PEM, as a device that connects once pays it
const ctx = w.fresh ? [] : w.ids.map((id) => tls.createSecureContext({ key: id.keyPem, cert: id.certPem, ca: w.caPem }));
const contextOf = (i) => {
  if (!w.fresh) return ctx[i % ctx.length];
  const id = w.ids[i % w.ids.length];
  return tls.createSecureContext({ key: id.keyPem, cert: id.certPem, ca: w.caPem });
};
let next = 0, ok = 0, failed = 0;
const t0 = performance.now();
const one = () => new Promise((resolve) => {
  if (next >= w.total) return resolve(false);
  const i = next++;
  const s = tls.connect({ host: "127.0.0.1", port: w.port, secureContext: contextOf(i), servername: "localhost", noDelay: true });
  s.once("data", () => { ok++; s.destroy(); resolve(true); });
  s.once("error", () => { failed++; s.destroy(); resolve(true); });
});
const lane = async () => { while (await one()); };
Promise.all(Array.from({ length: w.concurrency }, lane)).then(() =>
  parentPort.postMessage({ ok, failed, seconds: (performance.now() - t0) / 1000 }));
`;

async function measureHandshakes(total: number, concurrency: number, fresh: boolean) {
  const devices = pkiOf("Bench Devices");
  const hubPki = pkiOf("Bench Hub");
  const server = hubPki.leaf("localhost");
  const ids = Array.from({ length: 200 }, (_, i) => devices.leaf(`dev-${i}`));
  const cpu0 = process.cpuUsage();
  const sw = new Worker(SERVER_JS, { eval: true, workerData: { ...server, caPem: devices.rootPem } });
  const port = await new Promise<number>((r) => sw.once("message", (m: { port: number }) => r(m.port)));
  const cw = new Worker(CLIENT_JS, {
    eval: true,
    workerData: { ids, caPem: hubPki.rootPem, port, total, concurrency, fresh },
  });
  const r = await new Promise<{ ok: number; failed: number; seconds: number }>((res) =>
    cw.once("message", res),
  );
  sw.postMessage("stop");
  await Promise.all([new Promise((res) => sw.once("exit", res)), cw.terminate()]);
  if (r.failed) throw new Error(`bound: ${r.failed} of ${total} handshakes failed`);
  // CPU of both sides (this process: the two workers, the main thread waits), per handshake:
  // comparable with the farm's and the hub's CPU per device whatever else the machine runs
  const c = process.cpuUsage(cpu0);
  const cpuMsPerHandshake = (c.user + c.system) / 1000 / r.ok;
  return { handshakes: r.ok, seconds: r.seconds, perSecond: r.ok / r.seconds, cpuMsPerHandshake };
}

// ------------------------------------------------------------------ 2. farm and enrollment

function issuer(work: string): {
  material: IssuerMaterial;
  caPems: { issuing: string; chain: string };
  crls: string[];
} {
  const file = path.join(work, "ca.json");
  if (!fs.existsSync(file)) {
    const root = issueCa({
      name: "root",
      role: "root",
      algorithm: "ecdsa-p256",
      subject: { commonName: "Bench Root" },
      validityDays: 3650,
      pathLen: 1,
    });
    const iss = issueCa(
      {
        name: "iss",
        role: "issuing",
        algorithm: "ecdsa-p256",
        subject: { commonName: "Bench Issuing" },
        validityDays: 730,
      },
      { name: "root", ...root },
    );
    fs.writeFileSync(file, JSON.stringify({ root, iss }));
  }
  const { root, iss } = JSON.parse(fs.readFileSync(file, "utf8")) as {
    root: { certificatePem: string; keyPem: string };
    iss: { certificatePem: string; keyPem: string; chainPem: string };
  };
  const chain = pemBlocks(iss.chainPem, "CERTIFICATE", "chain");
  // fresh CRLs of every CA of the chain (the hub refuses a chain with a CA without one)
  const crls = [signCrl(iss, {}).crlPem, signCrl(root, {}).crlPem];
  return {
    material: {
      certificate: chain[0]!,
      chain: chain.slice(1),
      key: loadPrivateKey(iss.keyPem, "key"),
      fingerprint: crypto.createHash("sha256").update(chain[0]!).digest("hex"),
    },
    caPems: { issuing: iss.certificatePem, chain: iss.chainPem },
    crls,
  };
}

// ------------------------------------------------------------------ 3. the hub process

const HUB_TS = (stateDir: string) => `
import { createInterface } from "node:readline";
import { startLocalHub } from ${JSON.stringify(path.join(ROOT, "hub/local/server"))};
(async () => {
  const hub = await startLocalHub({ stateDir: ${JSON.stringify(stateDir)}, port: 0 });
  console.log(JSON.stringify({ port: hub.port, hubCaFile: hub.hubCaFile }));
  createInterface({ input: process.stdin }).on("line", async (l) => {
    if (l === "stats") console.log(JSON.stringify(hub.stats()));
    if (l === "stop") { await hub.close(); process.exit(0); }
  });
})();
`;

interface HubProcess {
  child: ChildProcess;
  port: number;
  hubCaFile: string;
  ask(line: string): Promise<unknown>;
}

async function startHubProcess(work: string, stateDir: string): Promise<HubProcess> {
  const script = path.join(work, "hub-main.ts");
  fs.writeFileSync(script, HUB_TS(stateDir));
  const child = spawn(process.execPath, ["--import", "tsx", script], {
    cwd: ROOT,
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout! });
  const waiting: Array<(v: unknown) => void> = [];
  lines.on("line", (l) => waiting.shift()?.(JSON.parse(l)));
  const next = () => new Promise<unknown>((r) => waiting.push(r));
  const first = (await Promise.race([
    next(),
    new Promise((_, rej) => child.once("exit", (c) => rej(new Error(`hub exited with ${c}`)))),
  ])) as { port: number; hubCaFile: string };
  return {
    child,
    port: first.port,
    hubCaFile: first.hubCaFile,
    ask: (line) => {
      const p = next();
      child.stdin!.write(`${line}\n`);
      return p;
    },
  };
}

// ------------------------------------------------------------------ main

async function main() {
  const keep = args.get("work");
  const work = keep ?? fs.mkdtempSync(path.join(os.tmpdir(), "fg-bench-hub-"));
  fs.mkdirSync(work, { recursive: true });
  const machine = {
    cpus: os.cpus().length,
    model: os.cpus()[0]?.model,
    node: process.version,
    loadavg: os.loadavg(),
  };
  log(`machine: ${JSON.stringify(machine)}; work ${work}`);

  log(`bound: ${n(BOUND)} mutual-TLS handshakes, ${CONCURRENCY} at once, server and clients in two threads`);
  const bound = await measureHandshakes(BOUND, CONCURRENCY, false);
  log(`bound: ${n(bound.perSecond)} handshakes/s, ${bound.cpuMsPerHandshake.toFixed(2)} ms CPU each`);
  const boundFresh = await measureHandshakes(BOUND, CONCURRENCY, true);
  log(
    `bound with a secure context per connection: ${n(boundFresh.perSecond)} handshakes/s, ${boundFresh.cpuMsPerHandshake.toFixed(2)} ms CPU each`,
  );

  const sampler = startSampler(process.pid);
  const farm = await startFarmProcess({
    count: DEVICES,
    state: path.join(work, "farm"),
    seed: "ab".repeat(32),
    // every device powered: its key stays in RAM after enrollment, as a running device keeps it
    // (the storm then measures connecting, not PUF reconstruction; the default cache is 4,096)
    extraArgs: ["--key-cache", String(DEVICES)],
    // --farm-prof DIR: a CPU profile of the farm (main thread and workers) for a look at its cost
    nodeArgs: args.get("farm-prof") ? ["--cpu-prof", "--cpu-prof-dir", args.get("farm-prof")!] : undefined,
    inheritStderr: true,
    startTimeoutMs: 120_000,
  });
  const station = new StationClient({ port: farm.port, poolSize: 2, maxInFlight: 64, timeoutMs: 600_000 });
  const registry = await openRegistry(path.join(work, "registry.db"));
  const farmCpu = async () => {
    const st = await station.stats();
    return (st.cpuUserMs ?? 0) + (st.cpuSystemMs ?? 0);
  };
  // the CPU time of a process so far (utime + stime, /proc/<pid>/stat fields 14 and 15), ms
  const cpuOf0 = (pid: number | undefined) => {
    const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
  };
  let hub: HubProcess | undefined;
  try {
    const { material, caPems, crls } = issuer(work);
    const spec: BatchSpec = {
      name: "storm",
      model: "fg100",
      source: "puf",
      firstSerial: 0,
      count: DEVICES,
      profile: resolveProfile({ subject: { organization: "Acme" }, validityDays: 365 }),
      maxQuarantinedFraction: 0.01,
      maxWaveFraction: 1,
    };
    const te = performance.now();
    const summary = await new BatchEngine({ registry, station, issuer: material }, spec).converge();
    const enrollS = (performance.now() - te) / 1000;
    log(
      `enrolled (or reused) ${n(DEVICES)} devices in ${enrollS.toFixed(1)} s: ${JSON.stringify(summary).slice(0, 300)}`,
    );

    // the hub's state: the issuing CA with its chain's CRLs, every live certificate registered
    const hubState = path.join(work, "hub");
    fs.mkdirSync(hubState, { recursive: true });
    const driver = new LocalHubDriver({ stateDir: hubState, registration: "bench", batch: "storm" });
    await driver.ensureTrust([
      {
        name: "iss",
        fingerprint: material.fingerprint,
        certificatePem: caPems.issuing,
        chainPem: caPems.chain,
        crlPems: crls,
      },
    ]);
    let registered = 0;
    for (let after: string | undefined; ; ) {
      const page = await registry.certificates({
        batch: "storm",
        status: ["live"],
        limit: 5000,
        ...(after ? { after } : {}),
      });
      const outs = await driver.register(
        page.map((c) => ({
          deviceId: c.deviceId,
          batch: c.batch,
          serial: c.serial,
          der: c.der,
          sha256: sha256Hex(c.der),
          issuer: c.issuer,
        })),
      );
      registered += outs.filter((o) => o.ok).length;
      if (page.length < 5000) break;
      after = page[page.length - 1]!.serial;
    }
    await driver.flush();
    await driver.close();
    log(`hub state: ${n(registered)} certificates registered`);

    hub = await startHubProcess(work, hubState);
    sampler.sample();
    const hubCpu0 = cpuOf0(hub.child.pid);
    const farmCpu0 = await farmCpu();
    const caPem = fs.readFileSync(hub.hubCaFile, "utf8");
    log(`hub on 127.0.0.1:${hub.port}; storm: ${n(DEVICES)} devices, ${CONCURRENCY} at once`);
    const ts = performance.now();
    const r = await connectDevices(station, {
      hub: { host: "127.0.0.1", port: hub.port, caPem },
      concurrency: CONCURRENCY,
      onProgress: (p) =>
        log(
          `  ${n(p.done)} of ${n(p.total)}: ${n(p.connected)} connected, ${n(p.refused)} refused, ${n(p.done / (p.elapsedMs / 1000))}/s`,
        ),
    });
    const stormS = (performance.now() - ts) / 1000;
    const hubStats = await hub.ask("stats");
    const mem = sampler.stop();
    const peakOf = (pid: number | undefined) =>
      (mem.processes.find((p) => p.pid === pid)?.peakKb ?? 0) / 1024;
    const result = {
      machine,
      devices: DEVICES,
      concurrency: CONCURRENCY,
      enrollSeconds: enrollS,
      connect: { ...r, refused: r.refused.slice(0, 10), seconds: stormS, perSecond: r.attempted / stormS },
      bound,
      boundFresh,
      ratio: r.attempted / stormS / bound.perSecond,
      peakMiB: { farm: peakOf(farm.child.pid), hub: peakOf(hub.child.pid), bench: peakOf(process.pid) },
      // CPU of the whole run for the farm (enrollment included), of the storm only for the hub
      hubCpuMsPerDevice: (cpuOf0(hub.child.pid) - hubCpu0) / DEVICES,
      farmCpuMsPerDeviceStorm: ((await farmCpu()) - farmCpu0) / DEVICES,
      hubStats,
    };
    fs.mkdirSync(path.join(ROOT, "bench", "out"), { recursive: true });
    fs.writeFileSync(
      path.join(ROOT, "bench", "out", "hub-connect.json"),
      `${JSON.stringify(result, null, 2)}\n`,
    );
    console.log(`${n(r.connected)} of ${n(r.attempted)} devices connected over mTLS`);
    for (const x of r.reasons) console.log(`  ${n(x.count)} refused at ${x.stage}: ${x.reason}`);
    console.log("");
    console.log("| measure | value |");
    console.log("|---|---|");
    console.log(
      `| connect storm, devices/s (${n(DEVICES)} devices, ${CONCURRENCY} at once) | ${n(result.connect.perSecond)} |`,
    );
    console.log(`| storm wall time | ${stormS.toFixed(2)} s |`);
    console.log(`| bound: mutual-TLS handshakes/s, plain Node, 2 threads | ${n(bound.perSecond)} |`);
    console.log(`| ratio storm / bound | ${result.ratio.toFixed(2)} |`);
    console.log(
      `| bound with a fresh secure context (key, chain, CA from PEM) per connection, handshakes/s | ${n(boundFresh.perSecond)} |`,
    );
    console.log(
      `| ratio storm / that bound | ${(result.connect.perSecond / boundFresh.perSecond).toFixed(2)} |`,
    );
    console.log(
      `| CPU per handshake (client + server), bound / with fresh contexts | ${bound.cpuMsPerHandshake.toFixed(2)} ms / ${boundFresh.cpuMsPerHandshake.toFixed(2)} ms |`,
    );
    console.log(
      `| peak RSS farm (${DEVICES.toLocaleString("en-US")} devices, workers) | ${result.peakMiB.farm.toFixed(0)} MiB |`,
    );
    console.log(`| peak RSS hub | ${result.peakMiB.hub.toFixed(0)} MiB |`);
    console.log(
      `| CPU per device during the storm: farm / hub | ${result.farmCpuMsPerDeviceStorm.toFixed(2)} ms / ${result.hubCpuMsPerDevice.toFixed(2)} ms |`,
    );
    console.log(`| enrollment (BatchEngine, or reuse) | ${enrollS.toFixed(1)} s |`);
  } finally {
    await station.close();
    await registry.close();
    if (hub) {
      const exited = new Promise((r) => hub!.child.once("exit", r));
      hub.child.stdin!.write("stop\n");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (hub.child.exitCode === null) hub.child.kill("SIGTERM");
    }
    await stopFarmProcess(farm.child);
    // a --work DIR is kept for the next run (reuse); a temporary one is not
    if (!keep) fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
