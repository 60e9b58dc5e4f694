/**
 * What an emulated device stores, and so what the farm persists: its fuses, the PUF helper
 * data and installed certificate chain (its non-volatile memory), and the key epoch. Everything
 * else about a device (PUF cells, chip key, vendor certificate) derives from the farm seed.
 * Operations never edit a state in place: they clone, change the clone, and hand it back, so a
 * refused operation leaves nothing half-written. The encoding (CBOR) is what the farm's
 * write-ahead log and snapshots carry.
 */
import { invalid } from "../../core/errors";
import { decode, encode, isMap } from "../../core/station/cbor";
import { Otp } from "./otp";

export interface DeviceState {
  otp: Otp;
  helper: Buffer | null;
  epoch: number;
  pendingEpoch: number | null;
  chain: Buffer[];
}

export function blankState(): DeviceState {
  return { otp: new Otp(), helper: null, epoch: 0, pendingEpoch: null, chain: [] };
}

export function cloneState(s: DeviceState): DeviceState {
  return {
    otp: s.otp.clone(),
    helper: s.helper,
    epoch: s.epoch,
    pendingEpoch: s.pendingEpoch,
    chain: s.chain.slice(),
  };
}

export function encodeState(s: DeviceState): Buffer {
  return encode({
    otp: s.otp.encode(),
    helper: s.helper ?? undefined,
    epoch: s.epoch,
    pending: s.pendingEpoch ?? undefined,
    chain: s.chain.length ? s.chain : undefined,
  });
}

export function decodeState(b: Uint8Array): DeviceState {
  const v = decode(b);
  if (!isMap(v) || !(v.otp instanceof Uint8Array))
    throw invalid("deviceState", "a malformed record", "a map with otp");
  const epoch = v.epoch;
  if (typeof epoch !== "number") throw invalid("deviceState.epoch", epoch, "an integer");
  const chain = v.chain === undefined ? [] : v.chain;
  if (!Array.isArray(chain) || !chain.every((c) => c instanceof Uint8Array))
    throw invalid("deviceState.chain", "a malformed chain", "an array of bytes");
  return {
    otp: Otp.decode(v.otp),
    helper: v.helper instanceof Uint8Array ? Buffer.from(v.helper) : null,
    epoch,
    pendingEpoch: typeof v.pending === "number" ? v.pending : null,
    chain: chain.map((c) => Buffer.from(c as Uint8Array)),
  };
}
