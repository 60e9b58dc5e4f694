/**
 * Re-key (renew.ts runs it in waves): a PUF device derives its next epoch's key (the firmware's
 * ROTATE, a command signed by the issuing CA for the device's challenge) and answers with a CSR
 * signed by the new key; the key the registry holds for the device then attests over that CSR
 * (renew.ts bindNonce), so the new key is vouched for by the current one. The certificate for the
 * new key is recorded with the key itself (`issued`, publicKey: an audited fact, and the key age
 * restarts from it); the device switches to the new epoch when it installs a leaf that certifies
 * its pending key, and the confirmation (`active`, the epoch it reports) supersedes the old
 * certificate. A device killed after ROTATE keeps its pending epoch and answers a repeated ROTATE
 * with the same key, so the next run carries on where this one stopped.
 */
import type { DeviceRecord, Transition } from "../registry/types";
import { verifyCsr } from "../station/csr";
import type { Subject } from "../station/messages";
import { signCommand, signerChain } from "./authorize";
import { type CompiledTemplate, deviceNames } from "./profile";
import { type BoundCsr, bindNonce, vouchIssueInstall } from "./renew";
import { type BatchRun, quarantine } from "./run";

/** Re-key active PUF devices; returns how many confirmed a certificate for their new key. */
export async function rekey(
  run: BatchRun,
  devs: DeviceRecord[],
  template: CompiledTemplate,
  opts0: { install?: boolean } = {},
): Promise<number> {
  const st = await run.station();
  const opts = { deviceTimeoutMs: run.ctx.deviceTimeoutMs };
  const tx: Transition[] = [];
  const q = (d: DeviceRecord, reason: string) => tx.push(quarantine(d, "active", reason));
  const names = devs.map((d) =>
    deviceNames(run.spec.profile, d.deviceId, run.spec.name, run.spec.model, run.spec.names),
  );
  const status = await st.statusBatch(
    devs.map((d) => d.deviceId),
    opts,
  );
  const asked: Array<{ d: DeviceRecord; i: number; subject: Subject }> = [];
  const items: Array<{ device: string; subject: Subject; auth?: ReturnType<typeof signCommand> }> = [];
  for (let i = 0; i < status.length; i++) {
    const s = status[i]!;
    const d = devs[i]!;
    if (!s.ok) {
      run.failed(d, s, q, "rekey-status");
      continue;
    }
    if (s.value.epoch !== d.epoch) {
      q(
        d,
        `key-mismatch: rekey: the device reports key epoch ${s.value.epoch}, the registry records ${d.epoch}`,
      );
      continue;
    }
    const subject = names[i]!.subject;
    const auth =
      s.value.lifecycle === "closed" && s.value.challenge
        ? signCommand(
            run.ctx.issuer,
            d.deviceId,
            { op: "ROTATE", subject },
            s.value.challenge,
            // after a root rollover a device that trusts only the old root gets the cross chain
            signerChain(run.ctx.issuer, s.value.trustAnchors),
          )
        : undefined;
    asked.push({ d, i, subject });
    items.push({ device: d.deviceId, subject, auth });
  }
  const rot = items.length ? await st.rotateBatch(items, opts) : [];
  const bound: BoundCsr[] = [];
  for (let j = 0; j < rot.length; j++) {
    const res = rot[j]!;
    const { d, i } = asked[j]!;
    if (!res.ok) {
      run.failed(d, res, q, "rekey-rotate");
      continue;
    }
    if (!(res.value.epoch > (d.epoch ?? 0))) {
      q(
        d,
        `rekey-refused: the device answers ROTATE with epoch ${res.value.epoch}, want one after ${d.epoch}`,
      );
      continue;
    }
    try {
      const spki = verifyCsr(res.value.csr).spki; // signed by the new key (proof of possession)
      if (d.publicKey?.equals(spki)) {
        q(d, "rekey-refused: the device answers ROTATE with its current key");
        continue;
      }
      bound.push({ d, i, spki, epoch: res.value.epoch, nonce: bindNonce(res.value.csr) });
    } catch (e) {
      q(d, `csr-invalid: rekey: ${(e as Error).message.slice(0, 160)}`);
    }
  }
  // the current key vouches for the new key's CSR
  return vouchIssueInstall(run, { tx, q, names, template, opts, install: opts0.install }, bound, {
    step: "rekey",
    attestationFailed:
      "attestation-failed: rekey: the new key's CSR is not vouched for by the key recorded for this device",
    transition: (b) => ({
      reason: "re-key: the key reached the maximum key age",
      publicKey: b.spki,
      detail: { rotation: "rekey", replaces: b.d.certSerial, fromEpoch: b.d.epoch, toEpoch: b.epoch },
    }),
  });
}
