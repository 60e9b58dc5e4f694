/**
 * Device registry write throughput through `Registry.apply`, the way enrollment writes: N devices
 * declared, then four waves pending -> attested (public key) -> issued (a ~600 B certificate) ->
 * installed -> active, each wave applied in chunks (one transaction per chunk). Runs SQLite with
 * synchronous=FULL (the default) and NORMAL, and PostgreSQL (a throwaway local server with its
 * default, durable settings), for each chunk size; in the same run, the raw bound: better-sqlite3
 * inserting the same N device rows with their certificate blob in one transaction.
 * Progress (counts, rate, ETA) on stderr; the table on stdout.
 *
 *   npx tsx bench/registry.ts [--count 100000] [--chunks 1000,5000] [--backends sqlite,postgres]
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import Database from "better-sqlite3";
import { openRegistry } from "../core/registry";
import type { DeviceState, Registry, Transition } from "../core/registry/types";
import { type PostgresServer, startPostgres } from "../test/helpers/postgres";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const COUNT = Number(arg("count", "100000"));
const CHUNKS = arg("chunks", "1000,5000").split(",").map(Number);
const BACKENDS = arg("backends", "sqlite,postgres").split(",");
const ISSUER = "c3".repeat(32);
const STEPS: Array<[DeviceState, DeviceState]> = [
  ["pending", "attested"],
  ["attested", "issued"],
  ["issued", "installed"],
  ["installed", "active"],
];
const DER_POOL = Array.from({ length: 64 }, () => crypto.randomBytes(600));
const PK_POOL = Array.from({ length: 64 }, () => crypto.randomBytes(91));

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

function progress(label: string, done: number, total: number, t0: number, last: { t: number }) {
  const now = performance.now();
  if (now - last.t < 500 && done < total) return;
  last.t = now;
  const rate = (done / (now - t0)) * 1000;
  const eta = rate > 0 ? (total - done) / rate : 0;
  process.stderr.write(
    `\r${label}: ${fmt(done)}/${fmt(total)} transitions, ${fmt(rate)}/s, ETA ${eta.toFixed(0)} s    ${done >= total ? "\n" : ""}`,
  );
}

interface Result {
  backend: string;
  chunk: number;
  declareRate: number;
  transitions: number;
  seconds: number;
  rate: number;
  rows: number;
  stepRates: number[];
}

async function run(backend: string, reg: Registry, chunk: number): Promise<Result> {
  const batch = "bench-lot";
  await reg.putBatch({ name: batch, model: "fg100", source: "puf", spec: "{}" });
  const ids = Array.from({ length: COUNT }, (_, i) => `fg100-${String(i).padStart(8, "0")}`);
  let t = performance.now();
  for (let i = 0; i < COUNT; i += 10_000) await reg.addDevices(batch, ids.slice(i, i + 10_000));
  const declareRate = (COUNT / (performance.now() - t)) * 1000;
  const label = `${backend} chunk ${chunk}`;
  const total = COUNT * STEPS.length;
  const t0 = performance.now();
  const last = { t: 0 };
  const stepRates: number[] = [];
  let done = 0;
  let serial = 1;
  for (const [from, to] of STEPS) {
    t = performance.now();
    for (let i = 0; i < COUNT; i += chunk) {
      const ts: Transition[] = [];
      for (let j = i; j < Math.min(COUNT, i + chunk); j++) {
        const deviceId = ids[j]!;
        const tr: Transition = { deviceId, batch, from, to };
        if (to === "attested") tr.publicKey = PK_POOL[j & 63]!;
        if (to === "issued") {
          const now = new Date();
          tr.certificate = {
            serial: (serial++).toString(16),
            deviceId,
            batch,
            issuer: ISSUER,
            der: DER_POOL[j & 63]!,
            notBefore: now,
            notAfter: now,
            issuedAt: now,
          };
        }
        ts.push(tr);
      }
      await reg.apply(ts);
      done += ts.length;
      progress(label, done, total, t0, last);
    }
    stepRates.push((COUNT / (performance.now() - t)) * 1000);
  }
  const seconds = (performance.now() - t0) / 1000;
  const counts = await reg.counts(batch);
  if (counts.active !== COUNT)
    throw new Error(`${label}: got ${counts.active} active devices, want ${COUNT}`);
  // rows written per wave: the device row and an audit row, plus the certificate on `issued`
  const rows = COUNT * (2 * STEPS.length + 1);
  return { backend, chunk, declareRate, transitions: total, seconds, rate: total / seconds, rows, stepRates };
}

/** The raw bound: one INSERT per device (ID, state, key, certificate blob) in one transaction. */
function rawSqlite(dir: string): { seconds: number; rate: number } {
  const db = new Database(path.join(dir, "raw.db"));
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.exec(`CREATE TABLE devices (device_id TEXT PRIMARY KEY, batch TEXT NOT NULL, state TEXT NOT NULL,
    public_key BLOB, serial TEXT, der BLOB, updated_at INTEGER NOT NULL)`);
  const ins = db.prepare("INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?)");
  const t0 = performance.now();
  db.transaction(() => {
    for (let j = 0; j < COUNT; j++)
      ins.run(
        `fg100-${String(j).padStart(8, "0")}`,
        "bench-lot",
        "active",
        PK_POOL[j & 63]!,
        (j + 1).toString(16),
        DER_POOL[j & 63]!,
        Date.now(),
      );
  })();
  const seconds = (performance.now() - t0) / 1000;
  db.close();
  return { seconds, rate: COUNT / seconds };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-bench-reg-"));
  console.log(
    `registry bench: ${fmt(COUNT)} devices x ${STEPS.length} waves, chunks ${CHUNKS.join("/")}; ` +
      `${os.cpus().length} cores, Node ${process.version}`,
  );
  const results: Result[] = [];
  let pg: PostgresServer | undefined;
  try {
    const raw = rawSqlite(dir);
    for (const chunk of CHUNKS) {
      if (BACKENDS.includes("sqlite"))
        for (const sync of ["FULL", "NORMAL"] as const) {
          const reg = await openRegistry(path.join(dir, `reg-${sync}-${chunk}.db`), { synchronous: sync });
          results.push(await run(`sqlite ${sync}`, reg, chunk));
          await reg.close();
        }
      if (BACKENDS.includes("postgres")) {
        pg ??= await startPostgres({ durable: true });
        const reg = await openRegistry(await pg.createDatabase(`bench_${chunk}`));
        results.push(await run("postgres 15", reg, chunk));
        await reg.close();
      }
    }
    console.log(
      "\n| backend | chunk | transitions/s | rows/s | per wave (attested / issued / installed / active) | declare devices/s |",
    );
    console.log("|---|---:|---:|---:|---|---:|");
    for (const r of results)
      console.log(
        `| ${r.backend} | ${fmt(r.chunk)} | ${fmt(r.rate)} | ${fmt(r.rows / r.seconds)} | ${r.stepRates.map(fmt).join(" / ")} | ${fmt(r.declareRate)} |`,
      );
    console.log(
      `| raw better-sqlite3 INSERT, one transaction (FULL) | ${fmt(COUNT)} | - | ${fmt(raw.rate)} | same ${fmt(COUNT)} device rows with key and 600 B certificate | - |`,
    );
  } finally {
    await pg?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
