import { createHash } from "node:crypto";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import {
  CORNERS,
  createPufDevice,
  enroll,
  helperInfo,
  NOMINAL,
  type PufDevice,
  reconstruct,
} from "../../../devices/puf";
import { expectFleetError, seededRng } from "./helpers";

const farm = new Uint8Array(32).fill(11);
const ID = "dev-000042";

function outcome(f: () => Uint8Array): string {
  try {
    return `ok:${Buffer.from(f()).toString("hex")}`;
  } catch (e) {
    if (e instanceof FleetError) return e.code;
    throw e;
  }
}

describe("fuzzy extractor", () => {
  let dev: ReturnType<typeof createPufDevice>;
  let helper: Uint8Array;
  let secret: string;

  beforeAll(() => {
    dev = createPufDevice(farm, ID);
    helper = enroll(dev, { rng: seededRng("enroll") }).helper;
    secret = Buffer.from(reconstruct(dev, helper)).toString("hex");
  });

  it("enrollment is deterministic for a given device and random source", () => {
    const again = enroll(createPufDevice(farm, ID), { rng: seededRng("enroll") }).helper;
    expect(Buffer.from(again).equals(Buffer.from(helper))).toBe(true);
    const other = enroll(createPufDevice(farm, ID), { rng: seededRng("enroll-2") }).helper;
    expect(Buffer.from(other).equals(Buffer.from(helper))).toBe(false);
    expect(secret).toHaveLength(64);
    const info = helperInfo(helper, ID);
    expect(info.cells).toBe(32768);
    expect(info.selectedPairs).toBe(1260);
    expect(info.bytes).toBe(helper.length);
  });

  it("reconstructs the same secret on 300 nominal reads and at every corner", () => {
    for (let i = 0; i < 300; i++) expect(Buffer.from(reconstruct(dev, helper)).toString("hex")).toBe(secret);
    for (const c of Object.values(CORNERS))
      for (let i = 0; i < 20; i++)
        expect(Buffer.from(reconstruct(dev, helper, c)).toString("hex")).toBe(secret);
  });

  it("reconstructs on 300 reads at 15% BER and 100 at 20% (berOverride)", () => {
    for (let i = 0; i < 300; i++)
      expect(Buffer.from(reconstruct(dev, helper, { ...NOMINAL, berOverride: 0.15 })).toString("hex")).toBe(
        secret,
      );
    for (let i = 0; i < 100; i++)
      expect(Buffer.from(reconstruct(dev, helper, { ...NOMINAL, berOverride: 0.2 })).toString("hex")).toBe(
        secret,
      );
  });

  it("fails cleanly (UNAVAILABLE, naming PUF reconstruction) at very high BER, never with a wrong key", () => {
    for (let i = 0; i < 50; i++) {
      let err: unknown;
      try {
        reconstruct(dev, helper, { ...NOMINAL, berOverride: 0.4 });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FleetError);
      expect((err as FleetError).code).toBe("UNAVAILABLE");
      expect((err as FleetError).message).toMatch(/PUF reconstruction failed/);
    }
  });

  it("a clone (same device ID, different cells) never yields a key", () => {
    for (let k = 0; k < 20; k++) {
      const clone = createPufDevice(createHash("sha256").update(`other farm ${k}`).digest(), ID);
      const o = outcome(() => reconstruct(clone, helper));
      expect(["UNAVAILABLE", "INTEGRITY"]).toContain(o);
    }
    // A wrapper that replays the real device's cells but claims another ID is refused by the binding.
    const impostor: PufDevice = { deviceId: "dev-000043", read: (c, r) => dev.read(c, r) };
    expectFleetError(() => reconstruct(impostor, helper), "INTEGRITY");
  });

  it("every single-bit flip of the helper data is refused with INTEGRITY", () => {
    const h = Uint8Array.from(helper);
    let refused = 0;
    for (let bit = 0; bit < h.length * 8; bit++) {
      h[bit >> 3] ^= 1 << (bit & 7);
      try {
        reconstruct(dev, h);
      } catch (e) {
        if (e instanceof FleetError && e.code === "INTEGRITY") refused++;
      }
      h[bit >> 3] ^= 1 << (bit & 7);
    }
    expect(refused).toBe(h.length * 8);
  });

  it("property: any set of flipped bits, truncation or extension is refused with INTEGRITY", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.nat({ max: helper.length * 8 - 1 }), { minLength: 1, maxLength: 16 }),
        (bits) => {
          const h = Uint8Array.from(helper);
          for (const b of bits) h[b >> 3] ^= 1 << (b & 7);
          return outcome(() => reconstruct(dev, h)) === "INTEGRITY";
        },
      ),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: helper.length - 1 }),
        (len) => outcome(() => reconstruct(dev, helper.slice(0, len))) === "INTEGRITY",
      ),
      { numRuns: 100 },
    );
    const longer = new Uint8Array(helper.length + 1);
    longer.set(helper);
    expect(outcome(() => reconstruct(dev, longer))).toBe("INTEGRITY");
  });

  it("a forged helper with a recomputed digest is caught by the secret-bound tag, not turned into a key", () => {
    // Flip offset bits of one group so the decoder lands elsewhere, then recompute the public digest.
    const body = helper.length - 64;
    const forged = Uint8Array.from(helper);
    forged[body - 1] ^= 0xff; // last offset byte
    const id = Buffer.from(ID, "utf8");
    const digest = createHash("sha256")
      .update("fleetguard/puf/helper/v1\0")
      .update(Buffer.from([id.length >> 8, id.length & 0xff]))
      .update(id)
      .update(forged.subarray(0, forged.length - 32))
      .digest();
    forged.set(digest, forged.length - 32);
    const o = outcome(() => reconstruct(dev, forged));
    expect(o).toBe("UNAVAILABLE");
  });

  it("with a device helper key the digest is a MAC: the wrong key is refused", () => {
    const key = new Uint8Array(32).fill(5);
    const { helper: h } = enroll(dev, { helperKey: key, rng: seededRng("mac") });
    const s = Buffer.from(reconstruct(dev, h, NOMINAL, { helperKey: key })).toString("hex");
    expect(s).toHaveLength(64);
    expectFleetError(() => reconstruct(dev, h), "INTEGRITY");
    expectFleetError(
      () => reconstruct(dev, h, NOMINAL, { helperKey: new Uint8Array(32).fill(6) }),
      "INTEGRITY",
    );
  });

  it("an array too small for the code cannot be enrolled (UNAVAILABLE)", () => {
    expectFleetError(() => enroll(createPufDevice(farm, "tiny", { cells: 2048 })), "UNAVAILABLE");
    const small = createPufDevice(farm, "small", { cells: 16384 });
    const { helper: hs } = enroll(small);
    expect(reconstruct(small, hs)).toHaveLength(32);
    // Helper for a 16 Kib array on a same-ID device with 32 Kib is refused.
    expectFleetError(() => reconstruct(createPufDevice(farm, "small"), hs), "INTEGRITY");
  });

  it("enrollment with a single read (plain von Neumann, no masking) still works at 15% BER", () => {
    const d = createPufDevice(farm, "single-read");
    const { helper: h } = enroll(d, { reads: 1 });
    const s = Buffer.from(reconstruct(d, h)).toString("hex");
    for (let i = 0; i < 50; i++)
      expect(Buffer.from(reconstruct(d, h, { ...NOMINAL, berOverride: 0.15 })).toString("hex")).toBe(s);
  });

  it("rejects wrong arguments with INVALID_INPUT", () => {
    const cases: Array<() => unknown> = [
      () => enroll(null as never),
      () => enroll({ deviceId: "x" } as never),
      () => enroll({ deviceId: "", read: () => new Uint8Array(8) }),
      () => enroll(dev, { reads: 0 }),
      () => enroll(dev, { reads: 1.5 }),
      () => enroll(dev, { rng: 5 as never }),
      () => enroll(dev, { conditions: { temperatureC: 25 } as never }),
      () => enroll(dev, { helperKey: new Uint8Array(4) }),
      () => enroll(dev, null as never),
      () => enroll({ deviceId: "x", read: () => "bits" as never }),
      () => reconstruct(dev, "helper" as never),
      () => reconstruct(null as never, helper),
      () => reconstruct(dev, helper, { temperatureC: 25, voltage: 3, ageYears: 0 }),
      () => reconstruct(dev, helper, NOMINAL, { rng: "x" as never }),
      () => reconstruct(dev, helper, NOMINAL, { helperKey: "k" as never }),
      () => helperInfo("h" as never, ID),
    ];
    for (const f of cases) expectFleetError(f, "INVALID_INPUT");
  });
});
