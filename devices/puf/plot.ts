/**
 * Minimal PNG histogram plots with no dependencies: an RGB pixel canvas, a 5x7 bitmap font
 * (upper case, digits, punctuation), and a PNG encoder (PNG spec, W3C REC 2003: IHDR, one
 * zlib-compressed IDAT with filter type 0 per row, IEND; CRC-32 per chunk). Used by the PUF
 * quality report for the inter-/intra-device Hamming-distance histograms.
 */
import { deflateSync } from "node:zlib";

const GLYPHS: Record<string, number[]> = {
  "0": [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
  "1": [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
  "2": [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
  "3": [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
  "4": [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
  "5": [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
  "6": [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
  "7": [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
  "8": [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
  "9": [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
  A: [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
  B: [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e],
  C: [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e],
  D: [0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c],
  E: [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
  F: [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10],
  G: [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f],
  H: [0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
  I: [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
  J: [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c],
  K: [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
  L: [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f],
  M: [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
  N: [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
  O: [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
  P: [0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10],
  Q: [0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d],
  R: [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
  S: [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
  T: [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
  U: [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
  V: [0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04],
  W: [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a],
  X: [0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11],
  Y: [0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04],
  Z: [0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f],
  " ": [0, 0, 0, 0, 0, 0, 0],
  ".": [0, 0, 0, 0, 0, 0x0c, 0x0c],
  ",": [0, 0, 0, 0, 0x0c, 0x04, 0x08],
  "%": [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
  "-": [0, 0, 0, 0x1f, 0, 0, 0],
  "+": [0, 0x04, 0x04, 0x1f, 0x04, 0x04, 0],
  "(": [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
  ")": [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
  "/": [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
  ":": [0, 0x0c, 0x0c, 0, 0x0c, 0x0c, 0],
  "=": [0, 0, 0x1f, 0, 0x1f, 0, 0],
  _: [0, 0, 0, 0, 0, 0, 0x1f],
  "<": [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
  ">": [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
  "[": [0x0e, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0e],
  "]": [0x0e, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0e],
  "|": [0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
  "#": [0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a],
  "*": [0, 0x04, 0x15, 0x0e, 0x15, 0x04, 0],
  "~": [0, 0, 0x08, 0x15, 0x02, 0, 0],
  "±": [0x04, 0x04, 0x1f, 0x04, 0x04, 0, 0x1f],
  "?": [0x0e, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
};

export type Rgb = readonly [number, number, number];

export class Canvas {
  readonly width: number;
  readonly height: number;
  readonly pixels: Uint8Array;

  constructor(width: number, height: number, background: Rgb = [255, 255, 255]) {
    this.width = width;
    this.height = height;
    this.pixels = new Uint8Array(width * height * 3);
    this.fillRect(0, 0, width, height, background);
  }

  /** Fill a rectangle; alpha < 1 blends over what is there. */
  fillRect(x: number, y: number, w: number, h: number, c: Rgb, alpha = 1): void {
    const x0 = Math.max(0, Math.round(x));
    const y0 = Math.max(0, Math.round(y));
    const x1 = Math.min(this.width, Math.round(x + w));
    const y1 = Math.min(this.height, Math.round(y + h));
    for (let yy = y0; yy < y1; yy++)
      for (let xx = x0; xx < x1; xx++) {
        const p = (yy * this.width + xx) * 3;
        for (let k = 0; k < 3; k++)
          this.pixels[p + k] = Math.round(alpha * c[k] + (1 - alpha) * this.pixels[p + k]);
      }
  }

  hline(x0: number, x1: number, y: number, c: Rgb): void {
    this.fillRect(Math.min(x0, x1), y, Math.abs(x1 - x0) + 1, 1, c);
  }

  vline(x: number, y0: number, y1: number, c: Rgb): void {
    this.fillRect(x, Math.min(y0, y1), 1, Math.abs(y1 - y0) + 1, c);
  }

  /** Text in the 5x7 font at integer scale; returns its width in pixels. */
  text(s: string, x: number, y: number, c: Rgb, scale = 2, vertical = false): number {
    const adv = 6 * scale;
    let i = 0;
    for (const ch of s.toUpperCase()) {
      const g = GLYPHS[ch] ?? GLYPHS["?"];
      for (let row = 0; row < 7; row++)
        for (let col = 0; col < 5; col++)
          if ((g[row] >> (4 - col)) & 1) {
            if (vertical) this.fillRect(x + row * scale, y - i * adv - col * scale - scale, scale, scale, c);
            else this.fillRect(x + i * adv + col * scale, y + row * scale, scale, scale, c);
          }
      i++;
    }
    return i * adv - scale;
  }

  static textWidth(s: string, scale = 2): number {
    return [...s].length * 6 * scale - scale;
  }

  toPng(): Buffer {
    const raw = Buffer.alloc((this.width * 3 + 1) * this.height);
    for (let y = 0; y < this.height; y++) {
      raw[y * (this.width * 3 + 1)] = 0;
      raw.set(
        this.pixels.subarray(y * this.width * 3, (y + 1) * this.width * 3),
        y * (this.width * 3 + 1) + 1,
      );
    }
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(this.width, 0);
    ihdr.writeUInt32BE(this.height, 4);
    ihdr[8] = 8; // bit depth
    ihdr[9] = 2; // truecolour RGB
    return Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk("IHDR", ihdr),
      chunk("IDAT", deflateSync(raw, { level: 9 })),
      chunk("IEND", Buffer.alloc(0)),
    ]);
  }
}

let crcTable: Uint32Array | undefined;
export function crc32(data: Uint8Array): number {
  if (crcTable === undefined) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

export interface Series {
  label: string;
  values: ArrayLike<number>;
  color: Rgb;
}

export interface HistogramSpec {
  title: string;
  xLabel: string;
  /** Range of the x axis and bin count. */
  xMin: number;
  xMax: number;
  bins: number;
  /** Multiply x tick values by this for labels (100 for percent). */
  xScale?: number;
  xUnit?: string;
  series: Series[];
  width?: number;
  height?: number;
}

function niceStep(range: number, target: number): number {
  const raw = range / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function fmtTick(v: number, step: number): string {
  let d = 0;
  while (d < 6 && Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) > 1e-9) d++;
  return v.toFixed(d);
}

/** Histogram(s) normalized per series: y = percent of that series' samples per bin. */
export function histogramPng(spec: HistogramSpec): Buffer {
  const W = spec.width ?? 960;
  const H = spec.height ?? 560;
  const L = 100;
  const R = 30;
  const T = 70;
  const B = 90;
  const c = new Canvas(W, H);
  const black: Rgb = [0, 0, 0];
  const grey: Rgb = [225, 225, 225];
  const pw = W - L - R;
  const ph = H - T - B;
  const binW = (spec.xMax - spec.xMin) / spec.bins;
  const hists = spec.series.map((s) => {
    const h = new Float64Array(spec.bins);
    let n = 0;
    for (let i = 0; i < s.values.length; i++) {
      const v = s.values[i];
      n++;
      const b = Math.floor((v - spec.xMin) / binW);
      if (b >= 0 && b < spec.bins) h[b]++;
      else if (v === spec.xMax) h[spec.bins - 1]++;
    }
    for (let b = 0; b < spec.bins; b++) h[b] = n > 0 ? (100 * h[b]) / n : 0;
    return h;
  });
  const yMaxRaw = Math.max(1e-9, ...hists.map((h) => Math.max(...h)));
  const yStep = niceStep(yMaxRaw, 6);
  const yMax = Math.ceil((yMaxRaw * 1.05) / yStep) * yStep;
  const X = (v: number) => L + ((v - spec.xMin) / (spec.xMax - spec.xMin)) * pw;
  const Y = (v: number) => T + ph - (v / yMax) * ph;
  // grid and y ticks
  for (let v = 0; v <= yMax + 1e-12; v += yStep) {
    const y = Math.round(Y(v));
    c.hline(L, L + pw, y, grey);
    c.hline(L - 6, L, y, black);
    const label = `${fmtTick(v, yStep)}%`;
    c.text(label, L - 10 - Canvas.textWidth(label), y - 7, black);
  }
  // bars
  spec.series.forEach((s, si) => {
    const h = hists[si];
    for (let b = 0; b < spec.bins; b++) {
      if (h[b] <= 0) continue;
      const x0 = X(spec.xMin + b * binW);
      const x1 = X(spec.xMin + (b + 1) * binW);
      const y = Y(h[b]);
      c.fillRect(
        x0,
        y,
        Math.max(1, x1 - x0 - (x1 - x0 > 4 ? 1 : 0)),
        T + ph - y,
        s.color,
        spec.series.length > 1 ? 0.7 : 1,
      );
    }
  });
  // axes and x ticks
  c.hline(L, L + pw, T + ph, black);
  c.vline(L, T, T + ph, black);
  const xs = spec.xScale ?? 1;
  const xStep = niceStep((spec.xMax - spec.xMin) * xs, 10) / xs;
  for (let v = Math.ceil(spec.xMin / xStep - 1e-9) * xStep; v <= spec.xMax + 1e-12; v += xStep) {
    const x = Math.round(X(v));
    c.vline(x, T + ph, T + ph + 6, black);
    const label = `${fmtTick(v * xs, xStep * xs)}${spec.xUnit ?? ""}`;
    c.text(label, x - Canvas.textWidth(label) / 2, T + ph + 12, black);
  }
  c.text(spec.xLabel, L + pw / 2 - Canvas.textWidth(spec.xLabel) / 2, H - 40, black);
  const yl = "SHARE OF SAMPLES PER BIN";
  c.text(yl, 14, T + ph / 2 + Canvas.textWidth(yl) / 2, black, 2, true);
  c.text(spec.title, W / 2 - Canvas.textWidth(spec.title, 3) / 2, 18, black, 3);
  // legend
  let ly = T + 10;
  for (const s of spec.series) {
    const lw = Canvas.textWidth(s.label);
    const lx = L + pw - lw - 40;
    c.fillRect(lx, ly, 20, 14, s.color, 0.7);
    c.text(s.label, lx + 28, ly, black);
    ly += 24;
  }
  return c.toPng();
}
