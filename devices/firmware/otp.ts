/**
 * Emulated one-time-programmable fuses, after the OTP of secure MCUs such as the STM32MP1
 * (BSEC): an array of 32-bit words grouped in regions. Fuses only ever go from 0 to 1.
 * "bits" regions accept more set bits at any time (a lifecycle thermometer code); "words"
 * regions take one write per word, since real word-level OTP carries ECC and cannot be
 * re-programmed. A region can be locked (no more programming), and a "secret" region is not
 * readable from outside the chip. Zeroization blows every bit of a region, which physics
 * allows even through a lock. Programming checks everything before it burns anything, so a
 * refused write changes no fuse.
 */

import { FleetError, invalid } from "../../core/errors";
import type { OtpRegionView } from "../../core/station/messages";

export interface Region {
  name: string;
  offset: number;
  words: number;
  mode: "bits" | "words";
  secret: boolean;
}

/** The fuse map every emulated device has (128 words, 512 bytes). */
export const REGIONS: readonly Region[] = [
  { name: "lifecycle", offset: 0, words: 1, mode: "bits", secret: false },
  { name: "config", offset: 1, words: 3, mode: "bits", secret: false },
  { name: "trust", offset: 4, words: 16, mode: "words", secret: false },
  { name: "inject", offset: 20, words: 4, mode: "words", secret: false },
  { name: "oem", offset: 24, words: 64, mode: "words", secret: true },
  { name: "spare", offset: 88, words: 40, mode: "words", secret: false },
];
export const OTP_WORDS = 128;
export type RegionName = "lifecycle" | "config" | "trust" | "inject" | "oem" | "spare";

/** config word bits */
export const CONFIG = { PUF_DISABLED: 1, INJECTED: 2 } as const;

const byName = new Map(REGIONS.map((r, i) => [r.name, { ...r, index: i }]));

function region(name: string): Region & { index: number } {
  const r = byName.get(name);
  if (!r) throw invalid("otp.region", name, REGIONS.map((x) => x.name).join(", "));
  return r;
}

/** The map a station reads: the same shape the station protocol carries. */
export type OtpView = OtpRegionView;

export class Otp {
  readonly words: Uint32Array;
  /** bit i set: region i locked */
  locks: number;

  constructor(words?: Uint32Array, locks = 0) {
    // a copy (slice, not Uint32Array.from: that goes through the iterator, word by word)
    this.words = words ? words.slice() : new Uint32Array(OTP_WORDS);
    if (this.words.length !== OTP_WORDS) throw invalid("otp.words", this.words.length, `${OTP_WORDS}`);
    this.locks = locks;
  }

  clone(): Otp {
    return new Otp(this.words, this.locks);
  }

  isLocked(name: RegionName): boolean {
    return (this.locks & (1 << region(name).index)) !== 0;
  }

  /** Read a region as big-endian bytes (the chip's own view: secret regions included). */
  read(name: RegionName): Buffer {
    const r = region(name);
    const out = Buffer.alloc(r.words * 4);
    for (let i = 0; i < r.words; i++) out.writeUInt32BE(this.words[r.offset + i]!, i * 4);
    return out;
  }

  /**
   * Program `data` (big-endian, a whole number of words, zero-padded if shorter) at word
   * `at` of a region. Throws CONFLICT, burning nothing, if the region is locked or a word
   * would have to lose a bit (bits mode) or be written twice with another value (words mode).
   */
  program(name: RegionName, data: Uint8Array, at = 0): void {
    const r = region(name);
    const n = Math.ceil(data.length / 4);
    if (at < 0 || at + n > r.words)
      throw invalid(`otp.${name}`, `${n} words at ${at}`, `within ${r.words} words`);
    if (this.isLocked(name))
      throw new FleetError("CONFLICT", `otp.${name}: got a write, want none (region locked)`);
    const padded = Buffer.alloc(n * 4);
    padded.set(data);
    const next: number[] = [];
    for (let i = 0; i < n; i++) {
      const cur = this.words[r.offset + at + i]!;
      const v = padded.readUInt32BE(i * 4);
      if (r.mode === "bits") next.push((cur | v) >>> 0);
      else if (cur !== 0 && cur !== v)
        throw new FleetError("CONFLICT", `otp.${name}[${at + i}]: got a second write, want one (word fused)`);
      else next.push(v);
    }
    next.forEach((v, i) => {
      this.words[r.offset + at + i] = v;
    });
  }

  lock(name: RegionName): void {
    this.locks |= 1 << region(name).index;
  }

  /** Blow every bit of a region (irreversible destruction of what it held), and lock it. */
  zeroize(name: RegionName): void {
    const r = region(name);
    this.words.fill(0xffffffff, r.offset, r.offset + r.words);
    this.lock(name);
  }

  /** The fuse map as seen from outside: secret regions show only how much is programmed. */
  map(): OtpView[] {
    return REGIONS.map((r, i) => {
      let programmed = 0;
      for (let w = 0; w < r.words; w++) if (this.words[r.offset + w] !== 0) programmed++;
      return {
        name: r.name,
        offset: r.offset,
        words: r.words,
        programmed,
        locked: (this.locks & (1 << i)) !== 0,
        secret: r.secret,
        data: r.secret ? null : this.read(r.name as RegionName),
      };
    });
  }

  /** Compact encoding: programmed words only, as (index u8, value u32) pairs. */
  encode(): Buffer {
    const words = this.words;
    let n = 0;
    for (let i = 0; i < words.length; i++) if (words[i] !== 0) n++;
    const out = Buffer.alloc(4 + n * 5);
    out.writeUInt32BE(this.locks, 0);
    let p = 4;
    for (let i = 0; i < words.length; i++) {
      const w = words[i]!;
      if (w === 0) continue;
      out[p] = i;
      out.writeUInt32BE(w, p + 1);
      p += 5;
    }
    return out;
  }

  static decode(b: Uint8Array): Otp {
    const buf = Buffer.from(b.buffer, b.byteOffset, b.length);
    if (buf.length < 4 || (buf.length - 4) % 5 !== 0) throw invalid("otp", buf, "4 + 5n bytes");
    const otp = new Otp(undefined, buf.readUInt32BE(0));
    for (let p = 4; p < buf.length; p += 5) {
      const i = buf[p]!;
      if (i >= OTP_WORDS) throw invalid("otp.index", i, `< ${OTP_WORDS}`);
      otp.words[i] = buf.readUInt32BE(p + 1);
    }
    return otp;
  }
}
