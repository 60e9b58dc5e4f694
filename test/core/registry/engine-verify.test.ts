// What the enrollment engine writes, verify re-derives: a batch enrolled over a real farm (a clone
// quarantined, two records without a device), re-issued under a new profile, shrunk, refreshed and
// deleted verifies clean after every step on both backends, and a key copied afterwards is found.
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveProfile } from "../../../core/enroll/profile";
import { openRegistry } from "../../../core/registry";
import type { Registry } from "../../../core/registry/types";
import { StationClient } from "../../../core/station/client";
import { deviceId } from "../../../core/station/ids";
import { type RunningFarm, startFarm } from "../../../devices/farm/serve";
import { tmpdir } from "../../helpers/openssl";
import { type PostgresServer, startPostgres } from "../../helpers/postgres";
import { batchSpec, engineOf, hierarchy } from "../enroll/helpers";

const CA = hierarchy("Verify");
let pg: PostgresServer | undefined;
beforeAll(async () => {
  pg = await startPostgres();
}, 180_000);
// stopping the server under load (a shared 2-core machine) can take longer than the 10 s default
afterAll(async () => {
  await pg?.stop();
}, 60_000);

describe.each(["sqlite", "postgres"] as const)("engine-written registry on %s", (backend) => {
  let dir: string;
  let farm: RunningFarm;
  let station: StationClient;
  let registry: Registry;
  let loc: string;
  beforeAll(async () => {
    dir = tmpdir("fg-engine-verify-");
    farm = await startFarm({
      stateDir: path.join(dir, "farm"),
      count: 12,
      clones: [deviceId("fg100", 3)],
      log: () => {},
    });
    station = new StationClient({ port: farm.port, poolSize: 2, timeoutMs: 20_000 });
    loc = backend === "sqlite" ? path.join(dir, "registry.db") : await pg!.createDatabase(`ev_${Date.now()}`);
    registry = await openRegistry(loc);
  }, 60_000);
  afterAll(async () => {
    await station?.close();
    await farm?.close();
    await registry?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const clean = async () => {
    const rep = await registry.verify({ batch: "lot" });
    expect(rep.findings.map((f) => f.message)).toEqual([]);
    return rep;
  };

  it("verifies clean after enroll, re-issue, shrink, refresh and delete; a copied key is found", async () => {
    const spec = batchSpec({ count: 14, maxQuarantinedFraction: 0.5 });
    const first = await engineOf(registry, station, CA.material, spec).converge();
    expect(first.counts.active).toBeGreaterThan(8);
    expect(first.counts.quarantined).toBeGreaterThan(0);
    const afterEnroll = await clean();
    const reissue = batchSpec({
      count: 14,
      maxQuarantinedFraction: 0.5,
      profile: resolveProfile({
        subject: { organization: "Acme", organizationalUnit: "B" },
        validityDays: 90,
      }),
    });
    expect(
      (await engineOf(registry, station, CA.material, reissue).converge()).reissuedThisRun,
    ).toBeGreaterThan(0);
    await clean();
    const shrunk = { ...reissue, count: 10 };
    expect(
      (await engineOf(registry, station, CA.material, shrunk).converge()).counts.decommissioned,
    ).toBeGreaterThan(0);
    await clean();
    await engineOf(registry, station, CA.material, shrunk).refresh();
    const beforeDelete = await clean();
    // the head only moves forward: the earlier anchors still hold
    expect((await registry.verify({ anchor: afterEnroll.head })).ok).toBe(true);
    await engineOf(registry, station, CA.material, shrunk).deleteBatch();
    const end = await clean();
    expect(end.head.seq).toBeGreaterThan(beforeDelete.head.seq);
    expect((await registry.certificates({ batch: "lot", status: ["live"] })).length).toBe(0);

    // behind the engine's back: a device's key replaced by another's
    const [a, b] = (await registry.listDevices("lot")).filter((d) => d.publicKey);
    const sql = `UPDATE devices SET public_key = (SELECT public_key FROM devices WHERE device_id = '${b!.deviceId}') WHERE device_id = '${a!.deviceId}'`;
    if (backend === "sqlite") {
      const Database = (await import("better-sqlite3")).default;
      const db = new Database(loc);
      db.exec(sql);
      db.close();
    } else {
      const { Client } = await import("pg");
      const c = new Client({ connectionString: loc });
      await c.connect();
      await c.query(sql);
      await c.end();
    }
    const rep = await registry.verify({ batch: "lot", anchor: end.head });
    expect(rep.findings.map((f) => (f.kind === "device" ? `${f.deviceId} ${f.field}` : f.kind))).toEqual([
      `${a!.deviceId} publicKey.sha256`,
    ]);
  }, 180_000);
});
