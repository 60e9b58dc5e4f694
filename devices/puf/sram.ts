/**
 * SRAM PUF model. Each emulated device has an array of SRAM cells; cell i has a
 * manufacturing skew s_i ~ N(0,1) (threshold-voltage mismatch of its cross-coupled
 * inverters), fixed at "fabrication" and reproducible from (farmSeed, deviceId):
 * HKDF-SHA-256 (RFC 5869) derives a 256-bit per-device key, and AES-256-CTR over that key
 * (a counter-mode PRF, NIST SP 800-38A) expands it into 16 bits per cell, mapped to s_i by
 * the inverse normal CDF. At power-up the cell settles to 1 when
 *
 *     s_i + bias + r(T, V, age) * z > 0,   z ~ N(0,1) fresh on every read,
 *
 * so its one-probability is p_i = Phi((s_i + bias) / r). r = sigma_noise / sigma_process is
 * the noise-to-mismatch ratio; with bias 0 the mean bit error rate against the cell's
 * preferred (noiseless) value is E[Phi(-|s|/r)] = arctan(r)/pi, which is how the defaults
 * are calibrated (Maes, "Physically Unclonable Functions", 2013, ch. 4; Schrijen and van der
 * Leest, DATE 2012: SRAM PUF BER under 10% at nominal, 15-25% at corners). Noise grows away
 * from the nominal corner as independent variance terms:
 *
 *     r^2 = r0^2 + kCold^2 * ((25 - T)+ / 65)^2 + kHot^2 * ((T - 25)+ / 60)^2
 *                + kVolt^2 * ((V - 1) / 0.1)^2 + kAge^2 * (age / 10)
 *
 * (T in degrees C, V relative to nominal supply, age in years). `berOverride` replaces the
 * physical model with independent flips of each cell's preferred value at exactly that rate:
 * a fault-injection knob for "noisy device" tests and the i.i.d. channel the fuzzy-extractor
 * analysis assumes.
 */
import { createCipheriv, randomBytes } from "node:crypto";
import { invalid } from "../../core/errors";
import { hkdfSha256 } from "./hkdf";
import { normalTable } from "./normal";
import { Xoshiro128 } from "./prng";

export interface PufConditions {
  /** Die temperature in degrees Celsius (nominal 25). */
  temperatureC: number;
  /** Supply voltage relative to nominal (nominal 1.0; 0.9 and 1.1 are the +-10% corners). */
  voltage: number;
  /** Age in years of operation (0 = fresh). */
  ageYears: number;
  /** Fault injection: flip each cell's preferred value independently with this probability (0..0.5). */
  berOverride?: number;
}

export const NOMINAL: PufConditions = Object.freeze({ temperatureC: 25, voltage: 1.0, ageYears: 0 });

/** Named corners used by the quality report and tests. */
export const CORNERS: Readonly<Record<string, PufConditions>> = Object.freeze({
  "cold -40C": Object.freeze({ temperatureC: -40, voltage: 1.0, ageYears: 0 }),
  "hot 85C": Object.freeze({ temperatureC: 85, voltage: 1.0, ageYears: 0 }),
  "low V -10%": Object.freeze({ temperatureC: 25, voltage: 0.9, ageYears: 0 }),
  "high V +10%": Object.freeze({ temperatureC: 25, voltage: 1.1, ageYears: 0 }),
  "aged 10y": Object.freeze({ temperatureC: 25, voltage: 1.0, ageYears: 10 }),
  "hot+lowV+aged": Object.freeze({ temperatureC: 85, voltage: 0.9, ageYears: 10 }),
});

/** Coefficients of the noise model (see the module header). */
export interface NoiseModel {
  readonly r0: number;
  readonly kCold: number;
  readonly kHot: number;
  readonly kVolt: number;
  readonly kAge: number;
}

/** r such that the mean BER (bias 0) is `ber`: ber = arctan(r)/pi. */
export function ratioForBer(ber: number): number {
  return Math.tan(Math.PI * ber);
}

/** Mean BER against the preferred value for noise ratio r and bias 0. */
export function berForRatio(r: number): number {
  return Math.atan(r) / Math.PI;
}

function extraVariance(ber: number, r0: number): number {
  return Math.sqrt(ratioForBer(ber) ** 2 - r0 ** 2);
}

const R0 = ratioForBer(0.04);
/**
 * Defaults: 4% BER at nominal; alone, -40C gives 15%, 85C 18%, +-10% supply 10%, ten years
 * of ageing 8%; the worst combined corner (85C, 0.9 V, 10 years) about 21%.
 */
export const DEFAULT_NOISE_MODEL: NoiseModel = Object.freeze({
  r0: R0,
  kCold: extraVariance(0.15, R0),
  kHot: extraVariance(0.18, R0),
  kVolt: extraVariance(0.1, R0),
  kAge: extraVariance(0.08, R0),
});

function checkNumber(field: string, v: unknown, lo: number, hi: number): void {
  if (typeof v !== "number" || !(v >= lo && v <= hi)) throw invalid(field, v, `a number in [${lo}, ${hi}]`);
}

export function assertConditions(c: unknown, field = "conditions"): asserts c is PufConditions {
  if (typeof c !== "object" || c === null)
    throw invalid(field, c, "an object {temperatureC, voltage, ageYears}");
  const o = c as Record<string, unknown>;
  checkNumber(`${field}.temperatureC`, o.temperatureC, -60, 150);
  checkNumber(`${field}.voltage`, o.voltage, 0.5, 1.5);
  checkNumber(`${field}.ageYears`, o.ageYears, 0, 50);
  if (o.berOverride !== undefined) checkNumber(`${field}.berOverride`, o.berOverride, 0, 0.5);
}

/** Noise-to-mismatch ratio r(T, V, age). */
export function noiseRatio(c: PufConditions, model: NoiseModel = DEFAULT_NOISE_MODEL): number {
  assertConditions(c);
  const cold = Math.max(0, 25 - c.temperatureC) / 65;
  const hot = Math.max(0, c.temperatureC - 25) / 60;
  const volt = (c.voltage - 1) / 0.1;
  const a = model.kCold * cold;
  const b = model.kHot * hot;
  const v = model.kVolt * volt;
  const r2 = model.r0 * model.r0 + a * a + b * b + v * v + model.kAge * model.kAge * (c.ageYears / 10);
  return Math.sqrt(r2);
}

/** Mean BER the model predicts for a device with bias 0 (berOverride if set). */
export function expectedBer(c: PufConditions, model: NoiseModel = DEFAULT_NOISE_MODEL): number {
  assertConditions(c);
  return c.berOverride ?? berForRatio(noiseRatio(c, model));
}

export interface PufDevice {
  readonly deviceId: string;
  /** One power-up of the whole array: packed bits, cell i at byte i>>3, bit i&7 (LSB first). */
  read(conditions?: PufConditions, rng?: (n: number) => Uint8Array): Uint8Array;
  /** Number of cells; a device that has it and readRange() lets the fuzzy extractor read only what it uses. */
  readonly cells?: number;
  /**
   * Optional: one power-up of cells [start, start + count) only (both multiples of 8), packed
   * like read() (cell start + j at byte j>>3, bit j&7). Every cell's value must have the same
   * distribution as in read(); cells are independent, so this is read() restricted to a range.
   */
  readRange?(
    start: number,
    count: number,
    conditions?: PufConditions,
    rng?: (n: number) => Uint8Array,
  ): Uint8Array;
  /**
   * Optional: `seeds.length / 16` power-ups of cells [start, start + count), power-up k being
   * exactly readRange(start, count, conditions, () => seeds.subarray(16 k, 16 k + 16)), returned
   * as the bitwise AND and OR of all of them (what enrollment's stability masking keeps).
   */
  readRangeRepeated?(
    start: number,
    count: number,
    conditions: PufConditions,
    seeds: Uint8Array,
  ): { and: Uint8Array; or: Uint8Array };
}

export interface SramPufOptions {
  /** Number of cells, a multiple of 8 in [256, 2^22]; default 32,768 (4 KiB). */
  cells?: number;
  /** Global bias in units of the process sigma (0 = balanced; 0.25 gives ~60% ones). */
  bias?: number;
  /** Noise model coefficients; default DEFAULT_NOISE_MODEL. */
  noise?: NoiseModel;
}

export const DEFAULT_CELLS = 32768;

function defaultRng(n: number): Uint8Array {
  return randomBytes(n);
}

export function assertRng(rng: unknown, field = "rng"): asserts rng is (n: number) => Uint8Array {
  if (typeof rng !== "function") throw invalid(field, rng, "a function (n) => Uint8Array");
}

function draw(rng: (n: number) => Uint8Array, n: number): Uint8Array {
  const b = rng(n);
  if (!(b instanceof Uint8Array) || b.length !== n) throw invalid("rng(n)", b, `${n} bytes`);
  return b;
}

/** A Uint16Array over the keystream reads it little-endian only on a little-endian host. */
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** Zero plaintext for the keystream (never written to, so shared). */
let zeroBuf = Buffer.alloc(0);
function zeros(n: number): Buffer {
  if (zeroBuf.length < n) zeroBuf = Buffer.alloc(Math.max(n, 2 * CODE_CHUNK * 4));
  return zeroBuf.subarray(0, n);
}

/** Cells whose skew codes are derived per AES-CTR call (grown on demand). */
const CODE_CHUNK = 2048;

/**
 * thresholdTable(r, bias)[a] = the smallest u in [0, 65536] with
 * fround(inv[a] + bias) + r * inv[u] > 0 (65536: none), for inv = normalTable(). A cell whose
 * skew code is a reads 1 exactly when its uniform 16-bit noise u >= T[a]: the predicate is
 * monotone in u (r > 0, inv increasing, rounding monotone), so this is the reference sampler's
 * outcome for every u, not an approximation. T is non-increasing in a, so one sweep of two
 * pointers builds the table (about 0.3 ms); tables are shared by every device with the same
 * bias and noise ratio, i.e. built once per condition per process.
 */
const thresholdCache = new Map<string, Int32Array>();
const THRESHOLD_CACHE_MAX = 32;

export function thresholdTable(r: number, bias: number): Int32Array {
  const key = `${r}|${bias}`;
  const hit = thresholdCache.get(key);
  if (hit !== undefined) return hit;
  const inv = normalTable();
  const t = new Int32Array(65536);
  const f32 = new Float32Array(1);
  let u = 65536;
  for (let a = 0; a < 65536; a++) {
    f32[0] = inv[a] + bias; // the margin exactly as stored in a Float32Array
    const m = f32[0];
    // T[a] <= T[a-1]: step u down while u - 1 still reads 1.
    while (u > 0 && m + r * inv[u - 1] > 0) u--;
    t[a] = u;
  }
  if (thresholdCache.size >= THRESHOLD_CACHE_MAX)
    thresholdCache.delete(thresholdCache.keys().next().value as string);
  thresholdCache.set(key, t);
  return t;
}

/** The smallest skew code a with fround(inv[a] + bias) > 0 (65536: none): preferred value = a >= A0. */
function preferredThreshold(bias: number): number {
  const inv = normalTable();
  const f32 = new Float32Array(1);
  let lo = 0;
  let hi = 65536;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    f32[0] = inv[mid] + bias;
    if (f32[0] > 0) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Scratch space for the generator's output, reused across reads (single-threaded). */
let scratch = new Uint32Array(4096);

/**
 * An emulated SRAM PUF. `preferred()` is the noiseless power-up state: an emulator-only view.
 *
 * Reads are exact samplers of the model at 16-bit resolution: cell i reads 1 when
 * m_i + r * Phi^-1((u + 0.5) / 65536) > 0 for a uniform 16-bit u (m_i = s_i + bias), or, under
 * berOverride p, flips its preferred value when u < round(65536 p). The first is evaluated as
 * u >= T[a_i], a per-condition table over the cell's 16-bit skew code (thresholdTable), so a
 * read is one table lookup, one compare and no branch per cell. The uniform values come from
 * xoshiro128** (prng.ts) seeded with 16 bytes of `rng` per read; `readReference()` is the
 * original sampler (2 bytes of `rng` per cell), kept for the benchmark baseline and the test
 * that both have the same per-cell statistics.
 */
export class SramPuf implements PufDevice {
  readonly deviceId: string;
  readonly cells: number;
  readonly bias: number;
  readonly noise: NoiseModel;
  readonly #key: Buffer;
  /** 16-bit skew code of each cell (s_i = inv[code]); cells [0, #derived) are derived. */
  #codes: Uint16Array | undefined;
  #derived = 0;
  #margins: Float32Array | undefined;
  #prefThreshold = -1;

  constructor(farmSeed: Uint8Array, deviceId: string, opts: SramPufOptions = {}) {
    if (!(farmSeed instanceof Uint8Array) || farmSeed.length < 16 || farmSeed.length > 1024)
      throw invalid("farmSeed", farmSeed, "a Uint8Array of 16..1024 bytes");
    assertDeviceId(deviceId);
    if (typeof opts !== "object" || opts === null) throw invalid("opts", opts, "an object");
    const cells = opts.cells ?? DEFAULT_CELLS;
    if (!Number.isInteger(cells) || cells < 256 || cells > 1 << 22 || cells % 8 !== 0)
      throw invalid("opts.cells", cells, "a multiple of 8 in [256, 4194304]");
    const bias = opts.bias ?? 0;
    if (typeof bias !== "number" || !Number.isFinite(bias) || Math.abs(bias) > 4)
      throw invalid("opts.bias", bias, "a number in [-4, 4]");
    this.deviceId = deviceId;
    this.cells = cells;
    this.bias = bias;
    this.noise = opts.noise ?? DEFAULT_NOISE_MODEL;
    this.#key = hkdfSha256(farmSeed, "fleetguard/puf/sram/v1", Buffer.from(deviceId, "utf8"), 32);
  }

  /**
   * Skew codes of cells [0, end): cell i uses bytes 2i, 2i+1 (little-endian) of the
   * AES-256-CTR keystream, so a prefix is derived by itself (the counter starts at block
   * from / 8) and grown on demand: reconstruction touches only the first ~7,000 cells.
   */
  #codesUpTo(end: number): Uint16Array {
    if (this.#codes === undefined) this.#codes = new Uint16Array(this.cells);
    const codes = this.#codes;
    if (end > this.#derived) {
      const from = this.#derived;
      const to = Math.min(this.cells, Math.ceil(end / CODE_CHUNK) * CODE_CHUNK);
      const iv = Buffer.alloc(16);
      iv.writeUInt32BE(from >>> 3, 12); // from is a multiple of 8 cells = one 16-byte block
      const stream = createCipheriv("aes-256-ctr", this.#key, iv).update(zeros(2 * (to - from)));
      if (LITTLE_ENDIAN && (stream.byteOffset & 1) === 0)
        codes.set(new Uint16Array(stream.buffer, stream.byteOffset, to - from), from);
      else for (let i = from, k = 0; i < to; i++, k += 2) codes[i] = stream[k] | (stream[k + 1] << 8);
      stream.fill(0);
      this.#derived = to;
    }
    return codes;
  }

  /** Per-cell margin s_i + bias, derived once on first use. */
  margins(): Float32Array {
    if (this.#margins === undefined) {
      const codes = this.#codesUpTo(this.cells);
      const inv = normalTable();
      const m = new Float32Array(this.cells);
      const bias = this.bias;
      for (let i = 0; i < this.cells; i++) m[i] = inv[codes[i]] + bias;
      this.#margins = m;
    }
    return this.#margins;
  }

  /** The noiseless power-up state (each cell's preferred value), packed like read(). */
  preferred(): Uint8Array {
    const m = this.margins();
    const out = new Uint8Array(this.cells >> 3);
    for (let i = 0; i < this.cells; i++) if (m[i] > 0) out[i >> 3] |= 1 << (i & 7);
    return out;
  }

  read(conditions: PufConditions = NOMINAL, rng: (n: number) => Uint8Array = defaultRng): Uint8Array {
    return this.readRange(0, this.cells, conditions, rng);
  }

  readRange(
    start: number,
    count: number,
    conditions: PufConditions = NOMINAL,
    rng: (n: number) => Uint8Array = defaultRng,
  ): Uint8Array {
    if (!Number.isInteger(start) || start < 0 || start % 8 !== 0 || start > this.cells)
      throw invalid("start", start, `a multiple of 8 in [0, ${this.cells}]`);
    if (!Number.isInteger(count) || count < 0 || count % 8 !== 0 || start + count > this.cells)
      throw invalid("count", count, `a multiple of 8 in [0, ${this.cells - start}]`);
    assertConditions(conditions);
    assertRng(rng);
    const end = start + count;
    const codes = this.#codesUpTo(end);
    const out = new Uint8Array(count >> 3);
    // One 16-bit uniform per cell, two per generator output.
    if (scratch.length < count >> 1) scratch = new Uint32Array(count >> 1);
    const noise = new Xoshiro128(draw(rng, 16)).fill(scratch.subarray(0, count >> 1));
    if (conditions.berOverride !== undefined) {
      // Independent flips of the preferred value (code >= A0) at the given rate, 16-bit resolution.
      if (this.#prefThreshold < 0) this.#prefThreshold = preferredThreshold(this.bias);
      const a0m1 = this.#prefThreshold - 1;
      const thr = Math.round(conditions.berOverride * 65536);
      for (let byte = 0, i = start, w = 0; i < end; byte++) {
        let v = 0;
        for (let b = 0; b < 8; b += 2, i += 2, w++) {
          const x = noise[w];
          const lo = ((a0m1 - codes[i]) >>> 31) ^ (((x & 0xffff) - thr) >>> 31);
          const hi = ((a0m1 - codes[i + 1]) >>> 31) ^ (((x >>> 16) - thr) >>> 31);
          v |= (lo | (hi << 1)) << b;
        }
        out[byte] = v;
      }
    } else {
      // Cell reads 1 iff u >= T[code]: 1 ^ sign(u - T).
      const T = thresholdTable(noiseRatio(conditions, this.noise), this.bias);
      for (let byte = 0, i = start, w = 0; i < end; byte++) {
        let v = 0;
        for (let b = 0; b < 8; b += 2, i += 2, w++) {
          const x = noise[w];
          const lo = 1 ^ (((x & 0xffff) - T[codes[i]]) >>> 31);
          const hi = 1 ^ (((x >>> 16) - T[codes[i + 1]]) >>> 31);
          v |= (lo | (hi << 1)) << b;
        }
        out[byte] = v;
      }
    }
    return out;
  }

  /**
   * Several power-ups of a range at once (PufDevice.readRangeRepeated): the same samples as
   * that many readRange() calls with the given 16-byte seeds, but each cell's threshold is
   * looked up once and compared with all of its noise values (the generators' outputs are
   * interleaved, read k at index w * reads + k), instead of one table pass per power-up.
   */
  readRangeRepeated(
    start: number,
    count: number,
    conditions: PufConditions,
    seeds: Uint8Array,
  ): { and: Uint8Array; or: Uint8Array } {
    if (!Number.isInteger(start) || start < 0 || start % 8 !== 0 || start > this.cells)
      throw invalid("start", start, `a multiple of 8 in [0, ${this.cells}]`);
    if (!Number.isInteger(count) || count < 0 || count % 8 !== 0 || start + count > this.cells)
      throw invalid("count", count, `a multiple of 8 in [0, ${this.cells - start}]`);
    assertConditions(conditions);
    if (!(seeds instanceof Uint8Array) || seeds.length < 16 || seeds.length > 1024 || seeds.length % 16 !== 0)
      throw invalid("seeds", seeds, "16 bytes per power-up, 1..64 power-ups");
    const reads = seeds.length >> 4;
    const seedOf = (k: number) => () => seeds.subarray(16 * k, 16 * k + 16);
    if (conditions.berOverride !== undefined) {
      // fault injection only (enrollment runs at real conditions): read by read
      const and = this.readRange(start, count, conditions, seedOf(0));
      const or = and.slice();
      for (let k = 1; k < reads; k++) {
        const r = this.readRange(start, count, conditions, seedOf(k));
        for (let i = 0; i < r.length; i++) {
          and[i] &= r[i];
          or[i] |= r[i];
        }
      }
      return { and, or };
    }
    const end = start + count;
    const codes = this.#codesUpTo(end);
    const words = count >> 1;
    if (scratch.length < reads * words) scratch = new Uint32Array(reads * words);
    const noise = scratch;
    for (let k = 0; k < reads; k++)
      new Xoshiro128(seeds.subarray(16 * k, 16 * k + 16)).fillStrided(noise, k, reads, words);
    // Cell reads 1 iff u >= T[code]. T = 0 (always 1) and T = 65536 (always 0) are common at
    // low noise (about 60% of cells at nominal): such a cell needs no comparisons.
    const T = thresholdTable(noiseRatio(conditions, this.noise), this.bias);
    const and = new Uint8Array(count >> 3);
    const or = new Uint8Array(count >> 3);
    for (let byte = 0, i = start, w = 0; i < end; byte++) {
      let va = 0;
      let vo = 0;
      for (let b = 0; b < 8; b += 2, i += 2, w++) {
        const t0 = T[codes[i]];
        const t1 = T[codes[i + 1]];
        const j0 = w * reads;
        let and0: number;
        let or0: number;
        let and1: number;
        let or1: number;
        if ((t0 & 0xffff) === 0) {
          // fixed cell: 1 when T = 0, 0 when T = 65536
          and0 = or0 = (t0 >>> 16) ^ 1;
        } else {
          and0 = 1;
          or0 = 0;
          for (let j = j0, e = j0 + reads; j < e; j++) {
            const b0 = 1 ^ (((noise[j] & 0xffff) - t0) >>> 31);
            and0 &= b0;
            or0 |= b0;
          }
        }
        if ((t1 & 0xffff) === 0) {
          and1 = or1 = (t1 >>> 16) ^ 1;
        } else {
          and1 = 1;
          or1 = 0;
          for (let j = j0, e = j0 + reads; j < e; j++) {
            const b1 = 1 ^ (((noise[j] >>> 16) - t1) >>> 31);
            and1 &= b1;
            or1 |= b1;
          }
        }
        va |= (and0 | (and1 << 1)) << b;
        vo |= (or0 | (or1 << 1)) << b;
      }
      and[byte] = va;
      or[byte] = vo;
    }
    return { and, or };
  }

  /**
   * The original sampler: 2 bytes of `rng` per cell, one table lookup per cell. Same
   * distribution as read(); kept only as the benchmark's baseline and the statistical test's
   * reference.
   */
  readReference(
    conditions: PufConditions = NOMINAL,
    rng: (n: number) => Uint8Array = defaultRng,
  ): Uint8Array {
    assertConditions(conditions);
    assertRng(rng);
    const m = this.margins();
    const n = this.cells;
    const out = new Uint8Array(n >> 3);
    const u = draw(rng, 2 * n);
    if (conditions.berOverride !== undefined) {
      const thr = Math.round(conditions.berOverride * 65536);
      for (let byte = 0, i = 0; byte < out.length; byte++) {
        let v = 0;
        for (let b = 0; b < 8; b++, i++) {
          const pref = m[i] > 0 ? 1 : 0;
          const flip = (u[2 * i] | (u[2 * i + 1] << 8)) < thr ? 1 : 0;
          v |= (pref ^ flip) << b;
        }
        out[byte] = v;
      }
    } else {
      const r = noiseRatio(conditions, this.noise);
      const inv = normalTable();
      for (let byte = 0, i = 0; byte < out.length; byte++) {
        let v = 0;
        for (let b = 0; b < 8; b++, i++) {
          if (m[i] + r * inv[u[2 * i] | (u[2 * i + 1] << 8)] > 0) v |= 1 << b;
        }
        out[byte] = v;
      }
    }
    return out;
  }
}

function hasControlChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

export function assertDeviceId(deviceId: unknown): asserts deviceId is string {
  if (
    typeof deviceId !== "string" ||
    deviceId.length === 0 ||
    deviceId.length > 256 ||
    hasControlChar(deviceId)
  )
    throw invalid(
      "deviceId",
      deviceId,
      "a non-empty string of at most 256 characters without control characters",
    );
}
