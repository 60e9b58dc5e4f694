import { describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { canTransition, lifecycleOf, transition } from "../../../devices/firmware/lifecycle";
import { OTP_WORDS, Otp, REGIONS } from "../../../devices/firmware/otp";

const w = (...v: number[]) => {
  const b = Buffer.alloc(v.length * 4);
  v.forEach((x, i) => {
    b.writeUInt32BE(x >>> 0, i * 4);
  });
  return b;
};

describe("OTP fuses", () => {
  it("words regions take one write per word; the same value again is a no-op", () => {
    const otp = new Otp();
    otp.program("spare", w(0x1234, 0x5678));
    otp.program("spare", w(0x1234)); // same value: allowed (idempotent)
    expect(() => otp.program("spare", w(0x1235))).toThrow(FleetError);
    expect(otp.read("spare").readUInt32BE(0)).toBe(0x1234);
  });
  it("bits regions only ever gain bits", () => {
    const otp = new Otp();
    otp.program("config", w(0b01));
    otp.program("config", w(0b10));
    otp.program("config", w(0)); // cannot clear
    expect(otp.read("config").readUInt32BE(0)).toBe(0b11);
  });
  it("a refused multi-word write burns nothing", () => {
    const otp = new Otp();
    otp.program("trust", w(0, 7), 0);
    expect(() => otp.program("trust", w(1, 2, 3), 0)).toThrow(/second write/);
    expect(otp.read("trust").subarray(0, 12)).toEqual(w(0, 7, 0));
  });
  it("locked regions refuse writes; zeroize blows every bit even through the lock", () => {
    const otp = new Otp();
    otp.program("oem", w(42));
    otp.lock("oem");
    expect(() => otp.program("oem", w(0), 1)).toThrow(/locked/);
    otp.zeroize("oem");
    expect(otp.read("oem").every((b) => b === 0xff)).toBe(true);
  });
  it("writes outside a region are refused", () => {
    expect(() => new Otp().program("lifecycle", w(1, 2))).toThrow(/within 1 words/);
    expect(() => new Otp().program("inject", w(1), 4)).toThrow(FleetError);
    expect(() => new Otp().program("nope" as never, w(1))).toThrow(/otp.region/);
  });
  it("the map hides secret regions and covers the whole array", () => {
    const otp = new Otp();
    otp.program("oem", w(1, 2));
    otp.program("inject", w(9));
    const map = otp.map();
    expect(map.reduce((n, r) => n + r.words, 0)).toBe(OTP_WORDS);
    expect(map.find((r) => r.name === "oem")).toMatchObject({ secret: true, data: null, programmed: 2 });
    expect(map.find((r) => r.name === "inject")!.data!.readUInt32BE(0)).toBe(9);
    expect(REGIONS.map((r) => r.offset)).toEqual([...REGIONS.map((r) => r.offset)].sort((a, b) => a - b));
  });
  it("encodes sparsely and round-trips", () => {
    const otp = new Otp();
    otp.program("trust", w(0xdeadbeef), 3);
    otp.lock("trust");
    const back = Otp.decode(otp.encode());
    expect(Buffer.from(back.words.buffer)).toEqual(Buffer.from(otp.words.buffer));
    expect(back.isLocked("trust")).toBe(true);
    expect(otp.encode().length).toBe(4 + 5);
    expect(() => Otp.decode(Buffer.alloc(6))).toThrow(FleetError);
  });
});

describe("lifecycle", () => {
  it("moves forward only along legal transitions", () => {
    const otp = new Otp();
    expect(lifecycleOf(otp)).toBe("blank");
    expect(() => transition(otp, "closed")).toThrow(/blank -> closed/);
    transition(otp, "provisioned");
    expect(() => transition(otp, "blank")).toThrow(FleetError);
    transition(otp, "closed");
    expect(() => transition(otp, "provisioned")).toThrow(FleetError);
    transition(otp, "decommissioned");
    expect(lifecycleOf(otp)).toBe("decommissioned");
    expect(() => transition(otp, "decommissioned")).toThrow(/\(none\)/);
    expect(otp.words[0]).toBe(7);
  });
  it("a decommission is legal from every live state", () => {
    for (const from of ["blank", "provisioned", "closed"] as const)
      expect(canTransition(from, "decommissioned")).toBe(true);
  });
  it("a half-blown thermometer reads as the most restrictive state", () => {
    const otp = new Otp();
    otp.program("lifecycle", w(0b10));
    expect(lifecycleOf(otp)).toBe("decommissioned");
  });
});
