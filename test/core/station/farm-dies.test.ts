// The device farm dies in the middle of a batch (issue 9, finding 9): a real farm process, a STATUS
// batch held open by a device that never answers, kill -9. What reaches the person running
// `pulumi up` is one UNAVAILABLE error that names the station and says to run again, not a raw errno.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { StationClient } from "../../../core/station/client";
import { Status } from "../../../core/station/frame";
import { deviceId } from "../../../core/station/ids";
import { startFarmProcess } from "../../../devices/farm/process";

const state = mkdtempSync(join(tmpdir(), "fleet-farm-dies-"));
afterAll(() => rmSync(state, { recursive: true, force: true }));

describe("a farm that dies mid-batch", () => {
  it("fails the batch with UNAVAILABLE naming host:port and saying to run again (docs/batches.md)", async () => {
    const hung = deviceId("fg100", 3);
    const { child, port } = await startFarmProcess({
      count: 8,
      state,
      seed: "c3".repeat(32),
      extraArgs: ["--hang", hung, "--workers", "0"],
    });
    const exited = new Promise((r) => child.once("exit", r));
    const client = new StationClient({ port, backoffMs: 1 });
    const probe = new StationClient({ port });
    try {
      const devices = Array.from({ length: 8 }, (_, i) => deviceId("fg100", i));
      const batch = client.statusBatch(devices, { deviceTimeoutMs: 600_000 }).catch((e: unknown) => e);
      // the batch is at the farm (the hung device holds it open) before the farm is killed; the farm
      // counts every request, its STATS probes included
      for (let probes = 1; (await probe.stats()).requests <= probes; probes++)
        await new Promise((r) => setImmediate(r));
      child.kill("SIGKILL");
      await exited;
      const e = await batch;
      expect(e).toBeInstanceOf(FleetError);
      const err = e as FleetError & { status: number };
      expect(err.code).toBe("UNAVAILABLE");
      expect(err.status).toBe(Status.DISCONNECTED);
      expect(err.field).toBe("station");
      expect(err.message).toMatch(
        new RegExp(
          `^DISCONNECTED: station 127\\.0\\.0\\.1:${port} could not be reached: got connection refused`,
        ),
      );
      expect(err.message).toContain("progress is recorded in the registry; run again to converge");
      expect(err.message).not.toMatch(/ECONNREFUSED|ECONNRESET/);
    } finally {
      await client.close();
      await probe.close();
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
  }, 60_000);
});
