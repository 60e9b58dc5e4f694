/**
 * Batch enrollment on the real engine (issue 5, point 8). One command:
 *
 *   npx tsx bench/batch-enroll.ts [--devices 100000] [--sizes 1000,10000] [--naive 1000] [--bound 20000]
 *
 * In one run, on this machine:
 *  1. the raw bound: key generation, CSR build+sign, CSR verify and certificate signing in plain
 *     Node crypto on 1 and 2 worker threads (bench/lib/bound.ts);
 *  2. a device farm of all the devices needed, in its own process (`fleet devices serve`);
 *  3. `pulumi up` of a fresh stack with ONE DeviceIdentityBatch of --devices PUF devices (first
 *     contact: PUF enrolled, attested, CSR, issued, installed, confirmed, recorded in SQLite), and
 *     of smaller fresh stacks (--sizes), each on its own serial range; wall time, devices/s, the
 *     ratio to the 2-thread bound, the state file size, and the peak RSS of every process
 *     (engine, language host, program, provider, farm);
 *  4. a no-change `pulumi preview` of the large stack;
 *  5. the naive design side by side: --naive devices as that many Pulumi resources.
 * Progress goes to stderr; results to stdout and bench/out/batch-enroll.json.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { StationClient } from "../core/station/client";
import { startFarmProcess, stopFarmProcess } from "../devices/farm/process";
import { measureBound } from "./lib/bound";
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
  const up = await stack.run(["up", "--yes", "--skip-preview"], {
    onLine: (l) => {
      if (/batch lot: enroll/.test(l)) log(`[${name}] ${l.trim()}`);
    },
  });
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

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "fg-bench-batch-"));
  const machine = {
    cpus: os.cpus().length,
    model: os.cpus()[0]?.model,
    node: process.version,
    loadavg: os.loadavg(),
  };
  log(`machine: ${JSON.stringify(machine)}`);

  log(`raw bound: ${BOUND} devices on 1 and 2 threads`);
  const bound1 = await measureBound({ devices: Math.floor(BOUND / 2), threads: 1 });
  const bound2 = await measureBound({ devices: BOUND, threads: 2 });
  log(`bound: 1 thread ${bound1.perSecond.toFixed(0)}/s, 2 threads ${bound2.perSecond.toFixed(0)}/s`);

  const total = DEVICES + SIZES.reduce((a, b) => a + b, 0);
  const farm = await startFarmProcess({
    count: total,
    state: path.join(work, "farm"),
    seed: "be".repeat(32),
  });
  const farmMem = startSampler(farm.child.pid!);
  const results: Record<string, BatchRunResult> = {};
  let big: BenchStack | undefined;
  let preview: { seconds: number; memory: ProcReport } | undefined;
  try {
    let first = 0;
    for (const n of [...SIZES, DEVICES]) {
      const { r, stack } = await runBatch(work, `b${n}`, first, n, farm.port);
      results[String(n)] = r;
      first += n;
      if (n === DEVICES) big = stack;
    }
    log("no-change preview of the large stack");
    const pv = await big!.run(["preview", "--expect-no-changes"]);
    preview = { seconds: pv.seconds, memory: pv.memory };
    log(`preview: ${pv.seconds.toFixed(2)} s`);
  } finally {
    await stopFarmProcess(farm.child);
  }
  const farmReport = farmMem.stop();

  log(`naive design: ${NAIVE} devices as ${NAIVE} resources`);
  const naive = NAIVE > 0 ? await runNaive({ devices: NAIVE, workDir: path.join(work, "naive") }) : undefined;

  const main = results[String(DEVICES)]!;
  const summary = {
    machine,
    bound: { oneThread: bound1.perSecond, twoThreads: bound2.perSecond },
    batches: results,
    endToEnd: {
      devices: DEVICES,
      seconds: main.seconds,
      perSecond: main.perSecond,
      ratioToBound: main.perSecond / bound2.perSecond,
    },
    preview,
    farmPeakRssMb: farmReport.processes.reduce((m, p) => Math.max(m, p.peakKb), 0) / 1024,
    naive,
  };
  fs.mkdirSync(path.join(ROOT, "bench", "out"), { recursive: true });
  fs.writeFileSync(path.join(ROOT, "bench", "out", "batch-enroll.json"), JSON.stringify(summary, null, 2));
  const n = (x: number, d = 0) =>
    x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
  console.log(`\n## batch enrollment, ${machine.cpus} cores, Node ${machine.node}`);
  console.log(`raw bound: ${n(bound1.perSecond)}/s on 1 thread, ${n(bound2.perSecond)}/s on 2 threads`);
  console.log(
    "| devices | pulumi up (s) | devices/s | ratio to 2-thread bound | state file (bytes) | active |",
  );
  console.log("|---|---|---|---|---|---|");
  for (const r of Object.values(results))
    console.log(
      `| ${n(r.devices)} | ${n(r.seconds, 1)} | ${n(r.perSecond)} | ${n(r.perSecond / bound2.perSecond, 2)} | ${n(r.stateBytes)} | ${n(r.active)} |`,
    );
  console.log(`no-change preview of ${n(DEVICES)}: ${n(preview!.seconds, 2)} s`);
  console.log(`\npeak memory, pulumi up of ${n(DEVICES)}:\n${formatReport(main.memory)}`);
  console.log(`farm process peak RSS: ${n(summary.farmPeakRssMb)} MiB`);
  const cpu = main.cpuMsPerDevice;
  const totalCpu = Object.values(cpu).reduce((a, b) => a + b, 0);
  console.log(
    `\nCPU per device, pulumi up of ${n(DEVICES)} (ms): ${Object.entries(cpu)
      .map(([k, v]) => `${k} ${v.toFixed(3)}`)
      .join(", ")}; total ${totalCpu.toFixed(3)}`,
  );
  console.log(
    `ceiling on ${machine.cpus} cores at that CPU: ${n((machine.cpus * 1000) / totalCpu)} devices/s; bound's CPU per device: ${((2 * 1000) / bound2.perSecond).toFixed(3)} ms`,
  );
  if (naive) console.log(`\nnaive: ${JSON.stringify(naive)}`);
  fs.rmSync(work, { recursive: true, force: true });
  for (const n of [...SIZES, DEVICES]) fs.rmSync(path.join(PROGRAM, `Pulumi.b${n}.yaml`), { force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
