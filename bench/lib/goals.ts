/**
 * The goals of issue 13 point 2 as MET or MISSED, each with the figure it was judged on, from one
 * run of bench/batch-enroll.ts (kept apart from it so a test can check the rules).
 */
import type { EnrollBoundResult } from "./enroll-bound";

const GIB_KB = 1024 * 1024;

export interface Goal {
  goal: string;
  met: boolean;
  figure: string;
}

/** The goals of issue 13 point 2, from one run's figures. */
export function goals(f: {
  devices: number;
  seconds: number;
  perSecond: number;
  bound: EnrollBoundResult;
  fleetMsPerDevice: number;
  previewSeconds: number;
  peaks: Array<{ name: string; peakKb: number }>;
  farmDevices: number;
}): Goal[] {
  const ratio = f.perSecond / f.bound.perSecond;
  const worst = f.peaks.reduce((a, b) => (b.peakKb > a.peakKb ? b : a), { name: "none", peakKb: 0 });
  const mib = (kb: number) => `${(kb / 1024).toFixed(0)} MiB`;
  return [
    {
      goal: `${f.devices.toLocaleString("en-US")} devices in under 60 s end to end`,
      met: f.seconds < 60,
      figure: `${f.seconds.toFixed(1)} s (${f.perSecond.toFixed(0)}/s)`,
    },
    {
      goal: "at least 0.5 of the same-run bound (2 threads)",
      met: ratio >= 0.5,
      figure: `${ratio.toFixed(2)} (${f.perSecond.toFixed(0)} / ${f.bound.perSecond.toFixed(0)} per s)`,
    },
    {
      goal: "fleetguard's own CPU per device at most twice its part of the bound",
      met: f.fleetMsPerDevice <= 2 * f.bound.fleetMsPerDevice,
      figure: `${f.fleetMsPerDevice.toFixed(3)} ms vs 2 x ${f.bound.fleetMsPerDevice.toFixed(3)} ms = ${(2 * f.bound.fleetMsPerDevice).toFixed(3)} ms (${(f.fleetMsPerDevice / f.bound.fleetMsPerDevice).toFixed(2)}x)`,
    },
    {
      goal: "no-change preview under 5 s",
      met: f.previewSeconds < 5,
      figure: `${f.previewSeconds.toFixed(2)} s`,
    },
    {
      goal: `every process under 1 GiB peak, farm of ${f.farmDevices.toLocaleString("en-US")} included`,
      met: f.farmDevices >= 111_000 && f.peaks.every((p) => p.peakKb < GIB_KB),
      figure: `largest ${worst.name} ${mib(worst.peakKb)}; ${f.peaks.map((p) => `${p.name} ${mib(p.peakKb)}`).join(", ")}`,
    },
  ];
}
