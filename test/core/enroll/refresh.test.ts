// Issue 9, finding 6: a clone swapped in for an active device after enrollment is found by
// refresh, which attests active devices (every one, or a sample) against the keys on record.
// The swap is the farm's own clone facility: the farm restarts on the same state with the
// device marked as a clone (the same ID and helper data, another chip's PUF).
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openRegistry } from "../../../core/registry";
import type { Registry } from "../../../core/registry/types";
import { StationClient } from "../../../core/station/client";
import { deviceId } from "../../../core/station/ids";
import { type RunningFarm, startFarm } from "../../../devices/farm/serve";
import { tmpdir } from "../../helpers/openssl";
import { batchSpec, engineOf, hierarchy } from "./helpers";

const id = (i: number) => deviceId("fg100", i);
const CA = hierarchy("Refresh");
const SWAPPED = id(3);

let dir: string;
let farm: RunningFarm;
let station: StationClient;
let registry: Registry;

const start = async (clones: string[] = []) => {
  farm = await startFarm({ stateDir: path.join(dir, "farm"), count: 16, clones, log: () => {} });
  station = new StationClient({ port: farm.port, timeoutMs: 20_000 });
};
const stop = async () => {
  await station.close();
  await farm.close();
};

beforeAll(async () => {
  dir = tmpdir("fg-refresh-");
  await start();
  registry = await openRegistry(path.join(dir, "registry.db"));
}, 60_000);

afterAll(async () => {
  await stop();
  await registry?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("refresh attests active devices", () => {
  it("a clone swapped in after enrollment is quarantined and its certificate revoked; the others stay active", async () => {
    const spec = batchSpec({ count: 12 });
    expect((await engineOf(registry, station, CA.material, spec).converge()).counts.active).toBe(12);
    const clean = await engineOf(registry, station, CA.material, spec).refresh();

    // the part behind SWAPPED is replaced by a counterfeit carrying its ID and helper data
    await stop();
    await start([SWAPPED]);
    const live = (await registry.certificates({ deviceId: SWAPPED, status: ["live"] }))[0]!;
    const e = engineOf(registry, station, CA.material, spec);
    const r = await e.refresh();
    const d = (await registry.getDevice(SWAPPED))!;
    expect(d.state).toBe("quarantined");
    expect(d.reason).toMatch(/^attestation-failed: refresh: /);
    expect(r.lostCertificate).toBe(0);
    const certs = await registry.certificates({ deviceId: SWAPPED });
    expect(certs.find((c) => c.serial === live.serial)).toMatchObject({
      status: "revoked",
      revocationReason: "keyCompromise",
    });
    expect(e.revokedThisRun).toBe(1);
    expect((await registry.counts("lot")).active).toBe(11);
    // the next run leaves it quarantined and certifies nothing for it
    const s = await engineOf(registry, station, CA.material, spec).converge();
    expect(s.counts).toMatchObject({ active: 11, quarantined: 1 });
    expect(await registry.certificates({ deviceId: SWAPPED, status: ["live"] })).toHaveLength(0);
    expect(clean.attestation).toEqual({ sample: 12, population: 12, failed: 0 });
    expect(r.attestation).toEqual({ sample: 12, population: 12, failed: 1 });
  }, 120_000);

  it("a sample set by the engine's options: that many devices attested, reported with the population", async () => {
    const e = engineOf(registry, station, CA.material, batchSpec({ count: 12 }), { refreshSample: 4 });
    const r = await e.refresh();
    expect(r.attestation).toEqual({ sample: 4, population: 11, failed: 0 });
    expect(r.checked).toBe(11); // STATUS still covers every active device
    const all = await engineOf(registry, station, CA.material, batchSpec({ count: 12 }), {
      refreshSample: 100,
    }).refresh();
    expect(all.attestation).toEqual({ sample: 11, population: 11, failed: 0 });
    await expect(
      engineOf(registry, station, CA.material, batchSpec({ count: 12 }), { refreshSample: -1 }).refresh(),
    ).rejects.toThrow(/^refreshSample: got -1, want an integer >= 0/);
  }, 60_000);
});
