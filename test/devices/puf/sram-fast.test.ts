import { describe, expect, it } from "vitest";
import {
  CORNERS,
  createPufDevice,
  enroll,
  NOMINAL,
  noiseRatio,
  type PufConditions,
  type PufDevice,
  reconstruct,
} from "../../../devices/puf";
import { normalTable } from "../../../devices/puf/normal";
import { Xoshiro128 } from "../../../devices/puf/prng";
import { thresholdTable } from "../../../devices/puf/sram";
import { expectFleetError, seededRng } from "./helpers";

const seed = new Uint8Array(32).fill(9);

/** xoshiro128** written out with BigInt, as in the reference C code (prng.di.unimi.it). */
function referenceXoshiro(state: number[], count: number): number[] {
  const M = 0xffffffffn;
  let [s0, s1, s2, s3] = state.map(BigInt);
  const rotl = (x: bigint, k: bigint) => ((x << k) | (x >> (32n - k))) & M;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    out.push(Number((rotl((s1 * 5n) & M, 7n) * 9n) & M));
    const t = (s1 << 9n) & M;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11n);
  }
  return out;
}

function le(words: number[]): Uint8Array {
  const b = new Uint8Array(4 * words.length);
  words.forEach((w, i) => {
    for (let k = 0; k < 4; k++) b[4 * i + k] = (w >>> (8 * k)) & 0xff;
  });
  return b;
}

/** Per-cell count of ones over `n` reads. */
function onesPerCell(read: () => Uint8Array, cells: number, n: number): Uint32Array {
  const ones = new Uint32Array(cells);
  for (let k = 0; k < n; k++) {
    const r = read();
    for (let i = 0; i < cells; i++) ones[i] += (r[i >> 3] >> (i & 7)) & 1;
  }
  return ones;
}

/**
 * Goodness of fit of per-cell counts to exact per-cell one-probabilities: cells with p = 0 or 1
 * must never vary; over the others, sum (k - np)^2 / (np(1-p)) is about chi-square with M
 * degrees of freedom (mean M, sd sqrt(2M)).
 */
function goodnessOfFit(
  ones: Uint32Array,
  p: Float64Array,
  n: number,
): { z: number; deterministicWrong: number } {
  let x = 0;
  let m = 0;
  let wrong = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === 0 || p[i] === 1) {
      if (ones[i] !== p[i] * n) wrong++;
      continue;
    }
    const e = n * p[i];
    x += (ones[i] - e) ** 2 / (e * (1 - p[i]));
    m++;
  }
  return { z: (x - m) / Math.sqrt(2 * m), deterministicWrong: wrong };
}

describe("fast SRAM sampler", () => {
  it("xoshiro128** matches the reference algorithm (state 1,2,3,4 starts 11520, 0, 5927040)", () => {
    const g = new Xoshiro128(le([1, 2, 3, 4]));
    const ref = referenceXoshiro([1, 2, 3, 4], 1000);
    expect(ref.slice(0, 3)).toEqual([11520, 0, 5927040]);
    const got = [g.next(), g.next(), g.next()];
    got.push(...Array.from(g.fill(new Uint32Array(997))));
    expect(got).toEqual(ref);
    // An all-zero seed is replaced by a fixed non-zero state (zero would be a fixed point).
    const z = new Xoshiro128(new Uint8Array(16)).fill(new Uint32Array(8));
    expect(z.some((w) => w !== 0)).toBe(true);
  });

  it("u >= T[code] is exactly the reference test m + r * inv[u] > 0 for every u", () => {
    const inv = normalTable();
    const f32 = new Float32Array(1);
    for (const bias of [0, 0.25, -1.5]) {
      for (const c of [NOMINAL, CORNERS["cold -40C"], CORNERS["hot+lowV+aged"]]) {
        const r = noiseRatio(c);
        const T = thresholdTable(r, bias);
        const codes = [0, 1, 32767, 32768, 65534, 65535];
        for (let k = 0; k < 40; k++) codes.push((k * 1637 + 811) & 0xffff);
        for (const a of codes) {
          f32[0] = inv[a] + bias;
          const m = f32[0];
          let mismatches = 0;
          for (let u = 0; u < 65536; u++) if (m + r * inv[u] > 0 !== u >= T[a]) mismatches++;
          expect(mismatches).toBe(0);
        }
      }
    }
  });

  it("read() and readReference() have the per-cell one-probabilities of the model", () => {
    const cells = 2048;
    const n = 300;
    const dev = createPufDevice(seed, "dev-stats", { cells });
    const m = dev.margins();
    const conds: PufConditions[] = [NOMINAL, CORNERS["cold -40C"], { ...NOMINAL, berOverride: 0.15 }];
    for (const c of conds) {
      // Exact one-probability of each cell at 16-bit resolution.
      const p = new Float64Array(cells);
      if (c.berOverride !== undefined) {
        const thr = Math.round(c.berOverride * 65536) / 65536;
        for (let i = 0; i < cells; i++) p[i] = m[i] > 0 ? 1 - thr : thr;
      } else {
        const inv = normalTable();
        const r = noiseRatio(c);
        for (let i = 0; i < cells; i++) {
          // Smallest u that reads 1 (binary search; the predicate is monotone in u).
          let lo = 0;
          let hi = 65536;
          while (lo < hi) {
            const mid = (lo + hi) >> 1;
            if (m[i] + r * inv[mid] > 0) hi = mid;
            else lo = mid + 1;
          }
          p[i] = (65536 - lo) / 65536;
        }
      }
      const rngF = seededRng(`fast/${JSON.stringify(c)}`);
      const rngR = seededRng(`ref/${JSON.stringify(c)}`);
      const a = goodnessOfFit(
        onesPerCell(() => dev.read(c, rngF), cells, n),
        p,
        n,
      );
      const b = goodnessOfFit(
        onesPerCell(() => dev.readReference(c, rngR), cells, n),
        p,
        n,
      );
      expect(a.deterministicWrong).toBe(0);
      expect(b.deterministicWrong).toBe(0);
      expect(Math.abs(a.z)).toBeLessThan(5);
      expect(Math.abs(b.z)).toBeLessThan(5);
    }
  });

  it("mean BER of read() and readReference() agree at every corner", () => {
    const dev = createPufDevice(seed, "dev-ber2", { cells: 16384 });
    const pref = dev.preferred();
    const hd = (x: Uint8Array) => {
      let d = 0;
      for (let i = 0; i < x.length; i++) {
        let v = x[i] ^ pref[i];
        while (v) {
          d += v & 1;
          v >>= 1;
        }
      }
      return d / (8 * x.length);
    };
    for (const c of [NOMINAL, ...Object.values(CORNERS), { ...NOMINAL, berOverride: 0.2 }]) {
      let fast = 0;
      let ref = 0;
      for (let k = 0; k < 8; k++) {
        fast += hd(dev.read(c)) / 8;
        ref += hd(dev.readReference(c)) / 8;
      }
      // 131,072 cell reads each: sd of each mean below 0.1%.
      expect(Math.abs(fast - ref)).toBeLessThan(0.005);
    }
  });

  it("readRange() is read() restricted to the range; berOverride 0 gives the preferred bits", () => {
    const dev = createPufDevice(seed, "dev-range");
    const pref = dev.preferred();
    const zero = { ...NOMINAL, berOverride: 0 };
    expect(Buffer.from(dev.read(zero)).equals(Buffer.from(pref))).toBe(true);
    for (const [start, count] of [
      [0, 8],
      [0, 6848],
      [4096, 2048],
      [32760, 8],
      [8, 0],
    ]) {
      const r = dev.readRange(start, count, zero);
      expect(Buffer.from(r).equals(Buffer.from(pref.subarray(start >> 3, (start + count) >> 3)))).toBe(true);
    }
    // A fresh device deriving only a prefix has the same cells as one that derived everything.
    const fresh = createPufDevice(seed, "dev-range");
    expect(Buffer.from(fresh.readRange(30000, 2768, zero)).equals(Buffer.from(pref.subarray(3750)))).toBe(
      true,
    );
    const r1 = dev.readRange(0, 4096, NOMINAL, seededRng("a"));
    const r2 = dev.readRange(0, 4096, NOMINAL, seededRng("a"));
    expect(Buffer.from(r1).equals(Buffer.from(r2))).toBe(true);
    for (const [s, c] of [
      [1, 8],
      [0, 7],
      [32768, 8],
      [-8, 8],
      [0, 40000],
    ])
      expectFleetError(() => dev.readRange(s, c, NOMINAL), "INVALID_INPUT");
  });

  it("helper data from the range path and the full-array path are interchangeable", () => {
    const dev = createPufDevice(seed, "dev-x");
    const plain: PufDevice = { deviceId: dev.deviceId, read: (c, r) => dev.read(c, r) };
    const viaRange = enroll(dev).helper;
    const viaFull = enroll(plain).helper;
    const s1 = Buffer.from(reconstruct(dev, viaRange)).toString("hex");
    expect(Buffer.from(reconstruct(plain, viaRange)).toString("hex")).toBe(s1);
    const s2 = Buffer.from(reconstruct(plain, viaFull)).toString("hex");
    expect(Buffer.from(reconstruct(dev, viaFull)).toString("hex")).toBe(s2);
    for (const c of Object.values(CORNERS)) {
      expect(Buffer.from(reconstruct(dev, viaRange, c)).toString("hex")).toBe(s1);
      expect(Buffer.from(reconstruct(plain, viaFull, c)).toString("hex")).toBe(s2);
    }
  });
});
