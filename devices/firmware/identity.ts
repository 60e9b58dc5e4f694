/**
 * Where a device's signing keys come from. On the PUF path the key of epoch 0 is derived from
 * the PUF-stable secret with HKDF context "identity", and the key of epoch n >= 1 with
 * "epoch/<n>" (devices/puf: fuzzy extractor reconstruct, then deriveP256). On the injection
 * path the epoch 0 key is the P-256 scalar the HSM sent, fused into the secret OTP region.
 * A powered device keeps its reconstructed key in RAM: the farm models that with a bounded
 * LRU cache per (device, epoch), so a session of identify, attest and CSR costs one
 * reconstruction. Noisy and cloned devices are never cached: every use reads the PUF again.
 */
import type { KeyObject } from "node:crypto";

import * as puf from "../puf";

export type { PufConditions, PufDevice } from "../puf";

/** What the firmware uses of devices/puf (the PUF model and fuzzy extractor). */
export interface PufApi {
  NOMINAL: puf.PufConditions;
  createPufDevice(farmSeed: Uint8Array, deviceId: string, opts?: { cells?: number }): puf.PufDevice;
  enroll(p: puf.PufDevice): { helper: Uint8Array };
  reconstruct(p: puf.PufDevice, helper: Uint8Array, conditions?: puf.PufConditions): Uint8Array;
  /** `spki`, if given, must be publicKey's DER SubjectPublicKeyInfo */
  deriveP256(
    secret: Uint8Array,
    context: string,
  ): { privateKey: KeyObject; publicKey: KeyObject; spki?: Buffer };
}

/** The real PUF module (an agent can be given another PufApi only for experiments). */
export const defaultPuf: PufApi = puf;

export interface DeviceKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** SubjectPublicKeyInfo DER */
  spki: Buffer;
}

export const contextOf = (epoch: number): string =>
  epoch === 0 ? puf.IDENTITY_CONTEXT : puf.epochContext(epoch);

/** A bounded least-recently-used map. */
export class Lru<V> {
  private readonly m = new Map<string, V>();
  constructor(readonly capacity: number) {}
  get(k: string): V | undefined {
    const v = this.m.get(k);
    if (v !== undefined) {
      this.m.delete(k);
      this.m.set(k, v);
    }
    return v;
  }
  set(k: string, v: V): void {
    if (this.capacity <= 0) return;
    this.m.delete(k);
    this.m.set(k, v);
    if (this.m.size > this.capacity) this.m.delete(this.m.keys().next().value!);
  }
  delete(k: string): void {
    this.m.delete(k);
  }
  get size(): number {
    return this.m.size;
  }
}
