/**
 * Normal-distribution helpers for the SRAM PUF model: the inverse CDF (Acklam's rational
 * approximation, relative error below 1.2e-9), the CDF (erfc Chebyshev fit) and a 65,536-entry lookup table that turns a uniform 16-bit value into a standard normal sample
 * by inverse transform, Phi^-1((u + 0.5) / 65536). The table keeps bulk sampling (tens of
 * thousands of cells per read) to one array lookup per cell.
 */

const A = [
  -39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716,
  2.506628277459239,
];
const B = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
const C = [
  -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
  2.938163982698783,
];
const D = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];

/** erfc(x) with relative error < 1.2e-7 (Numerical Recipes erfcc, Chebyshev fit). */
export function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t *
                      (-0.18628806 +
                        t *
                          (0.27886807 +
                            t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? r : 2 - r;
}

/** Standard normal CDF Phi(x). */
export function normalCdf(x: number): number {
  return 0.5 * erfc(-x / Math.SQRT2);
}

/** Standard normal inverse CDF Phi^-1(p) for 0 < p < 1. */
export function normalInv(p: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`normalInv: p must be in (0,1), got ${p}`);
  const pLow = 0.02425;
  let x: number;
  if (p < pLow) {
    const q = Math.sqrt(-2 * Math.log(p));
    x =
      (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) /
      ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1);
  } else if (p <= 1 - pLow) {
    const q = p - 0.5;
    const r = q * q;
    x =
      ((((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q) /
      (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1);
  } else {
    const q = Math.sqrt(-2 * Math.log(1 - p));
    x =
      -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) /
      ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1);
  }
  return x;
}

let table: Float32Array | undefined;

/** NORMAL_TABLE[u] = Phi^-1((u + 0.5) / 65536): a standard normal sample from 16 uniform bits. */
export function normalTable(): Float32Array {
  if (table === undefined) {
    const t = new Float32Array(65536);
    for (let u = 0; u < 65536; u++) t[u] = normalInv((u + 0.5) / 65536);
    table = t;
  }
  return table;
}
