/**
 * Batch enrollment on the real engine (issue 5, point 8; issue 13). One command:
 *
 *   npx tsx bench/batch-enroll.ts [--devices 100000] [--sizes 1000,10000] [--naive 1000] [--bound 20000]
 *       [--farm 111000] [--old-bound 1] [--activate 1] [--farm-prof DIR] [--prof DIR] [--preview-prof DIR]
 *
 * In one run, on this machine:
 *  1. the enrollment bound (bench/lib/enroll-bound.ts, issue 13 point 1; 2 threads measured again
 *     after the runs, the faster of the two used for the goals): the cryptography a
 *     first-contact PUF enrollment cannot avoid on both sides (PUF reconstruction and key
 *     derivation, attestation and CSR signatures, the install's chain check; attestation and CSR
 *     verification, certificate signature), on 1 and 2 worker threads, with the CPU of each side;
 *     with --old-bound 1 (default) also the old raw bound (bench/lib/bound.ts: keygen, CSR, CSR
 *     verify, certificate), which the older tables of docs/benchmarks.md used;
 *  2. a device farm of --farm devices (default max(111,000, all the runs need)), in its own
 *     process (`fleet devices serve`), under `node --cpu-prof` with --farm-prof; by default its
 *     chips' PUFs are activated before the line (`--activate-pufs`: helper data made and stored,
 *     as a silicon vendor does at wafer sort; timed apart, not in any `pulumi up`), so a first
 *     contact reconstructs only, which is what the bound counts; --activate 0 leaves that
 *     activation to the first contact, inside the `pulumi up`;
 *  3. `pulumi up` of a fresh stack with ONE DeviceIdentityBatch of --devices PUF devices (first
 *     contact: identified (the PUF read, or enrolled too with --activate 0), attested, CSR, issued, installed, confirmed, recorded in SQLite), and
 *     of smaller fresh stacks (--sizes), each on its own serial range; wall time, devices/s, the
 *     ratio to the 2-thread bound, the state file size, and the peak RSS of every process
 *     (engine, language host, program, provider, farm);
 *  4. a no-change `pulumi preview` of the large stack;
 *  5. the naive design side by side: --naive devices as that many Pulumi resources;
 *  6. the goals of issue 13 point 2, each MET or MISSED with its figure: under 60 s, at least 0.5
 *     of the bound, fleetguard's own CPU per device at most twice its part of the bound, a
 *     no-change preview under 5 s, every process under 1 GiB peak with the farm at 111,000.
 * With --prof DIR every node process of the large `pulumi up` (program, dynamic provider) writes a
 * .cpuprofile to DIR (NODE_OPTIONS=--cpu-prof): profiling slows them, so not for the figures. With
 * --preview-prof DIR a second no-change preview, after the timed one, does the same.
 * Progress goes to stderr; results to stdout and bench/out/batch-enroll.json.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { StationClient } from "../core/station/client";
import { startFarmProcess, stopFarmProcess } from "../devices/farm/process";
import { measureBound } from "./lib/bound";
import { type EnrollBoundResult, measureEnrollBound } from "./lib/enroll-bound";
import { goals } from "./lib/goals";
import { formatReport, type ProcReport, start as startSampler } from "./lib/procmem";
import { BenchStack } from "./lib/pulumi-run";
import { runNaive } from "./naive-resources";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2)
  args.set(process.argv[i]!.replace(/^--/, ""), process.argv[i + 1]!);
const DEVICES = Number(args.get("devices") ?? 100_000);
const SIZES = (args.get("sizes") ?? "1000,10000").split(",").filter(Boolean).map(Number);
const NAIVE = Number(args.get("naive") ?? 1000);
const BOUND = Number(args.get("bound") ?? 20_000);
const OLD_BOUND = args.get("old-bound") !== "0";
const FARM_PROF = args.get("farm-prof");
const PROF = args.get("prof");
const PREVIEW_PROF = args.get("preview-prof");
/** the farm's PUFs activated before the line (default 1), as the bound assumes; 0: at first contact */
const ACTIVATE = args.get("activate") !== "0";
const ROOT = path.join(__dirname, "..");
const PROGRAM = path.join(ROOT, "test", "integration", "fixtures", "batch-program");
const log = (s: string) => process.stderr.write(`${s}\n`);

interface BatchRunResult {
  devices: number;
  /** CPU ms per device: the farm (emulated devices, from its STATS) and each process of the pulumi tree */
  cpuMsPerDevice: Record<string, number>;
  seconds: number;
  perSecond: number;
  stateBytes: number;
  active: number;
  memory: ProcReport;
}

async function runBatch(
  work: string,
  name: string,
  first: number,
  count: number,
  port: number,
  prof?: string,
): Promise<{ r: BatchRunResult; stack: BenchStack }> {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  const stack = new BenchStack(PROGRAM, dir, name);
  await stack.init();
  const set = (k: string, v: string) => stack.setConfig(k, v);
  await set("fleetguard:batch", JSON.stringify({ count, first }));
  await set("fleetguard:stationPort", String(port));
  await set("fleetguard:registry", path.join(dir, "registry.db"));
  await set("fleetguard:crlDir", path.join(dir, "crl"));
  log(`[${name}] pulumi up: ${count.toLocaleString("en-US")} devices from serial ${first}`);
  const station = new StationClient({ port });
  const farmCpu = async () => {
    const st = await station.stats();
    return (st.cpuUserMs ?? 0) + (st.cpuSystemMs ?? 0);
  };
  const farm0 = await farmCpu();
  if (prof) {
    fs.mkdirSync(prof, { recursive: true });
    stack.env.NODE_OPTIONS = `--cpu-prof --cpu-prof-dir=${prof}`;
  }
  const up = await stack.run(["up", "--yes", "--skip-preview"], {
    onLine: (l) => {
      if (/batch lot: enroll/.test(l)) log(`[${name}] ${l.trim()}`);
    },
  });
  delete stack.env.NODE_OPTIONS;
  const out = JSON.parse((await stack.run(["stack", "output", "--json"])).stdout) as {
    summary: { counts: Record<string, number> };
  };
  const ckpt = stack.checkpointFile();
  const cpu: Record<string, number> = { "farm (emulated devices)": ((await farmCpu()) - farm0) / count };
  await station.close();
  for (const [n, v] of Object.entries(up.memory.byName)) if (v.cpuMs > 0) cpu[n] = v.cpuMs / count;
  const r = {
    devices: count,
    cpuMsPerDevice: cpu,
    seconds: up.seconds,
    perSecond: count / up.seconds,
    stateBytes: fs.statSync(ckpt).size,
    active: out.summary.counts.active ?? 0,
    memory: up.memory,
  };
  log(
    `[${name}] ${r.seconds.toFixed(1)} s, ${r.perSecond.toFixed(0)} devices/s, state ${r.stateBytes} B, active ${r.active}`,
  );
  return { r, stack };
}

const load = () => os.loadavg().map((l) => Number(l.toFixed(2)));

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "fg-bench-batch-"));
  const machine = {
    cpus: os.cpus().length,
    model: os.cpus()[0]?.model,
    node: process.version,
    openssl: process.versions.openssl,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    loadavg: load(),
  };
  log(`machine: ${JSON.stringify(machine)}`);

  const seed = "be".repeat(32);
  log(`enrollment bound: ${BOUND} devices on 2 threads, ${Math.floor(BOUND / 2)} on 1`);
  const eb1 = await measureEnrollBound({
    devices: Math.floor(BOUND / 2),
    threads: 1,
    seed: Buffer.from(seed, "hex"),
  });
  const loadBound = load();
  const eb2Before = await measureEnrollBound({ devices: BOUND, threads: 2, seed: Buffer.from(seed, "hex") });
  log(
    `enrollment bound: 1 thread ${eb1.perSecond.toFixed(0)}/s, 2 threads ${eb2Before.perSecond.toFixed(0)}/s (load ${loadBound.join(" ")})`,
  );
  let old: { oneThread: number; twoThreads: number } | undefined;
  if (OLD_BOUND) {
    const b1 = await measureBound({ devices: Math.floor(BOUND / 2), threads: 1 });
    const b2 = await measureBound({ devices: BOUND, threads: 2 });
    old = { oneThread: b1.perSecond, twoThreads: b2.perSecond };
    log(`old raw bound: 1 thread ${b1.perSecond.toFixed(0)}/s, 2 threads ${b2.perSecond.toFixed(0)}/s`);
  }

  const total = DEVICES + SIZES.reduce((a, b) => a + b, 0);
  const farmDevices = Number(args.get("farm") ?? Math.max(total, 111_000));
  if (farmDevices < total) throw new Error(`--farm: got ${farmDevices}, want at least ${total}`);
  if (FARM_PROF) fs.mkdirSync(FARM_PROF, { recursive: true });
  const farmT0 = performance.now();
  const farm = await startFarmProcess({
    count: farmDevices,
    state: path.join(work, "farm"),
    seed,
    activatePufs: ACTIVATE,
    inheritStderr: ACTIVATE,
    startTimeoutMs: ACTIVATE ? 3_600_000 : 30_000,
    ...(FARM_PROF ? { nodeArgs: ["--cpu-prof", "--cpu-prof-dir", FARM_PROF] } : {}),
  });
  const activation = ACTIVATE
    ? { devices: farmDevices, seconds: (performance.now() - farmT0) / 1000 }
    : undefined;
  if (activation)
    log(
      `farm: ${farmDevices} PUFs activated before the line, farm ready in ${activation.seconds.toFixed(1)} s`,
    );
  const farmMem = startSampler(farm.child.pid!);
  const results: Record<string, BatchRunResult> = {};
  let big: BenchStack | undefined;
  let preview: { seconds: number; memory: ProcReport } | undefined;
  const loads: Record<string, number[]> = { start: machine.loadavg, bound: loadBound };
  try {
    let first = 0;
    for (const n of [...SIZES, DEVICES]) {
      loads[`before ${n}`] = load();
      const { r, stack } = await runBatch(
        work,
        `b${n}`,
        first,
        n,
        farm.port,
        n === DEVICES ? PROF : undefined,
      );
      loads[`after ${n}`] = load();
      results[String(n)] = r;
      first += n;
      if (n === DEVICES) big = stack;
    }
    log("no-change preview of the large stack");
    const pv = await big!.run(["preview", "--expect-no-changes"]);
    preview = { seconds: pv.seconds, memory: pv.memory };
    loads["after preview"] = load();
    log(`preview: ${pv.seconds.toFixed(2)} s`);
    if (PREVIEW_PROF) {
      // another preview under --cpu-prof, after the timed one (profiling slows it)
      fs.mkdirSync(PREVIEW_PROF, { recursive: true });
      big!.env.NODE_OPTIONS = `--cpu-prof --cpu-prof-dir=${PREVIEW_PROF}`;
      const pp = await big!.run(["preview", "--expect-no-changes"]);
      delete big!.env.NODE_OPTIONS;
      log(`profiled preview: ${pp.seconds.toFixed(2)} s, profiles in ${PREVIEW_PROF}`);
    }
  } finally {
    await stopFarmProcess(farm.child);
  }
  const farmReport = farmMem.stop();
  // the 2-thread bound again, after the runs: on a shared machine the cores' speed moves between the
  // two; the goals are judged against the faster (stricter) of them
  const loadBoundAfter = load();
  const eb2After = await measureEnrollBound({ devices: BOUND, threads: 2, seed: Buffer.from(seed, "hex") });
  const eb2 = eb2After.perSecond > eb2Before.perSecond ? eb2After : eb2Before;
  loads["bound after"] = loadBoundAfter;
  log(
    `enrollment bound after the runs: 2 threads ${eb2After.perSecond.toFixed(0)}/s (load ${loadBoundAfter.join(" ")})`,
  );

  log(`naive design: ${NAIVE} devices as ${NAIVE} resources`);
  const naive = NAIVE > 0 ? await runNaive({ devices: NAIVE, workDir: path.join(work, "naive") }) : undefined;

  const main = results[String(DEVICES)]!;
  const farmPeakKb = farmReport.processes.reduce((m, p) => Math.max(m, p.peakKb), 0);
  const cpu = main.cpuMsPerDevice;
  const farmCpu = cpu["farm (emulated devices)"] ?? 0;
  const fleetCpu = Object.entries(cpu)
    .filter(([k]) => !k.startsWith("farm"))
    .reduce((a, [, v]) => a + v, 0);
  const providerCpu = cpu["node dynamic provider"] ?? 0;
  // every process of the large up and of the preview, and the farm
  const peaks = [
    ...Object.entries(main.memory.byName).map(([name, v]) => ({ name, peakKb: v.peakKb })),
    ...Object.entries(preview!.memory.byName).map(([name, v]) => ({
      name: `preview: ${name}`,
      peakKb: v.peakKb,
    })),
    { name: "farm", peakKb: farmPeakKb },
  ];
  const g = goals({
    devices: DEVICES,
    seconds: main.seconds,
    perSecond: main.perSecond,
    bound: eb2,
    fleetMsPerDevice: fleetCpu,
    previewSeconds: preview!.seconds,
    peaks,
    farmDevices,
  });
  const summary = {
    machine,
    loads,
    bound: { oneThread: eb1, twoThreads: eb2, twoThreadsBefore: eb2Before, twoThreadsAfter: eb2After },
    oldBound: old,
    batches: results,
    endToEnd: {
      devices: DEVICES,
      seconds: main.seconds,
      perSecond: main.perSecond,
      ratioToBound: main.perSecond / eb2.perSecond,
      ratioToOldBound: old ? main.perSecond / old.twoThreads : undefined,
      fleetguardCpuMsPerDevice: fleetCpu,
      providerCpuMsPerDevice: providerCpu,
      farmCpuMsPerDevice: farmCpu,
    },
    preview,
    farmDevices,
    activation: activation ?? "at first contact",
    farmPeakRssMb: farmPeakKb / 1024,
    goals: g,
    naive,
  };
  fs.mkdirSync(path.join(ROOT, "bench", "out"), { recursive: true });
  fs.writeFileSync(path.join(ROOT, "bench", "out", "batch-enroll.json"), JSON.stringify(summary, null, 2));
  const n = (x: number, d = 0) =>
    x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
  console.log(
    `\n## batch enrollment, ${machine.cpus} cores, Node ${machine.node}, OpenSSL ${machine.openssl}; load ${machine.loadavg.join(" ")} at start`,
  );
  const b = (r: EnrollBoundResult) =>
    `${n(r.perSecond)}/s (CPU per device: device ${r.deviceMsPerDevice.toFixed(3)} ms, fleetguard ${r.fleetMsPerDevice.toFixed(3)} ms)`;
  console.log(
    `enrollment bound (same run, load ${loadBound.join(" ")}): 1 thread ${b(eb1)}; 2 threads ${b(eb2Before)}`,
  );
  console.log(
    `  2 threads again after the runs (load ${loadBoundAfter.join(" ")}): ${b(eb2After)}; the goals use the faster: ${n(eb2.perSecond)}/s`,
  );
  console.log(
    `  not in the bound: one PUF enrollment (helper data) ${eb1.pufEnrollMs.toFixed(3)} ms on 1 thread; ${
      activation
        ? `the farm's chips were activated before the line (--activate-pufs, as at wafer sort): ${n(activation.devices)} in ${n(activation.seconds, 1)} s, not in the pulumi up`
        : "the farm does it at first contact, inside the pulumi up (--activate 0)"
    }`,
  );
  if (old)
    console.log(
      `old raw bound (keygen, CSR, CSR verify, certificate; the older tables): ${n(old.oneThread)}/s on 1 thread, ${n(old.twoThreads)}/s on 2`,
    );
  console.log(
    "| devices | pulumi up (s) | devices/s | ratio to the 2-thread bound | state file (bytes) | active |",
  );
  console.log("|---|---|---|---|---|---|");
  for (const r of Object.values(results))
    console.log(
      `| ${n(r.devices)} | ${n(r.seconds, 1)} | ${n(r.perSecond)} | ${n(r.perSecond / eb2.perSecond, 2)} | ${n(r.stateBytes)} | ${n(r.active)} |`,
    );
  console.log(`no-change preview of ${n(DEVICES)}: ${n(preview!.seconds, 2)} s`);
  console.log(`\npeak memory, pulumi up of ${n(DEVICES)}:\n${formatReport(main.memory)}`);
  console.log(`farm process (${n(farmDevices)} devices) peak RSS: ${n(summary.farmPeakRssMb)} MiB`);
  const totalCpu = Object.values(cpu).reduce((a, b) => a + b, 0);
  console.log(
    `\nCPU per device, pulumi up of ${n(DEVICES)} (ms): ${Object.entries(cpu)
      .map(([k, v]) => `${k} ${v.toFixed(3)}`)
      .join(", ")}; total ${totalCpu.toFixed(3)}`,
  );
  console.log(
    `fleetguard's own CPU per device (every process but the farm) ${fleetCpu.toFixed(3)} ms beside its part of the bound ${eb2.fleetMsPerDevice.toFixed(3)} ms (2 threads; ${eb1.fleetMsPerDevice.toFixed(3)} on 1); the farm ${farmCpu.toFixed(3)} ms beside the device part ${eb2.deviceMsPerDevice.toFixed(3)} ms (${eb1.deviceMsPerDevice.toFixed(3)} on 1)`,
  );
  console.log(
    `ceiling on ${machine.cpus} cores at that CPU: ${n((machine.cpus * 1000) / totalCpu)} devices/s; the bound's CPU per device: ${eb2.totalMsPerDevice.toFixed(3)} ms (2 threads), ${eb1.totalMsPerDevice.toFixed(3)} ms (1)`,
  );
  console.log(
    `load averages: ${Object.entries(loads)
      .map(([k, v]) => `${k} ${v.join(" ")}`)
      .join("; ")}`,
  );
  console.log("\ngoals (issue 13 point 2):");
  for (const x of g) console.log(`  ${x.met ? "MET   " : "MISSED"} ${x.goal}: ${x.figure}`);
  if (naive) console.log(`\nnaive: ${JSON.stringify(naive)}`);
  fs.rmSync(work, { recursive: true, force: true });
  for (const n of [...SIZES, DEVICES]) fs.rmSync(path.join(PROGRAM, `Pulumi.b${n}.yaml`), { force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
