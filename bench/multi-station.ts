/**
 * Several stations at once (issue 13, point 3): a factory's lines, each with its own station (a
 * device farm in its own process) and its own DeviceIdentityBatch and issuing CA, in ONE Pulumi
 * program and ONE PostgreSQL registry (bench/fixtures/multi-station-program). `pulumi up` creates
 * the batches in parallel. One command:
 *
 *   npx tsx bench/multi-station.ts [--devices 20000] [--lines 2] [--single 1]
 *
 * --devices per line. With --single 1 (default) the same program first runs with ONE line of
 * --devices, on a fresh database, so the combined rate of the lines stands beside one line's.
 * Each configuration: a fresh PostgreSQL database on a throwaway server (test/helpers/postgres.ts,
 * durable: fsync and synchronous_commit on, as in production), fresh farms, a fresh stack; then
 *  - wall time of `pulumi up`, devices/s per line and combined;
 *  - that the registry's compare-and-set never conflicted between the batches: the up succeeded
 *    (a CONFLICT fails a batch's create), every device of every line is active in its own batch,
 *    and `verify` re-derives every device, certificate and the whole audit chain from the log;
 *  - registry writes: audit rows (one per transition) and committed transactions per second
 *    (pg_stat_database), and the database size;
 *  - CPU per device of each process (pulumi tree, farms from their STATS, PostgreSQL server).
 * Results to stdout and bench/out/multi-station.json; machine load averages beside every run.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Client } from "pg";
import { openRegistry } from "../core/registry";
import { StationClient } from "../core/station/client";
import { startFarmProcess, stopFarmProcess } from "../devices/farm/process";
import { type PostgresServer, startPostgres } from "../test/helpers/postgres";
import { formatReport, type ProcReport, start as startSampler } from "./lib/procmem";
import { BenchStack } from "./lib/pulumi-run";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2)
  args.set(process.argv[i]!.replace(/^--/, ""), process.argv[i + 1]!);
const DEVICES = Number(args.get("devices") ?? 20_000);
const LINES = Number(args.get("lines") ?? 2);
const SINGLE = args.get("single") !== "0";
const PROGRAM = path.join(__dirname, "fixtures", "multi-station-program");
const log = (s: string) => process.stderr.write(`${s}\n`);
const load = () => os.loadavg().map((l) => Number(l.toFixed(2)));

interface RunResult {
  lines: number;
  devicesPerLine: number;
  seconds: number;
  combinedPerSecond: number;
  /** when each batch's enrollment ended, seconds after the up started (from the progress lines) */
  active: Record<string, number>;
  conflictFree: boolean;
  verify: { ok: boolean; rows: number; devices: number; count: number };
  auditRows: number;
  auditRowsPerSecond: number;
  commits: number;
  commitsPerSecond: number;
  databaseBytes: number;
  bytesPerDevice: number;
  cpuMsPerDevice: Record<string, number>;
  memory: ProcReport;
  postgresPeakKb: number;
  load: { before: number[]; after: number[] };
}

async function pgQuery<T>(url: string, sql: string): Promise<T[]> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(sql)).rows as T[];
  } finally {
    await c.end();
  }
}

function postmasterPid(pg: PostgresServer): number {
  return Number(fs.readFileSync(path.join(pg.dir, "data", "postmaster.pid"), "utf8").split("\n")[0]);
}

async function runConfig(pg: PostgresServer, work: string, lines: number): Promise<RunResult> {
  const name = `l${lines}`;
  const url = await pg.createDatabase(`fleet_${name}`);
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  const farms = [];
  for (let l = 0; l < lines; l++)
    farms.push(
      await startFarmProcess({
        count: lines * DEVICES,
        state: path.join(dir, `farm-${l}`),
        seed: String(l + 1)
          .padStart(2, "0")
          .repeat(32),
      }),
    );
  const farmSamplers = farms.map((f) => startSampler(f.child.pid!));
  const pgSampler = startSampler(postmasterPid(pg));
  const stations = farms.map((f) => new StationClient({ port: f.port }));
  const farmCpu = async () =>
    Promise.all(
      stations.map(async (s) => {
        const st = await s.stats();
        return (st.cpuUserMs ?? 0) + (st.cpuSystemMs ?? 0);
      }),
    );
  try {
    const stack = new BenchStack(PROGRAM, dir, name);
    await stack.init();
    const spec = farms.map((f, l) => ({
      name: `line-${String.fromCharCode(97 + l)}`,
      first: l * DEVICES,
      count: DEVICES,
      stationPort: f.port,
    }));
    await stack.setConfig("fleetguard:lines", JSON.stringify(spec));
    await stack.setConfig("fleetguard:registry", url, true);
    await stack.setConfig("fleetguard:crlDir", path.join(dir, "crl"));
    const stat0 = (
      await pgQuery<{ c: string }>(
        url,
        "SELECT xact_commit AS c FROM pg_stat_database WHERE datname = current_database()",
      )
    )[0]!;
    const f0 = await farmCpu();
    const before = load();
    log(`[${name}] pulumi up: ${lines} line(s) x ${DEVICES.toLocaleString("en-US")} devices`);
    const t0 = performance.now();
    const active: Record<string, number> = {};
    const up = await stack.run(["up", "--yes", "--skip-preview"], {
      onLine: (l) => {
        if (/enroll .*\(\d+%\)/.test(l) && /(100%)/.test(l)) {
          const m = /(line-[a-z])/.exec(l);
          if (m && active[m[1]!] === undefined) active[m[1]!] = (performance.now() - t0) / 1000;
        }
        if (/enroll/.test(l) && /(\b[0-9]0%|100%)/.test(l)) log(`[${name}] ${l.trim()}`);
      },
    });
    const after = load();
    const f1 = await farmCpu();
    const stat1 = (
      await pgQuery<{ c: string }>(
        url,
        "SELECT xact_commit AS c FROM pg_stat_database WHERE datname = current_database()",
      )
    )[0]!;
    const pgReport = pgSampler.stop();
    const reg = await openRegistry(url);
    let conflictFree = true;
    let verify: RunResult["verify"];
    let auditRows = 0;
    try {
      for (const s of spec) {
        const c = await reg.counts(s.name);
        const others = Object.entries(c).filter(([k, n]) => k !== "active" && n > 0);
        if (c.active !== DEVICES || others.length) {
          conflictFree = false;
          log(`[${name}] ${s.name}: ${JSON.stringify(c)}, want ${DEVICES} active`);
        }
      }
      const v = await reg.verify();
      verify = { ok: v.ok, rows: v.rows, devices: v.devices, count: v.count };
      auditRows = v.rows;
    } finally {
      await reg.close();
    }
    // every device's audit rows name the batch that owns it (no batch wrote another's devices)
    const crossed = await pgQuery<{ n: string }>(
      url,
      "SELECT count(*) AS n FROM audit a JOIN devices d USING (device_id) WHERE a.batch <> d.batch",
    );
    if (Number(crossed[0]!.n) !== 0) conflictFree = false;
    const size = await pgQuery<{ b: string }>(url, "SELECT pg_database_size(current_database()) AS b");
    const total = lines * DEVICES;
    const cpu: Record<string, number> = {};
    // each farm per device of its own line; everything else per device of the whole run
    f1.forEach((v, i) => {
      cpu[`farm ${i + 1} (per device of its line)`] = (v - f0[i]!) / DEVICES;
    });
    for (const [n, v] of Object.entries(up.memory.byName)) if (v.cpuMs > 0) cpu[n] = v.cpuMs / total;
    cpu.postgres = pgReport.processes.reduce((a, p) => a + p.cpuMs, 0) / total;
    const commits = Number(stat1.c) - Number(stat0.c);
    const r: RunResult = {
      lines,
      devicesPerLine: DEVICES,
      seconds: up.seconds,
      combinedPerSecond: total / up.seconds,
      active,
      conflictFree: conflictFree && verify.ok,
      verify,
      auditRows,
      auditRowsPerSecond: auditRows / up.seconds,
      commits,
      commitsPerSecond: commits / up.seconds,
      databaseBytes: Number(size[0]!.b),
      bytesPerDevice: Number(size[0]!.b) / total,
      cpuMsPerDevice: cpu,
      memory: up.memory,
      postgresPeakKb: pgReport.processes.reduce((a, p) => a + p.peakKb, 0),
      load: { before, after },
    };
    log(
      `[${name}] ${r.seconds.toFixed(1)} s, ${r.combinedPerSecond.toFixed(0)} devices/s combined, verify ${verify.ok ? "ok" : "FAILED"}`,
    );
    fs.rmSync(path.join(PROGRAM, `Pulumi.${name}.yaml`), { force: true });
    return r;
  } finally {
    await Promise.all(stations.map((s) => s.close()));
    for (const f of farms) await stopFarmProcess(f.child);
    for (const s of farmSamplers) s.stop();
  }
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "fg-bench-multi-"));
  const machine = {
    cpus: os.cpus().length,
    model: os.cpus()[0]?.model,
    node: process.version,
    loadavg: load(),
  };
  log(`machine: ${JSON.stringify(machine)}`);
  const pg = await startPostgres({ durable: true, database: "postgres_bench" });
  const results: RunResult[] = [];
  try {
    if (SINGLE) results.push(await runConfig(pg, work, 1));
    results.push(await runConfig(pg, work, LINES));
  } finally {
    await pg.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
  fs.mkdirSync(path.join(__dirname, "out"), { recursive: true });
  fs.writeFileSync(
    path.join(__dirname, "out", "multi-station.json"),
    JSON.stringify({ machine, results }, null, 2),
  );
  const n = (x: number, d = 0) =>
    x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
  console.log(
    `\n## several stations, one PostgreSQL registry: ${machine.cpus} cores, Node ${machine.node}; load ${machine.loadavg.join(" ")} at start`,
  );
  console.log(
    "| lines x devices | pulumi up (s) | combined devices/s | batches done at (s) | CAS conflict-free, verify | audit rows/s | commits/s | DB bytes/device | load before / after |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|");
  for (const r of results)
    console.log(
      `| ${r.lines} x ${n(r.devicesPerLine)} | ${n(r.seconds, 1)} | ${n(r.combinedPerSecond)} | ${Object.entries(
        r.active,
      )
        .map(([k, v]) => `${k} ${v.toFixed(1)}`)
        .join(
          ", ",
        )} | ${r.conflictFree ? "yes" : "NO"}, ${r.verify.ok ? "ok" : "FAILED"} (${n(r.verify.rows)} rows) | ${n(r.auditRowsPerSecond)} | ${n(r.commitsPerSecond)} | ${n(r.bytesPerDevice)} | ${r.load.before[0]} / ${r.load.after[0]} |`,
    );
  for (const r of results) {
    console.log(
      `\n${r.lines} line(s): CPU ms per device: ${Object.entries(r.cpuMsPerDevice)
        .map(([k, v]) => `${k} ${v.toFixed(3)}`)
        .join(
          ", ",
        )}; PostgreSQL peak RSS (sum of its processes' peaks: shared buffers counted in each) ${n(r.postgresPeakKb / 1024)} MiB`,
    );
    console.log(formatReport(r.memory));
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
