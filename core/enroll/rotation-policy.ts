/**
 * The rotation schedule's policy (renew.ts): when a certificate is due for renewal (2/3 of its
 * lifetime as cert-manager and step-ca do, or days before expiry), the key age that calls for a
 * re-key, the wave and failure fractions, the UTC maintenance window, and the bake (soak) time
 * between waves. Pure and free of the station protocol, so the RotationSchedule component checks
 * its arguments with it.
 *
 * The bake: after a wave, the schedule's next wave is not due until `bakeHours` have passed since
 * the wave began, and, with a maintenance window, not before the window's next opening (one wave
 * per window), as a staged roll-out soaks each wave before the next. The waves are read back from
 * the registry (the issue times of the certificates that replaced another, wavesOf), never from
 * what an earlier run meant to do, so a run killed mid-wave finishes that wave and no more.
 */
import { invalid } from "../errors";

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

/**
 * The default bake, 20 hours: a nightly schedule (cron once a day) does one wave a night, and the
 * convergence preview right after the up, or a rerun the same night, finds the next wave not yet
 * due; 4 hours short of a day, so a nightly run that starts late (scheduled CI runs often start
 * minutes to an hour late) still finds tomorrow's wave due.
 */
export const DEFAULT_BAKE_HOURS = 20;

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
  /** waves one run may do (default 1); with a bake, waves one bake period may do */
  wavesPerRun?: number;
  /** hours a wave soaks before the next wave is due (default DEFAULT_BAKE_HOURS; 0: none, waves back to back) */
  bakeHours?: number;
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
  if (p.bakeHours !== undefined && !(Number.isFinite(p.bakeHours) && p.bakeHours >= 0 && p.bakeHours <= 8760))
    throw invalid(
      "bakeHours",
      p.bakeHours,
      "a number of hours in [0, 8760] between waves (0: no bake), e.g. 20",
    );
}

/** The bake in ms (the default when unset). */
export const bakeMsOf = (p: Pick<RotationPolicy, "bakeHours">): number =>
  (p.bakeHours ?? DEFAULT_BAKE_HOURS) * HOUR_MS;

/** The maintenance window's first opening strictly after `after`. */
export function nextWindowStart(w: string, after: Date): Date {
  const { start } = parseWindow(w);
  const day = Date.UTC(after.getUTCFullYear(), after.getUTCMonth(), after.getUTCDate());
  let t = day + start * 60_000;
  while (t <= after.getTime()) t += DAY_MS;
  return new Date(t);
}

/**
 * When the next wave may begin after a wave that began at `start`: `bakeHours` later and, with a
 * maintenance window, not before the window opens again (one wave per window). No bake: at once.
 */
export function nextWaveAt(p: RotationPolicy, start: Date): Date {
  const bake = bakeMsOf(p);
  if (bake === 0) return start;
  const t = start.getTime() + bake;
  if (p.maintenanceWindow === undefined) return new Date(t);
  return new Date(Math.max(t, nextWindowStart(p.maintenanceWindow, start).getTime()));
}

export interface Wave {
  /** the first certificate of the wave was issued then */
  start: Date;
  /** certificates the wave issued */
  count: number;
  /** when the next wave may begin (nextWaveAt) */
  nextAt: Date;
}

/**
 * The waves, read back from the issue times of the certificates that replaced another (renewals,
 * re-keys, re-issues), in any order: a wave begins with the first such certificate at or after the
 * previous wave's nextAt and holds every one issued before its own nextAt. With no bake there are
 * no waves to wait for: [].
 */
export function wavesOf(p: RotationPolicy, issuedAt: readonly number[]): Wave[] {
  if (bakeMsOf(p) === 0 || issuedAt.length === 0) return [];
  const t = [...issuedAt].sort((a, b) => a - b);
  const out: Wave[] = [];
  for (let i = 0; i < t.length; ) {
    const start = new Date(t[i]!);
    const nextAt = nextWaveAt(p, start);
    let j = i;
    while (j < t.length && t[j]! < nextAt.getTime()) j++;
    out.push({ start, count: j - i, nextAt });
    i = j;
  }
  return out;
}

/**
 * What the schedule may still change at `now`, given the waves so far: a full allowance
 * (`perWave` x wavesPerRun) when the last wave's bake is over, else what the last wave left of it
 * (a run killed mid-wave finishes its wave, no more), and when the next full wave is due.
 */
export function allowanceAt(
  p: RotationPolicy,
  waves: readonly Wave[],
  perWave: number,
  now: Date,
): { devices: number; nextWaveAt?: Date; current?: Wave } {
  const full = perWave * (p.wavesPerRun ?? 1);
  const last = waves[waves.length - 1];
  if (!last || last.nextAt.getTime() <= now.getTime()) return { devices: full };
  return { devices: Math.max(0, full - last.count), nextWaveAt: last.nextAt, current: last };
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
