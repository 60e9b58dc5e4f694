/**
 * scripts/recover-stack after kill -9 of `pulumi up` (issue 9, finding 10), with the real engine.
 * The engine starts the language host and each provider in a process group of its own, so
 * killing the engine's group leaves the language host, the program (its child) and the dynamic
 * provider running. recover-stack must stop every one of them, and say nothing about /proc
 * while processes come and go around it (a busy CI machine: short-lived processes are started
 * beside it for the whole run).
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCommand } from "../helpers/proc";
import { PulumiStack, REPO } from "../helpers/pulumi";

const PROGRAM = path.join(REPO, "test", "integration", "fixtures", "slow-program");

const read = (f: string) => {
  try {
    return fs.readFileSync(f, "utf8");
  } catch {
    return undefined;
  }
};
/** ppid and state of a process, or undefined once it is gone */
function stat(pid: number): { ppid: number; state: string } | undefined {
  const s = read(`/proc/${pid}/stat`);
  if (!s) return undefined;
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return { state: f[0]!, ppid: Number(f[1]) };
}
/** still running: present and not a zombie (init here does not reap orphans) */
const running = (pid: number) => {
  const s = stat(pid);
  return s !== undefined && s.state !== "Z" && s.state !== "X";
};

/** Every running descendant of `root`, with its command line. */
function descendants(root: number): Array<{ pid: number; argv: string[] }> {
  const parent = new Map<number, number>();
  for (const e of fs.readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(e)) continue;
    const s = stat(Number(e));
    if (s && running(Number(e))) parent.set(Number(e), s.ppid);
  }
  const under = (pid: number): boolean => {
    for (let p = parent.get(pid), n = 0; p !== undefined && n < 100; p = parent.get(p), n++)
      if (p === root) return true;
    return false;
  };
  return [...parent.keys()]
    .filter(under)
    .map((pid) => ({ pid, argv: (read(`/proc/${pid}/cmdline`) ?? "").split("\0").filter(Boolean) }));
}

const started: number[] = []; // processes of this test, stopped at the end whatever happens
const cleanups: Array<() => void> = [];
afterAll(() => {
  for (const pid of started) {
    try {
      if (running(pid)) process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  for (const c of cleanups.reverse()) c();
});

async function waitFor(what: string, cond: () => boolean, failed: () => string | undefined): Promise<void> {
  for (;;) {
    if (cond()) return;
    const why = failed();
    if (why) throw new Error(`${what}: ${why}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("recover-stack after kill -9 of pulumi up", () => {
  it("stops the orphaned language host, program and provider, and prints no /proc error", async () => {
    const markers = fs.mkdtempSync(path.join(os.tmpdir(), "fg-recover-"));
    const stack = new PulumiStack(PROGRAM, "it-recover");
    stack.env.FG_SLOW_MARKERS = markers;
    cleanups.push(() => {
      stack.cleanup();
      fs.rmSync(markers, { recursive: true, force: true });
    });
    await stack.init();

    const up = spawn(
      "pulumi",
      ["up", "--yes", "--skip-preview", "--non-interactive", "--stack", stack.stack, "--cwd", PROGRAM],
      { env: stack.env, detached: true, stdio: ["ignore", "pipe", "pipe"] },
    );
    started.push(up.pid!);
    let out = "";
    up.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
    });
    up.stderr!.on("data", (d: Buffer) => {
      out += d.toString();
    });
    let exitCode: number | null | undefined;
    const exited = new Promise<void>((resolve) =>
      up.on("close", (code) => {
        exitCode = code;
        resolve();
      }),
    );
    const marker = (n: string) => Number(read(path.join(markers, n)) ?? 0);
    await waitFor(
      "the run did not get busy",
      () => marker("program") > 0 && marker("provider") > 0,
      () => (exitCode !== undefined ? `pulumi up exited ${exitCode}\n${out}` : undefined),
    );

    // the processes of the run, while it runs
    const run = descendants(up.pid!);
    started.push(...run.map((p) => p.pid));
    const host = run.find((p) => path.basename(p.argv[0] ?? "") === "pulumi-language-nodejs");
    expect(host, JSON.stringify(run)).toBeDefined();
    const program = marker("program");
    const provider = marker("provider");
    expect(run.map((p) => p.pid)).toEqual(expect.arrayContaining([host!.pid, program, provider]));
    expect(stat(program)?.ppid).toBe(host!.pid);

    process.kill(-up.pid!, "SIGKILL");
    await exited;
    // the finding: the engine is gone, the rest of the run is not
    expect(running(up.pid!)).toBe(false);
    expect([host!.pid, program, provider].filter(running)).toEqual([host!.pid, program, provider]);

    // processes that end while recover-stack reads /proc: a machine where other work goes on
    const churn = spawn(
      "bash",
      ["-c", "while :; do for i in 1 2 3 4 5 6 7 8; do sleep 0.05 & done; wait; done"],
      {
        detached: true,
        stdio: "ignore",
      },
    );
    started.push(churn.pid!);
    let rec: Awaited<ReturnType<typeof runCommand>>;
    try {
      rec = await runCommand(
        "bash",
        [path.join(REPO, "scripts", "recover-stack"), stack.stack, "--cwd", PROGRAM],
        {
          env: stack.env,
        },
      );
    } finally {
      process.kill(-churn.pid!, "SIGKILL");
    }
    expect(rec.status, rec.stderr).toBe(0);
    expect(rec.stderr).not.toMatch(/\/proc\//);
    expect(rec.stderr).toContain(
      `stopping language host process ${host!.pid} left running by the interrupted engine`,
    );
    expect(rec.stderr).toContain(
      `stopping program process ${program} left running by the interrupted engine`,
    );
    expect(rec.stderr).toContain(
      `stopping provider process ${provider} left running by the interrupted engine`,
    );
    // nothing of that run is left
    expect(run.filter((p) => running(p.pid))).toEqual([]);
    // and the stack is usable: not locked, nothing pending
    const exported = JSON.parse((await stack.run(["stack", "export"])).stdout) as {
      deployment: { pending_operations?: unknown[] };
    };
    expect(exported.deployment.pending_operations ?? []).toHaveLength(0);
  }, 600_000);
});
