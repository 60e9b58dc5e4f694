/**
 * Start `fleet devices serve` as a child process and wait for the port it bound: what a
 * station does in production, and what the crash test and the round-trip benchmark use.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";

const REPO = join(__dirname, "..", "..");

export interface FarmProcessOptions {
  count: number;
  state: string;
  seed: string;
  model?: string;
  /** TCP port on loopback (default 0: any free port; the chosen one is returned) */
  port?: number;
  /** extra `fleet devices serve` flags, e.g. ["--clones", "fg100-0000007"] */
  extraArgs?: string[];
  /** pass the farm's stderr through (a benchmark) or collect it for error messages (a test) */
  inheritStderr?: boolean;
  startTimeoutMs?: number;
  /** activate every blank device's PUF before serving (`--activate-pufs`; allow for it in startTimeoutMs) */
  activatePufs?: boolean;
  /** extra options for node, e.g. ["--cpu-prof", "--cpu-prof-dir", dir] to profile the farm (after the default --max-semi-space-size=2) */
  nodeArgs?: string[];
}

export function startFarmProcess(o: FarmProcessOptions): Promise<{ child: ChildProcess; port: number }> {
  const args = [
    // a small young generation for the main thread (as pool.ts gives the workers): V8's default
    // one is ~100 MB of the farm's memory, and its garbage is short-lived (measured: no CPU cost)
    "--max-semi-space-size=2",
    ...(o.nodeArgs ?? []),
    "--import",
    "tsx",
    "cli/fleet.ts",
    "devices",
    "serve",
    "--count",
    String(o.count),
    "--port",
    String(o.port ?? 0),
    ...(o.activatePufs ? ["--activate-pufs"] : []),
    ...(o.extraArgs ?? []),
  ];
  args.push("--state", o.state, "--seed", o.seed, ...(o.model ? ["--model", o.model] : []));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      cwd: REPO,
      stdio: ["ignore", "pipe", o.inheritStderr ? "inherit" : "pipe"],
    });
    let out = "";
    let err = "";
    const t = setTimeout(() => reject(new Error(`farm did not start: ${err}`)), o.startTimeoutMs ?? 30_000);
    child.stdout!.on("data", (c) => {
      out += c;
      const m = /on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve({ child, port: Number(m[1]) });
      }
    });
    child.stderr?.on("data", (c) => {
      err += c;
    });
    child.on("exit", (code) => {
      clearTimeout(t);
      reject(new Error(`farm exited with ${code}: ${err}`));
    });
  });
}

export async function stopFarmProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await done;
}
