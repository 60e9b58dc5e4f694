/**
 * How fast applyHub writes: 10,000 changes in one call (5,000 devices, each none -> registering
 * then registering -> active with a remote id), on SQLite and on a throwaway PostgreSQL.
 * Not a test (no timing thresholds in tests): run by hand, prints one line per backend.
 *   npx tsx test/core/registry/hub-speed.ts [devices=5000] [runs=3]
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { openRegistry } from "../../../core/registry";
import type { HubChange, Registry } from "../../../core/registry/types";
import { startPostgres } from "../../helpers/postgres";

const N = Number(process.argv[2] ?? 5000);
const RUNS = Number(process.argv[3] ?? 3);

async function setup(r: Registry, ids: string[]): Promise<Map<string, string>> {
  await r.putBatch({ name: "lot-1", model: "fg100", source: "puf", spec: "{}" });
  await r.addDevices("lot-1", ids);
  const at = new Date("2026-01-01T00:00:00Z");
  const serials = new Map<string, string>();
  await r.apply(
    ids.map((d) => ({
      deviceId: d,
      batch: "lot-1",
      from: "pending",
      to: "attested",
      publicKey: Buffer.from(d),
    })),
  );
  await r.apply(
    ids.map((d, i) => {
      const serial = (0x100000 + i).toString(16);
      serials.set(d, serial);
      return {
        deviceId: d,
        batch: "lot-1",
        from: "attested" as const,
        to: "issued" as const,
        certificate: {
          serial,
          deviceId: d,
          batch: "lot-1",
          issuer: "a1".repeat(32),
          der: crypto.randomBytes(600),
          notBefore: at,
          notAfter: at,
          issuedAt: at,
        },
      };
    }),
  );
  return serials;
}

async function measure(name: string, open: (run: number) => Promise<Registry>): Promise<void> {
  const times: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const r = await open(run);
    const ids = Array.from({ length: N }, (_, i) => `m-${String(i).padStart(6, "0")}`);
    const serials = await setup(r, ids);
    const cs: HubChange[] = [];
    for (const d of ids)
      cs.push({
        hub: "local",
        deviceId: d,
        batch: "lot-1",
        serial: serials.get(d)!,
        from: null,
        to: "registering",
      });
    for (const d of ids)
      cs.push({
        hub: "local",
        deviceId: d,
        batch: "lot-1",
        serial: serials.get(d)!,
        from: "registering",
        to: "active",
        remoteId: `r-${d}`,
      });
    const t0 = process.hrtime.bigint();
    await r.applyHub(cs);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    times.push(ms);
    const v0 = process.hrtime.bigint();
    const rep = await r.verify();
    const vms = Number(process.hrtime.bigint() - v0) / 1e6;
    if (!rep.ok) throw new Error(`${name}: verify found ${rep.count} differences`);
    console.log(
      `${name} run ${run + 1}: applyHub ${cs.length} changes ${ms.toFixed(0)} ms (${Math.round(cs.length / (ms / 1000))}/s); verify ${rep.rows} rows ${vms.toFixed(0)} ms`,
    );
    await r.close();
  }
  const best = Math.min(...times);
  console.log(
    `${name}: best ${best.toFixed(0)} ms for ${2 * N} changes (${Math.round((2 * N) / (best / 1000))}/s)`,
  );
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-hubspeed-"));
  try {
    await measure("sqlite", (run) => openRegistry(path.join(dir, `r${run}.db`)));
    const pg = await startPostgres();
    try {
      await measure("postgres", (run) => pg.createDatabase(`s${run}`).then((u) => openRegistry(u)));
    } finally {
      await pg.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
