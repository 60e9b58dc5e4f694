/**
 * Peak memory of every process in a tree, for benchmarks that start the Pulumi engine (CLI,
 * language host, program, dynamic-provider hosts) or a device farm. Linux only: reads procfs
 * (proc(5)). Every ~200 ms it finds the descendants of a root PID by a scan of
 * /proc/<pid>/stat (the kernel's /proc/<pid>/task/<tid>/children is not built into every
 * kernel, and not this one), and for each process records VmHWM (the kernel's own peak RSS,
 * reset by exec) and the largest VmRSS it saw, plus `wchar` from /proc/<pid>/io (bytes passed
 * to write(2): files and pipes). Processes that exit between reads are kept with what was
 * last seen. A process that peaks and exits between two samples is under-reported: the
 * report is a lower bound, never more than what the kernel showed.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { invalid } from "../../core/errors";

export interface ProcPeak {
  pid: number;
  ppid: number;
  /** readable name, see `processName` */
  name: string;
  /** the command line, truncated to 200 characters */
  command: string;
  /** max(VmHWM, max VmRSS seen), KiB */
  peakKb: number;
  hwmKb: number;
  maxRssKb: number;
  /** bytes written through write(2) by this process, as last seen (files and pipes) */
  wcharBytes: number;
  /** user + system CPU time as last seen, ms (a lower bound: what ran after the last sample is missed) */
  cpuMs: number;
  /** ms after start() when first and last seen alive */
  firstSeenMs: number;
  lastSeenMs: number;
}

export interface ProcReport {
  rootPid: number;
  samples: number;
  durationMs: number;
  /** every process seen, in order of first sight */
  processes: ProcPeak[];
  /** per name: how many processes, the largest peak, and the sum of their peaks (KiB) */
  byName: Record<string, { count: number; peakKb: number; sumPeakKb: number; cpuMs: number }>;
  /** the largest sum of VmRSS over the whole tree in one sample, KiB */
  treePeakKb: number;
}

export interface Sampler {
  /** take one sample now (also done on a timer) */
  sample(): void;
  /** a last sample, stop the timer, report */
  stop(): ProcReport;
}

const base = (p: string | undefined) => (p ? path.basename(p) : "");

/**
 * A readable name for a command line: pulumi, pulumi-language-nodejs, node program (the
 * Pulumi program run by the language host), node dynamic provider, node policy pack, farm,
 * else `node <script>` or the executable's name.
 */
export function processName(argv: readonly string[]): string {
  const exe = base(argv[0]);
  const all = argv.join(" ");
  if (exe === "node" || exe === "nodejs" || exe === base(process.execPath)) {
    // short-lived helpers (`node -e require.resolve(...)`) before the long-lived processes
    const inline = argv.find((a) => a === "-e" || a === "--eval" || a === "-p" || a === "--print");
    if (inline) return `node ${inline}`;
    if (/dynamic-provider/.test(all)) return "node dynamic provider";
    if (/@pulumi[/\\]pulumi[/\\]cmd[/\\]run|[/\\]cmd[/\\]run-policy-pack/.test(all))
      return /run-policy-pack/.test(all) ? "node policy pack" : "node program";
    if (/fleet(\.ts)?\b.*\bdevices\b.*\bserve\b/.test(all)) return "farm";
    // the first non-option argument is the script
    for (let i = 1; i < argv.length; i++) {
      const a = argv[i]!;
      if (a === "--import" || a === "--require" || a === "-r" || a === "--loader") {
        i++;
        continue;
      }
      if (a.startsWith("-")) continue;
      return `node ${base(a)}`;
    }
    return "node";
  }
  if ((exe === "sh" || exe === "bash" || exe === "dash") && argv[1] && !argv[1].startsWith("-"))
    return `${exe} ${base(argv[1])}`;
  return exe || "?";
}

interface Stat {
  ppid: number;
  start: string;
  cpuMs: number;
}

function readStat(pid: number): Stat | undefined {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    // utime and stime (fields 14 and 15) in clock ticks, USER_HZ = 100 on Linux
    return { ppid: Number(f[1]), start: f[19]!, cpuMs: (Number(f[11]) + Number(f[12])) * 10 };
  } catch {
    return undefined; // exited
  }
}

function statusKb(text: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

/** Start sampling `rootPid` and its descendants every `intervalMs` (default 200). */
export function start(rootPid: number, opts: { intervalMs?: number } = {}): Sampler {
  if (!Number.isInteger(rootPid) || rootPid < 1) throw invalid("rootPid", rootPid, "a process ID");
  if (!fs.existsSync("/proc/self/status")) throw invalid("procfs", "missing", "Linux /proc");
  const t0 = performance.now();
  const seen = new Map<string, ProcPeak>(); // key pid:starttime, so a reused PID is a new process
  let samples = 0;
  let treePeakKb = 0;
  let stopped: ProcReport | undefined;

  const sample = () => {
    if (stopped) return;
    samples++;
    const now = performance.now() - t0;
    const stats = new Map<number, Stat>();
    const kids = new Map<number, number[]>();
    for (const e of fs.readdirSync("/proc")) {
      const pid = Number(e);
      if (!Number.isInteger(pid) || pid <= 0) continue;
      const st = readStat(pid);
      if (!st) continue;
      stats.set(pid, st);
      const list = kids.get(st.ppid);
      if (list) list.push(pid);
      else kids.set(st.ppid, [pid]);
    }
    const tree: number[] = [];
    const queue = stats.has(rootPid) ? [rootPid] : [];
    while (queue.length) {
      const p = queue.shift()!;
      tree.push(p);
      queue.push(...(kids.get(p) ?? []));
    }
    let sum = 0;
    for (const pid of tree) {
      const st = stats.get(pid)!;
      let status: string;
      let argv: string[];
      try {
        status = fs.readFileSync(`/proc/${pid}/status`, "latin1");
        argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
      } catch {
        continue; // exited between the scan and this read
      }
      if (argv.length === 0) continue; // a zombie or a kernel thread: no memory to count
      let wchar = 0;
      try {
        const io = fs.readFileSync(`/proc/${pid}/io`, "latin1");
        wchar = Number(/^wchar:\s+(\d+)/m.exec(io)?.[1] ?? 0);
      } catch {
        // /proc/<pid>/io needs ptrace access; without it wchar stays 0
      }
      const hwm = statusKb(status, "VmHWM");
      const rss = statusKb(status, "VmRSS");
      sum += rss;
      const key = `${pid}:${st.start}`;
      let p = seen.get(key);
      if (!p) {
        p = {
          pid,
          ppid: st.ppid,
          name: "",
          command: "",
          peakKb: 0,
          hwmKb: 0,
          maxRssKb: 0,
          wcharBytes: 0,
          cpuMs: 0,
          firstSeenMs: now,
          lastSeenMs: now,
        };
        seen.set(key, p);
      }
      // a shell shim that execs node keeps its PID: the latest command line names it
      p.name = processName(argv);
      p.command = argv.join(" ").slice(0, 200);
      p.hwmKb = Math.max(p.hwmKb, hwm);
      p.maxRssKb = Math.max(p.maxRssKb, rss);
      p.peakKb = Math.max(p.hwmKb, p.maxRssKb);
      p.wcharBytes = Math.max(p.wcharBytes, wchar);
      p.cpuMs = Math.max(p.cpuMs, st.cpuMs);
      p.lastSeenMs = now;
    }
    treePeakKb = Math.max(treePeakKb, sum);
  };

  const timer = setInterval(sample, opts.intervalMs ?? 200);
  timer.unref();
  sample();

  return {
    sample,
    stop() {
      if (stopped) return stopped;
      sample();
      clearInterval(timer);
      const processes = [...seen.values()];
      const byName: ProcReport["byName"] = {};
      for (const p of processes) {
        const b = byName[p.name] ?? { count: 0, peakKb: 0, sumPeakKb: 0, cpuMs: 0 };
        byName[p.name] = b;
        b.count++;
        b.peakKb = Math.max(b.peakKb, p.peakKb);
        b.sumPeakKb += p.peakKb;
        b.cpuMs += p.cpuMs;
      }
      stopped = {
        rootPid,
        samples,
        durationMs: performance.now() - t0,
        processes,
        byName,
        treePeakKb,
      };
      return stopped;
    },
  };
}

/** A short table of a report: one line per name, largest first. */
export function formatReport(r: ProcReport): string {
  const mb = (kb: number) => `${(kb / 1024).toFixed(0)} MB`;
  const rows = Object.entries(r.byName)
    .sort((a, b) => b[1].peakKb - a[1].peakKb)
    .map(
      ([n, v]) =>
        `  ${n}: peak ${mb(v.peakKb)}${v.count > 1 ? ` (${v.count} processes, sum ${mb(v.sumPeakKb)})` : ""}, CPU ${(v.cpuMs / 1000).toFixed(1)} s`,
    );
  return [...rows, `  whole tree at once: ${mb(r.treePeakKb)} (${r.samples} samples)`].join("\n");
}
