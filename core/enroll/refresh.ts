/**
 * Refresh (engine.ts): compare the registry with the devices. Every active device, or a random
 * sample (EngineContext.refreshSample), attests a fresh nonce against the key on record; STATUS
 * finds lost certificates and records without a device.
 */
import * as crypto from "node:crypto";
import { invalid } from "../errors";
import type { DeviceRecord, Transition } from "../registry/types";
import { verifyAttestation } from "../station/attest";
import { type BatchRun, isTransient, Meter, quarantine, type RefreshResult } from "./run";

/**
 * Refresh: compare the registry with the devices. Every active device (or a random
 * `refreshSample` of them) attests for a fresh nonce, checked against the key and epoch on
 * record: one that cannot (a clone swapped in, another part) is quarantined and its
 * certificate revoked. An active device that no longer holds its certificate goes back to
 * `issued` (the next run installs the recorded one again); a record whose device the station
 * does not know is quarantined. Returns the drift found and the attestation sample.
 */
export async function refresh(run: BatchRun): Promise<RefreshResult> {
  const want = run.ctx.refreshSample;
  if (want !== undefined && !(Number.isInteger(want) && want >= 0))
    throw invalid("refreshSample", want, "an integer >= 0 (active devices to attest)");
  const counts = await run.ctx.registry.counts(run.spec.name);
  const population = counts.active;
  const sample = want === undefined || want >= population ? undefined : await sampleActive(run, want);
  const meter = new Meter("refresh", population, run.ctx.onProgress);
  const opts = { deviceTimeoutMs: run.ctx.deviceTimeoutMs };
  let lost = 0;
  let missing = 0;
  let checked = 0;
  let asked = 0;
  let failed = 0;
  for await (const page of run.pages(["active"])) {
    const st = await run.station();
    const toAttest = sample ? page.filter((d) => sample.has(d.deviceId)) : page;
    const nonces = toAttest.map(() => crypto.randomBytes(32));
    const [res, att] = await Promise.all([
      st.statusBatch(
        page.map((d) => d.deviceId),
        opts,
      ),
      toAttest.length
        ? st.attestBatch(
            toAttest.map((d, i) => ({ device: d.deviceId, nonce: nonces[i]! })),
            opts,
          )
        : Promise.resolve([]),
    ]);
    asked += toAttest.length;
    const tx: Transition[] = [];
    const bad = new Set<string>();
    const q = (d: DeviceRecord, reason: string) => {
      failed++;
      bad.add(d.deviceId);
      tx.push(quarantine(d, "active", reason));
    };
    toAttest.forEach((d, i) => {
      const a = att[i]!;
      if (!a.ok) {
        // unreachable: tried again next time; unknown: STATUS below says so
        if (isTransient(a.error) || a.error.code === "NOT_FOUND") return;
        const detail = a.error.message.replace(/[\r\n]+/g, " ").slice(0, 160);
        q(
          d,
          `attestation-failed: refresh: the device cannot attest with its identity key (clone or swapped part suspected): ${detail}`,
        );
      } else if (d.epoch !== null && a.value.epoch !== d.epoch)
        q(
          d,
          `key-mismatch: refresh: the device attests with key epoch ${a.value.epoch}, the registry records ${d.epoch}`,
        );
      else if (
        !d.publicKey ||
        !verifyAttestation(d.publicKey, d.deviceId, a.value.epoch, nonces[i]!, a.value.signature)
      )
        q(
          d,
          "attestation-failed: refresh: the answer is not signed by the key recorded for this device (clone or swapped part)",
        );
    });
    for (let i = 0; i < page.length; i++) {
      const d = page[i]!;
      const s = res[i]!;
      checked++;
      if (bad.has(d.deviceId)) continue;
      if (!s.ok) {
        if (s.error.code === "NOT_FOUND") {
          missing++;
          tx.push(
            quarantine(
              d,
              "active",
              "drift: a registry record without a device (the station does not know it)",
            ),
          );
        }
        continue;
      }
      const cert = await run.liveCert(d);
      const has = cert && s.value.chain.length > 0 && s.value.chain[0]!.equals(cert.der);
      if (!has) {
        lost++;
        tx.push({
          deviceId: d.deviceId,
          batch: d.batch,
          from: "active",
          to: "issued",
          reason: "drift: the device lost its certificate; the recorded one will be installed again",
        });
      }
    }
    if (tx.length) await run.ctx.registry.apply(tx, run.now());
    run.revokedThisRun += bad.size; // a quarantined active device's certificate is revoked
    meter.add(page.length);
  }
  meter.add(0, true);
  return {
    lostCertificate: lost,
    missingDevice: missing,
    checked,
    attestation: { sample: asked, population, failed },
  };
}

/** `k` active devices drawn uniformly (reservoir sampling: one pass, memory for `k` IDs). */
export async function sampleActive(run: BatchRun, k: number): Promise<Set<string>> {
  const picked: string[] = [];
  let seen = 0;
  for await (const page of run.pages(["active"]))
    for (const d of page) {
      seen++;
      if (picked.length < k) picked.push(d.deviceId);
      else {
        const j = crypto.randomInt(seen);
        if (j < k) picked[j] = d.deviceId;
      }
    }
  return new Set(picked);
}
