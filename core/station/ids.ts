/**
 * Device IDs, shared by the station (the farm) and the enrollment engine: `<model>-<serial>`, the serial being the device's index zero-padded to
 * seven digits (fg100-0000042). IDs are deterministic from the index, so the farm stores
 * nothing to know which devices exist and parses an ID back to its index in O(1).
 */
import { invalid } from "../errors";

export const SERIAL_DIGITS = 7;
export const MAX_COUNT = 10 ** SERIAL_DIGITS;
const MODEL_RE = /^[A-Za-z0-9][A-Za-z0-9_.]{0,23}$/;

export function checkModel(model: string): string {
  if (!MODEL_RE.test(model))
    throw invalid("model", model, "1..24 letters, digits, '_' or '.', starting alphanumeric");
  return model;
}

export function deviceId(model: string, index: number): string {
  return `${model}-${String(index).padStart(SERIAL_DIGITS, "0")}`;
}

/** The index of `id` in a farm of `count` devices of `model`, or undefined. */
export function indexOf(model: string, count: number, id: string): number | undefined {
  if (id.length !== model.length + 1 + SERIAL_DIGITS || !id.startsWith(model) || id[model.length] !== "-")
    return undefined;
  const serial = id.slice(model.length + 1);
  if (!/^\d+$/.test(serial)) return undefined;
  const i = Number(serial);
  return i < count ? i : undefined;
}
