// Enrollment's repeated reads in one pass (SramPuf.readRangeRepeated) must give exactly the
// samples of separate readRange() calls, so helper data and keys are unchanged bit for bit.
import { describe, expect, it } from "vitest";
import { CORNERS, createPufDevice, enroll, NOMINAL, type PufDevice, reconstruct } from "../../../devices/puf";
import { Xoshiro128 } from "../../../devices/puf/prng";
import { expectFleetError, seededRng } from "./helpers";

const seed = new Uint8Array(32).fill(13);

function separateReads(dev: PufDevice, start: number, count: number, c: typeof NOMINAL, seeds: Uint8Array) {
  const reads = seeds.length / 16;
  const and = new Uint8Array(count >> 3).fill(0xff);
  const or = new Uint8Array(count >> 3);
  for (let k = 0; k < reads; k++) {
    const r = dev.readRange!(start, count, c, () => seeds.subarray(16 * k, 16 * k + 16));
    for (let i = 0; i < r.length; i++) {
      and[i]! &= r[i]!;
      or[i]! |= r[i]!;
    }
  }
  return { and, or };
}

describe("enrollment reads in one pass", () => {
  it("Xoshiro128.fillStrided lays out the same sequence as fill", () => {
    const s = seededRng("strided")(48);
    const plain = [0, 1, 2].map((k) =>
      new Xoshiro128(s.subarray(16 * k, 16 * k + 16)).fill(new Uint32Array(501)),
    );
    const mixed = new Uint32Array(3 * 501);
    for (let k = 0; k < 3; k++) new Xoshiro128(s.subarray(16 * k, 16 * k + 16)).fillStrided(mixed, k, 3, 501);
    for (let k = 0; k < 3; k++) for (let w = 0; w < 501; w++) expect(mixed[3 * w + k]).toBe(plain[k]![w]);
    // a generator continues where it left off, whichever method drew before
    const g = new Xoshiro128(s.subarray(0, 16));
    g.fillStrided(new Uint32Array(10), 0, 1, 10);
    expect(Array.from(g.fill(new Uint32Array(5)))).toEqual(Array.from(plain[0]!.subarray(10, 15)));
    expect(() => g.fillStrided(new Uint32Array(10), 1, 3, 4)).toThrow(RangeError);
  });

  it("readRangeRepeated is the AND and OR of separate readRange calls, at every condition", () => {
    const dev = createPufDevice(seed, "dev-repeated");
    const conditions = [
      NOMINAL,
      ...Object.values(CORNERS),
      { ...NOMINAL, berOverride: 0.1 },
      { ...NOMINAL, berOverride: 0.35 },
    ];
    let i = 0;
    for (const c of conditions) {
      for (const [start, count, reads] of [
        [0, 7168, 8],
        [7168, 1024, 8],
        [4096, 64, 3],
        [32760, 8, 1],
        [0, 0, 2],
      ] as const) {
        const seeds = seededRng(`rep/${i++}`)(16 * reads);
        const want = separateReads(dev, start, count, c, seeds);
        const got = dev.readRangeRepeated(start, count, c, seeds);
        expect(Buffer.from(got.and).equals(Buffer.from(want.and))).toBe(true);
        expect(Buffer.from(got.or).equals(Buffer.from(want.or))).toBe(true);
      }
    }
  });

  it("enrollment through it gives the helper data of the read-by-read path, bit for bit", () => {
    for (let d = 0; d < 12; d++) {
      const id = `dev-enroll-${d}`;
      const dev = createPufDevice(seed, id);
      const readByRead = createPufDevice(seed, id);
      const plain: PufDevice = {
        deviceId: id,
        cells: readByRead.cells,
        read: (c, r) => readByRead.read(c, r),
        readRange: (s, n, c, r) => readByRead.readRange(s, n, c, r),
      };
      const a = enroll(dev, { rng: seededRng(`enroll/${d}`) }).helper;
      const b = enroll(plain, { rng: seededRng(`enroll/${d}`) }).helper;
      expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
      expect(Buffer.from(reconstruct(dev, a)).equals(Buffer.from(reconstruct(plain, b)))).toBe(true);
    }
    // and at a corner, with fewer reads
    const dev = createPufDevice(seed, "dev-corner");
    const other = createPufDevice(seed, "dev-corner");
    const plain: PufDevice = {
      deviceId: "dev-corner",
      cells: other.cells,
      read: (c, r) => other.read(c, r),
      readRange: (s, n, c, r) => other.readRange(s, n, c, r),
    };
    const deps = (l: string) => ({ rng: seededRng(l), reads: 5, conditions: CORNERS["hot 85C"]! });
    expect(
      Buffer.from(enroll(dev, deps("c")).helper).equals(Buffer.from(enroll(plain, deps("c")).helper)),
    ).toBe(true);
  });

  it("refuses wrong arguments", () => {
    const dev = createPufDevice(seed, "dev-args");
    const s16 = new Uint8Array(16);
    for (const [st, n] of [
      [1, 8],
      [0, 7],
      [32768, 8],
      [0, 40000],
    ])
      expectFleetError(() => dev.readRangeRepeated(st, n, NOMINAL, s16), "INVALID_INPUT");
    for (const seeds of [new Uint8Array(0), new Uint8Array(15), new Uint8Array(17), new Uint8Array(16 * 65)])
      expectFleetError(() => dev.readRangeRepeated(0, 8, NOMINAL, seeds), "INVALID_INPUT");
    expectFleetError(() => dev.readRangeRepeated(0, 8, { ...NOMINAL, voltage: 9 }, s16), "INVALID_INPUT");
  });
});
