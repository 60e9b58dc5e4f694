/**
 * The enrollment bound of issue 13 (bench/lib/enroll-bound.ts) does the work it claims on both
 * sides, across worker threads, and the goals of bench/batch-enroll.ts are judged as written.
 */
import { describe, expect, it } from "vitest";
import { makeBoundIssuer, measureEnrollBound } from "../../bench/lib/enroll-bound";
import { goals } from "../../bench/lib/goals";
import { FleetError } from "../../core/errors";

describe("enrollment bound", () => {
  it("enrolls the devices asked for on two threads, with each side's CPU and the PUF enrollment apart", async () => {
    const r = await measureEnrollBound({
      devices: 40,
      threads: 2,
      helpers: 6,
      warmup: 2,
      issuer: makeBoundIssuer(),
    });
    expect(r.devices).toBe(40);
    expect(r.threads).toBe(2);
    expect(r.perSecond).toBeGreaterThan(0);
    expect(r.deviceMsPerDevice).toBeGreaterThan(0);
    expect(r.fleetMsPerDevice).toBeGreaterThan(0);
    expect(r.totalMsPerDevice).toBeCloseTo(r.deviceMsPerDevice + r.fleetMsPerDevice, 9);
    expect(r.pufEnrollMs).toBeGreaterThan(0);
  });

  it("refuses a bad device or thread count, naming the field", async () => {
    await expect(measureEnrollBound({ devices: 0, threads: 1 })).rejects.toThrow(FleetError);
    await expect(measureEnrollBound({ devices: 10, threads: 0 })).rejects.toThrow(/threads/);
  });
});

describe("issue 13 goals", () => {
  const bound = {
    threads: 2,
    devices: 1000,
    seconds: 1,
    perSecond: 3000,
    deviceMsPerDevice: 0.36,
    fleetMsPerDevice: 0.18,
    totalMsPerDevice: 0.54,
    pufEnrollMs: 0.3,
  };
  const base = {
    devices: 100_000,
    seconds: 50,
    perSecond: 2000,
    bound,
    fleetMsPerDevice: 0.3,
    previewSeconds: 3,
    peaks: [
      { name: "farm", peakKb: 600 * 1024 },
      { name: "node dynamic provider", peakKb: 700 * 1024 },
    ],
    farmDevices: 111_000,
  };
  it("all met", () => {
    expect(goals(base).map((g) => g.met)).toEqual([true, true, true, true, true]);
  });
  it("each goal missed on its own figure", () => {
    const met = (o: Partial<typeof base>) => goals({ ...base, ...o }).map((g) => g.met);
    expect(met({ seconds: 60 })).toEqual([false, true, true, true, true]);
    expect(met({ perSecond: 1499 })).toEqual([true, false, true, true, true]);
    expect(met({ fleetMsPerDevice: 0.37 })).toEqual([true, true, false, true, true]);
    expect(met({ previewSeconds: 5 })).toEqual([true, true, true, false, true]);
    expect(met({ peaks: [{ name: "farm", peakKb: 1024 * 1024 }] })).toEqual([true, true, true, true, false]);
    // a farm smaller than 111,000 devices does not show the memory goal
    expect(met({ farmDevices: 101_000 })).toEqual([true, true, true, true, false]);
    expect(goals({ ...base, seconds: 61 })[0]!.figure).toBe("61.0 s (2000/s)");
  });
});
