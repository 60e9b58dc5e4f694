/**
 * Decommission (engine.ts): zeroize devices at the station (a closed one only on a signed command
 * for the challenge its STATUS shows) and record them decommissioned, revoking their certificates.
 */
import type { DeviceRecord, Transition } from "../registry/types";
import { UNAUTHORIZED } from "../station/messages";
import { signCommand, signerChain } from "./authorize";
import { type BatchRun, isTransient, Meter, staleChallenge } from "./run";

/**
 * Decommission devices at the station and in the registry (revoking their certificates). A
 * closed device zeroizes only on a signed command, for the challenge its STATUS shows.
 */
export async function decommission(run: BatchRun, devices: DeviceRecord[], why: string): Promise<number> {
  const r = run.ctx.registry;
  const opts = { deviceTimeoutMs: run.ctx.deviceTimeoutMs };
  const meter = new Meter("decommission", devices.length, run.ctx.onProgress);
  let n = 0;
  for (let i = 0; i < devices.length; i += run.waveSize) {
    const part = devices.slice(i, i + run.waveSize);
    const recs = part.filter((d) => d.batch === run.spec.name && d.state !== "decommissioned");
    if (!recs.length) continue;
    const st = await run.station();
    const status = await st.statusBatch(
      recs.map((d) => d.deviceId),
      opts,
    );
    const res = await st.decommissionBatch(
      recs.map((d, j) => {
        const s = status[j]!;
        const auth =
          s.ok && s.value.lifecycle === "closed" && s.value.challenge
            ? signCommand(
                run.ctx.issuer,
                d.deviceId,
                { op: "DECOMMISSION", confirm: d.deviceId },
                s.value.challenge,
                signerChain(run.ctx.issuer, s.value.trustAnchors),
              )
            : undefined;
        return { device: d.deviceId, auth };
      }),
      opts,
    );
    const at = run.now();
    const tx: Transition[] = [];
    for (let j = 0; j < res.length; j++)
      ((x: (typeof res)[number]): unknown => {
        const d = recs[j]!;
        if (!x.ok && (isTransient(x.error) || staleChallenge(x.error))) {
          run.unreachable++;
          return;
        }
        const gone = !x.ok && x.error.code === "NOT_FOUND";
        const refused = x.ok
          ? ""
          : x.error.status === UNAUTHORIZED
            ? ` (owned-elsewhere: the device refused this batch's signed command and was not zeroized: ${x.error.detail.slice(0, 120)})`
            : gone
              ? ""
              : ` (the station refused to zeroize it: ${x.error.message.slice(0, 120)})`;
        tx.push({
          deviceId: d.deviceId,
          batch: d.batch,
          from: d.state,
          to: "decommissioned",
          reason: gone ? `${why} (the station no longer knows the device)` : why + refused,
          revoke: { at, reason: "cessationOfOperation" },
        });
        if (d.certSerial) run.revokedThisRun++;
        return undefined;
      })(res[j]!);
    if (tx.length) await r.apply(tx, at);
    n += tx.length;
    meter.add(part.length);
  }
  run.decommissioned += n;
  meter.add(0, true);
  return n;
}
