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
import { createCipheriv, hkdfSync, randomBytes } from "node:crypto";
import { invalid } from "../../core/errors";
import { normalTable } from "./normal";

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

export function assertConditions(c: unknown, field = "conditions"): asserts c is PufConditions {
  if (typeof c !== "object" || c === null)
    throw invalid(field, c, "an object {temperatureC, voltage, ageYears}");
  const o = c as Record<string, unknown>;
  const num = (k: string, lo: number, hi: number) => {
    const v = o[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi)
      throw invalid(`${field}.${k}`, v, `a number in [${lo}, ${hi}]`);
  };
  num("temperatureC", -60, 150);
  num("voltage", 0.5, 1.5);
  num("ageYears", 0, 50);
  if (o.berOverride !== undefined) num("berOverride", 0, 0.5);
}

/** Noise-to-mismatch ratio r(T, V, age). */
export function noiseRatio(c: PufConditions, model: NoiseModel = DEFAULT_NOISE_MODEL): number {
  assertConditions(c);
  const cold = Math.max(0, 25 - c.temperatureC) / 65;
  const hot = Math.max(0, c.temperatureC - 25) / 60;
  const volt = (c.voltage - 1) / 0.1;
  const r2 =
    model.r0 ** 2 +
    (model.kCold * cold) ** 2 +
    (model.kHot * hot) ** 2 +
    (model.kVolt * volt) ** 2 +
    model.kAge ** 2 * (c.ageYears / 10);
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

/** An emulated SRAM PUF. `preferred()` is the noiseless power-up state: an emulator-only view. */
export class SramPuf implements PufDevice {
  readonly deviceId: string;
  readonly cells: number;
  readonly bias: number;
  readonly noise: NoiseModel;
  readonly #key: Buffer;
  #margins: Float32Array | undefined;

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
    this.#key = Buffer.from(
      hkdfSync("sha256", farmSeed, "fleetguard/puf/sram/v1", Buffer.from(deviceId, "utf8"), 32),
    );
  }

  /** Per-cell margin s_i + bias, derived once on first use. */
  margins(): Float32Array {
    if (this.#margins === undefined) {
      const n = this.cells;
      const cipher = createCipheriv("aes-256-ctr", this.#key, Buffer.alloc(16));
      const stream = cipher.update(Buffer.alloc(2 * n));
      const inv = normalTable();
      const m = new Float32Array(n);
      const bias = this.bias;
      for (let i = 0; i < n; i++) m[i] = inv[stream[2 * i] | (stream[2 * i + 1] << 8)] + bias;
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
    assertConditions(conditions);
    assertRng(rng);
    const m = this.margins();
    const n = this.cells;
    const out = new Uint8Array(n >> 3);
    const u = draw(rng, 2 * n);
    if (conditions.berOverride !== undefined) {
      // Independent flips at the given rate, 16-bit resolution.
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
