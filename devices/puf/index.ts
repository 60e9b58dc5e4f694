/**
 * Public API of the emulated SRAM PUF and its fuzzy extractor, for the device firmware:
 * createPufDevice -> enroll (once, at manufacturing; helper data is public) -> reconstruct
 * (every boot) -> deriveP256 per context ("identity", "epoch/<n>"). See docs/puf.md.
 */
import type { SramPufOptions } from "./sram";
import { SramPuf } from "./sram";

export {
  CODE_V1,
  type EnrollDeps,
  enroll,
  type HelperInfo,
  helperInfo,
  type ReconstructDeps,
  reconstruct,
} from "./fuzzy";
export { deriveKeyBytes, deriveP256, epochContext, IDENTITY_CONTEXT, p256Scalar } from "./keys";
export {
  CORNERS,
  DEFAULT_NOISE_MODEL,
  expectedBer,
  NOMINAL,
  type NoiseModel,
  noiseRatio,
  type PufConditions,
  type PufDevice,
  SramPuf,
  type SramPufOptions,
} from "./sram";

/** An emulated SRAM PUF for (farmSeed, deviceId); cell values are derived lazily on first read. */
export function createPufDevice(farmSeed: Uint8Array, deviceId: string, opts?: SramPufOptions): SramPuf {
  return new SramPuf(farmSeed, deviceId, opts);
}
