/**
 * Exact key-failure probability of the concatenated code under i.i.d. bit errors, and
 * Clopper-Pearson confidence intervals for Monte Carlo estimates of it (Maes, Tuyls and
 * Verbauwhede, "Low-overhead implementation of a soft decision helper data algorithm for
 * SRAM PUFs", CHES 2009, section 2, for the analysis). At raw BER p, a repetition-r group
 * decodes wrongly with p_in = P(Bin(r, p) > r/2); the bounded-distance BCH decoder recovers
 * the message exactly when at most t of its n outer bits are wrong, so a key fails with
 * P(Bin(n, p_in) > t). Miscorrections are failures too (caught by the secret check), so this
 * is the exact failure rate, not a bound. With cells of unequal error rates and the same mean,
 * the binomial is the worst case (Hoeffding, 1956), so this is conservative for the SRAM model.
 */
import { invalid } from "../../core/errors";
import type { ConcatParams } from "./ecc/concat";

const LANCZOS = [
  676.5203681218851, -1259.1392167224028, 771.3234287776531, -176.6150291621406, 12.507343278686905,
  -0.13857109526572012, 9.984369578019572e-6, 1.5056327351493116e-7,
];

/** ln Gamma(x) for x > 0 (Lanczos, g = 7, n = 9; ~1e-15 relative). */
export function lnGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x);
  const z = x - 1;
  let a = 0.9999999999998099;
  const t = z + 7.5;
  for (let i = 0; i < 8; i++) a += LANCZOS[i] / (z + i + 1);
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
}

function assertProb(p: unknown, field: string): asserts p is number {
  if (typeof p !== "number" || !(p >= 0 && p <= 1)) throw invalid(field, p, "a probability in [0, 1]");
}

/** P(X = k) for X ~ Bin(n, p). */
export function binomialPmf(n: number, k: number, p: number): number {
  if (k < 0 || k > n) return 0;
  if (p === 0) return k === 0 ? 1 : 0;
  if (p === 1) return k === n ? 1 : 0;
  return Math.exp(
    lnGamma(n + 1) - lnGamma(k + 1) - lnGamma(n - k + 1) + k * Math.log(p) + (n - k) * Math.log1p(-p),
  );
}

/** P(X > k) for X ~ Bin(n, p), summed term by term (every term positive, so no cancellation). */
export function binomialTailAbove(n: number, p: number, k: number): number {
  if (!Number.isInteger(n) || n < 0) throw invalid("n", n, "a non-negative integer");
  assertProb(p, "p");
  let s = 0;
  for (let i = Math.max(0, Math.floor(k) + 1); i <= n; i++) s += binomialPmf(n, i, p);
  return Math.min(1, s);
}

/** Bit error rate after majority decoding of a repetition-r group at raw BER p. */
export function innerErrorRate(rep: number, p: number): number {
  return binomialTailAbove(rep, p, rep >> 1);
}

export interface FailureBreakdown {
  ber: number;
  innerErrorRate: number;
  /** Expected wrong outer bits per block. */
  meanOuterErrors: number;
  /** Probability that one key fails to reconstruct. */
  keyFailureRate: number;
}

/** Exact key failure probability for the concatenated code at raw BER p (one outer block per key). */
export function keyFailureRate(params: ConcatParams & { n: number }, p: number): FailureBreakdown {
  assertProb(p, "ber");
  const pin = innerErrorRate(params.rep, p);
  return {
    ber: p,
    innerErrorRate: pin,
    meanOuterErrors: params.n * pin,
    keyFailureRate: binomialTailAbove(params.n, pin, params.t),
  };
}

/** Continued fraction for the incomplete beta function (modified Lentz). */
function betacf(a: number, b: number, x: number): number {
  const FPMIN = 1e-300;
  const qab = a + b;
  const qap = a + 1;
  const qam = a - 1;
  let c = 1;
  let d = 1 - (qab * x) / qap;
  if (Math.abs(d) < FPMIN) d = FPMIN;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 100000; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < FPMIN) d = FPMIN;
    c = 1 + aa / c;
    if (Math.abs(c) < FPMIN) c = FPMIN;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (qab + m) * x) / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < FPMIN) d = FPMIN;
    c = 1 + aa / c;
    if (Math.abs(c) < FPMIN) c = FPMIN;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) return h;
  }
  return h;
}

/** Regularized incomplete beta I_x(a, b). */
export function incompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const lbt = lnGamma(a + b) - lnGamma(a) - lnGamma(b) + a * Math.log(x) + b * Math.log1p(-x);
  if (x < (a + 1) / (a + b + 2)) return (Math.exp(lbt) * betacf(a, b, x)) / a;
  return 1 - (Math.exp(lbt) * betacf(b, a, 1 - x)) / b;
}

function betaQuantile(q: number, a: number, b: number): number {
  // Bisection in log space: robust for the tiny quantiles seen with zero or few failures.
  let lo = -745;
  let hi = 0;
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2;
    if (incompleteBeta(Math.exp(mid), a, b) < q) lo = mid;
    else hi = mid;
  }
  return Math.exp((lo + hi) / 2);
}

/** Exact (Clopper-Pearson) two-sided confidence interval for k successes in n trials. */
export function clopperPearson(k: number, n: number, confidence = 0.95): [number, number] {
  if (!Number.isInteger(n) || n < 1) throw invalid("n", n, "a positive integer");
  if (!Number.isInteger(k) || k < 0 || k > n) throw invalid("k", k, `an integer in [0, ${n}]`);
  const alpha = 1 - confidence;
  const lo = k === 0 ? 0 : betaQuantile(alpha / 2, k, n - k + 1);
  const hi = k === n ? 1 : betaQuantile(1 - alpha / 2, k + 1, n - k);
  return [lo, hi];
}

/** Regularized lower incomplete gamma P(a, x) (series for x < a + 1, continued fraction otherwise). */
export function incompleteGammaP(a: number, x: number): number {
  if (x <= 0) return 0;
  const lg = lnGamma(a);
  if (x < a + 1) {
    let ap = a;
    let sum = 1 / a;
    let del = sum;
    for (let n = 0; n < 100000; n++) {
      ap++;
      del *= x / ap;
      sum += del;
      if (Math.abs(del) < Math.abs(sum) * 1e-16) break;
    }
    return sum * Math.exp(-x + a * Math.log(x) - lg);
  }
  const FPMIN = 1e-300;
  let b = x + 1 - a;
  let c = 1 / FPMIN;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 100000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < FPMIN) d = FPMIN;
    c = b + an / c;
    if (Math.abs(c) < FPMIN) c = FPMIN;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-16) break;
  }
  return 1 - Math.exp(-x + a * Math.log(x) - lg) * h;
}

/** Upper tail P(X >= x) of the chi-square distribution with k degrees of freedom. */
export function chiSquareSurvival(x: number, k: number): number {
  if (!Number.isInteger(k) || k < 1) throw invalid("k", k, "a positive integer");
  return 1 - incompleteGammaP(k / 2, x / 2);
}
