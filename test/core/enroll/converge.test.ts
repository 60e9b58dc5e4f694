// Issue 9, finding 4 (the engine's half): every run converges from the registry's device and
// certificate records against the declaration, whatever an earlier run recorded as its intent.
// A batch shrunk (and a profile changed) while the station was down: the run fails, the plan
// before the rerun shows the outstanding work, the rerun does it.
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { describePlan } from "../../../core/enroll/engine";
import { resolveProfile } from "../../../core/enroll/profile";
import { openRegistry } from "../../../core/registry";
import type { Registry } from "../../../core/registry/types";
import { StationClient } from "../../../core/station/client";
import { deviceId } from "../../../core/station/ids";
import { type RunningFarm, startFarm } from "../../../devices/farm/serve";
import { tmpdir } from "../../helpers/openssl";
import { batchSpec, engineOf, hierarchy } from "./helpers";

const id = (i: number) => deviceId("fg100", i);
const CA = hierarchy("Converge");

let dir: string;
let farm: RunningFarm | undefined;
let port: number;
let registry: Registry;

const start = async () => {
  farm = await startFarm({ stateDir: path.join(dir, "farm"), count: 16, port, log: () => {} });
  port = farm.port;
};
const withStation = async <T>(f: (s: StationClient) => Promise<T>) => {
  const s = new StationClient({ port, timeoutMs: 5_000, retries: 1, backoffMs: 1, connectTimeoutMs: 1_000 });
  try {
    return await f(s);
  } finally {
    await s.close();
  }
};

beforeAll(async () => {
  dir = tmpdir("fg-converge-");
  port = 0;
  await start();
  registry = await openRegistry(path.join(dir, "registry.db"));
}, 60_000);

afterAll(async () => {
  await farm?.close();
  await registry?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("convergence after a failed run", () => {
  it("a batch shrunk while the station was down: the plan shows the decommission, the rerun does it", async () => {
    const full = batchSpec({ count: 10 });
    await withStation(async (s) =>
      expect((await engineOf(registry, s, CA.material, full).converge()).counts.active).toBe(10),
    );
    const removed = [id(8), id(9)];
    const liveBefore = await registry.certificates({ deviceId: id(9), status: ["live"] });
    expect(liveBefore).toHaveLength(1);

    const small = batchSpec({ count: 8 });
    await farm!.close();
    farm = undefined;
    await withStation(async (s) =>
      expect(engineOf(registry, s, CA.material, small).converge()).rejects.toMatchObject({
        code: "UNAVAILABLE",
      }),
    );
    // whatever a run records as its intent (an earlier version recorded the shrunk declaration
    // before decommissioning), the registry's devices decide what is left to do
    const b = (await registry.getBatch("lot"))!;
    await registry.putBatch({
      name: b.name,
      model: b.model,
      source: b.source,
      spec: JSON.stringify({ ...JSON.parse(b.spec), count: 8 }),
    });
    await withStation(async (s) =>
      expect(describePlan(await engineOf(registry, s, CA.material, small).plan())).toBe(
        "enroll 0 devices, re-issue 0, decommission 2",
      ),
    );

    await start();
    const s = await withStation((st) => engineOf(registry, st, CA.material, small).converge());
    expect(s.decommissionedThisRun).toBe(2);
    for (const d of removed) {
      expect((await registry.getDevice(d))?.state).toBe("decommissioned");
      expect(await registry.certificates({ deviceId: d, status: ["live"] })).toHaveLength(0);
      expect((await withStation((st) => st.status(d))).lifecycle).toBe("decommissioned");
    }
    expect((await registry.certificates({ deviceId: id(9) }))[0]).toMatchObject({
      serial: liveBefore[0]!.serial,
      status: "revoked",
      revocationReason: "cessationOfOperation",
    });
    await withStation(async (st) =>
      expect(describePlan(await engineOf(registry, st, CA.material, small).plan())).toBe(
        "enroll 0 devices, re-issue 0, decommission 0",
      ),
    );
  }, 120_000);

  it("a profile changed while the station was down: the plan shows the re-issue, the rerun does it", async () => {
    const changed = batchSpec({
      count: 8,
      profile: resolveProfile({
        subject: { organization: "Acme", organizationalUnit: "Line B" },
        validityDays: 90,
      }),
    });
    await farm!.close();
    farm = undefined;
    await withStation(async (s) =>
      expect(engineOf(registry, s, CA.material, changed).converge()).rejects.toMatchObject({
        code: "UNAVAILABLE",
      }),
    );
    // an intent recorded as done (the new profile, nothing pending) changes nothing either
    const b = (await registry.getBatch("lot"))!;
    await registry.putBatch({
      name: b.name,
      model: b.model,
      source: b.source,
      spec: JSON.stringify({ ...JSON.parse(b.spec), profileDigest: "changed", reissueSince: null }),
    });
    await withStation(async (s) =>
      expect(describePlan(await engineOf(registry, s, CA.material, changed).plan())).toBe(
        "enroll 0 devices, re-issue 8, decommission 0",
      ),
    );
    await start();
    const old = await registry.certificates({ batch: "lot", status: ["live"] });
    const s = await withStation((st) => engineOf(registry, st, CA.material, changed).converge());
    expect(s.reissuedThisRun).toBe(8);
    const live = await registry.certificates({ batch: "lot", status: ["live"] });
    expect(live).toHaveLength(8);
    expect(live.some((c) => old.some((o) => o.serial === c.serial))).toBe(false);
    for (const c of live) expect(c.notAfter.getTime() - c.notBefore.getTime()).toBe(90 * 86_400_000);
    await withStation(async (st) =>
      expect(describePlan(await engineOf(registry, st, CA.material, changed).plan())).toBe(
        "enroll 0 devices, re-issue 0, decommission 0",
      ),
    );
  }, 120_000);
});
