/**
 * Minimal DER (ITU-T X.690) encoder and reader for the X.509 structures fleetguard emits
 * (RFC 5280). Encoding is done by concatenating precomputed byte strings: no object tree,
 * so a certificate template can keep its constant parts as ready-made bytes and patch the
 * per-device fields. The reader is just enough to walk certificates, CSRs and CRLs.
 */
import { invalid, phrase } from "../errors";

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

/** Encode one TLV from a tag and already-encoded content parts (one allocation, one copy of each part). */
export function tlv(tag: number, ...content: Uint8Array[]): Buffer {
  let len = 0;
  for (const c of content) len += c.length;
  const head = len < 0x80 ? 2 : len < 0x100 ? 3 : len < 0x10000 ? 4 : len < 0x1000000 ? 5 : 6;
  const out = Buffer.allocUnsafe(head + len);
  out[0] = tag;
  if (head === 2) out[1] = len;
  else {
    out[1] = 0x80 | (head - 2);
    for (let i = head - 1, v = len; i >= 2; i--, v = Math.floor(v / 256)) out[i] = v & 0xff;
  }
  let p = head;
  for (const c of content) {
    out.set(c, p);
    p += c.length;
  }
  return out;
}

export const seq = (...parts: Uint8Array[]): Buffer => tlv(TAG.SEQUENCE, ...parts);
export const set = (...parts: Uint8Array[]): Buffer => tlv(TAG.SET, ...parts);
export const octets = (b: Uint8Array): Buffer => tlv(TAG.OCTET_STRING, b);
export const NULL = Buffer.from([0x05, 0x00]);
export const bool = (v: boolean): Buffer => Buffer.from([TAG.BOOLEAN, 1, v ? 0xff : 0x00]);
/** Context-specific constructed [n] EXPLICIT wrapper. */
export const explicit = (n: number, ...parts: Uint8Array[]): Buffer => tlv(0xa0 | n, ...parts);
/** Context-specific primitive [n] IMPLICIT (e.g. GeneralName dNSName is [2]). */
export const implicitPrim = (n: number, content: Uint8Array): Buffer => tlv(0x80 | n, content);
/** Context-specific constructed [n] IMPLICIT. */
export const implicitCons = (n: number, ...parts: Uint8Array[]): Buffer => tlv(0xa0 | n, ...parts);

/** BIT STRING with zero unused bits. */
export const bitString = (b: Uint8Array): Buffer => tlv(TAG.BIT_STRING, Buffer.from([0]), b);

/** BIT STRING for named bits (keyUsage): DER requires trailing zero bits removed. */
export function namedBits(bits: number[]): Buffer {
  if (bits.length === 0) return Buffer.from([TAG.BIT_STRING, 1, 0]);
  const max = Math.max(...bits);
  const nbytes = (max >> 3) + 1;
  const out = Buffer.alloc(nbytes);
  for (const b of bits) out[b >> 3]! |= 0x80 >> (b & 7);
  const unused = 7 - (max & 7);
  return tlv(TAG.BIT_STRING, Buffer.from([unused]), out);
}

/** INTEGER from a non-negative bigint, number or unsigned magnitude bytes, DER-minimal. */
export function uint(v: bigint | number | Uint8Array): Buffer {
  if (v instanceof Uint8Array) return uintBytes(v);
  let n = BigInt(v);
  if (n < 0n) throw invalid("integer", String(v), "a non-negative integer");
  const bytes: number[] = [];
  do {
    bytes.unshift(Number(n & 0xffn));
    n >>= 8n;
  } while (n > 0n);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(TAG.INTEGER, Buffer.from(bytes));
}

/** INTEGER from unsigned big-endian magnitude bytes, made DER-minimal and positive. */
export function uintBytes(mag: Uint8Array): Buffer {
  let i = 0;
  while (i < mag.length - 1 && mag[i] === 0) i++;
  const m = mag.subarray(i);
  if (m.length === 0) return Buffer.from([TAG.INTEGER, 1, 0]);
  return m[0]! & 0x80 ? tlv(TAG.INTEGER, Buffer.from([0]), m) : tlv(TAG.INTEGER, m);
}

const oidCache = new Map<string, Buffer>();
/** OBJECT IDENTIFIER from dotted form; cached since the set of OIDs is small. */
export function oid(dotted: string): Buffer {
  const hit = oidCache.get(dotted);
  if (hit) return hit;
  const arcs = dotted.split(".").map((s) => {
    if (!/^\d+$/.test(s)) throw invalid("oid", dotted, "dotted decimal like 2.5.29.19");
    return BigInt(s);
  });
  if (arcs.length < 2) throw invalid("oid", dotted, "at least two arcs");
  const body: number[] = [];
  const enc = (v: bigint) => {
    const tmp: number[] = [Number(v & 0x7fn)];
    v >>= 7n;
    while (v > 0n) {
      tmp.unshift(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    body.push(...tmp);
  };
  enc(arcs[0]! * 40n + arcs[1]!);
  for (const a of arcs.slice(2)) enc(a);
  const out = tlv(TAG.OID, Buffer.from(body));
  oidCache.set(dotted, out);
  return out;
}

export const utf8 = (s: string): Buffer => tlv(TAG.UTF8, Buffer.from(s, "utf8"));
export const printable = (s: string): Buffer => tlv(TAG.PRINTABLE, Buffer.from(s, "ascii"));
export const ia5 = (s: string): Buffer => tlv(TAG.IA5, Buffer.from(s, "ascii"));

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; seconds, Zulu. */
export function time(d: Date): Buffer {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const y = d.getUTCFullYear();
  const digits = iso.slice(0, 19).replace(/[-:T]/g, "");
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(`${digits.slice(2)}Z`, "ascii"));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(`${digits}Z`, "ascii"));
}

// ---------------------------------------------------------------- reader

export interface Node {
  tag: number;
  /** offset of the tag byte */
  start: number;
  /** offset of the first content byte */
  contentStart: number;
  /** offset just past the content */
  end: number;
}

/**
 * Read the TLV at `pos` of `buf`, strictly: single-byte tags, minimal length encodings, and
 * lengths that stay inside `limit` (input from devices is untrusted).
 */
export function read(buf: Uint8Array, pos = 0, limit = buf.length): Node {
  if (pos + 2 > limit)
    throw invalid(
      "der",
      phrase(`${Math.max(0, limit - pos)} bytes at offset ${pos}`),
      "a complete TLV header",
    );
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw invalid("der.tag", tag, "a single-byte tag");
  let len = buf[pos + 1]!;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > limit)
      throw invalid("der.length", phrase(`length of length ${n}`), "1..4 bytes inside the buffer");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    if (len < 0x80 || (n > 1 && buf[p] === 0))
      throw invalid("der.length", len, "the minimal length encoding");
    p += n;
  }
  if (p + len > limit) throw invalid("der.length", len, `at most ${limit - p} bytes at offset ${pos}`);
  return { tag, start: pos, contentStart: p, end: p + len };
}

/** Read a TLV and require its tag. */
export function expect(buf: Uint8Array, tag: number, pos: number, limit: number, what: string): Node {
  const n = read(buf, pos, limit);
  if (n.tag !== tag) throw invalid(what, phrase(`tag 0x${n.tag.toString(16)}`), `tag 0x${tag.toString(16)}`);
  return n;
}

/** The children of a constructed node. */
export function children(buf: Uint8Array, node: Node): Node[] {
  const out: Node[] = [];
  let p = node.contentStart;
  while (p < node.end) {
    const c = read(buf, p, node.end);
    out.push(c);
    p = c.end;
  }
  return out;
}

export const content = (buf: Uint8Array, n: Node): Buffer =>
  Buffer.from(buf.buffer, buf.byteOffset + n.contentStart, n.end - n.contentStart);
export const whole = (buf: Uint8Array, n: Node): Buffer =>
  Buffer.from(buf.buffer, buf.byteOffset + n.start, n.end - n.start);

export function decodeOid(bytes: Uint8Array): string {
  const arcs: bigint[] = [];
  let v = 0n;
  for (const b of bytes) {
    v = (v << 7n) | BigInt(b & 0x7f);
    if (!(b & 0x80)) {
      arcs.push(v);
      v = 0n;
    }
  }
  const first = arcs.shift() ?? 0n;
  const a = first < 80n ? first / 40n : 2n;
  return [a, first - a * 40n, ...arcs].join(".");
}

export function decodeUint(bytes: Uint8Array): bigint {
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}

// names used by the station/firmware code
export const ctx = explicit;
export const bits = bitString;
export const contentOf = content;
export const wholeOf = whole;
