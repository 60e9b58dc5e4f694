// `fleet devices serve --activate-pufs` (issue 13): every blank device's PUF activated before the
// farm serves, as at wafer sort. The first contact then reconstructs only (no PUF enrollment), the
// key is the one the stored helper data gives on every later read, a farm started again on the
// same state activates nothing, and the worker threads and the main thread do the same.
import { afterAll, describe, expect, it } from "vitest";
import { StationClient } from "../../../core/station/client";
import { deviceId } from "../../../core/station/ids";
import type { RunningFarm } from "../../../devices/farm/serve";
import { farmFor, tempDir } from "./helpers";

const COUNT = 40;
const id = (i: number) => deviceId("fg100", i);

describe.each([0, 2])("PUF activation before the line, %i worker threads", (workers) => {
  const dir = tempDir("fg-activate-");
  let farm: RunningFarm | undefined;
  afterAll(async () => {
    await farm?.close();
    dir.remove();
  });

  it("activates every device once, and the first contact only reconstructs", async () => {
    const lines: string[] = [];
    farm = await farmFor(dir.path, { count: COUNT, workers, activatePufs: true, log: (l) => lines.push(l) });
    const c = new StationClient({ port: farm.port, timeoutMs: 20_000 });
    const before = await c.stats();
    expect(before.enrollments).toBe(COUNT);
    expect(before.changedDevices).toBe(COUNT);
    expect(lines.at(-1)).toMatch(new RegExp(`^fleet devices: ${COUNT} PUFs activated in \\d+\\.\\d s$`));
    for (const i of [0, 17, COUNT - 1]) {
      const s = await c.status(id(i));
      expect(s.lifecycle).toBe("provisioned");
      expect(s.helperBytes).toBeGreaterThan(0);
    }
    const first = await c.identify(id(5));
    expect(first.lifecycle).toBe("provisioned");
    const after = await c.stats();
    // no PUF enrollment at first contact, one reconstruction
    expect(after.enrollments).toBe(COUNT);
    expect(after.reconstructions - before.reconstructions).toBe(1);
    await c.close();
    await farm.close();

    // started again on the same state: nothing left to activate, the same key from the same helper
    lines.length = 0;
    farm = await farmFor(dir.path, { count: COUNT, workers, activatePufs: true, log: (l) => lines.push(l) });
    const c2 = new StationClient({ port: farm.port, timeoutMs: 20_000 });
    expect((await c2.stats()).enrollments).toBe(0);
    expect(lines.at(-1)).toMatch(/^fleet devices: 0 PUFs activated in/);
    const again = await c2.identify(id(5));
    expect(Buffer.from(again.publicKey!).equals(Buffer.from(first.publicKey!))).toBe(true);
    await c2.close();
  });
});

describe("without --activate-pufs", () => {
  const dir = tempDir("fg-activate-off-");
  afterAll(() => dir.remove());

  it("leaves devices blank until the first contact enrolls the PUF", async () => {
    const farm = await farmFor(dir.path, { count: COUNT, workers: 0 });
    const c = new StationClient({ port: farm.port, timeoutMs: 20_000 });
    try {
      expect((await c.status(id(3))).lifecycle).toBe("blank");
      await c.identify(id(3));
      const st = await c.stats();
      expect(st.enrollments).toBe(1);
      expect((await c.status(id(3))).lifecycle).toBe("provisioned");
    } finally {
      await c.close();
      await farm.close();
    }
  });
});
