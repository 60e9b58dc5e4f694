/**
 * Summarise V8 .cpuprofile files (node --cpu-prof): the top frames by self time, and the busy
 * share (everything but the idle and program-wide "(idle)" frames), so a profile before and
 * after a change can be compared in docs/benchmarks.md.
 *
 *   npx tsx bench/cpuprof-top.ts [--top 15] FILE_OR_DIR...
 */
import * as fs from "node:fs";
import * as path from "node:path";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface FrameShare {
  frame: string;
  selfMs: number;
  share: number;
}

/** Self time per frame (function + file:line), busiest first, and the profile's busy and wall ms. */
export function topFrames(p: Profile, top = 15): { busyMs: number; wallMs: number; frames: FrameShare[] } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++)
    self.set(samples[i]!, (self.get(samples[i]!) ?? 0) + (deltas[i] ?? 0) / 1000);
  const frames = new Map<string, number>();
  let busy = 0;
  for (const [id, ms] of self) {
    const n = byId.get(id)!;
    const f = n.callFrame;
    if (f.functionName === "(idle)") continue;
    busy += ms;
    const file = f.url ? path.basename(f.url.replace(/^file:\/\//, "")) : "";
    const key = `${f.functionName || "(anonymous)"}${file ? ` ${file}:${f.lineNumber + 1}` : ""}`;
    frames.set(key, (frames.get(key) ?? 0) + ms);
  }
  const list = [...frames]
    .map(([frame, selfMs]) => ({ frame, selfMs, share: busy > 0 ? selfMs / busy : 0 }))
    .sort((a, b) => b.selfMs - a.selfMs)
    .slice(0, top);
  return { busyMs: busy, wallMs: (p.endTime - p.startTime) / 1000, frames: list };
}

function main() {
  const args = process.argv.slice(2);
  let top = 15;
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--top") top = Number(args[++i]);
    else {
      const a = args[i]!;
      if (fs.statSync(a).isDirectory()) {
        for (const f of fs.readdirSync(a).sort()) if (f.endsWith(".cpuprofile")) files.push(path.join(a, f));
      } else files.push(a);
    }
  }
  for (const f of files) {
    const r = topFrames(JSON.parse(fs.readFileSync(f, "utf8")) as Profile, top);
    console.log(
      `\n${path.basename(f)}: busy ${(r.busyMs / 1000).toFixed(2)} s of ${(r.wallMs / 1000).toFixed(2)} s`,
    );
    for (const x of r.frames)
      console.log(
        `  ${(x.share * 100).toFixed(1).padStart(5)}%  ${x.selfMs.toFixed(0).padStart(6)} ms  ${x.frame}`,
      );
  }
}

if (require.main === module) main();
