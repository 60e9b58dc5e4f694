/**
 * The farm's in-memory form of an encoded device state (firmware/state.ts encodeState, CBOR, RFC
 * 8949): the same bytes, except that the CA certificates of the installed chain, which are the same
 * for every device of a lot, are kept once for the whole farm. An enrolled device's state is ~3 KB,
 * of which the issuing and root certificates are ~1 KB.
 *
 * Packing walks the CBOR just far enough to find the `chain` array (no full decode): its elements
 * after the first (the device's own leaf) are consecutive, so the state is kept as the bytes before
 * them, the bytes after them, and shared copies of those elements (CBOR header included). unpack()
 * concatenates them back to exactly the bytes that were packed. Anything unexpected (not a map, no
 * chain, too many distinct CA certificates) is kept as it is.
 */
import { FleetError } from "../../core/errors";

export interface PackedState {
  /** the encoded state without the shared elements: before ‖ after, split at `at` */
  bytes: Uint8Array;
  at: number;
  shared: Buffer[];
}

export type StoredState = Uint8Array | PackedState;

/** distinct shared elements kept (CA certificates of the farm's lots) */
const SHARED_MAX = 256;

export class SharedCerts {
  private readonly byLength = new Map<number, Buffer[]>();
  private count = 0;

  /** The shared copy of `b` (CBOR header and DER), or undefined when the table is full. */
  intern(b: Uint8Array): Buffer | undefined {
    const list = this.byLength.get(b.length);
    if (list) for (const x of list) if (x.equals(b)) return x;
    if (this.count >= SHARED_MAX) return undefined;
    const copy = Buffer.alloc(b.length);
    copy.set(b);
    if (list) list.push(copy);
    else this.byLength.set(b.length, [copy]);
    this.count++;
    return copy;
  }

  get size(): number {
    return this.count;
  }
}

/** [argument, offset after the head] of the CBOR data item head at `p` */
function head(b: Uint8Array, p: number): [number, number] {
  const info = b[p]! & 31;
  if (info < 24) return [info, p + 1];
  if (info === 24) return [b[p + 1]!, p + 2];
  if (info === 25) return [(b[p + 1]! << 8) | b[p + 2]!, p + 3];
  if (info === 26)
    return [((b[p + 1]! << 24) >>> 0) + ((b[p + 2]! << 16) | (b[p + 3]! << 8) | b[p + 4]!), p + 5];
  throw new FleetError("INTEGRITY", `state: CBOR head ${b[p]} at ${p}, want a length under 2^32`);
}

/** Offset after the data item at `p` (definite lengths only, as encodeState writes). */
function skip(b: Uint8Array, p: number, depth = 0): number {
  if (p >= b.length || depth > 8) throw new FleetError("INTEGRITY", `state: CBOR item at ${p} out of bounds`);
  const major = b[p]! >> 5;
  const [n, q] = head(b, p);
  if (major === 0 || major === 1 || major === 7) return q;
  if (major === 2 || major === 3) {
    if (q + n > b.length) throw new FleetError("INTEGRITY", `state: CBOR item at ${p} runs past the end`);
    return q + n;
  }
  let r = q;
  const items = major === 5 ? 2 * n : major === 4 ? n : -1;
  if (items < 0) throw new FleetError("INTEGRITY", `state: CBOR major type ${major} at ${p}`);
  for (let i = 0; i < items; i++) r = skip(b, r, depth + 1);
  return r;
}

const CHAIN_KEY = Buffer.from([0x65, ...Buffer.from("chain")]); // text(5) "chain"

/** Pack an encoded state (kept as is when there is nothing to share). */
export function pack(b: Uint8Array, shared: SharedCerts): StoredState {
  if (b.length === 0 || b[0]! >> 5 !== 5) return b;
  const [entries, start] = head(b, 0);
  let p = start;
  for (let e = 0; e < entries; e++) {
    const key = p;
    p = skip(b, p);
    const isChain = p - key === CHAIN_KEY.length && CHAIN_KEY.equals(b.subarray(key, p));
    if (!isChain || b[p]! >> 5 !== 4) {
      p = skip(b, p);
      continue;
    }
    const [n, first] = head(b, p);
    if (n < 2) return b;
    const at = skip(b, first); // after the leaf
    const out: Buffer[] = [];
    let q = at;
    for (let i = 1; i < n; i++) {
      const end = skip(b, q);
      const s = shared.intern(b.subarray(q, end));
      if (!s) return b;
      out.push(s);
      q = end;
    }
    const rest = new Uint8Array(b.length - (q - at));
    rest.set(b.subarray(0, at), 0);
    rest.set(b.subarray(q), at);
    return { bytes: rest, at, shared: out };
  }
  return b;
}

/** The encoded state exactly as it was packed. */
export function unpack(s: StoredState): Uint8Array {
  if (s instanceof Uint8Array) return s;
  let len = s.bytes.length;
  for (const x of s.shared) len += x.length;
  const out = Buffer.allocUnsafe(len);
  out.set(s.bytes.subarray(0, s.at), 0);
  let p = s.at;
  for (const x of s.shared) {
    out.set(x, p);
    p += x.length;
  }
  out.set(s.bytes.subarray(s.at), p);
  return out;
}
