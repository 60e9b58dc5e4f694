/**
 * Concatenated code: an outer BCH code whose every codeword bit is sent through an inner
 * repetition code of odd length r (Bösch et al., CHES 2008; Maes, Tuyls and Verbauwhede,
 * CHES 2009 for the failure-rate analysis). Decoding is hard-decision: majority per
 * repetition group, then bounded-distance BCH decoding. With i.i.d. bit errors at rate p the
 * inner error rate is P(Bin(r, p) > r/2) and a block fails exactly when more than t of the
 * outer bits are wrong (see failure.ts).
 */
import { invalid } from "../../../core/errors";
import { Bch, type BchDecodeResult } from "./bch";
import { assertRepetition } from "./repetition";

export interface ConcatParams {
  /** GF(2^m) of the outer BCH code. */
  m: number;
  /** Errors the outer code corrects. */
  t: number;
  /** Message bits (the outer code is shortened to this dimension). */
  k: number;
  /** Inner repetition length (odd). */
  rep: number;
}

export class ConcatCode {
  readonly outer: Bch;
  readonly rep: number;
  /** Code bits per message: outer length times repetition. */
  readonly rawBits: number;
  readonly params: Readonly<ConcatParams>;

  constructor(params: ConcatParams) {
    if (typeof params !== "object" || params === null) throw invalid("params", params, "{m, t, k, rep}");
    assertRepetition(params.rep);
    this.outer = new Bch(params.m, params.t, params.k);
    this.rep = params.rep;
    this.rawBits = this.outer.nShort * params.rep;
    this.params = Object.freeze({ ...params });
  }

  get k(): number {
    return this.outer.kShort;
  }

  encode(message: Uint8Array): Uint8Array {
    const c = this.outer.encode(message);
    const r = this.rep;
    const out = new Uint8Array(c.length * r);
    for (let i = 0; i < c.length; i++) if (c[i]) out.fill(1, i * r, i * r + r);
    return out;
  }

  /** Majority per group of `rep` bits, then BCH decoding; null when detectably uncorrectable. */
  decode(received: Uint8Array): BchDecodeResult | null {
    if (!(received instanceof Uint8Array) || received.length !== this.rawBits)
      throw invalid("received", received, `${this.rawBits} bits`);
    const r = this.rep;
    const half = r >> 1;
    const outer = new Uint8Array(this.outer.nShort);
    for (let i = 0, p = 0; i < outer.length; i++) {
      let ones = 0;
      for (let j = 0; j < r; j++, p++) ones += received[p] & 1;
      outer[i] = ones > half ? 1 : 0;
    }
    return this.outer.decode(outer);
  }
}
