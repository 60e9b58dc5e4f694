/**
 * The rotation schedule's policy (renew.ts): when a certificate is due for renewal (2/3 of its
 * lifetime as cert-manager and step-ca do, or days before expiry), the key age that calls for a
 * re-key, the wave and failure fractions, the UTC maintenance window. Pure and free of the
 * station protocol, so the RotationSchedule component checks its arguments with it.
 */
import { invalid } from "../errors";

const DAY_MS = 86_400_000;

export interface RotationPolicy {
  /** renew when fewer than this many days of validity remain */
  renewBeforeDays?: number;
  /** renew once this fraction of the lifetime has elapsed (cert-manager, step-ca: 2/3); default 2/3 when neither is set */
  renewAtFraction?: number;
  /** re-key when the key is older than this (policy renewal.maxKeyAgeDays); none: never re-key */
  maxKeyAgeDays?: number;
  /** a wave changes at most this fraction of the batch (policy rotation.maxWaveFraction) */
  maxWaveFraction: number;
  /** a wave with more than this fraction of its devices failing stops the roll-out */
  maxFailureFraction: number;
  /** UTC "HH:MM-HH:MM" (may wrap midnight): work only inside it */
  maintenanceWindow?: string;
  /** waves one run may do (default 1) */
  wavesPerRun?: number;
}

export function validatePolicy(p: RotationPolicy): void {
  if (p === null || typeof p !== "object") throw invalid("rotation", p, "a rotation policy");
  if (p.renewBeforeDays !== undefined && !(Number.isFinite(p.renewBeforeDays) && p.renewBeforeDays > 0))
    throw invalid("renewBeforeDays", p.renewBeforeDays, "a number of days > 0");
  if (p.renewAtFraction !== undefined && !(p.renewAtFraction > 0 && p.renewAtFraction < 1))
    throw invalid("renewAtFraction", p.renewAtFraction, "a fraction of the lifetime in (0, 1), e.g. 0.667");
  if (p.maxKeyAgeDays !== undefined && !(Number.isFinite(p.maxKeyAgeDays) && p.maxKeyAgeDays > 0))
    throw invalid("maxKeyAgeDays", p.maxKeyAgeDays, "a number of days > 0");
  if (!(p.maxWaveFraction > 0 && p.maxWaveFraction <= 1))
    throw invalid("maxWaveFraction", p.maxWaveFraction, "a fraction in (0, 1]");
  if (!(p.maxFailureFraction >= 0 && p.maxFailureFraction <= 1))
    throw invalid("maxFailureFraction", p.maxFailureFraction, "a fraction in [0, 1]");
  if (p.maintenanceWindow !== undefined) parseWindow(p.maintenanceWindow);
  if (p.wavesPerRun !== undefined && !(Number.isInteger(p.wavesPerRun) && p.wavesPerRun >= 1))
    throw invalid("wavesPerRun", p.wavesPerRun, "an integer >= 1");
}

/** "HH:MM-HH:MM" (UTC) -> minutes of the day [start, end). */
export function parseWindow(w: string): { start: number; end: number } {
  const m = typeof w === "string" ? /^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$/.exec(w) : null;
  if (!m || m[1] + m[2] === m[3]! + m[4])
    throw invalid("maintenanceWindow", w, '"HH:MM-HH:MM" in UTC with start != end, e.g. "01:00-05:00"');
  return { start: Number(m[1]) * 60 + Number(m[2]), end: Number(m[3]) * 60 + Number(m[4]) };
}

export function inWindow(w: string | undefined, now: Date): boolean {
  if (w === undefined) return true;
  const { start, end } = parseWindow(w);
  const t = now.getUTCHours() * 60 + now.getUTCMinutes();
  return start < end ? t >= start && t < end : t >= start || t < end;
}

/** When a certificate of validity [notBefore, notAfter] becomes due for renewal. */
export function renewAt(p: RotationPolicy, notBefore: Date, notAfter: Date): Date {
  const nb = notBefore.getTime();
  const na = notAfter.getTime();
  const at: number[] = [];
  if (p.renewBeforeDays !== undefined) at.push(na - p.renewBeforeDays * DAY_MS);
  const frac = p.renewAtFraction ?? (p.renewBeforeDays === undefined ? 2 / 3 : undefined);
  if (frac !== undefined) at.push(nb + Math.round((na - nb) * frac));
  return new Date(Math.min(...at));
}
