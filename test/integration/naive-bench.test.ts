/**
 * `runNaive` end to end on the real engine with 3 devices: the state holds one resource per
 * device whose certificate OpenSSL verifies (checked inside runNaive, which throws otherwise),
 * the second preview changes nothing, progress counts every device, the memory report names
 * the engine's processes, and the work directory is removed.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { runNaive } from "../../bench/naive-resources";

describe("naive one-resource-per-device benchmark", () => {
  it("enrolls 3 devices as 3 resources on the real engine and cleans up", async () => {
    const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-naive-test-"));
    const progress: number[] = [];
    try {
      const r = await runNaive({ devices: 3, workDir, onProgress: (c) => progress.push(c) });
      expect(r.devices).toBe(3);
      expect(progress).toEqual([1, 2, 3]);
      expect(r.previewSame).toBe(4); // 3 devices + the stack
      expect(r.stateBytes).toBeGreaterThan(3 * 1000); // a certificate PEM per device at least
      expect(r.backendBytes).toBeGreaterThanOrEqual(r.stateBytes);
      expect(r.perSecond).toBeCloseTo(3 / r.upSeconds, 6);
      const names = Object.keys(r.upMemory.byName);
      for (const n of ["pulumi", "pulumi-language-nodejs", "node program", "node dynamic provider"])
        expect(names, names.join(", ")).toContain(n);
      expect(r.upMemory.byName.pulumi!.peakKb).toBeGreaterThan(1024);
      expect(fs.existsSync(r.workDir)).toBe(false);
      expect(fs.readdirSync(workDir)).toEqual([]);
    } finally {
      fs.rmSync(workDir, { recursive: true, force: true });
    }
  }, 180_000);

  it("refuses a device count that is not a positive integer", async () => {
    await expect(runNaive({ devices: 0 })).rejects.toThrow(/devices/);
    await expect(runNaive({ devices: 2, parallel: 0 })).rejects.toThrow(/parallel/);
  });
});
