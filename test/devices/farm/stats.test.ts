// STATS: the optional CPU fields are sent by the farm and read by the client, and a reply of an
// older farm (without them) still parses.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { StationClient } from "../../../core/station/client";
import { parseFarmStats } from "../../../core/station/messages";
import type { RunningFarm } from "../../../devices/farm/serve";
import { farmFor, tempDir } from "./helpers";

const v1Reply = {
  requests: 5,
  reconstructions: 1,
  reconstructionFailures: 0,
  enrollments: 1,
  changedDevices: 1,
  walRecords: 2,
  walBytes: 900,
  walSyncs: 1,
  uptimeMs: 1234,
};

describe("STATS reply", () => {
  it("parses a reply without the CPU fields (an older farm)", () => {
    const s = parseFarmStats({ ...v1Reply });
    expect(s).toEqual(v1Reply);
    expect("cpuUserMs" in s).toBe(false);
  });

  it("parses the CPU fields when present and refuses malformed ones", () => {
    expect(parseFarmStats({ ...v1Reply, cpuUserMs: 40, cpuSystemMs: 3 })).toEqual({
      ...v1Reply,
      cpuUserMs: 40,
      cpuSystemMs: 3,
    });
    expect(() => parseFarmStats({ ...v1Reply, cpuUserMs: "40" })).toThrow(FleetError);
    expect(() => parseFarmStats({ ...v1Reply, cpuSystemMs: -1 })).toThrow(/cpuSystemMs/);
    // the version 1 fields stay mandatory
    const { walSyncs: _, ...missing } = v1Reply;
    expect(() => parseFarmStats(missing)).toThrow(/walSyncs/);
  });

  describe("from a farm", () => {
    const dir = tempDir();
    let farm: RunningFarm;
    let client: StationClient;
    beforeAll(async () => {
      farm = await farmFor(dir.path);
      client = new StationClient({ port: farm.port, timeoutMs: 5000 });
    });
    afterAll(async () => {
      await client.close();
      await farm.close();
      dir.remove();
    });

    it("reports the farm process's CPU time, growing with work", async () => {
      const a = await client.stats();
      expect(a.cpuUserMs).toBeGreaterThan(0);
      expect(a.cpuSystemMs).toBeGreaterThanOrEqual(0);
      // a first contact enrolls a PUF: milliseconds of CPU
      for (let i = 0; i < 20; i++) await client.identify(`fg100-${String(i).padStart(7, "0")}`);
      const b = await client.stats();
      expect(b.cpuUserMs! + b.cpuSystemMs!).toBeGreaterThan(a.cpuUserMs! + a.cpuSystemMs!);
      expect(b.enrollments - a.enrollments).toBe(20);
    });
  });
});
