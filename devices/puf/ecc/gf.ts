/**
 * Arithmetic in GF(2^m), 3 <= m <= 12, by log/antilog tables over a primitive polynomial
 * (the conventional choices, e.g. x^8+x^4+x^3+x^2+1 for m = 8 as in Lin and Costello,
 * "Error Control Coding", 2nd ed., appendix B). Elements are integers 0..2^m-1; the exp table
 * is doubled so a product needs no modular reduction of the log sum.
 */
import { invalid } from "../../../core/errors";

/** Primitive polynomials (including the x^m term) for m = 3..12. */
export const PRIMITIVE_POLYS: Readonly<Record<number, number>> = Object.freeze({
  3: 0b1011,
  4: 0b10011,
  5: 0b100101,
  6: 0b1000011,
  7: 0b10001001,
  8: 0x11d,
  9: 0x211,
  10: 0x409,
  11: 0x805,
  12: 0x1053,
});

export class GaloisField {
  readonly m: number;
  /** Multiplicative group order, 2^m - 1. */
  readonly n: number;
  /** exp[i] = alpha^i for 0 <= i < 2n. */
  readonly exp: Uint16Array;
  /** log[x] = i with alpha^i = x, for x != 0 (log[0] is unused). */
  readonly log: Uint16Array;

  constructor(m: number) {
    const poly = PRIMITIVE_POLYS[m];
    if (!Number.isInteger(m) || poly === undefined) throw invalid("m", m, "an integer in [3, 12]");
    this.m = m;
    this.n = (1 << m) - 1;
    this.exp = new Uint16Array(2 * this.n);
    this.log = new Uint16Array(this.n + 1);
    let x = 1;
    for (let i = 0; i < this.n; i++) {
      this.exp[i] = x;
      this.log[x] = i;
      x <<= 1;
      if (x & (1 << m)) x ^= poly;
    }
    if (x !== 1) throw new Error(`GF(2^${m}): polynomial is not primitive`);
    for (let i = this.n; i < 2 * this.n; i++) this.exp[i] = this.exp[i - this.n];
  }

  mul(a: number, b: number): number {
    if (a === 0 || b === 0) return 0;
    return this.exp[this.log[a] + this.log[b]];
  }

  div(a: number, b: number): number {
    if (b === 0) throw new RangeError("GF division by zero");
    if (a === 0) return 0;
    return this.exp[this.log[a] + this.n - this.log[b]];
  }

  /** alpha^e for any integer e. */
  pow(e: number): number {
    const r = e % this.n;
    return this.exp[r < 0 ? r + this.n : r];
  }
}
