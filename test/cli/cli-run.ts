/**
 * The real `fleet` CLI in a child process, asynchronously: the test process stays free to serve
 * (an in-process device farm answers the child's station requests). `fleetMany` runs a list of
 * invocations two at a time, the machine's core count, so a table of cases stays quick.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

export const ROOT = join(__dirname, "../..");
// tsx's loader in this node process (the tsx binary would start a second node per run), by URL so
// that it resolves from any working directory
const TSX_LOADER = pathToFileURL(join(ROOT, "node_modules/tsx/dist/loader.mjs")).href;
const CLI = join(ROOT, "cli/fleet.ts");

export interface Run {
  args: string[];
  code: number | null;
  stdout: string;
  stderr: string;
}

export function fleetAsync(
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1", ...opts.env };
  delete env.FORCE_COLOR;
  delete env.FLEETGUARD_DEBUG;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", TSX_LOADER, CLI, ...args], {
      cwd: opts.cwd ?? ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => {
      stdout += c;
    });
    child.stderr.setEncoding("utf8").on("data", (c: string) => {
      stderr += c;
    });
    // only a command that never ends takes this long; the test then fails on the exit code
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ args, code, stdout, stderr });
    });
  });
}

export async function fleetMany(
  cases: string[][],
  opts: Parameters<typeof fleetAsync>[1] = {},
): Promise<Run[]> {
  const out: Run[] = new Array(cases.length);
  let next = 0;
  const worker = async () => {
    while (next < cases.length) {
      const i = next++;
      out[i] = await fleetAsync(cases[i]!, opts);
    }
  };
  await Promise.all([worker(), worker()]);
  return out;
}

/**
 * What every message a person reads must be: no stack trace, no colour, no internal error (the
 * help's exit-code line names exit 70 "internal error", without the colon of the error's line).
 */
export function clean(r: Run): void {
  const all = r.stdout + r.stderr;
  if (/^\s+at /m.test(all) || all.includes("\x1b") || all.includes("internal error:"))
    throw new Error(`fleet ${r.args.join(" ")}: not a clean message:\n${all}`);
}
