import { inflateSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { createPufDevice, NOMINAL } from "../../../devices/puf";
import {
  bitAliasing,
  fractionalHd,
  hammingWeight,
  majority,
  minEntropyPerBit,
  pairwiseHd,
  stats,
  uniformity,
} from "../../../devices/puf/metrics";
import { crc32, histogramPng } from "../../../devices/puf/plot";
import { expectFleetError } from "./helpers";

describe("PUF quality metrics", () => {
  it("basic bit counting", () => {
    expect(hammingWeight(Uint8Array.from([0xff, 0x01, 0, 0x80, 0x0f]))).toBe(14);
    expect(fractionalHd(Uint8Array.from([0, 0]), Uint8Array.from([0xff, 0]))).toBe(0.5);
    expect(fractionalHd(Uint8Array.from([1, 2, 3, 4, 5]).subarray(1), Uint8Array.from([2, 3, 4, 5]))).toBe(0);
    expect(uniformity(Uint8Array.from([0xf0, 0x0f]))).toBe(0.5);
    expect(minEntropyPerBit([0.5, 0.5])).toBe(1);
    expect(minEntropyPerBit([0, 1])).toBe(0);
    expect(minEntropyPerBit([0.75])).toBeCloseTo(-Math.log2(0.75), 12);
    expect(Array.from(majority([Uint8Array.from([1]), Uint8Array.from([3]), Uint8Array.from([2])]))).toEqual([
      3,
    ]);
    expect(stats([1, 2, 3])).toEqual({ mean: 2, std: 1, min: 1, max: 3, n: 3 });
  });

  it("a small population lands near the ideal values", () => {
    const farm = new Uint8Array(32).fill(21);
    const refs: Uint8Array[] = [];
    const intra: number[] = [];
    for (let d = 0; d < 40; d++) {
      const dev = createPufDevice(farm, `m-${d}`, { cells: 8192 });
      const reads = Array.from({ length: 5 }, () => dev.read(NOMINAL));
      const ref = majority(reads);
      refs.push(ref);
      for (const r of reads) intra.push(fractionalHd(r, ref));
    }
    const u = stats(refs.map(uniformity));
    expect(Math.abs(u.mean - 0.5)).toBeLessThan(0.01);
    const inter = stats(pairwiseHd(refs));
    expect(inter.n).toBe(780);
    expect(Math.abs(inter.mean - 0.5)).toBeLessThan(0.01);
    const alias = bitAliasing(refs);
    expect(Math.abs(stats(alias).mean - 0.5)).toBeLessThan(0.01);
    const rel = 1 - stats(intra).mean;
    expect(rel).toBeGreaterThan(0.95); // configured BER 4%, majority-of-5 reference
    expect(rel).toBeLessThan(0.985);
    expect(minEntropyPerBit(alias)).toBeGreaterThan(0.8); // about 0.82 expected for 40 devices
  });

  it("rejects wrong arguments", () => {
    expectFleetError(() => fractionalHd(new Uint8Array(2), new Uint8Array(3)), "INVALID_INPUT");
    expectFleetError(() => hammingWeight("x" as never), "INVALID_INPUT");
    expectFleetError(() => bitAliasing([]), "INVALID_INPUT");
    expectFleetError(() => pairwiseHd([new Uint8Array(1)]), "INVALID_INPUT");
    expectFleetError(() => minEntropyPerBit([]), "INVALID_INPUT");
    expectFleetError(() => majority([]), "INVALID_INPUT");
    expectFleetError(() => stats([]), "INVALID_INPUT");
  });
});

describe("PNG histogram", () => {
  it("CRC-32 matches the standard check value", () => {
    expect(crc32(Buffer.from("123456789"))).toBe(0xcbf43926);
  });

  it("writes a valid PNG with correct chunk CRCs and the requested size", () => {
    const png = histogramPng({
      title: "TEST",
      xLabel: "X",
      xMin: 0,
      xMax: 1,
      bins: 10,
      series: [{ label: "A", values: [0.1, 0.2, 0.25, 0.9], color: [0, 0, 255] }],
      width: 300,
      height: 200,
    });
    expect(png.subarray(0, 8).toString("hex")).toBe("89504e470d0a1a0a");
    let off = 8;
    const types: string[] = [];
    let idat = Buffer.alloc(0);
    while (off < png.length) {
      const len = png.readUInt32BE(off);
      const type = png.subarray(off + 4, off + 8).toString("ascii");
      const data = png.subarray(off + 8, off + 8 + len);
      expect(png.readUInt32BE(off + 8 + len)).toBe(crc32(png.subarray(off + 4, off + 8 + len)));
      if (type === "IHDR") {
        expect(data.readUInt32BE(0)).toBe(300);
        expect(data.readUInt32BE(4)).toBe(200);
      }
      if (type === "IDAT") idat = Buffer.concat([idat, data]);
      types.push(type);
      off += 12 + len;
    }
    expect(types).toEqual(["IHDR", "IDAT", "IEND"]);
    const raw = inflateSync(idat);
    expect(raw.length).toBe((300 * 3 + 1) * 200);
    // Some pixels are the bar colour.
    let blue = 0;
    for (let i = 0; i + 2 < raw.length; i++) if (raw[i] < 100 && raw[i + 1] < 100 && raw[i + 2] > 150) blue++;
    expect(blue).toBeGreaterThan(100);
  });
});
