/**
 * The body encoding of the station protocol: a strict subset of CBOR (RFC 8949). Supported:
 * unsigned and negative integers up to 2^53, byte strings, UTF-8 text, definite-length arrays,
 * maps with text keys, false/true/null. Not supported (rejected on decode): floats, tags,
 * indefinite lengths, duplicate or non-text map keys, trailing bytes, nesting deeper than 16.
 * Byte strings decode to fresh Buffers (never views of the frame), so a decoded value may be
 * kept after the frame is gone. Maps decode to prototype-less objects: a key like
 * "__proto__" is data, never a prototype change.
 */
import { invalid } from "../errors";

export type Value =
  | number
  | string
  | boolean
  | null
  | Uint8Array
  | Value[]
  | { [key: string]: Value | undefined };
export type CborMap = { [key: string]: Value | undefined };

const MAX_DEPTH = 16;
/** text up to this many bytes is decoded without a Buffer view (cbor.ts shortText) */
const SHORT_TEXT = 32;

class Writer {
  buf: Buffer;
  pos = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  head(major: number, n: number): void {
    this.ensure(9);
    const m = major << 5;
    if (n < 24) this.buf[this.pos++] = m | n;
    else if (n < 0x100) {
      this.buf[this.pos++] = m | 24;
      this.buf[this.pos++] = n;
    } else if (n < 0x10000) {
      this.buf[this.pos++] = m | 25;
      this.buf.writeUInt16BE(n, this.pos);
      this.pos += 2;
    } else if (n < 0x100000000) {
      this.buf[this.pos++] = m | 26;
      this.buf.writeUInt32BE(n, this.pos);
      this.pos += 4;
    } else {
      this.buf[this.pos++] = m | 27;
      this.buf.writeUInt32BE(Math.floor(n / 0x100000000), this.pos);
      this.buf.writeUInt32BE(n >>> 0, this.pos + 4);
      this.pos += 8;
    }
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
}

function put(w: Writer, v: Value, depth: number): void {
  if (depth > MAX_DEPTH) throw invalid("cbor", `depth ${depth}`, `at most ${MAX_DEPTH}`);
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw invalid("cbor", v, "a safe integer (floats are not encoded)");
    if (v >= 0) w.head(0, v);
    else w.head(1, -1 - v);
  } else if (typeof v === "string") {
    const len = Buffer.byteLength(v, "utf8");
    w.head(3, len);
    w.ensure(len);
    w.pos += w.buf.write(v, w.pos, "utf8");
  } else if (v instanceof Uint8Array) {
    w.head(2, v.length);
    w.bytes(v);
  } else if (v === null) {
    w.ensure(1);
    w.buf[w.pos++] = 0xf6;
  } else if (v === true || v === false) {
    w.ensure(1);
    w.buf[w.pos++] = v ? 0xf5 : 0xf4;
  } else if (Array.isArray(v)) {
    w.head(4, v.length);
    for (const x of v) put(w, x, depth + 1);
  } else if (typeof v === "object") {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined);
    w.head(5, keys.length);
    for (const k of keys) {
      put(w, k, depth + 1);
      put(w, v[k]!, depth + 1);
    }
  } else {
    throw invalid("cbor", typeof v, "number, string, bytes, boolean, null, array or map");
  }
}

/** Encode a value; map entries whose value is undefined are left out. */
export function encode(v: Value, sizeHint = 256): Buffer {
  const w = new Writer(sizeHint);
  put(w, v, 0);
  return w.buf.subarray(0, w.pos);
}

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}
  fail(want: string): never {
    throw invalid("cbor", `byte 0x${(this.buf[this.pos] ?? 0).toString(16)} at offset ${this.pos}`, want);
  }
  need(n: number): void {
    if (this.pos + n > this.buf.length)
      throw invalid(
        "cbor",
        `${this.buf.length - this.pos} bytes left at offset ${this.pos}`,
        `${n} more (truncated)`,
      );
  }
  arg(info: number): number {
    if (info < 24) return info;
    const b = this.buf;
    if (info === 24) {
      this.need(1);
      return b[this.pos++]!;
    }
    if (info === 25) {
      this.need(2);
      const v = (b[this.pos]! << 8) | b[this.pos + 1]!;
      this.pos += 2;
      return v;
    }
    if (info === 26) {
      this.need(4);
      const v =
        ((b[this.pos]! << 24) >>> 0) + (b[this.pos + 1]! << 16) + (b[this.pos + 2]! << 8) + b[this.pos + 3]!;
      this.pos += 4;
      return v;
    }
    if (info === 27) {
      this.need(8);
      const hi =
        ((b[this.pos]! << 24) >>> 0) + (b[this.pos + 1]! << 16) + (b[this.pos + 2]! << 8) + b[this.pos + 3]!;
      const lo =
        ((b[this.pos + 4]! << 24) >>> 0) +
        (b[this.pos + 5]! << 16) +
        (b[this.pos + 6]! << 8) +
        b[this.pos + 7]!;
      if (hi >= 0x200000) this.fail("an integer below 2^53");
      this.pos += 8;
      return hi * 0x100000000 + lo;
    }
    this.pos--;
    return this.fail("a definite length or integer argument");
  }
  private utf8(at: number, n: number): string {
    return Buffer.from(this.buf.buffer, this.buf.byteOffset + at, n).toString("utf8");
  }
  /** Short text (map keys, IDs): ASCII read byte by byte, anything else as UTF-8. */
  private shortText(n: number): string {
    const b = this.buf;
    let s = "";
    for (let i = this.pos, end = this.pos + n; i < end; i++) {
      const c = b[i]!;
      if (c >= 0x80) return this.utf8(this.pos, n);
      s += String.fromCharCode(c);
    }
    return s;
  }
  value(depth: number): Value {
    if (depth > MAX_DEPTH) this.fail(`nesting at most ${MAX_DEPTH}`);
    this.need(1);
    const ib = this.buf[this.pos++]!;
    const major = ib >> 5;
    const info = ib & 0x1f;
    switch (major) {
      case 0:
        return this.arg(info);
      case 1:
        return -1 - this.arg(info);
      case 2: {
        const n = this.arg(info);
        this.need(n);
        // a copy in an allocation of its own (never a slice of Node's shared pool)
        const out = Buffer.copyBytesFrom(this.buf, this.pos, n);
        this.pos += n;
        return out;
      }
      case 3: {
        const n = this.arg(info);
        this.need(n);
        const out = n <= SHORT_TEXT ? this.shortText(n) : this.utf8(this.pos, n);
        this.pos += n;
        return out;
      }
      case 4: {
        const n = this.arg(info);
        // every item takes at least one byte: a huge count cannot make us allocate
        this.need(n);
        const out: Value[] = [];
        for (let i = 0; i < n; i++) out.push(this.value(depth + 1));
        return out;
      }
      case 5: {
        const n = this.arg(info);
        this.need(2 * n);
        const out: CborMap = Object.create(null);
        for (let i = 0; i < n; i++) {
          const at = this.pos;
          const k = this.value(depth + 1);
          if (typeof k !== "string") {
            this.pos = at;
            this.fail("a text map key");
          }
          if (k in out) {
            this.pos = at;
            this.fail(`no duplicate map key ${JSON.stringify(k.slice(0, 20))}`);
          }
          out[k] = this.value(depth + 1);
        }
        return out;
      }
      case 7:
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        this.pos--;
        return this.fail("false, true or null (no floats or simple values)");
      default:
        this.pos--;
        return this.fail("no tags");
    }
  }
}

/** Decode exactly one value filling `buf`. */
export function decode(buf: Uint8Array): Value {
  const r = new Reader(buf);
  const v = r.value(0);
  if (r.pos !== buf.length) throw invalid("cbor", `${buf.length - r.pos} trailing bytes`, "none");
  return v;
}

export function isMap(v: Value | undefined): v is CborMap {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}
