import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Bch } from "../../../devices/puf/ecc/bch";
import { ConcatCode } from "../../../devices/puf/ecc/concat";
import { GaloisField } from "../../../devices/puf/ecc/gf";
import { repDecode, repEncode } from "../../../devices/puf/ecc/repetition";
import { expectFleetError } from "./helpers";

const bits = (n: number) => fc.uint8Array({ minLength: n, maxLength: n, max: 1 });

function distance(a: Uint8Array, b: Uint8Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d += a[i] ^ b[i];
  return d;
}

describe("GF(2^m)", () => {
  it("has a multiplicative inverse for every nonzero element", () => {
    for (const m of [3, 4, 8, 10]) {
      const gf = new GaloisField(m);
      for (let x = 1; x <= gf.n; x++) expect(gf.mul(x, gf.div(1, x))).toBe(1);
      expect(gf.pow(gf.n)).toBe(1);
    }
  });
});

describe("BCH", () => {
  it("has the textbook dimensions (Lin and Costello, table of primitive BCH codes)", () => {
    const dims: Array<[number, number, number]> = [
      [4, 2, 7],
      [5, 3, 16],
      [6, 4, 39],
      [7, 10, 64],
      [8, 2, 239],
      [8, 8, 191],
      [8, 18, 131],
      [8, 19, 123],
      [9, 20, 340],
    ];
    for (const [m, t, k] of dims) expect(new Bch(m, t).k).toBe(k);
    // x^8 + x^7 + x^6 + x^4 + 1 generates the (15,7) double-error-correcting code.
    expect(Array.from(new Bch(4, 2).generator)).toEqual([1, 0, 0, 0, 1, 0, 1, 1, 1]);
  });

  it("codewords have zero syndrome: decoding a clean codeword corrects nothing", () => {
    const c = new Bch(8, 18, 128);
    fc.assert(
      fc.property(bits(128), (m) => {
        const d = c.decode(c.encode(m));
        return d !== null && d.corrected === 0 && Buffer.from(d.message).equals(Buffer.from(m));
      }),
      { numRuns: 100 },
    );
  });

  for (const [m, t, k] of [
    [5, 3, undefined],
    [8, 18, 128],
    [9, 10, 200],
  ] as const) {
    it(`corrects every pattern of up to t errors: BCH m=${m} t=${t}${k ? ` shortened to k=${k}` : ""}`, () => {
      const c = new Bch(m, t, k);
      fc.assert(
        fc.property(
          bits(c.kShort),
          fc.uniqueArray(fc.nat({ max: c.nShort - 1 }), { maxLength: t }),
          (msg, pos) => {
            const r = c.encode(msg);
            for (const p of pos) r[p] ^= 1;
            const d = c.decode(r);
            return (
              d !== null && d.corrected === pos.length && Buffer.from(d.message).equals(Buffer.from(msg))
            );
          },
        ),
        { numRuns: 200 },
      );
    });
  }

  it("beyond t errors it either refuses or lands on a codeword within distance t (never garbage)", () => {
    const c = new Bch(5, 3);
    fc.assert(
      fc.property(
        bits(c.kShort),
        fc.uniqueArray(fc.nat({ max: c.nShort - 1 }), { minLength: 4, maxLength: 12 }),
        (msg, pos) => {
          const r = c.encode(msg);
          for (const p of pos) r[p] ^= 1;
          const d = c.decode(r);
          if (d === null) return true;
          return distance(c.encode(d.message), r) <= c.t && d.corrected <= c.t;
        },
      ),
      { numRuns: 300 },
    );
  });

  it("rejects wrong arguments", () => {
    expectFleetError(() => new Bch(2, 1), "INVALID_INPUT");
    expectFleetError(() => new Bch(8, 0), "INVALID_INPUT");
    expectFleetError(() => new Bch(8, 18, 200), "INVALID_INPUT");
    const c = new Bch(4, 2);
    expectFleetError(() => c.encode(new Uint8Array(3)), "INVALID_INPUT");
    expectFleetError(() => c.decode(new Uint8Array(3)), "INVALID_INPUT");
  });
});

describe("repetition and the concatenated code", () => {
  it("repetition majority corrects fewer than half the copies", () => {
    fc.assert(
      fc.property(
        bits(20),
        fc.constantFrom(1, 3, 5, 9),
        fc.integer({ min: 0, max: 2 ** 31 }),
        (b, r, seed) => {
          const enc = repEncode(b, r);
          let s = seed;
          for (let g = 0; g < b.length; g++) {
            const flips = s % ((r + 1) / 2); // at most (r-1)/2 flips per group
            s = (s * 1103515245 + 12345) >>> 1;
            for (let j = 0; j < flips; j++) enc[g * r + j] ^= 1;
          }
          return Buffer.from(repDecode(enc, r)).equals(Buffer.from(b));
        },
      ),
    );
    expectFleetError(() => repEncode(new Uint8Array(2), 4), "INVALID_INPUT");
    expectFleetError(() => repDecode(new Uint8Array(10), 3), "INVALID_INPUT");
  });

  it("the concatenated code recovers the message when at most t groups are outvoted", () => {
    const code = new ConcatCode({ m: 8, t: 18, k: 128, rep: 9 });
    expect(code.rawBits).toBe(2268);
    fc.assert(
      fc.property(
        bits(128),
        fc.uniqueArray(fc.nat({ max: 251 }), { maxLength: 18 }),
        fc.array(fc.nat({ max: 251 }), { maxLength: 200 }),
        (msg, outvoted, sprinkled) => {
          const r = code.encode(msg);
          for (const g of outvoted) for (let j = 0; j < 5; j++) r[g * 9 + j] ^= 1; // group decodes wrongly
          const seen = new Set(outvoted);
          const perGroup = new Map<number, number>();
          for (const g of sprinkled) {
            if (seen.has(g)) continue;
            const k = perGroup.get(g) ?? 0;
            if (k >= 4) continue; // stays a minority
            r[g * 9 + 8 - k] ^= 1;
            perGroup.set(g, k + 1);
          }
          const d = code.decode(r);
          return d !== null && Buffer.from(d.message).equals(Buffer.from(msg));
        },
      ),
      { numRuns: 200 },
    );
    expectFleetError(() => new ConcatCode({ m: 8, t: 18, k: 128, rep: 8 }), "INVALID_INPUT");
    expectFleetError(() => code.decode(new Uint8Array(10)), "INVALID_INPUT");
  });
});
