// The DER encoder's tlv(): one allocation since issue 13 (the plan's conformance check rebuilds a
// TBS per certificate); its output must stay what X.690 asks and what the strict reader reads.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { children, content, read, seq, tlv } from "../../../core/x509/der";

/** The definition: tag, the minimal length (short form below 128, else 0x80|n and n big-endian bytes), content. */
function reference(tag: number, parts: Uint8Array[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  let len: number[];
  if (n < 0x80) len = [n];
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    len = [0x80 | bytes.length, ...bytes];
  }
  return Buffer.concat([Buffer.from([tag, ...len]), body]);
}

describe("der tlv", () => {
  it("writes the minimal length at every boundary of the length forms", () => {
    for (const n of [0, 1, 127, 128, 129, 255, 256, 65_535, 65_536, 0xffffff, 0x1000000]) {
      const body = Buffer.alloc(n, 0xab);
      const out = tlv(0x04, body);
      expect(out.subarray(0, 6).equals(reference(0x04, [body]).subarray(0, 6))).toBe(true);
      expect(out.length).toBe(reference(0x04, [body]).length);
      const node = read(out);
      expect([node.tag, node.end - node.contentStart, node.end]).toEqual([0x04, n, out.length]);
    }
    expect([...tlv(0x30, Buffer.alloc(200)).subarray(0, 3)]).toEqual([0x30, 0x81, 200]);
    expect([...tlv(0x30, Buffer.alloc(300)).subarray(0, 4)]).toEqual([0x30, 0x82, 0x01, 0x2c]);
  });

  it("is the tag, the minimal length and the parts in order, whatever the parts", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0x1e }),
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 6 }),
        (tag, parts) => {
          const out = tlv(tag, ...parts);
          expect(out.equals(reference(tag, parts))).toBe(true);
          expect(content(out, read(out)).equals(Buffer.concat(parts))).toBe(true);
        },
      ),
    );
  });

  it("nests: a SEQUENCE of TLVs reads back as its children", () => {
    const a = tlv(0x02, Buffer.from([1]));
    const b = tlv(0x04, Buffer.alloc(130, 7));
    const s = seq(a, b);
    const kids = children(s, read(s));
    expect(kids.map((k) => s.subarray(k.start, k.end).toString("hex"))).toEqual([
      a.toString("hex"),
      b.toString("hex"),
    ]);
  });
});
