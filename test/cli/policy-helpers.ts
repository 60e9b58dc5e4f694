/** Runs the real `fleet` CLI as a subprocess (tsx from this checkout), for the CLI tests. */
import { spawnSync } from "node:child_process";
import { join } from "node:path";

export const ROOT = join(__dirname, "../..");
const TSX = join(ROOT, "node_modules/.bin/tsx");
const CLI = join(ROOT, "cli/fleet.ts");

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `tsx cli/fleet.ts <args>` in `cwd`; `viaNpx` runs it exactly as documented (`npx tsx cli/fleet.ts`). */
export function fleet(args: string[], opts: { cwd?: string; viaNpx?: boolean } = {}): CliRun {
  const cmd = opts.viaNpx ? "npx" : TSX;
  const argv = opts.viaNpx ? ["tsx", "cli/fleet.ts", ...args] : [CLI, ...args];
  const r = spawnSync(cmd, argv, {
    cwd: opts.cwd ?? ROOT,
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
