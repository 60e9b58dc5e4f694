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
  /** signed commands executed (command.ts): the device's challenge derives from it, so each runs once */
  commands: number;
}

export function blankState(): DeviceState {
  return { otp: new Otp(), helper: null, epoch: 0, pendingEpoch: null, chain: [], commands: 0 };
}

export function cloneState(s: DeviceState): DeviceState {
  return {
    otp: s.otp.clone(),
    helper: s.helper,
    epoch: s.epoch,
    pendingEpoch: s.pendingEpoch,
    chain: s.chain.slice(),
    commands: s.commands,
  };
}

export function encodeState(s: DeviceState): Buffer {
  return encode({
    otp: s.otp.encode(),
    helper: s.helper ?? undefined,
    epoch: s.epoch,
    pending: s.pendingEpoch ?? undefined,
    chain: s.chain.length ? s.chain : undefined,
    // absent in states written before signed commands existed: 0
    commands: s.commands || undefined,
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
  // the decoder hands out fresh copies of byte strings: use them as they are. A decoded state is
  // short-lived (the farm stores states encoded, one copy of each CA certificate for all
  // devices: farm/pack.ts), so CA certificates are not shared here.
  const own = (b: Uint8Array) => (Buffer.isBuffer(b) ? b : Buffer.from(b));
  return {
    otp: Otp.decode(v.otp),
    helper: v.helper instanceof Uint8Array ? own(v.helper) : null,
    epoch,
    pendingEpoch: typeof v.pending === "number" ? v.pending : null,
    chain: (chain as Uint8Array[]).map(own),
    commands: typeof v.commands === "number" ? v.commands : 0,
  };
}
