import { describe, expect, it } from "vitest";
import { CORNERS, createPufDevice, expectedBer, NOMINAL, noiseRatio } from "../../../devices/puf";
import { fractionalHd } from "../../../devices/puf/metrics";
import { berForRatio, ratioForBer } from "../../../devices/puf/sram";
import { expectFleetError, seededRng } from "./helpers";

const seed = new Uint8Array(32).fill(3);

describe("SRAM PUF model", () => {
  it("cells are reproducible from (farmSeed, deviceId) and differ across devices and farms", () => {
    const a = createPufDevice(seed, "dev-1").preferred();
    const b = createPufDevice(seed, "dev-1").preferred();
    const c = createPufDevice(seed, "dev-2").preferred();
    const d = createPufDevice(new Uint8Array(32).fill(4), "dev-1").preferred();
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    expect(fractionalHd(a, c)).toBeGreaterThan(0.47);
    expect(fractionalHd(a, c)).toBeLessThan(0.53);
    expect(fractionalHd(a, d)).toBeGreaterThan(0.47);
    expect(a.length).toBe(4096);
  });

  it("a seeded read is deterministic; reads with different noise differ", () => {
    const dev = createPufDevice(seed, "dev-1");
    const r1 = dev.read(NOMINAL, seededRng("x"));
    const r2 = dev.read(NOMINAL, seededRng("x"));
    const r3 = dev.read(NOMINAL, seededRng("y"));
    expect(Buffer.from(r1).equals(Buffer.from(r2))).toBe(true);
    expect(Buffer.from(r1).equals(Buffer.from(r3))).toBe(false);
  });

  it("BER against the preferred value follows arctan(r)/pi at nominal and at every corner", () => {
    const dev = createPufDevice(seed, "dev-ber", { cells: 65536 });
    const pref = dev.preferred();
    for (const c of [NOMINAL, ...Object.values(CORNERS)]) {
      let s = 0;
      for (let i = 0; i < 4; i++) s += fractionalHd(dev.read(c), pref);
      // 262,144 cell reads: sd of the mean about 0.1%, cell-skew sampling adds about as much.
      expect(Math.abs(s / 4 - expectedBer(c))).toBeLessThan(0.008);
    }
    expect(expectedBer(NOMINAL)).toBeCloseTo(0.04, 10);
    for (const c of Object.values(CORNERS)) {
      expect(expectedBer(c)).toBeGreaterThanOrEqual(0.08);
      expect(expectedBer(c)).toBeLessThanOrEqual(0.25);
    }
    expect(expectedBer(CORNERS["cold -40C"])).toBeCloseTo(0.15, 10);
    expect(berForRatio(ratioForBer(0.2))).toBeCloseTo(0.2, 12);
  });

  it("noise grows monotonically away from nominal", () => {
    const base = noiseRatio(NOMINAL);
    expect(noiseRatio({ ...NOMINAL, temperatureC: 0 })).toBeGreaterThan(base);
    expect(noiseRatio({ ...NOMINAL, temperatureC: -40 })).toBeGreaterThan(
      noiseRatio({ ...NOMINAL, temperatureC: 0 }),
    );
    expect(noiseRatio({ ...NOMINAL, temperatureC: 85 })).toBeGreaterThan(
      noiseRatio({ ...NOMINAL, temperatureC: 50 }),
    );
    expect(noiseRatio({ ...NOMINAL, voltage: 0.95 })).toBeGreaterThan(base);
    expect(noiseRatio({ ...NOMINAL, ageYears: 5 })).toBeGreaterThan(base);
  });

  it("berOverride flips each preferred bit at that rate", () => {
    const dev = createPufDevice(seed, "dev-ovr", { cells: 65536 });
    const pref = dev.preferred();
    for (const p of [0, 0.15, 0.3, 0.5]) {
      const h = fractionalHd(dev.read({ ...NOMINAL, berOverride: p }), pref);
      expect(Math.abs(h - p)).toBeLessThan(0.01);
    }
  });

  it("bias moves uniformity", () => {
    const dev = createPufDevice(seed, "dev-bias", { cells: 65536, bias: 0.25 });
    let ones = 0;
    for (const byte of dev.preferred()) for (let b = 0; b < 8; b++) ones += (byte >> b) & 1;
    expect(ones / 65536).toBeGreaterThan(0.57);
    expect(ones / 65536).toBeLessThan(0.63);
  });

  it("rejects wrong arguments with INVALID_INPUT", () => {
    const dev = createPufDevice(seed, "dev-1");
    const cases: Array<() => unknown> = [
      () => createPufDevice(new Uint8Array(4), "d"),
      () => createPufDevice("seed" as unknown as Uint8Array, "d"),
      () => createPufDevice(seed, ""),
      () => createPufDevice(seed, "a\nb"),
      () => createPufDevice(seed, 7 as unknown as string),
      () => createPufDevice(seed, "d", { cells: 1001 }),
      () => createPufDevice(seed, "d", { cells: 64 }),
      () => createPufDevice(seed, "d", { bias: Number.NaN }),
      () => dev.read({ temperatureC: 500, voltage: 1, ageYears: 0 }),
      () => dev.read({ temperatureC: 25, voltage: 1 } as never),
      () => dev.read({ ...NOMINAL, berOverride: 0.7 }),
      () => dev.read(null as never),
      () => dev.read(NOMINAL, "rng" as never),
      () => dev.read(NOMINAL, () => new Uint8Array(3)),
    ];
    for (const f of cases) expectFleetError(f, "INVALID_INPUT");
  });
});
