import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { decode, encode, type Value } from "../../../core/station/cbor";
import { encodeFrame, FrameDecoder, HEADER_SIZE, Op, Status } from "../../../core/station/frame";

const value: fc.Arbitrary<Value> = fc.letrec<{ v: Value }>((tie) => ({
  v: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.maxSafeInteger(),
    fc.integer({ min: -1000, max: 1000 }),
    fc.string(),
    fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("v"), { maxLength: 5 }),
    fc.dictionary(fc.string({ maxLength: 8 }), tie("v"), { maxKeys: 5 }),
  ),
})).v;

const norm = (v: Value): unknown =>
  v instanceof Uint8Array
    ? { bytes: Buffer.from(v).toString("hex") }
    : Array.isArray(v)
      ? v.map(norm)
      : v && typeof v === "object"
        ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x!)]))
        : v;

describe("CBOR subset", () => {
  it("round-trips any supported value", () => {
    fc.assert(
      fc.property(value, (v) => {
        expect(norm(decode(encode(v)))).toEqual(norm(v));
      }),
      { numRuns: 300 },
    );
  });
  it("decodes any text, short or long, valid UTF-8 or not, as Buffer's UTF-8 decoder does", () => {
    // the decoder reads short ASCII text byte by byte: the result must be the same as the general path
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
        const head = bytes.length < 24 ? [0x60 | bytes.length] : [0x78, bytes.length];
        const got = decode(Buffer.concat([Buffer.from(head), bytes]));
        expect(got).toBe(Buffer.from(bytes).toString("utf8"));
      }),
      { numRuns: 500 },
    );
    for (const s of ["", "a".repeat(32), "a".repeat(33), "Zürich", "ü".repeat(16), "日本", "\u{1F600}"])
      expect(decode(encode({ [s]: s }))).toEqual(Object.assign(Object.create(null), { [s]: s }));
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 40 }), (s) => {
        expect(decode(encode(s))).toBe(Buffer.from(s, "utf8").toString("utf8"));
      }),
      { numRuns: 300 },
    );
  });
  it("matches RFC 8949 Appendix A encodings", () => {
    const hex = (v: Value) => encode(v).toString("hex");
    expect(hex(0)).toBe("00");
    expect(hex(23)).toBe("17");
    expect(hex(24)).toBe("1818");
    expect(hex(1000)).toBe("1903e8");
    expect(hex(1000000)).toBe("1a000f4240");
    expect(hex(-1)).toBe("20");
    expect(hex(-1000)).toBe("3903e7");
    expect(hex(Number.MAX_SAFE_INTEGER)).toBe("1b001fffffffffffff");
    expect(hex("IETF")).toBe("6449455446");
    expect(hex("\u00fc")).toBe("62c3bc");
    expect(hex(Buffer.from([1, 2, 3, 4]))).toBe("4401020304");
    expect(hex([1, [2, 3], [4, 5]])).toBe("8301820203820405");
    expect(hex({ a: 1, b: [2, 3] })).toBe("a26161016162820203");
    expect(hex(true)).toBe("f5");
    expect(hex(null)).toBe("f6");
  });
  it("refuses what it does not support, on both sides", () => {
    expect(() => encode(1.5)).toThrow(FleetError);
    for (const h of [
      "f97e00",
      "c11a514b67b0",
      "5f42010243030405ff",
      "a2616101616102",
      "a1010203",
      "8201",
      "1b0020000000000000",
      "00ff",
    ])
      expect(() => decode(Buffer.from(h, "hex")), h).toThrow(FleetError);
  });
  it("never throws anything but FleetError on random bytes, and never allocates from a huge count", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
        try {
          decode(b);
        } catch (e) {
          expect(e).toBeInstanceOf(FleetError);
        }
      }),
      { numRuns: 2000 },
    );
    expect(() => decode(Buffer.from("9bffffffffffffff", "hex"))).toThrow(FleetError);
    expect(() => decode(Buffer.from("9a7fffffff", "hex"))).toThrow(/truncated/);
  });
  it("treats __proto__ as a plain key", () => {
    const v = decode(encode(JSON.parse('{"__proto__": {"polluted": 1}}'))) as Record<string, unknown>;
    expect(Object.keys(v)).toEqual(["__proto__"]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
  it("nesting deeper than 16 is refused", () => {
    let v: Value = 1;
    for (let i = 0; i < 20; i++) v = [v];
    expect(() => encode(v)).toThrow(/depth/);
    expect(() => decode(Buffer.concat([Buffer.alloc(20, 0x81), Buffer.from([1])]))).toThrow(/nesting/);
  });
});

describe("frame decoder", () => {
  const f1 = encodeFrame(Op.IDENTIFY, 7, encode({ device: "x" }));
  const f2 = encodeFrame(Op.STATUS, 8, Buffer.alloc(0));
  it("reassembles frames split at every byte boundary", () => {
    const all = Buffer.concat([f1, f2]);
    for (let cut = 0; cut <= all.length; cut++) {
      const d = new FrameDecoder();
      const ev = [...d.push(all.subarray(0, cut)), ...d.push(all.subarray(cut))];
      expect(ev.map((e) => (e.kind === "frame" ? e.header.requestId : -1))).toEqual([7, 8]);
    }
  });
  it("a wrong version is skipped with UNSUPPORTED_VERSION, the stream goes on", () => {
    const v2 = encodeFrame(Op.PING, 9, Buffer.from([0xa0]), 0, 0, 2);
    const ev = new FrameDecoder().push(Buffer.concat([v2, f1]));
    expect(ev[0]).toMatchObject({
      kind: "error",
      status: Status.UNSUPPORTED_VERSION,
      requestId: 9,
      fatal: false,
    });
    expect(ev[1]).toMatchObject({ kind: "frame" });
  });
  it("bad magic and oversize are fatal; unknown flags and reserved bits are not", () => {
    const bad = Buffer.from(f1);
    bad[0] = 0x00;
    expect(new FrameDecoder().push(bad)[0]).toMatchObject({ status: Status.BAD_FRAME, fatal: true });
    const d = new FrameDecoder(5);
    const ev = d.push(Buffer.concat([f1, f2]));
    expect(ev).toHaveLength(1);
    expect(ev[0]).toMatchObject({ status: Status.TOO_LARGE, requestId: 7, fatal: true });
    expect(d.push(f2)).toEqual([]); // dead after a fatal error
    const flags = Buffer.from(f2);
    flags[3] = 0x80;
    const res = Buffer.from(f2);
    res[7] = 1;
    const ev2 = new FrameDecoder().push(Buffer.concat([flags, res, f1]));
    expect(ev2.map((e) => (e.kind === "error" ? e.status : 0))).toEqual([
      Status.BAD_FRAME,
      Status.BAD_FRAME,
      0,
    ]);
  });
  it("end() reports a truncated frame with its request ID", () => {
    const d = new FrameDecoder();
    d.push(f1.subarray(0, HEADER_SIZE + 2));
    expect(d.end()).toMatchObject({ status: Status.BAD_FRAME, requestId: 7, fatal: true });
    const d2 = new FrameDecoder();
    d2.push(f1.subarray(0, 5));
    expect(d2.end()).toMatchObject({ status: Status.BAD_FRAME, requestId: 0 });
    expect(new FrameDecoder().end()).toBeUndefined();
  });
});
