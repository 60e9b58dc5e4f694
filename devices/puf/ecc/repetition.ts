/**
 * Repetition code of odd length r with majority decoding: the inner code of the fuzzy
 * extractor's concatenation (Bösch et al., "Efficient Helper Data Key Extractor on FPGAs",
 * CHES 2008). Bits are unpacked, one 0/1 value per byte.
 */
import { invalid } from "../../../core/errors";

export function assertRepetition(r: unknown): asserts r is number {
  if (typeof r !== "number" || !Number.isInteger(r) || r < 1 || r > 255 || r % 2 === 0)
    throw invalid("repetition", r, "an odd integer in [1, 255]");
}

/** Repeat each bit r times: out[i*r + j] = bits[i]. */
export function repEncode(bits: Uint8Array, r: number): Uint8Array {
  assertRepetition(r);
  const out = new Uint8Array(bits.length * r);
  for (let i = 0; i < bits.length; i++) if (bits[i] & 1) out.fill(1, i * r, i * r + r);
  return out;
}

/** Majority of each group of r consecutive bits. */
export function repDecode(received: Uint8Array, r: number): Uint8Array {
  assertRepetition(r);
  if (received.length % r !== 0) throw invalid("received.length", received.length, `a multiple of ${r}`);
  const k = received.length / r;
  const out = new Uint8Array(k);
  const half = r >> 1;
  for (let i = 0, p = 0; i < k; i++) {
    let ones = 0;
    for (let j = 0; j < r; j++, p++) ones += received[p] & 1;
    out[i] = ones > half ? 1 : 0;
  }
  return out;
}
