/**
 * Binary narrow-sense primitive BCH codes of length 2^m - 1 correcting t errors, optionally
 * shortened, with bounded-distance hard-decision decoding (Lin and Costello, "Error Control
 * Coding", 2nd ed., ch. 6): generator g(x) = lcm of the minimal polynomials of alpha^1 ..
 * alpha^2t; systematic encoding c(x) = x^(n-k) m(x) + (x^(n-k) m(x) mod g(x)); decoding by
 * syndromes S_1..S_2t (odd ones evaluated, S_2j = S_j^2), Berlekamp-Massey for the error
 * locator, and Chien search for its roots. A word with more than t errors is reported as a
 * failure when the locator's degree exceeds t or its roots are not all distinct positions
 * inside the (shortened) word; otherwise it may be miscorrected to another codeword, which
 * the fuzzy extractor's secret check catches.
 *
 * Bits are unpacked (one 0/1 value per byte). Codeword bit i is the coefficient of x^i:
 * bits 0..n-k-1 hold the parity, bits n-k.. hold the message (message bit j at n-k+j).
 */
import { invalid } from "../../../core/errors";
import { GaloisField } from "./gf";

export interface BchDecodeResult {
  /** The decoded message bits (kShort of them). */
  message: Uint8Array;
  /** How many bit errors were corrected. */
  corrected: number;
}

export class Bch {
  readonly gf: GaloisField;
  /** Full length 2^m - 1. */
  readonly n: number;
  /** Full dimension. */
  readonly k: number;
  readonly t: number;
  /** Length and dimension after shortening by n - nShort = k - kShort leading message bits. */
  readonly nShort: number;
  readonly kShort: number;
  /** n - k parity bits. */
  readonly parity: number;
  /** Generator polynomial coefficients g_0..g_(n-k) as 0/1. */
  readonly generator: Uint8Array;
  readonly #genWords: Uint32Array;
  readonly #words: number;
  /** For odd j: logChunk[(j >> 1) * 256 + v] = log of sum over set bits k of v of alpha^(j*k), or -1. */
  readonly #logChunk: Int32Array;

  constructor(m: number, t: number, kShort?: number) {
    const gf = new GaloisField(m);
    const n = gf.n;
    if (!Number.isInteger(t) || t < 1 || 2 * t >= n)
      throw invalid("t", t, `an integer in [1, ${(n - 1) >> 1}]`);
    // g(x) = product over the distinct cyclotomic cosets of alpha^1..alpha^2t of their minimal polynomials.
    const inRoots = new Uint8Array(n);
    let g = [1]; // coefficients in GF(2^m), low degree first
    for (let i = 1; i <= 2 * t; i++) {
      if (inRoots[i]) continue;
      for (let e = i; !inRoots[e]; e = (e * 2) % n) {
        inRoots[e] = 1;
        // multiply g by (x - alpha^e)
        const r = gf.exp[e];
        const next = new Array<number>(g.length + 1).fill(0);
        for (let j = 0; j < g.length; j++) {
          next[j + 1] ^= g[j];
          next[j] ^= gf.mul(g[j], r);
        }
        g = next;
      }
    }
    const generator = new Uint8Array(g.length);
    for (let j = 0; j < g.length; j++) {
      if (g[j] > 1) throw new Error("BCH generator has non-binary coefficients");
      generator[j] = g[j];
    }
    const parity = generator.length - 1;
    const k = n - parity;
    if (k < 1) throw invalid("t", t, `small enough to leave a message (m = ${m})`);
    const ks = kShort ?? k;
    if (!Number.isInteger(ks) || ks < 1 || ks > k) throw invalid("kShort", kShort, `an integer in [1, ${k}]`);
    this.gf = gf;
    this.n = n;
    this.k = k;
    this.t = t;
    this.kShort = ks;
    this.nShort = n - (k - ks);
    this.parity = parity;
    this.generator = generator;
    this.#words = Math.ceil(parity / 32);
    this.#genWords = new Uint32Array(this.#words);
    for (let j = 0; j < parity; j++) if (generator[j]) this.#genWords[j >>> 5] |= 1 << (j & 31);
    this.#logChunk = new Int32Array(t * 256);
    for (let j = 1; j <= 2 * t; j += 2) {
      for (let v = 0; v < 256; v++) {
        let s = 0;
        for (let bit = 0; bit < 8; bit++) if ((v >> bit) & 1) s ^= gf.exp[(j * bit) % n];
        this.#logChunk[(j >> 1) * 256 + v] = s === 0 ? -1 : gf.log[s];
      }
    }
  }

  /** Systematic encoding of kShort message bits into nShort codeword bits. */
  encode(message: Uint8Array): Uint8Array {
    if (!(message instanceof Uint8Array) || message.length !== this.kShort)
      throw invalid("message", message, `${this.kShort} bits`);
    const W = this.#words;
    const gw = this.#genWords;
    const reg = new Uint32Array(W);
    const top = this.parity - 1;
    const topWord = top >>> 5;
    const topBit = top & 31;
    const lastMask = this.parity % 32 === 0 ? 0xffffffff : (1 << (this.parity % 32)) - 1;
    for (let i = this.kShort - 1; i >= 0; i--) {
      const fb = (message[i] & 1) ^ ((reg[topWord] >>> topBit) & 1);
      for (let w = W - 1; w > 0; w--) reg[w] = (reg[w] << 1) | (reg[w - 1] >>> 31);
      reg[0] <<= 1;
      reg[W - 1] &= lastMask;
      if (fb) for (let w = 0; w < W; w++) reg[w] ^= gw[w];
    }
    const out = new Uint8Array(this.nShort);
    for (let j = 0; j < this.parity; j++) out[j] = (reg[j >>> 5] >>> (j & 31)) & 1;
    for (let j = 0; j < this.kShort; j++) out[this.parity + j] = message[j] & 1;
    return out;
  }

  /** Bounded-distance decoding; null when the word is detectably uncorrectable. */
  decode(received: Uint8Array): BchDecodeResult | null {
    if (!(received instanceof Uint8Array) || received.length !== this.nShort)
      throw invalid("received", received, `${this.nShort} bits`);
    const { exp, log } = this.gf;
    const n = this.n;
    const t = this.t;
    const t2 = 2 * t;
    // Syndromes S_1..S_2t: odd ones by evaluation over 8-bit chunks (table per chunk value,
    // shifted by alpha^(8*j*chunk)), even ones by squaring.
    const S = new Int32Array(t2 + 1);
    const chunks = (this.nShort + 7) >> 3;
    const vals = new Uint8Array(chunks);
    for (let i = 0; i < this.nShort; i++) vals[i >> 3] |= (received[i] & 1) << (i & 7);
    const lc = this.#logChunk;
    let any = 0;
    for (let j = 1; j <= t2; j += 2) {
      let s = 0;
      const base = (j >> 1) * 256;
      const step = (8 * j) % n;
      for (let c = 0, sh = 0; c < chunks; c++) {
        const l = lc[base + vals[c]];
        if (l >= 0) s ^= exp[l + sh];
        sh += step;
        if (sh >= n) sh -= n;
      }
      S[j] = s;
      any |= s;
    }
    const message = received.slice(this.parity);
    if (any === 0) return { message, corrected: 0 };
    for (let j = 2; j <= t2; j += 2) {
      const h = S[j >> 1];
      S[j] = h === 0 ? 0 : exp[(2 * log[h]) % n];
    }
    // Berlekamp-Massey over GF(2^m).
    const C = new Int32Array(t2 + 2);
    const B = new Int32Array(t2 + 2);
    const T = new Int32Array(t2 + 2);
    C[0] = 1;
    B[0] = 1;
    let L = 0;
    let shift = 1;
    let b = 1;
    for (let r = 0; r < t2; r++) {
      let d = S[r + 1];
      for (let i = 1; i <= L; i++)
        if (C[i] !== 0 && S[r + 1 - i] !== 0) d ^= exp[log[C[i]] + log[S[r + 1 - i]]];
      if (d === 0) {
        shift++;
        continue;
      }
      const coef = log[d] + n - log[b]; // log(d/b)
      if (2 * L <= r) {
        T.set(C);
        for (let i = 0; i + shift <= t2 + 1; i++) if (B[i] !== 0) C[i + shift] ^= exp[(coef + log[B[i]]) % n];
        L = r + 1 - L;
        B.set(T);
        b = d;
        shift = 1;
      } else {
        for (let i = 0; i + shift <= t2 + 1; i++) if (B[i] !== 0) C[i + shift] ^= exp[(coef + log[B[i]]) % n];
        shift++;
      }
    }
    if (L > t) return null;
    for (let i = L + 1; i < C.length; i++) if (C[i] !== 0) return null;
    // Chien search: error at position i iff Lambda(alpha^-i) = 0, for i in 0..nShort-1.
    const terms = new Int32Array(L + 1); // log of C_j * alpha^(-i*j), -1 for zero coefficients
    for (let j = 0; j <= L; j++) terms[j] = C[j] === 0 ? -1 : log[C[j]];
    let found = 0;
    const positions = new Int32Array(L);
    for (let i = 0; i < this.nShort; i++) {
      let v = 0;
      for (let j = 0; j <= L; j++) {
        const tj = terms[j];
        if (tj >= 0) {
          v ^= exp[tj];
          let next = tj - j;
          if (next < 0) next += n;
          terms[j] = next;
        }
      }
      if (v === 0) {
        if (found === L) return null;
        positions[found++] = i;
      }
    }
    if (found !== L) return null;
    for (let f = 0; f < found; f++) {
      const p = positions[f];
      if (p >= this.parity) message[p - this.parity] ^= 1;
    }
    return { message, corrected: L };
  }
}
