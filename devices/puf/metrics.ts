/**
 * PUF quality metrics after Maiti, Gunreddy and Schaumont, "A Systematic Method to Evaluate
 * and Compare the Performance of Physical Unclonable Functions" (2013), over packed responses
 * (cell i at byte i>>3, bit i&7): uniformity (fraction of ones in a response, ideal 50%),
 * bit-aliasing (per cell, fraction of devices where it is 1, ideal 50%), uniqueness (mean
 * inter-device fractional Hamming distance, ideal 50%), reliability (1 - mean intra-device
 * fractional Hamming distance to a reference), and min-entropy per bit estimated from the
 * bit-aliasing probabilities, H_min = mean_i -log2(max(p_i, 1 - p_i)) (as in Maes, CHES 2012).
 */
import { invalid } from "../../core/errors";

function assertBits(b: unknown, field: string): asserts b is Uint8Array {
  if (!(b instanceof Uint8Array) || b.length === 0)
    throw invalid(field, b, "a non-empty Uint8Array of packed bits");
}

function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

/** Number of ones. */
export function hammingWeight(bits: Uint8Array): number {
  assertBits(bits, "bits");
  let n = 0;
  const words = bits.length >> 2;
  if (bits.byteOffset % 4 === 0) {
    const w = new Uint32Array(bits.buffer, bits.byteOffset, words);
    for (let i = 0; i < words; i++) n += popcount32(w[i]);
  } else {
    for (let i = 0; i < words * 4; i++) n += popcount32(bits[i]);
  }
  for (let i = words * 4; i < bits.length; i++) n += popcount32(bits[i]);
  return n;
}

/** Fractional Hamming distance between two equal-length packed responses. */
export function fractionalHd(a: Uint8Array, b: Uint8Array): number {
  assertBits(a, "a");
  assertBits(b, "b");
  if (a.length !== b.length) throw invalid("b.length", b.length, `${a.length} (same as a)`);
  let d = 0;
  const words = a.length >> 2;
  if (a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0) {
    const wa = new Uint32Array(a.buffer, a.byteOffset, words);
    const wb = new Uint32Array(b.buffer, b.byteOffset, words);
    for (let i = 0; i < words; i++) d += popcount32(wa[i] ^ wb[i]);
  } else {
    for (let i = 0; i < words * 4; i++) d += popcount32(a[i] ^ b[i]);
  }
  for (let i = words * 4; i < a.length; i++) d += popcount32(a[i] ^ b[i]);
  return d / (a.length * 8);
}

/** Fraction of ones in a response. */
export function uniformity(bits: Uint8Array): number {
  return hammingWeight(bits) / (bits.length * 8);
}

/** Per-cell fraction of responses (devices) in which the cell is 1. */
export function bitAliasing(responses: readonly Uint8Array[]): Float64Array {
  if (!Array.isArray(responses) || responses.length === 0)
    throw invalid("responses", responses, "a non-empty array");
  const len = responses[0].length;
  const counts = new Uint32Array(len * 8);
  for (const r of responses) {
    assertBits(r, "responses[i]");
    if (r.length !== len) throw invalid("responses[i].length", r.length, `${len}`);
    for (let i = 0; i < len * 8; i++) counts[i] += (r[i >> 3] >> (i & 7)) & 1;
  }
  const out = new Float64Array(len * 8);
  for (let i = 0; i < out.length; i++) out[i] = counts[i] / responses.length;
  return out;
}

/** Mean over cells of -log2(max(p, 1-p)) for per-cell one-probabilities p. */
export function minEntropyPerBit(oneProbabilities: ArrayLike<number>): number {
  if (oneProbabilities.length === 0) throw invalid("oneProbabilities", oneProbabilities, "a non-empty array");
  let s = 0;
  for (let i = 0; i < oneProbabilities.length; i++) {
    const p = oneProbabilities[i];
    s += -Math.log2(Math.max(p, 1 - p));
  }
  return s / oneProbabilities.length;
}

/** All pairwise inter-device fractional Hamming distances (n(n-1)/2 values). */
export function pairwiseHd(responses: readonly Uint8Array[]): Float64Array {
  if (!Array.isArray(responses) || responses.length < 2)
    throw invalid("responses", responses, "an array of at least 2 responses");
  const n = responses.length;
  const out = new Float64Array((n * (n - 1)) / 2);
  let k = 0;
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) out[k++] = fractionalHd(responses[i], responses[j]);
  return out;
}

/** Majority vote per cell over several reads (ties go to the first read). */
export function majority(reads: readonly Uint8Array[]): Uint8Array {
  if (!Array.isArray(reads) || reads.length === 0) throw invalid("reads", reads, "a non-empty array");
  const len = reads[0].length;
  const out = new Uint8Array(len);
  const half = reads.length / 2;
  for (let i = 0; i < len * 8; i++) {
    let ones = 0;
    for (const r of reads) ones += (r[i >> 3] >> (i & 7)) & 1;
    const bit = ones > half ? 1 : ones < half ? 0 : (reads[0][i >> 3] >> (i & 7)) & 1;
    out[i >> 3] |= bit << (i & 7);
  }
  return out;
}

export interface Stats {
  mean: number;
  std: number;
  min: number;
  max: number;
  n: number;
}

export function stats(values: ArrayLike<number>): Stats {
  const n = values.length;
  if (n === 0) throw invalid("values", values, "a non-empty array");
  let s = 0;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    s += v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const mean = s / n;
  let q = 0;
  for (let i = 0; i < n; i++) q += (values[i] - mean) ** 2;
  return { mean, std: n > 1 ? Math.sqrt(q / (n - 1)) : 0, min, max, n };
}
