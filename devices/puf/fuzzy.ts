/**
 * Fuzzy extractor for the SRAM PUF: the code-offset construction (Juels and Wattenberg,
 * CCS 1999; Dodis, Reyzin and Smith, EUROCRYPT 2004) over a concatenated code (outer
 * BCH(255,131,t=18) shortened to (252,128), inner repetition 9; see ecc/concat.ts), with
 * pair-output von Neumann debiasing (Maes, van der Leest, van der Sluis and Willems, "Secure
 * key generation from biased PUFs", CHES 2015) and a robust-extractor tag (Boyen et al.,
 * EUROCRYPT 2005) so that manipulated helper data never yields a key.
 *
 * Enrollment reads the array several times; a cell is usable when every read agreed (this
 * masks unstable cells), and the pair of cells (2q, 2q+1) is selected when both are usable and
 * their values differ. Because the two cells of a selected pair are independent and equally
 * biased, (1,0) and (0,1) are equally likely whatever the bias, so the first cell's value a is
 * an unbiased bit; its partner holds NOT a. A random 128-bit message is BCH-encoded; outer bit
 * c_g is carried by 5 selected pairs and each pair stores one public offset bit h = c_g XOR a.
 * At reconstruction each pair gives two independent votes, h XOR a' and NOT h XOR b' (the last
 * pair of a group gives only the first, for 9 votes), the votes of a group are decided by
 * majority and the 252 outer bits by the BCH decoder. The offsets leak nothing about c: every
 * pair's a is an independent uniform bit and the second cell's offset is implied, never stored.
 *
 * The stable secret is HKDF-SHA-256 (RFC 5869) of the recovered message. Helper data carries
 * (1) tag = HMAC-SHA-256(HKDF(message, "helper-tag"), body), checked after decoding: a failed
 * check is a failed reconstruction (UNAVAILABLE), never a wrong key; and (2) a digest over
 * the device ID, body and tag, SHA-256 or HMAC-SHA-256 under an optional device helper key,
 * checked before anything else: any flipped bit is refused as INTEGRITY.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { FleetError, invalid } from "../../core/errors";
import { ConcatCode, type ConcatParams } from "./ecc/concat";
import { hkdfExpand, hkdfExtract } from "./hkdf";
import {
  assertConditions,
  assertDeviceId,
  assertRng,
  NOMINAL,
  type PufConditions,
  type PufDevice,
} from "./sram";

/** Code of helper format v1: BCH(252,128,t=18) over GF(2^8) inside repetition 9. */
export const CODE_V1: Readonly<ConcatParams> = Object.freeze({ m: 8, t: 18, k: 128, rep: 9 });
const MAGIC0 = 0x50; // "P"
const MAGIC1 = 0x46; // "F"
const VERSION = 1;
const CODE_ID = 1;
const HEADER = 12;
const TAG = 32;
const DIGEST = 32;
export const DEFAULT_ENROLL_READS = 8;
/**
 * Cells read per enrollment chunk: at nominal a selected pair needs 5.4 cells on average
 * (6,843 cells for 1,260 pairs, sd about 150): the first chunk suffices for about 98% of devices.
 */
const ENROLL_FIRST_CHUNK = 7168;
const ENROLL_NEXT_CHUNK = 1024;

/** Outer code length: BCH(255,131) shortened by 3 bits to 128 message bits. */
const OUTER_BITS = 252;
/** Selected pairs per outer bit: 2 votes per pair, 1 from the last, = rep votes. */
export const PAIRS_PER_GROUP = (CODE_V1.rep + 1) / 2;
export const SELECTED_PAIRS = PAIRS_PER_GROUP * OUTER_BITS;

let cachedCode: ConcatCode | undefined;
/** The (shared, immutable) concatenated code of helper format v1. */
export function fuzzyCode(): ConcatCode {
  if (cachedCode === undefined) {
    const c = new ConcatCode(CODE_V1);
    if (c.outer.nShort !== OUTER_BITS) throw new Error("fuzzy: code v1 layout mismatch");
    cachedCode = c;
  }
  return cachedCode;
}

export interface EnrollDeps {
  /** Random source for the secret message and the read noise; default crypto.randomBytes. */
  rng?: (n: number) => Uint8Array;
  /** Power-ups at enrollment (1..64); a cell is masked unless all agree. Default 8. */
  reads?: number;
  /** Conditions during enrollment; default NOMINAL. */
  conditions?: PufConditions;
  /** Optional device-held key (e.g. from OTP) that MACs the helper instead of a plain hash. */
  helperKey?: Uint8Array;
}

export interface ReconstructDeps {
  rng?: (n: number) => Uint8Array;
  helperKey?: Uint8Array;
}

function defaultRng(n: number): Uint8Array {
  return randomBytes(n);
}

function assertPuf(puf: unknown): asserts puf is PufDevice {
  if (typeof puf !== "object" || puf === null || typeof (puf as PufDevice).read !== "function")
    throw invalid("puf", puf, "a PufDevice with read()");
  assertDeviceId((puf as PufDevice).deviceId);
}

function assertHelperKey(k: unknown): asserts k is Uint8Array | undefined {
  if (k !== undefined && (!(k instanceof Uint8Array) || k.length < 16 || k.length > 64))
    throw invalid("deps.helperKey", k, "undefined or a Uint8Array of 16..64 bytes");
}

function readChecked(puf: PufDevice, conditions: PufConditions, rng: (n: number) => Uint8Array): Uint8Array {
  const r = puf.read(conditions, rng);
  if (!(r instanceof Uint8Array) || r.length < 1)
    throw invalid("puf.read()", r, "a non-empty Uint8Array of packed bits");
  return r;
}

type RangeReader = Required<Pick<PufDevice, "readRange" | "cells">>;

/** The device's range reader, when it has one (an SramPuf does; a plain PufDevice need not). */
function rangeReader(puf: PufDevice): RangeReader | undefined {
  if (typeof puf.readRange !== "function") return undefined;
  const cells = puf.cells;
  if (typeof cells !== "number" || !Number.isInteger(cells) || cells < 8 || cells % 8 !== 0)
    throw invalid("puf.cells", cells, "a positive multiple of 8 with readRange()");
  return puf as RangeReader;
}

function salt(deviceId: string): Buffer {
  return Buffer.from(`fleetguard/puf/fe/v1:${deviceId}`, "utf8");
}

function packBits(bits: Uint8Array): Uint8Array {
  const out = new Uint8Array((bits.length + 7) >> 3);
  for (let i = 0; i < bits.length; i++) out[i >> 3] |= (bits[i] & 1) << (i & 7);
  return out;
}

/** HKDF-Extract of the message under the device's salt: the PRK both the tag key and the secret expand from. */
function messagePrk(message: Uint8Array, deviceId: string): Buffer {
  const packed = packBits(message);
  const prk = hkdfExtract(packed, salt(deviceId));
  packed.fill(0);
  return prk;
}

function tagWith(prk: Uint8Array, body: Uint8Array): Buffer {
  const key = hkdfExpand(prk, "helper-tag", 32);
  const tag = createHmac("sha256", key).update(body).digest();
  key.fill(0);
  return tag;
}

function tagFor(message: Uint8Array, deviceId: string, body: Uint8Array): Buffer {
  const prk = messagePrk(message, deviceId);
  const tag = tagWith(prk, body);
  prk.fill(0);
  return tag;
}

function secretFor(message: Uint8Array, deviceId: string): Uint8Array {
  const prk = messagePrk(message, deviceId);
  const out = new Uint8Array(hkdfExpand(prk, "stable-secret", 32));
  prk.fill(0);
  return out;
}

function digestFor(deviceId: string, covered: Uint8Array, helperKey: Uint8Array | undefined): Buffer {
  const id = Buffer.from(deviceId, "utf8");
  const len = Buffer.from([id.length >> 8, id.length & 0xff]);
  const h = helperKey === undefined ? createHash("sha256") : createHmac("sha256", helperKey);
  return h.update("fleetguard/puf/helper/v1\0").update(len).update(id).update(covered).digest();
}

/**
 * The last step of reconstruction, shared with the Monte Carlo bench: decode the votes,
 * check the recovered message against the helper's tag, derive the stable secret.
 */
export function decodeVotes(
  votes: Uint8Array,
  deviceId: string,
  body: Uint8Array,
  tag: Uint8Array,
): Uint8Array {
  const decoded = fuzzyCode().decode(votes);
  if (decoded === null)
    throw new FleetError(
      "UNAVAILABLE",
      "PUF reconstruction failed: the response has more errors than the code corrects",
      "puf",
    );
  const prk = messagePrk(decoded.message, deviceId);
  decoded.message.fill(0);
  const expect = tagWith(prk, body);
  const ok = expect.length === tag.length && timingSafeEqual(expect, tag);
  if (!ok) {
    prk.fill(0);
    throw new FleetError(
      "UNAVAILABLE",
      "PUF reconstruction failed: the recovered secret does not match the helper data's check (too much noise, or not the enrolled device)",
      "puf",
    );
  }
  const secret = new Uint8Array(hkdfExpand(prk, "stable-secret", 32));
  prk.fill(0);
  return secret;
}

/**
 * Test/bench hooks: the tag a helper body carries for a message, and the stable secret a
 * message yields. The message is the device's secret; only emulation code calls these.
 */
export function helperTag(message: Uint8Array, deviceId: string, body: Uint8Array): Uint8Array {
  return tagFor(message, deviceId, body);
}

export function stableSecretOf(message: Uint8Array, deviceId: string): Uint8Array {
  return secretFor(message, deviceId);
}

export interface HelperInfo {
  cells: number;
  pairsScanned: number;
  selectedPairs: number;
  bytes: number;
}

/** Enroll a PUF: returns public helper data from which reconstruct() recovers a stable secret. */
export function enroll(puf: PufDevice, deps: EnrollDeps = {}): { helper: Uint8Array } {
  assertPuf(puf);
  if (typeof deps !== "object" || deps === null) throw invalid("deps", deps, "an object");
  const rng = deps.rng ?? defaultRng;
  assertRng(rng, "deps.rng");
  const reads = deps.reads ?? DEFAULT_ENROLL_READS;
  if (!Number.isInteger(reads) || reads < 1 || reads > 64)
    throw invalid("deps.reads", reads, "an integer in [1, 64]");
  const conditions = deps.conditions ?? NOMINAL;
  assertConditions(conditions, "deps.conditions");
  assertHelperKey(deps.helperKey);

  // Stability masking over `reads` power-ups: per cell, AND and OR of all reads (stable iff
  // equal, value = AND), then pair selection (von Neumann) until enough pairs are found.
  const firstValues = new Uint8Array(SELECTED_PAIRS);
  const bitmap: number[] = [];
  let selected = 0;
  let pair = 0;
  let cells: number;
  const scan = (and: Uint8Array, or: Uint8Array, pairs: number) => {
    // and/or cover cells [2 * pair, 2 * (pair + pairs)), starting on a byte boundary.
    const base = pair;
    for (let j = 0; selected < SELECTED_PAIRS && j < pairs; j++, pair++) {
      const byte = j >> 2;
      const sh = (2 * j) & 7;
      const stable = ~(and[byte] ^ or[byte]) >> sh;
      const value = and[byte] >> sh;
      const usable = (stable & 3) === 3 && ((value ^ (value >> 1)) & 1) === 1;
      if ((pair & 7) === 0) bitmap.push(0);
      if (usable) {
        bitmap[bitmap.length - 1] |= 1 << (pair & 7);
        firstValues[selected++] = value & 1;
      }
    }
    return pair - base;
  };
  const fast = rangeReader(puf);
  if (fast !== undefined) {
    // Read only as many cells as the selection needs, chunk by chunk: cells are independent,
    // so this has the same distribution as scanning `reads` reads of the whole array.
    cells = fast.cells;
    for (let start = 0; selected < SELECTED_PAIRS && start < cells; ) {
      const count = Math.min(cells - start, start === 0 ? ENROLL_FIRST_CHUNK : ENROLL_NEXT_CHUNK);
      const seeds = rng(16 * reads);
      if (!(seeds instanceof Uint8Array) || seeds.length !== 16 * reads)
        throw invalid("rng(n)", seeds, `${16 * reads} bytes`);
      let and: Uint8Array | undefined;
      let or: Uint8Array | undefined;
      const repeated = typeof puf.readRangeRepeated === "function";
      if (repeated) {
        // all `reads` power-ups of the chunk in one pass (same samples as the loop below)
        const r = puf.readRangeRepeated!(start, count, conditions, seeds);
        if (!(r?.and instanceof Uint8Array) || r.and.length !== count >> 3 || r.or?.length !== count >> 3)
          throw invalid("puf.readRangeRepeated()", r?.and, `${count >> 3} bytes of AND and OR`);
        and = r.and;
        or = r.or;
      }
      for (let k = 0; !repeated && k < reads; k++) {
        const r = fast.readRange(start, count, conditions, () => seeds.subarray(16 * k, 16 * k + 16));
        if (!(r instanceof Uint8Array) || r.length !== count >> 3)
          throw invalid("puf.readRange()", r, `${count >> 3} bytes`);
        if (and === undefined || or === undefined) {
          and = r;
          or = r.slice();
        } else {
          for (let i = 0; i < r.length; i++) {
            and[i] &= r[i];
            or[i] |= r[i];
          }
          r.fill(0);
        }
      }
      seeds.fill(0);
      if (and === undefined || or === undefined) break;
      scan(and, or, count >> 1);
      and.fill(0);
      or.fill(0);
      start += count;
    }
  } else {
    const first = readChecked(puf, conditions, rng);
    const bytes = first.length;
    cells = bytes * 8;
    const and = first;
    const or = first.slice();
    for (let k = 1; k < reads; k++) {
      const r = readChecked(puf, conditions, rng);
      if (r.length !== bytes) throw invalid("puf.read()", r, `${bytes} bytes on every read`);
      for (let i = 0; i < bytes; i++) {
        and[i] &= r[i];
        or[i] |= r[i];
      }
      r.fill(0);
    }
    scan(and, or, cells >> 1);
    and.fill(0);
    or.fill(0);
  }
  if (selected < SELECTED_PAIRS)
    throw new FleetError(
      "UNAVAILABLE",
      `PUF enrollment failed: usable cell pairs: got ${selected} in ${cells} cells, want ${SELECTED_PAIRS}`,
      "puf",
    );

  const code = fuzzyCode();
  const msgBytes = rng(code.k >> 3);
  if (!(msgBytes instanceof Uint8Array) || msgBytes.length !== code.k >> 3)
    throw invalid("rng(n)", msgBytes, `${code.k >> 3} bytes`);
  const message = new Uint8Array(code.k);
  for (let i = 0; i < code.k; i++) message[i] = (msgBytes[i >> 3] >> (i & 7)) & 1;
  msgBytes.fill(0);
  const outer = code.outer.encode(message);

  const offsets = new Uint8Array(SELECTED_PAIRS);
  for (let q = 0; q < SELECTED_PAIRS; q++)
    offsets[q] = outer[Math.floor(q / PAIRS_PER_GROUP)] ^ firstValues[q];
  firstValues.fill(0);
  outer.fill(0);

  const packedOffsets = packBits(offsets);
  const body = new Uint8Array(HEADER + bitmap.length + packedOffsets.length);
  body[0] = MAGIC0;
  body[1] = MAGIC1;
  body[2] = VERSION;
  body[3] = CODE_ID;
  const view = new DataView(body.buffer);
  view.setUint32(4, cells);
  view.setUint32(8, pair);
  body.set(bitmap, HEADER);
  body.set(packedOffsets, HEADER + bitmap.length);

  const tag = tagFor(message, puf.deviceId, body);
  message.fill(0);
  const helper = new Uint8Array(body.length + TAG + DIGEST);
  helper.set(body, 0);
  helper.set(tag, body.length);
  helper.set(
    digestFor(puf.deviceId, helper.subarray(0, body.length + TAG), deps.helperKey),
    body.length + TAG,
  );
  return { helper };
}

function integrity(what: string): FleetError {
  return new FleetError("INTEGRITY", `helper: ${what}`, "helper");
}

interface ParsedHelper {
  cells: number;
  pairsScanned: number;
  bitmap: Uint8Array;
  offsets: Uint8Array;
  body: Uint8Array;
  tag: Uint8Array;
}

function parseHelper(helper: Uint8Array, deviceId: string, helperKey: Uint8Array | undefined): ParsedHelper {
  if (helper.length < HEADER + TAG + DIGEST)
    throw integrity(`got ${helper.length} bytes, want at least ${HEADER + TAG + DIGEST}`);
  const covered = helper.subarray(0, helper.length - DIGEST);
  const digest = helper.subarray(helper.length - DIGEST);
  const expect = digestFor(deviceId, covered, helperKey);
  if (!timingSafeEqual(expect, digest))
    throw integrity("authentication check failed (modified, truncated, or not this device's helper data)");
  if (helper[0] !== MAGIC0 || helper[1] !== MAGIC1 || helper[2] !== VERSION || helper[3] !== CODE_ID)
    throw integrity(`format: got ${helper[0]}.${helper[1]}.${helper[2]}.${helper[3]}, want PF v1 code 1`);
  const view = new DataView(helper.buffer, helper.byteOffset, helper.byteLength);
  const cells = view.getUint32(4);
  const pairsScanned = view.getUint32(8);
  const bitmapLen = Math.ceil(pairsScanned / 8);
  const offsetsLen = Math.ceil(SELECTED_PAIRS / 8);
  if (2 * pairsScanned > cells || helper.length !== HEADER + bitmapLen + offsetsLen + TAG + DIGEST)
    throw integrity(`layout: got ${helper.length} bytes for ${pairsScanned} pairs in ${cells} cells`);
  const bodyLen = HEADER + bitmapLen + offsetsLen;
  const bitmap = helper.subarray(HEADER, HEADER + bitmapLen);
  let count = 0;
  for (let q = 0; q < pairsScanned; q++) count += (bitmap[q >> 3] >> (q & 7)) & 1;
  if (count !== SELECTED_PAIRS) throw integrity(`selected pairs: got ${count}, want ${SELECTED_PAIRS}`);
  return {
    cells,
    pairsScanned,
    bitmap,
    offsets: helper.subarray(HEADER + bitmapLen, bodyLen),
    body: helper.subarray(0, bodyLen),
    tag: helper.subarray(bodyLen, bodyLen + TAG),
  };
}

/** Public facts about helper data (sizes), after its integrity check. */
export function helperInfo(helper: Uint8Array, deviceId: string, helperKey?: Uint8Array): HelperInfo {
  if (!(helper instanceof Uint8Array)) throw invalid("helper", helper, "a Uint8Array");
  assertDeviceId(deviceId);
  assertHelperKey(helperKey);
  const p = parseHelper(helper, deviceId, helperKey);
  return {
    cells: p.cells,
    pairsScanned: p.pairsScanned,
    selectedPairs: SELECTED_PAIRS,
    bytes: helper.length,
  };
}

/** Recover the 32-byte stable secret of an enrolled PUF. */
export function reconstruct(
  puf: PufDevice,
  helper: Uint8Array,
  conditions: PufConditions = NOMINAL,
  deps: ReconstructDeps = {},
): Uint8Array {
  assertPuf(puf);
  if (!(helper instanceof Uint8Array)) throw invalid("helper", helper, "a Uint8Array");
  assertConditions(conditions);
  if (typeof deps !== "object" || deps === null) throw invalid("deps", deps, "an object");
  const rng = deps.rng ?? defaultRng;
  assertRng(rng, "deps.rng");
  assertHelperKey(deps.helperKey);
  const p = parseHelper(helper, puf.deviceId, deps.helperKey);

  // Only cells [0, 2 * pairsScanned) carry selected pairs; a device that can read a range
  // powers up just those (same per-cell distribution as a full read).
  const fast = rangeReader(puf);
  let read: Uint8Array;
  if (fast !== undefined) {
    if (fast.cells !== p.cells)
      throw integrity(`enrolled for ${p.cells} cells, the device has ${fast.cells}`);
    const count = Math.min(p.cells, (2 * p.pairsScanned + 7) & ~7);
    read = fast.readRange(0, count, conditions, rng);
    if (!(read instanceof Uint8Array) || read.length !== count >> 3)
      throw invalid("puf.readRange()", read, `${count >> 3} bytes`);
  } else {
    read = readChecked(puf, conditions, rng);
    if (read.length * 8 !== p.cells)
      throw integrity(`enrolled for ${p.cells} cells, the device has ${read.length * 8}`);
  }

  const votes = new Uint8Array(fuzzyCode().rawBits);
  let v = 0;
  let q = 0; // index of the selected pair
  for (let pair = 0; pair < p.pairsScanned; pair++) {
    if (((p.bitmap[pair >> 3] >> (pair & 7)) & 1) === 0) continue;
    const h = (p.offsets[q >> 3] >> (q & 7)) & 1;
    const a = (read[pair >> 2] >> ((2 * pair) & 7)) & 1;
    const b = (read[pair >> 2] >> ((2 * pair + 1) & 7)) & 1;
    votes[v++] = h ^ a;
    // The last pair of each group contributes one vote so that each group has `rep` (odd) votes.
    if (q % PAIRS_PER_GROUP !== PAIRS_PER_GROUP - 1) votes[v++] = h ^ 1 ^ b;
    q++;
  }
  read.fill(0);
  try {
    return decodeVotes(votes, puf.deviceId, p.body, p.tag);
  } finally {
    votes.fill(0);
  }
}
