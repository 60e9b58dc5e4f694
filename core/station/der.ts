/**
 * A small DER (ITU-T X.690) encoder and strict reader for the few PKIX structures the station
 * protocol carries: PKCS#10 requests (RFC 2986) built by the emulated devices, certificates
 * (RFC 5280) of the emulated silicon vendor, and the parts of both a station has to look at.
 * Encoding concatenates ready-made byte strings (no object tree), which keeps a per-device CSR
 * cheap. The reader checks every length against its enclosing element and rejects indefinite
 * and non-minimal lengths, because device-supplied bytes are untrusted input.
 */
import { invalid } from "../errors";

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8: 0x0c,
  PRINTABLE: 0x13,
  IA5: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

function lengthOf(len: number): Buffer {
  if (len < 0x80) return Buffer.from([len]);
  if (len < 0x100) return Buffer.from([0x81, len]);
  if (len < 0x10000) return Buffer.from([0x82, len >> 8, len & 0xff]);
  if (len < 0x1000000) return Buffer.from([0x83, len >> 16, (len >> 8) & 0xff, len & 0xff]);
  throw invalid("der.length", len, "below 16 MiB");
}

/** One TLV from a tag and already-encoded content parts. */
export function tlv(tag: number, ...content: Uint8Array[]): Buffer {
  const body = content.length === 1 ? content[0]! : Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), lengthOf(body.length), body]);
}

export const seq = (...parts: Uint8Array[]): Buffer => tlv(TAG.SEQUENCE, ...parts);
export const set = (...parts: Uint8Array[]): Buffer => tlv(TAG.SET, ...parts);
export const octets = (b: Uint8Array): Buffer => tlv(TAG.OCTET_STRING, b);
export const NULL = Buffer.from([TAG.NULL, 0]);
export const bool = (v: boolean): Buffer => Buffer.from([TAG.BOOLEAN, 1, v ? 0xff : 0]);
/** Context-specific constructed [n] (EXPLICIT, or IMPLICIT of a constructed type). */
export const ctx = (n: number, ...parts: Uint8Array[]): Buffer => tlv(0xa0 | n, ...parts);
/** BIT STRING with no unused bits (signatures, public keys, DER blobs). */
export const bits = (b: Uint8Array): Buffer => tlv(TAG.BIT_STRING, Buffer.from([0]), b);

/** keyUsage-style named bit list; DER wants trailing zero bits dropped. */
export function namedBits(set: number[]): Buffer {
  if (set.length === 0) return Buffer.from([TAG.BIT_STRING, 1, 0]);
  const max = Math.max(...set);
  const out = Buffer.alloc((max >> 3) + 1);
  for (const b of set) out[b >> 3]! |= 0x80 >> (b & 7);
  return tlv(TAG.BIT_STRING, Buffer.from([7 - (max & 7)]), out);
}

/** Non-negative INTEGER, minimal encoding. */
export function uint(v: number | bigint | Uint8Array): Buffer {
  let mag: Uint8Array;
  if (v instanceof Uint8Array) {
    mag = v;
  } else {
    let n = BigInt(v);
    if (n < 0n) throw invalid("der.integer", String(v), "a non-negative integer");
    const bytes: number[] = [];
    do {
      bytes.unshift(Number(n & 0xffn));
      n >>= 8n;
    } while (n > 0n);
    mag = Uint8Array.from(bytes);
  }
  let i = 0;
  while (i < mag.length - 1 && mag[i] === 0) i++;
  const m = mag.subarray(i);
  if (m.length === 0) return Buffer.from([TAG.INTEGER, 1, 0]);
  return m[0]! & 0x80 ? tlv(TAG.INTEGER, Buffer.from([0]), m) : tlv(TAG.INTEGER, m);
}

const oids = new Map<string, Buffer>();
/** OBJECT IDENTIFIER from dotted decimal; cached, the set of OIDs in use is small. */
export function oid(dotted: string): Buffer {
  const hit = oids.get(dotted);
  if (hit) return hit;
  if (!/^[0-2]\.\d+(\.\d+)*$/.test(dotted)) throw invalid("der.oid", dotted, "dotted decimal like 2.5.4.3");
  const arcs = dotted.split(".").map((s) => BigInt(s));
  const body: number[] = [];
  const push = (v: bigint) => {
    const tmp = [Number(v & 0x7fn)];
    for (v >>= 7n; v > 0n; v >>= 7n) tmp.unshift(Number(v & 0x7fn) | 0x80);
    body.push(...tmp);
  };
  push(arcs[0]! * 40n + arcs[1]!);
  for (const a of arcs.slice(2)) push(a);
  const out = tlv(TAG.OID, Buffer.from(body));
  oids.set(dotted, out);
  return out;
}

export function decodeOid(b: Uint8Array): string {
  const arcs: bigint[] = [];
  let v = 0n;
  for (const x of b) {
    v = (v << 7n) | BigInt(x & 0x7f);
    if (!(x & 0x80)) {
      arcs.push(v);
      v = 0n;
    }
  }
  const first = arcs.shift() ?? 0n;
  const a = first < 80n ? first / 40n : 2n;
  return [a, first - a * 40n, ...arcs].join(".");
}

export const utf8 = (s: string): Buffer => tlv(TAG.UTF8, Buffer.from(s, "utf8"));
export const printable = (s: string): Buffer => tlv(TAG.PRINTABLE, Buffer.from(s, "latin1"));

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050, whole seconds, Zulu. */
export function time(d: Date): Buffer {
  const digits = d.toISOString().slice(0, 19).replace(/[-:T]/g, "");
  const y = d.getUTCFullYear();
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(`${digits.slice(2)}Z`, "latin1"));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(`${digits}Z`, "latin1"));
}

// ------------------------------------------------------------------ reader

export interface Node {
  tag: number;
  /** offset of the tag byte */
  start: number;
  /** offset of the first content byte */
  body: number;
  /** offset just past the content */
  end: number;
}

/** Read the TLV at `pos`, which must end at or before `limit`. Strict DER lengths. */
export function read(buf: Uint8Array, pos = 0, limit = buf.length): Node {
  if (pos + 2 > limit)
    throw invalid("der", `${Math.max(0, limit - pos)} bytes at offset ${pos}`, "a TLV header");
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw invalid("der.tag", tag, "a single-byte tag");
  let len = buf[pos + 1]!;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 3 || p + n > limit)
      throw invalid("der.length", `length-of-length ${n}`, "1..3 in bounds");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    if (len < 0x80 || (n > 1 && buf[p] === 0))
      throw invalid("der.length", len, "the minimal length encoding");
    p += n;
  }
  if (p + len > limit) throw invalid("der.length", len, `at most ${limit - p} bytes at offset ${pos}`);
  return { tag, start: pos, body: p, end: p + len };
}

/** Read a TLV and require its tag. */
export function expect(buf: Uint8Array, tag: number, pos: number, limit: number, what: string): Node {
  const n = read(buf, pos, limit);
  if (n.tag !== tag) throw invalid(what, `tag 0x${n.tag.toString(16)}`, `tag 0x${tag.toString(16)}`);
  return n;
}

/** The children of a constructed node, which must exactly fill it. */
export function children(buf: Uint8Array, node: Node): Node[] {
  const out: Node[] = [];
  for (let p = node.body; p < node.end; ) {
    const c = read(buf, p, node.end);
    out.push(c);
    p = c.end;
  }
  return out;
}

export const contentOf = (buf: Uint8Array, n: Node): Buffer =>
  Buffer.from(buf.buffer, buf.byteOffset + n.body, n.end - n.body);
export const wholeOf = (buf: Uint8Array, n: Node): Buffer =>
  Buffer.from(buf.buffer, buf.byteOffset + n.start, n.end - n.start);
