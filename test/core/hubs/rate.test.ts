import { describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import {
  backoffDelay,
  type Clock,
  RetryExhaustedError,
  rateIsOff,
  retry,
  TokenBucket,
} from "../../../core/hubs/rate";

/**
 * Virtual time: sleep() queues a timer; once every pending microtask has run (setImmediate), the
 * earliest timer fires and the clock jumps to it. Nothing really sleeps; concurrent callers all
 * queue their waits before time moves.
 */
class VirtualClock implements Clock {
  t = 0;
  slept: number[] = [];
  private timers: { at: number; seq: number; resolve: () => void }[] = [];
  private seq = 0;
  private scheduled = false;
  now(): number {
    return this.t;
  }
  sleep(ms: number): Promise<void> {
    this.slept.push(ms);
    return new Promise((resolve) => {
      this.timers.push({ at: this.t + Math.max(0, ms), seq: this.seq++, resolve });
      this.schedule();
    });
  }
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.timers.shift();
      if (!next) return;
      this.t = Math.max(this.t, next.at);
      next.resolve();
      if (this.timers.length) this.schedule();
    });
  }
}

describe("TokenBucket", () => {
  it("lets a burst through at once, then holds the rate", async () => {
    const clock = new VirtualClock();
    const bucket = new TokenBucket(10, 10, clock);
    const at: number[] = [];
    for (let i = 0; i < 30; i++) {
      await bucket.take();
      at.push(clock.now());
    }
    expect(at.slice(0, 10)).toEqual(Array(10).fill(0));
    // then one token every 100 ms: 30 calls end at 2,000 ms (10 free + 20 earned)
    expect(at[10]).toBeCloseTo(100, 6);
    expect(at[29]).toBeCloseTo(2000, 6);
    // never more than burst + rate·t calls by time t
    for (const [i, t] of at.entries())
      expect(i + 1).toBeLessThanOrEqual(10 + Math.floor((t * 10) / 1000 + 1e-9));
  });

  it("serves concurrent callers in call order without exceeding the rate", async () => {
    const clock = new VirtualClock();
    const bucket = new TokenBucket(5, 1, clock);
    const done: [number, number][] = [];
    await Promise.all(
      Array.from({ length: 11 }, (_, i) => bucket.take().then(() => done.push([i, clock.now()]))),
    );
    expect(done.map(([i]) => i)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(done.map(([, t]) => Math.round(t))).toEqual([
      0, 200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000,
    ]);
  });

  it("refills while idle, up to the burst only", async () => {
    const clock = new VirtualClock();
    const bucket = new TokenBucket(2, 3, clock);
    for (let i = 0; i < 3; i++) expect(bucket.tryTake()).toBe(true);
    expect(bucket.tryTake()).toBe(false);
    clock.t += 60_000; // a minute idle earns 120 tokens, kept: 3
    for (let i = 0; i < 3; i++) expect(bucket.tryTake()).toBe(true);
    expect(bucket.tryTake()).toBe(false);
    clock.t += 500;
    expect(bucket.tryTake()).toBe(true);
    expect(bucket.tryTake()).toBe(false);
  });

  it("is off at 0 or Infinity: never waits", async () => {
    for (const rate of [0, Number.POSITIVE_INFINITY]) {
      const clock = new VirtualClock();
      const bucket = new TokenBucket(rate, undefined, clock);
      expect(bucket.off).toBe(true);
      expect(rateIsOff(rate)).toBe(true);
      for (let i = 0; i < 1000; i++) await bucket.take();
      expect(clock.slept).toEqual([]);
      expect(clock.now()).toBe(0);
    }
    expect(rateIsOff(10)).toBe(false);
  });

  it("rejects a bad rate or burst with the field named", () => {
    for (const [rate, burst, field] of [
      [-1, undefined, "ratePerSecond"],
      [Number.NaN, undefined, "ratePerSecond"],
      [10, 0, "burst"],
      [10, Number.POSITIVE_INFINITY, "burst"],
    ] as const) {
      try {
        new TokenBucket(rate, burst);
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(FleetError);
        expect((e as FleetError).code).toBe("INVALID_INPUT");
        expect((e as FleetError).message).toMatch(new RegExp(`^${field}: got `));
      }
    }
  });
});

class Throttled extends Error {
  name = "ThrottlingException";
}

describe("retry", () => {
  it("backs off with full jitter under an exponential cap, then succeeds", async () => {
    const clock = new VirtualClock();
    let calls = 0;
    const seen: number[] = [];
    const out = await retry(
      async (attempt) => {
        seen.push(attempt);
        calls++;
        if (calls < 5) throw new Throttled("Rate exceeded");
        return "ok";
      },
      { retryable: (e) => e instanceof Throttled, baseMs: 100, capMs: 1000, clock, random: () => 0.5 },
    );
    expect(out).toBe("ok");
    expect(seen).toEqual([1, 2, 3, 4, 5]);
    // 0.5 · min(1000, 100·2^(n-1)): 50, 100, 200, 400
    expect(clock.slept).toEqual([50, 100, 200, 400]);
  });

  it("caps the delay and draws it from [0, cap)", () => {
    expect(backoffDelay(1, 100, 1000, () => 0.999)).toBeCloseTo(99.9);
    expect(backoffDelay(20, 100, 1000, () => 0.999)).toBeCloseTo(999);
    expect(backoffDelay(20, 100, 1000, () => 0)).toBe(0);
  });

  it("throws a non-retryable error at once", async () => {
    const clock = new VirtualClock();
    let calls = 0;
    const err = new Error("AccessDenied");
    await expect(
      retry(
        async () => {
          calls++;
          throw err;
        },
        { retryable: (e) => e instanceof Throttled, clock },
      ),
    ).rejects.toBe(err);
    expect(calls).toBe(1);
    expect(clock.slept).toEqual([]);
  });

  it("gives up after maxAttempts with the last error as cause", async () => {
    const clock = new VirtualClock();
    let calls = 0;
    const e = await retry(
      async () => {
        calls++;
        throw new Throttled(`Rate exceeded ${calls}`);
      },
      { retryable: () => true, maxAttempts: 4, clock, random: () => 1 - 1e-12 },
    ).catch((x) => x);
    expect(e).toBeInstanceOf(RetryExhaustedError);
    expect(e.attempts).toBe(4);
    expect(calls).toBe(4);
    expect(e.cause.message).toBe("Rate exceeded 4");
    expect(e.message).toMatch(/^gave up after 4 attempts in \d+ ms: Rate exceeded 4$/);
  });

  it("gives up when the next wait would pass maxElapsedMs", async () => {
    const clock = new VirtualClock();
    let calls = 0;
    const e = await retry(
      async () => {
        calls++;
        throw new Throttled("slow down");
      },
      {
        retryable: () => true,
        maxAttempts: 100,
        maxElapsedMs: 1000,
        baseMs: 100,
        capMs: 10_000,
        clock,
        random: () => 0.5,
      },
    ).catch((x) => x);
    // waits 50, 100, 200, 400 (750 ms in all); the next (800) would end at 1,550 > 1,000
    expect(e).toBeInstanceOf(RetryExhaustedError);
    expect(calls).toBe(5);
    expect(clock.slept).toEqual([50, 100, 200, 400]);
    expect(clock.now()).toBe(750);
  });

  it("tells onRetry about each wait", async () => {
    const clock = new VirtualClock();
    const told: [number, string, number][] = [];
    let n = 0;
    await retry(
      async () => {
        if (n++ < 2) throw new Throttled(`t${n}`);
      },
      {
        retryable: () => true,
        clock,
        random: () => 0,
        onRetry: (a, e, d) => told.push([a, (e as Error).message, d]),
      },
    );
    expect(told).toEqual([
      [1, "t1", 0],
      [2, "t2", 0],
    ]);
  });

  it("rejects bad options with the field named", async () => {
    await expect(retry(async () => 1, { retryable: () => true, maxAttempts: 0 })).rejects.toThrow(
      /^maxAttempts: got 0/,
    );
    await expect(retry(async () => 1, { retryable: () => true, baseMs: 10, capMs: 5 })).rejects.toThrow(
      /^capMs: got 5/,
    );
  });
});
