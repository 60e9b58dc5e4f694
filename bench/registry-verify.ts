/**
 * `Registry.verify` at fleet size: N devices enrolled the way the engine writes them (declared,
 * then pending -> attested (key) -> issued (a ~600 B certificate) -> installed -> active, chunks
 * of 5,000 per transaction: 5 audit rows per device), then a full verify of the batch (chain, and
 * every device and certificate re-derived from the log) timed twice, and twice a verify from the
 * checkpoint the first one gave (issue 13: the chain re-hashed and the tables read, no replay); wall
 * and this process's CPU (the machine may be shared), with the process's peak RSS and heap growth.
 * Also reports the write rate with the hash chain, to compare with bench/registry.ts.
 *
 *   npx tsx bench/registry-verify.ts [--count 100000] [--backends sqlite,postgres]
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { openRegistry } from "../core/registry";
import type { Anchor, DeviceState, Registry, Transition } from "../core/registry/types";
import { type PostgresServer, startPostgres } from "../test/helpers/postgres";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const COUNT = Number(arg("count", "100000"));
const BACKENDS = arg("backends", "sqlite,postgres").split(",");
const CHUNK = 5_000;
const ISSUER = "c3".repeat(32);
const STEPS: Array<[DeviceState, DeviceState]> = [
  ["pending", "attested"],
  ["attested", "issued"],
  ["issued", "installed"],
  ["installed", "active"],
];
const DER_POOL = Array.from({ length: 64 }, () => crypto.randomBytes(600));
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

async function fill(r: Registry): Promise<number> {
  const ids = Array.from({ length: COUNT }, (_, i) => `fg100-${String(i).padStart(7, "0")}`);
  await r.putBatch({ name: "lot-1", model: "fg100", source: "puf", spec: "{}" });
  const t0 = performance.now();
  for (let i = 0; i < COUNT; i += CHUNK) await r.addDevices("lot-1", ids.slice(i, i + CHUNK));
  let serial = 1;
  for (const [from, to] of STEPS)
    for (let i = 0; i < COUNT; i += CHUNK) {
      const now = new Date();
      await r.apply(
        ids.slice(i, i + CHUNK).map((deviceId, j): Transition => {
          const t: Transition = { deviceId, batch: "lot-1", from, to };
          if (to === "attested") {
            t.publicKey = crypto.randomBytes(91);
            t.epoch = 1;
          }
          if (to === "issued")
            t.certificate = {
              serial: (serial++).toString(16),
              deviceId,
              batch: "lot-1",
              issuer: ISSUER,
              der: DER_POOL[j % 64]!,
              notBefore: now,
              notAfter: now,
              issuedAt: now,
            };
          return t;
        }),
        now,
      );
      process.stderr.write(`\r  ${to} ${fmt(i + CHUNK)}/${fmt(COUNT)}   `);
    }
  process.stderr.write("\n");
  return (5 * COUNT) / ((performance.now() - t0) / 1000);
}

async function measure(
  r: Registry,
  anchor?: Anchor,
): Promise<{
  s: number;
  cpu: number;
  rss: number;
  heap: number;
  rows: number;
  ok: boolean;
  mode: string;
  checkpoint?: string;
  head: Anchor;
}> {
  global.gc?.();
  const base = process.memoryUsage();
  let rss = base.rss;
  let heap = base.heapUsed;
  const tick = setInterval(() => {
    const m = process.memoryUsage();
    rss = Math.max(rss, m.rss);
    heap = Math.max(heap, m.heapUsed);
  }, 20);
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const rep = await r.verify({
    batch: "lot-1",
    ...(anchor ? { anchor } : {}),
    onProgress: () => {
      const m = process.memoryUsage();
      rss = Math.max(rss, m.rss);
      heap = Math.max(heap, m.heapUsed);
    },
  });
  const s = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  clearInterval(tick);
  return {
    s,
    cpu: (c.user + c.system) / 1e6,
    rss: (rss - base.rss) / 2 ** 20,
    heap: (heap - base.heapUsed) / 2 ** 20,
    rows: rep.rows,
    ok: rep.ok,
    mode: rep.mode,
    ...(rep.checkpoint ? { checkpoint: rep.checkpoint } : {}),
    head: rep.head,
  };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-bench-verify-"));
  let pg: PostgresServer | undefined;
  const lines = [
    `| backend | devices | audit rows | write (rows/s, chained) | verify | wall (s) | CPU of this process (s) | rows/s (wall) | peak RSS growth (MiB) | peak heap growth (MiB) |`,
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  try {
    for (const b of BACKENDS) {
      let loc = path.join(dir, "registry.db");
      if (b === "postgres") {
        pg = await startPostgres({ durable: true });
        loc = pg.url;
      }
      const r = await openRegistry(loc);
      process.stderr.write(`${b}: filling ${fmt(COUNT)} devices\n`);
      const w = await fill(r);
      // the full replay twice, then twice from the checkpoint the first one gave (issue 13)
      const full = [await measure(r), await measure(r)];
      const anchor = { ...full[0]!.head, tables: full[0]!.checkpoint! };
      const fast = [await measure(r, anchor), await measure(r, anchor)];
      if (![...full, ...fast].every((x) => x.ok))
        throw new Error(`${b}: verify found differences in a clean registry`);
      if (!fast.every((x) => x.mode === "checkpoint")) throw new Error(`${b}: the checkpoint was not used`);
      for (const [what, runs] of [
        ["full replay", full],
        ["from the checkpoint", fast],
      ] as const) {
        const best = runs.reduce((a, x) => (x.s < a.s ? x : a));
        lines.push(
          `| ${b} | ${fmt(COUNT)} | ${fmt(best.rows)} | ${fmt(w)} | ${what} | ${best.s.toFixed(2)} (runs: ${runs.map((x) => x.s.toFixed(2)).join(", ")}) | ${runs.map((x) => x.cpu.toFixed(2)).join(", ")} | ${fmt(best.rows / best.s)} | ${Math.max(...runs.map((x) => x.rss)).toFixed(0)} | ${Math.max(...runs.map((x) => x.heap)).toFixed(0)} |`,
        );
      }
      await r.close();
      await pg?.stop();
      pg = undefined;
    }
  } finally {
    await pg?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${lines.join("\n")}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
