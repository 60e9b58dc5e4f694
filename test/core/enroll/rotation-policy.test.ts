// The bake between waves (core/enroll/rotation-policy.ts): when the next wave of a schedule is due,
// read back from the issue times of the certificates the waves wrote. Pure functions, no farm.
import { describe, expect, it } from "vitest";
import {
  allowanceAt,
  DEFAULT_BAKE_HOURS,
  nextWaveAt,
  nextWindowStart,
  type RotationPolicy,
  validatePolicy,
  wavesOf,
} from "../../../core/enroll/rotation-policy";

const at = (iso: string) => new Date(iso);
const t = (iso: string) => Date.parse(iso);
const P: RotationPolicy = { maxWaveFraction: 0.25, maxFailureFraction: 0.05 };

describe("the bake between waves", () => {
  it("defaults to 20 hours: one wave a night, the convergence preview minutes later finds none due", () => {
    expect(DEFAULT_BAKE_HOURS).toBe(20);
    const start = at("2026-12-02T02:17:00Z");
    expect(nextWaveAt(P, start).toISOString()).toBe("2026-12-02T22:17:00.000Z");
    // a full wave of 375: nothing more that night; the next night's run is due even if it starts
    // 3 hours early or 3 hours late
    const [w] = wavesOf(P, Array(375).fill(start.getTime()));
    expect(allowanceAt(P, [w!], 375, at("2026-12-02T02:25:00Z"))).toMatchObject({ devices: 0 });
    expect(allowanceAt(P, [w!], 375, at("2026-12-02T23:17:00Z"))).toEqual({ devices: 375 });
    expect(allowanceAt(P, [w!], 375, at("2026-12-03T05:17:00Z"))).toEqual({ devices: 375 });
  });

  it("bakeHours sets it; 0 means no bake (waves back to back)", () => {
    expect(nextWaveAt({ ...P, bakeHours: 6 }, at("2026-12-02T02:00:00Z")).toISOString()).toBe(
      "2026-12-02T08:00:00.000Z",
    );
    const none = { ...P, bakeHours: 0 };
    expect(nextWaveAt(none, at("2026-12-02T02:00:00Z")).toISOString()).toBe("2026-12-02T02:00:00.000Z");
    expect(wavesOf(none, [t("2026-12-02T02:00:00Z")])).toEqual([]);
    expect(allowanceAt(none, [], 10, at("2026-12-02T02:00:00Z"))).toEqual({ devices: 10 });
  });

  it("with a maintenance window: one wave per window, whatever the bake", () => {
    expect(nextWindowStart("01:00-05:00", at("2026-12-02T02:00:00Z")).toISOString()).toBe(
      "2026-12-03T01:00:00.000Z",
    );
    expect(nextWindowStart("01:00-05:00", at("2026-12-02T00:30:00Z")).toISOString()).toBe(
      "2026-12-02T01:00:00.000Z",
    );
    // a window wrapping midnight opens at its start
    expect(nextWindowStart("22:00-02:00", at("2026-12-02T23:00:00Z")).toISOString()).toBe(
      "2026-12-03T22:00:00.000Z",
    );
    const w = { ...P, maintenanceWindow: "01:00-05:00", bakeHours: 1 };
    // a 1-hour bake inside a 4-hour window still gives one wave per window
    expect(nextWaveAt(w, at("2026-12-02T01:10:00Z")).toISOString()).toBe("2026-12-03T01:00:00.000Z");
    // a bake longer than a day: the bake
    expect(nextWaveAt({ ...w, bakeHours: 30 }, at("2026-12-02T01:10:00Z")).toISOString()).toBe(
      "2026-12-03T07:10:00.000Z",
    );
  });

  it("reads the waves back from issue times, in any order: a wave holds what was issued before its bake ended", () => {
    const times = [
      t("2026-12-03T02:01:00Z"), // night 2
      t("2026-12-02T02:00:00Z"), // night 1
      t("2026-12-02T02:05:00Z"), // night 1, the same wave a few minutes on
      t("2026-12-02T02:00:00Z"), // night 1, a rerun after kill -9 finishing the wave
      t("2026-12-05T02:00:00Z"), // night 4 (night 3: nothing was due)
    ];
    const waves = wavesOf(P, times);
    expect(waves.map((w) => [w.start.toISOString(), w.count, w.nextAt.toISOString()])).toEqual([
      ["2026-12-02T02:00:00.000Z", 3, "2026-12-02T22:00:00.000Z"],
      ["2026-12-03T02:01:00.000Z", 1, "2026-12-03T22:01:00.000Z"],
      ["2026-12-05T02:00:00.000Z", 1, "2026-12-05T22:00:00.000Z"],
    ]);
    expect(wavesOf(P, [...times].reverse())).toEqual(waves);
  });

  it("a wave cut short (kill -9) leaves the rest of its allowance to the rerun, no more", () => {
    const waves = wavesOf(P, Array(120).fill(t("2026-12-02T02:00:00Z")));
    expect(allowanceAt(P, waves, 375, at("2026-12-02T02:03:00Z"))).toEqual({
      devices: 255,
      nextWaveAt: at("2026-12-02T22:00:00Z"),
      current: waves[0],
    });
    // wavesPerRun widens the allowance of one bake period
    expect(allowanceAt({ ...P, wavesPerRun: 2 }, waves, 375, at("2026-12-02T02:03:00Z")).devices).toBe(630);
    // a full wave: nothing until its bake is over
    const full = wavesOf(P, Array(375).fill(t("2026-12-02T02:00:00Z")));
    expect(allowanceAt(P, full, 375, at("2026-12-02T21:59:59Z")).devices).toBe(0);
    expect(allowanceAt(P, full, 375, at("2026-12-02T22:00:00Z")).devices).toBe(375);
    // a clock set back before the last wave: still baking (the registry says a wave ran)
    expect(allowanceAt(P, full, 375, at("2026-12-01T02:00:00Z")).devices).toBe(0);
  });

  it("names the field of a bad bake", () => {
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, 9000, "20" as unknown as number])
      expect(() => validatePolicy({ ...P, bakeHours: bad })).toThrow(
        /^bakeHours: got .+, want a number of hours in \[0, 8760\] between waves \(0: no bake\), e\.g\. 20$/,
      );
    expect(() => validatePolicy({ ...P, bakeHours: 0 })).not.toThrow();
    expect(() => validatePolicy({ ...P, bakeHours: 20 })).not.toThrow();
  });
});
