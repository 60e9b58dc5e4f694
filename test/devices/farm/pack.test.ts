// The farm's packed states (devices/farm/pack.ts) are the encoded states byte for byte, with the
// chain's CA certificates shared between devices.
import { describe, expect, it } from "vitest";
import { pack, SharedCerts, unpack } from "../../../devices/farm/pack";
import { blankState, type DeviceState, decodeState, encodeState } from "../../../devices/firmware/state";

function state(i: number, chain: Buffer[], extra: Partial<DeviceState> = {}): DeviceState {
  const s = blankState();
  s.helper = Buffer.alloc(690, i & 0xff);
  s.chain = chain;
  s.epoch = i % 3;
  s.pendingEpoch = i % 2 ? 7 : null;
  s.commands = i % 4;
  return { ...s, ...extra };
}

describe("packed device states", () => {
  const ca1 = Buffer.alloc(480, 0xa1);
  const ca2 = Buffer.alloc(70_000, 0xa2); // a length over 2^16 (4-byte CBOR head)
  it("unpack(pack(x)) is x, and the CA certificates are one copy for every device", () => {
    const shared = new SharedCerts();
    const packed = Array.from({ length: 50 }, (_, i) => {
      const enc = encodeState(state(i, [Buffer.alloc(560 + i, i), ca1, ca2]));
      const p = pack(enc, shared);
      expect(Buffer.from(unpack(p)).equals(enc)).toBe(true);
      expect(decodeState(unpack(p)).chain[2]!.equals(ca2)).toBe(true);
      return p;
    });
    expect(shared.size).toBe(2);
    const a = packed[0]!;
    const b = packed[49]!;
    if (a instanceof Uint8Array || b instanceof Uint8Array) throw new Error("want packed states");
    expect(a.shared[0]).toBe(b.shared[0]);
    expect(a.shared[1]).toBe(b.shared[1]);
    expect(a.bytes.length).toBeLessThan(1400);
  });

  it("keeps as it is what has nothing to share: no chain, a leaf alone, not a map", () => {
    const shared = new SharedCerts();
    for (const enc of [
      encodeState(blankState()),
      encodeState(state(1, [])),
      encodeState(state(2, [Buffer.alloc(600, 2)])),
      Buffer.from([0x83, 1, 2, 3]),
      new Uint8Array(0),
    ])
      expect(pack(enc, shared)).toBe(enc);
    expect(shared.size).toBe(0);
  });

  it("past 256 distinct CA certificates a state is kept whole, and still unpacks to itself", () => {
    const shared = new SharedCerts();
    for (let i = 0; i < 300; i++) {
      const enc = encodeState(state(i, [Buffer.alloc(500, 1), Buffer.alloc(400 + i, i & 0xff)]));
      const p = pack(enc, shared);
      expect(Buffer.from(unpack(p)).equals(enc)).toBe(true);
      if (i >= 256) expect(p).toBe(enc);
    }
    expect(shared.size).toBe(256);
  });

  it("refuses CBOR that runs past its end (a damaged record), naming the offset", () => {
    const enc = encodeState(state(3, [Buffer.alloc(600, 3), ca1]));
    expect(() => pack(enc.subarray(0, enc.length - 300), new SharedCerts())).toThrow(
      /state: CBOR item at \d+/,
    );
  });
});
