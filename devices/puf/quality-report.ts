/**
 * PUF quality report: evaluates a population of emulated SRAM PUFs with the metrics of
 * metrics.ts (Maiti et al. 2013) at nominal conditions and at the corners, checks that the
 * fuzzy extractor reconstructs each device's key at every condition, and writes a Markdown
 * report with PNG histograms of the inter- and intra-device fractional Hamming distances.
 *
 *   npx tsx devices/puf/quality-report.ts --devices 1000 --reads 20 --out docs/puf-quality/
 *   options: --cells 32768  --corner-reads 10  --fe-trials 2  --seed <farm seed text>
 */

import { createHash } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { binomialPmf } from "./failure";
import { enroll, reconstruct } from "./fuzzy";
import {
  bitAliasing,
  fractionalHd,
  majority,
  minEntropyPerBit,
  pairwiseHd,
  type Stats,
  stats,
  uniformity,
} from "./metrics";
import { histogramPng, type Rgb } from "./plot";
import { CORNERS, expectedBer, NOMINAL, type PufConditions, SramPuf } from "./sram";

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : dflt;
}

function pct(x: number, digits = 2): string {
  return `${(100 * x).toFixed(digits)}%`;
}

function ms(s: Stats, digits = 2): string {
  return `${pct(s.mean, digits)} ± ${pct(s.std, digits)} (min ${pct(s.min, digits)}, max ${pct(s.max, digits)})`;
}

/** Expected min-entropy estimate for a perfect PUF measured on `devices` devices (finite-sample bias). */
function idealMinEntropyEstimate(devices: number): number {
  let e = 0;
  for (let k = 0; k <= devices; k++) {
    const p = k / devices;
    e += binomialPmf(devices, k, 0.5) * -Math.log2(Math.max(p, 1 - p));
  }
  return e;
}

interface Condition {
  name: string;
  c: PufConditions;
}

function main(): void {
  const devices = Number(arg("devices", "1000"));
  const reads = Number(arg("reads", "20"));
  const cornerReads = Number(arg("corner-reads", "10"));
  const cells = Number(arg("cells", "32768"));
  const feTrials = Number(arg("fe-trials", "2"));
  const out = arg("out", "docs/puf-quality/");
  const seedText = arg("seed", "fleetguard quality report farm v1");
  const farmSeed = createHash("sha256").update(seedText).digest();
  mkdirSync(out, { recursive: true });
  const conditions: Condition[] = [
    { name: "nominal 25C 1.0V", c: NOMINAL },
    ...Object.entries(CORNERS).map(([name, c]) => ({ name, c })),
  ];
  const worst = "hot+lowV+aged";
  const started = Date.now();
  console.log(
    `PUF quality report: ${devices} devices x ${cells} cells, ${reads} nominal reads, ${cornerReads} reads per corner`,
  );

  const refs: Uint8Array[] = [];
  const uniformityRef: number[] = [];
  const intra = new Map<string, number[]>(conditions.map((k) => [k.name, []]));
  const intraFirst: number[] = []; // Maiti: distance of later nominal reads to the first read
  const perDeviceIntra = new Map<string, number[]>(conditions.map((k) => [k.name, []]));
  const fe = new Map<string, { ok: number; trials: number }>(
    conditions.map((k) => [k.name, { ok: 0, trials: 0 }]),
  );
  const helperBytes: number[] = [];

  for (let d = 0; d < devices; d++) {
    const dev = new SramPuf(farmSeed, `dev-${String(d).padStart(7, "0")}`, { cells });
    const nominalReads = Array.from({ length: reads }, () => dev.read(NOMINAL));
    const ref = majority(nominalReads);
    refs.push(ref);
    uniformityRef.push(uniformity(ref));
    for (let r = 1; r < reads; r++) intraFirst.push(fractionalHd(nominalReads[r], nominalReads[0]));
    for (const cond of conditions) {
      const rs =
        cond.c === NOMINAL ? nominalReads : Array.from({ length: cornerReads }, () => dev.read(cond.c));
      let sum = 0;
      for (const r of rs) {
        const h = fractionalHd(r, ref);
        intra.get(cond.name)!.push(h);
        sum += h;
      }
      perDeviceIntra.get(cond.name)!.push(sum / rs.length);
    }
    if (feTrials > 0) {
      const { helper } = enroll(dev);
      helperBytes.push(helper.length);
      const secret = Buffer.from(reconstruct(dev, helper));
      for (const cond of conditions) {
        const f = fe.get(cond.name)!;
        for (let t = 0; t < feTrials; t++) {
          f.trials++;
          try {
            if (secret.equals(Buffer.from(reconstruct(dev, helper, cond.c)))) f.ok++;
          } catch {
            // counted as a failure
          }
        }
      }
    }
    if ((d + 1) % 100 === 0 || d + 1 === devices) {
      const el = (Date.now() - started) / 1000;
      console.log(
        `  ${d + 1}/${devices} devices, ${el.toFixed(0)} s, ETA ${(((devices - d - 1) * el) / (d + 1)).toFixed(0)} s`,
      );
    }
  }

  console.log("  bit-aliasing and pairwise inter-device distances ...");
  const aliasing = bitAliasing(refs);
  const inter = pairwiseHd(refs);
  const uStats = stats(uniformityRef);
  const aStats = stats(aliasing);
  const iStats = stats(inter);
  const hMin = minEntropyPerBit(aliasing);
  const hIdeal = idealMinEntropyEstimate(devices);
  const nominalIntra = stats(intra.get(conditions[0].name)!);
  const within = (x: number) => Math.abs(x - 0.5) <= 0.01;

  const relRows = conditions.map((cond) => {
    const s = stats(intra.get(cond.name)!);
    const worstDev = Math.max(...perDeviceIntra.get(cond.name)!);
    const f = fe.get(cond.name)!;
    return `| ${cond.name} | ${cond.c.temperatureC} C, ${cond.c.voltage.toFixed(2)} V, ${cond.c.ageYears} y | ${pct(expectedBer(cond.c))} | ${pct(s.mean)} ± ${pct(s.std)} | ${pct(worstDev)} | ${pct(1 - s.mean)} | ${feTrials > 0 ? `${f.ok.toLocaleString("en-US")} / ${f.trials.toLocaleString("en-US")}` : "-"} |`;
  });

  const plots = {
    overview: "puf-hd-overview.png",
    inter: "puf-inter-hd.png",
    intra: "puf-intra-hd.png",
    aliasing: "puf-bit-aliasing.png",
  };
  const blue: Rgb = [31, 119, 180];
  const orange: Rgb = [255, 127, 14];
  const red: Rgb = [214, 39, 40];
  const green: Rgb = [44, 160, 44];
  const purple: Rgb = [148, 103, 189];
  writeFileSync(
    join(out, plots.overview),
    histogramPng({
      title: `SRAM PUF: INTRA VS INTER HD (${devices} DEVICES)`,
      xLabel: "FRACTIONAL HAMMING DISTANCE",
      xMin: 0,
      xMax: 0.6,
      bins: 120,
      xScale: 100,
      xUnit: "%",
      series: [
        { label: "INTRA, NOMINAL", values: intra.get(conditions[0].name)!, color: blue },
        { label: `INTRA, ${worst}`, values: intra.get(worst)!, color: orange },
        { label: "INTER (UNIQUENESS)", values: inter, color: red },
      ],
    }),
  );
  writeFileSync(
    join(out, plots.inter),
    histogramPng({
      title: `INTER-DEVICE HD: ${inter.length.toLocaleString("en-US")} PAIRS`,
      xLabel: `FRACTIONAL HAMMING DISTANCE (${cells} CELLS)`,
      xMin: 0.485,
      xMax: 0.515,
      bins: 60,
      xScale: 100,
      xUnit: "%",
      series: [{ label: `MEAN ${pct(iStats.mean)}`, values: inter, color: red }],
    }),
  );
  writeFileSync(
    join(out, plots.intra),
    histogramPng({
      title: "INTRA-DEVICE HD TO NOMINAL REFERENCE",
      xLabel: "FRACTIONAL HAMMING DISTANCE (BIT ERROR RATE)",
      xMin: 0,
      xMax: 0.25,
      bins: 125,
      xScale: 100,
      xUnit: "%",
      series: [
        { label: "NOMINAL 25C", values: intra.get(conditions[0].name)!, color: blue },
        { label: "AGED 10Y", values: intra.get("aged 10y")!, color: green },
        { label: "COLD -40C", values: intra.get("cold -40C")!, color: purple },
        { label: "HOT 85C", values: intra.get("hot 85C")!, color: red },
        { label: "HOT+LOW V+AGED", values: intra.get(worst)!, color: orange },
      ],
    }),
  );
  // Bit-aliasing values are k/devices: align bin edges between them so no bin gets more values than another.
  const perBin = Math.max(1, Math.round(devices / 200));
  const aw = perBin / devices;
  const half = Math.ceil(0.1 / aw);
  const aMin = 0.5 - 0.5 / devices - half * aw;
  writeFileSync(
    join(out, plots.aliasing),
    histogramPng({
      title: `BIT-ALIASING: ${cells} CELLS OVER ${devices} DEVICES`,
      xLabel: "SHARE OF DEVICES WHERE THE CELL IS 1",
      xMin: aMin,
      xMax: aMin + 2 * half * aw,
      bins: 2 * half,
      xScale: 100,
      xUnit: "%",
      series: [{ label: `MEAN ${pct(aStats.mean)}`, values: aliasing, color: blue }],
    }),
  );

  const helperStats = helperBytes.length > 0 ? stats(helperBytes) : undefined;
  const md = [
    "<!-- Generated by devices/puf/quality-report.ts; do not edit by hand. -->",
    "# SRAM PUF quality report",
    "",
    `Command: \`npx tsx devices/puf/quality-report.ts --devices ${devices} --reads ${reads} --out ${out}\` (cells ${cells}, ${cornerReads} reads per corner, ${feTrials} key reconstructions per device and condition, farm seed text "${seedText}").`,
    `Machine: ${cpus().length} cores, Node ${process.version}; took ${((Date.now() - started) / 1000).toFixed(0)} s.`,
    "",
    "Metrics after Maiti, Gunreddy and Schaumont (2013). The reference response of a device is the per-cell majority of its nominal reads;",
    "uniformity, bit-aliasing and uniqueness are computed on the references; intra-device distances are single reads against the reference.",
    "",
    "| metric | measured | ideal / target | within target |",
    "|---|---|---|---|",
    `| uniformity (ones per response) | ${ms(uStats)} | 50% ± 1% | ${within(uStats.mean) ? "yes" : "**no**"} |`,
    `| bit-aliasing (per cell, share of devices with 1) | ${ms(aStats)} | mean 50% | ${within(aStats.mean) ? "yes" : "**no**"} |`,
    `| uniqueness (inter-device fractional HD, ${inter.length.toLocaleString("en-US")} pairs) | ${ms(iStats, 3)} | 50% ± 1% | ${within(iStats.mean) ? "yes" : "**no**"} |`,
    `| reliability at nominal (1 - intra-device HD) | ${pct(1 - nominalIntra.mean)} (intra HD ${pct(nominalIntra.mean)} ± ${pct(nominalIntra.std)}) | configured BER ${pct(expectedBer(NOMINAL))} -> ${pct(1 - expectedBer(NOMINAL))} | ${Math.abs(nominalIntra.mean - expectedBer(NOMINAL)) < 0.005 ? "yes" : "**no**"} |`,
    `| reliability, Maiti definition (reads vs. the first read) | ${pct(1 - stats(intraFirst).mean)} | lower than the row above: both reads are noisy | - |`,
    `| min-entropy per bit (from bit-aliasing) | ${hMin.toFixed(4)} bits | ${hIdeal.toFixed(4)} = what a perfect PUF would measure with ${devices} devices (1.0 asymptotically) | ${hMin >= hIdeal - 0.005 ? "yes" : "**no**"} |`,
    "",
    "## Reliability by operating condition",
    "",
    "Intra-device fractional HD of single reads against the nominal reference; the model's configured BER is arctan(r)/pi against each cell's noiseless value (devices/puf/sram.ts).",
    "The measured value sits slightly below it at nominal because the majority-vote reference follows the reads on the few cells that are close to 50/50.",
    feTrials > 0
      ? `The last column reconstructs each device's 128-bit secret from its helper data (enrolled at nominal with 8 reads; helper ${helperStats!.min}..${helperStats!.max} bytes) at that condition.`
      : "",
    "",
    "| condition | T, V, age | configured BER | measured intra HD (mean ± std) | worst device (mean) | reliability | key reconstructions ok / trials |",
    "|---|---|---|---|---|---|---|",
    ...relRows,
    "",
    "## Plots",
    "",
    `- [${plots.overview}](${plots.overview}): intra-device distances (nominal, worst corner) against inter-device distances; the gap between them is what the fuzzy extractor relies on.`,
    `- [${plots.inter}](${plots.inter}): inter-device distances (uniqueness), zoomed around 50%.`,
    `- [${plots.intra}](${plots.intra}): intra-device distances per condition (the bit error rate seen by the fuzzy extractor).`,
    `- [${plots.aliasing}](${plots.aliasing}): bit-aliasing per cell.`,
    "",
    `![overview](${plots.overview})`,
    "",
  ].join("\n");
  writeFileSync(join(out, "README.md"), md);
  console.log(md);
}

main();
