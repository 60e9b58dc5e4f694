/**
 * Fast seeded noise source for the SRAM PUF model: xoshiro128** (Blackman and Vigna,
 * "Scrambled linear pseudorandom number generators", ACM TOMS 2021; reference code at
 * prng.di.unimi.it), 128-bit state, 32-bit outputs. The read noise of an emulated SRAM cell
 * needs good statistical quality, not unpredictability, so each power-up seeds one generator
 * from 16 bytes of the caller's random source (crypto.randomBytes by default) instead of
 * drawing 2 bytes of CSPRNG output per cell. A seed of all zeros (a state the generator cannot
 * leave) is replaced by a fixed non-zero state, so every seed is usable.
 */

export class Xoshiro128 {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;

  /** seed: 16 bytes, read as four little-endian 32-bit words. */
  constructor(seed: Uint8Array) {
    if (!(seed instanceof Uint8Array) || seed.length !== 16)
      throw new RangeError("Xoshiro128: seed must be 16 bytes");
    const w = (o: number) => (seed[o] | (seed[o + 1] << 8) | (seed[o + 2] << 16) | (seed[o + 3] << 24)) >>> 0;
    let s0 = w(0);
    let s1 = w(4);
    let s2 = w(8);
    let s3 = w(12);
    if ((s0 | s1 | s2 | s3) === 0) {
      s0 = 0x9e3779b9;
      s1 = 0x243f6a88;
      s2 = 0xb7e15162;
      s3 = 0x6a09e667;
    }
    this.#s0 = s0;
    this.#s1 = s1;
    this.#s2 = s2;
    this.#s3 = s3;
  }

  /** The next 32-bit output, as an unsigned integer. */
  next(): number {
    const s1 = this.#s1;
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= s1;
    this.#s1 = s1 ^ this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return r;
  }

  /** Fill `out` with consecutive outputs. */
  fill(out: Uint32Array): Uint32Array {
    return this.fillStrided(out, 0, 1, out.length);
  }

  /**
   * The next `n` outputs into out[offset], out[offset + stride], ...: the same sequence as
   * fill(), laid out so that several generators can be interleaved in one array (the hot loop
   * keeps the state in locals).
   */
  fillStrided(out: Uint32Array, offset: number, stride: number, n: number): Uint32Array {
    if (!(offset >= 0 && stride >= 1 && n >= 0 && (n === 0 || offset + (n - 1) * stride < out.length)))
      throw new RangeError("Xoshiro128: fillStrided range outside the array");
    let s0 = this.#s0;
    let s1 = this.#s1;
    let s2 = this.#s2;
    let s3 = this.#s3;
    for (let i = 0, j = offset; i < n; i++, j += stride) {
      const x = Math.imul(s1, 5);
      out[j] = Math.imul((x << 7) | (x >>> 25), 9);
      const t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
    }
    this.#s0 = s0;
    this.#s1 = s1;
    this.#s2 = s2;
    this.#s3 = s3;
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
