/**
 * Client-side rate limiting for hub control planes: a token bucket per API (AWS IoT publishes
 * per-API TPS quotas, e.g. RegisterCertificate 10/s; DPS 1,000 registrations/min) and a retry
 * helper with capped exponential back-off and "full jitter" (delay = random(0, min(cap, base·2^n)),
 * after Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015) for the throttling
 * answers a quota still produces. The clock, the sleep and the random source are parameters so
 * tests run on virtual time without sleeping.
 */
import { invalid } from "../errors";

/** Time as the limiter sees it: milliseconds, and a way to wait. */
export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms))),
};

/** "off" for a rate: 0 or Infinity (the local hub, a benchmark of our own overhead). */
export function rateIsOff(ratePerSecond: number): boolean {
  return ratePerSecond === 0 || ratePerSecond === Number.POSITIVE_INFINITY;
}

/**
 * A token bucket: `burst` tokens at most, refilled at `ratePerSecond`. `take()` reserves a token
 * at once (the count may go below zero) and waits until that token has been earned, so concurrent
 * callers are served in call order and the long-run rate never exceeds `ratePerSecond`.
 */
export class TokenBucket {
  readonly ratePerSecond: number;
  readonly burst: number;
  private tokens: number;
  private last: number;

  constructor(
    ratePerSecond: number,
    burst?: number,
    private readonly clock: Clock = realClock,
  ) {
    if (typeof ratePerSecond !== "number" || Number.isNaN(ratePerSecond) || ratePerSecond < 0)
      throw invalid("ratePerSecond", ratePerSecond, "a number >= 0 (0 or Infinity: no limit)");
    const b = burst ?? Math.max(1, Math.ceil(rateIsOff(ratePerSecond) ? 1 : ratePerSecond));
    if (!Number.isFinite(b) || b < 1) throw invalid("burst", b, "a finite number >= 1");
    this.ratePerSecond = ratePerSecond;
    this.burst = b;
    this.tokens = b;
    this.last = clock.now();
  }

  get off(): boolean {
    return rateIsOff(this.ratePerSecond);
  }

  private refill(): void {
    const now = this.clock.now();
    const elapsed = Math.max(0, now - this.last);
    this.last = now;
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000);
  }

  /** Wait for one token (no wait when the rate is off). */
  async take(): Promise<void> {
    if (this.off) return;
    this.refill();
    this.tokens -= 1;
    if (this.tokens >= 0) return;
    await this.clock.sleep((-this.tokens * 1000) / this.ratePerSecond);
  }

  /** Take a token only if one is there now. */
  tryTake(): boolean {
    if (this.off) return true;
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

export interface RetryOptions {
  /** which errors are worth another try (throttling, a dropped connection); others are thrown at once */
  retryable: (err: unknown) => boolean;
  /** attempts in all, the first included (default 8) */
  maxAttempts?: number;
  /** give up once this much time has passed since the first attempt (default 60,000 ms) */
  maxElapsedMs?: number;
  /** the back-off base (default 100 ms) and cap (default 20,000 ms) */
  baseMs?: number;
  capMs?: number;
  clock?: Clock;
  /** a number in [0, 1) */
  random?: () => number;
  /** told before each wait: the attempt that failed (1-based), the error, the wait */
  onRetry?: (attempt: number, err: unknown, delayMs: number) => void;
}

/** Thrown when a retryable error persists past the attempt or time budget; `cause` is the last error. */
export class RetryExhaustedError extends Error {
  constructor(
    readonly attempts: number,
    readonly elapsedMs: number,
    readonly cause: unknown,
  ) {
    super(
      `gave up after ${attempts} attempts in ${Math.round(elapsedMs)} ms: ${cause instanceof Error ? cause.message : String(cause)}`,
    );
    this.name = "RetryExhaustedError";
  }
}

/** The full-jitter delay before attempt `failed + 1`. */
export function backoffDelay(failed: number, baseMs: number, capMs: number, random: () => number): number {
  return random() * Math.min(capMs, baseMs * 2 ** Math.max(0, failed - 1));
}

/**
 * Run `fn` until it succeeds, a non-retryable error is thrown (rethrown as is), or the budget is
 * spent (RetryExhaustedError). `fn` gets the attempt number (1-based).
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const maxAttempts = options.maxAttempts ?? 8;
  const maxElapsedMs = options.maxElapsedMs ?? 60_000;
  const baseMs = options.baseMs ?? 100;
  const capMs = options.capMs ?? 20_000;
  const clock = options.clock ?? realClock;
  const random = options.random ?? Math.random;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1)
    throw invalid("maxAttempts", maxAttempts, "an integer >= 1");
  if (!(maxElapsedMs >= 0)) throw invalid("maxElapsedMs", maxElapsedMs, "a number >= 0");
  if (!(baseMs >= 0) || !(capMs >= baseMs)) throw invalid("capMs", capMs, `a number >= baseMs (${baseMs})`);
  const start = clock.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (!options.retryable(err)) throw err;
      const elapsed = clock.now() - start;
      const delay = backoffDelay(attempt, baseMs, capMs, random);
      if (attempt >= maxAttempts || elapsed + delay > maxElapsedMs)
        throw new RetryExhaustedError(attempt, elapsed, err);
      options.onRetry?.(attempt, err, delay);
      await clock.sleep(delay);
    }
  }
}
