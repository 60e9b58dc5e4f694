import { describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { CODE_V1 } from "../../../devices/puf";
import {
  binomialTailAbove,
  chiSquareSurvival,
  clopperPearson,
  innerErrorRate,
  keyFailureRate,
} from "../../../devices/puf/failure";
import vectors from "./vectors/failure-rate.json";

describe("exact failure rate of the concatenated code", () => {
  it.each(vectors.rows)("matches mpmath at BER $ber", (row) => {
    const r = keyFailureRate({ ...CODE_V1, n: 252 }, row.ber);
    expect(r.innerErrorRate / Number(row.inner)).toBeCloseTo(1, 10);
    expect(r.keyFailureRate / Number(row.key)).toBeCloseTo(1, 8);
  });

  it("meets the targets: <= 1e-9 at 15%, <= 1e-6 at 20%", () => {
    expect(keyFailureRate({ ...CODE_V1, n: 252 }, 0.15).keyFailureRate).toBeLessThanOrEqual(1e-9);
    expect(keyFailureRate({ ...CODE_V1, n: 252 }, 0.2).keyFailureRate).toBeLessThanOrEqual(1e-6);
  });

  it("binomial tails and repetition error rates have closed forms at small sizes", () => {
    expect(binomialTailAbove(3, 0.5, 1)).toBeCloseTo(0.5, 15);
    expect(innerErrorRate(3, 0.1)).toBeCloseTo(3 * 0.01 * 0.9 + 0.001, 15);
    expect(innerErrorRate(1, 0.2)).toBeCloseTo(0.2, 15);
    expect(binomialTailAbove(10, 0, 0)).toBe(0);
    expect(binomialTailAbove(10, 1, 9)).toBe(1);
  });

  it("Clopper-Pearson intervals match closed forms", () => {
    const n = 1_000_000;
    const [lo0, hi0] = clopperPearson(0, n);
    expect(lo0).toBe(0);
    expect(hi0 / (1 - 0.025 ** (1 / n))).toBeCloseTo(1, 6);
    const [loN, hiN] = clopperPearson(n, n);
    expect(hiN).toBe(1);
    expect(loN / 0.025 ** (1 / n)).toBeCloseTo(1, 6);
    const [lo, hi] = clopperPearson(500, 1000);
    expect(lo).toBeCloseTo(0.4685, 3); // R: binom.test(500, 1000)$conf.int = 0.4685 0.5315
    expect(hi).toBeCloseTo(0.5315, 3);
  });

  it("chi-square survival matches table values", () => {
    expect(chiSquareSurvival(3.841459, 1)).toBeCloseTo(0.05, 5);
    expect(chiSquareSurvival(11.0705, 5)).toBeCloseTo(0.05, 5);
    expect(chiSquareSurvival(2, 2)).toBeCloseTo(Math.exp(-1), 10);
    expect(chiSquareSurvival(0.5, 7)).toBeGreaterThan(0.99);
  });

  it("rejects wrong arguments", () => {
    for (const f of [
      () => clopperPearson(-1, 10),
      () => clopperPearson(11, 10),
      () => clopperPearson(0, 0),
      () => binomialTailAbove(-1, 0.5, 0),
      () => keyFailureRate({ ...CODE_V1, n: 252 }, 1.5),
    ]) {
      expect(f).toThrow(FleetError);
    }
  });
});
