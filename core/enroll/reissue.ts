/**
 * Re-issue (engine.ts): active devices whose live certificate is not what the declaration issues
 * (conformance.ts), found from the registry's certificates whatever an earlier run recorded, in
 * waves no larger than the policy allows; a wave that goes badly stops the roll-out.
 */
import { FleetError } from "../errors";
import type { DeviceRecord } from "../registry/types";
import { Conformance } from "./conformance";
import { attest, install, issue } from "./enroll";
import type { CompiledTemplate } from "./profile";
import { type BatchRun, fmtPct, Meter } from "./run";

/**
 * Live certificates of the batch that are not what the declaration issues: device -> serial.
 * One pass over the batch's live certificates (pages by serial), whatever their number.
 */
export async function nonConforming(run: BatchRun): Promise<Map<string, string>> {
  const c = new Conformance(run.spec.profile, run.ctx.issuer, run.spec.name, run.spec.model, run.spec.names);
  // a CA rollover: the predecessor's certificates are left to the RotationSchedule's waves (the
  // hub holds the new certificate before the device switches), not re-issued by the batch at once
  const p = run.ctx.previous
    ? new Conformance(run.spec.profile, run.ctx.previous, run.spec.name, run.spec.model, run.spec.names)
    : undefined;
  const out = new Map<string, string>();
  let after: string | undefined;
  for (;;) {
    const page = await run.ctx.registry.certificates({
      batch: run.spec.name,
      status: ["live"],
      after,
      limit: 2000,
    });
    for (const cert of page) if (!c.matches(cert) && !p?.matches(cert)) out.set(cert.deviceId, cert.serial);
    if (page.length < 2000) return out;
    after = page[page.length - 1]!.serial;
  }
}

/** Declared active devices whose current certificate does not conform (or is not recorded). */
export async function* stalePages(run: BatchRun): AsyncGenerator<DeviceRecord[]> {
  const bad = await nonConforming(run);
  for await (const page of run.pages(["active"])) {
    const stale = page.filter(
      (d) => run.inRange(d.deviceId) && (!d.certSerial || bad.get(d.deviceId) === d.certSerial),
    );
    if (stale.length) yield stale;
  }
}

/** Re-issue the certificates that do not conform to the declaration, in waves no larger than the policy allows. */
export async function reissue(run: BatchRun, template: CompiledTemplate): Promise<void> {
  const waveMax = Math.max(1, Math.floor(run.spec.count * run.spec.maxWaveFraction));
  const stale: DeviceRecord[] = [];
  for await (const page of stalePages(run)) stale.push(...page);
  if (!stale.length) return;
  const meter = new Meter("reissue", stale.length, run.ctx.onProgress);
  for (let w = 0; w < stale.length; w += waveMax) {
    const wave = stale.slice(w, w + waveMax);
    const before = run.unreachable;
    let quarantined = 0;
    for (let i = 0; i < wave.length; i += run.waveSize) {
      const part = wave.slice(i, i + run.waveSize);
      const attested = await attest(run, part); // active devices stay active until re-issued
      quarantined += part.length - attested.length;
      const issued = await issue(run, attested, template);
      quarantined += attested.length - issued.length;
      await install(run, issued);
      run.reissued += issued.length;
      meter.add(part.length);
    }
    // a wave that went badly stops the roll-out; devices not reached keep their live certificate
    const bad = quarantined + (run.unreachable - before);
    if (bad / wave.length > run.spec.maxQuarantinedFraction) {
      throw new FleetError(
        "POLICY_VIOLATION",
        `batch ${run.spec.name}: re-issue wave ${w / waveMax + 1} got ${bad} of ${wave.length} devices failing, ` +
          `want at most ${fmtPct(run.spec.maxQuarantinedFraction)}; roll-out stopped, the remaining devices keep their certificates`,
        "policy.rotation.maxWaveFraction",
      );
    }
  }
  meter.add(0, true);
}
