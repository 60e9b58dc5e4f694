/**
 * Run the real Pulumi CLI for a benchmark: a stack on a file:// backend inside a work
 * directory, output streamed line by line (for progress), the CLI's PID handed to a memory
 * sampler (bench/lib/procmem.ts), wall time measured around the process. test/helpers/pulumi.ts
 * `PulumiStack` does the same for tests but buffers output, hides the PID and puts the backend
 * in os.tmpdir(); this is the streaming variant. The engine's environment comes from there.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { pulumiEnv } from "../../test/helpers/pulumi";
import { type ProcReport, start as startSampler } from "./procmem";

export interface BenchRun {
  status: number;
  seconds: number;
  stdout: string;
  stderr: string;
  memory: ProcReport;
}

export class BenchStack {
  readonly backend: string;
  readonly env: NodeJS.ProcessEnv;

  constructor(
    readonly programDir: string,
    workDir: string,
    readonly stack = "bench",
    passphrase = "benchmark-passphrase",
  ) {
    this.backend = path.join(workDir, "state");
    fs.mkdirSync(this.backend, { recursive: true });
    this.env = {
      ...pulumiEnv(),
      PULUMI_BACKEND_URL: `file://${this.backend}`,
      PULUMI_CONFIG_PASSPHRASE: passphrase,
      PULUMI_HOME: path.join(workDir, "pulumi-home"),
      PULUMI_SKIP_CONFIRMATIONS: "true",
      NO_COLOR: "1",
    };
  }

  /** Run `pulumi <args>`; `onLine` sees each stdout line as it arrives. Throws on a failure. */
  run(
    args: string[],
    opts: { onLine?: (line: string) => void; allowFail?: boolean; input?: string } = {},
  ): Promise<BenchRun> {
    const full = [...args, "--non-interactive", "--stack", this.stack, "--cwd", this.programDir];
    return new Promise((resolve, reject) => {
      const t0 = performance.now();
      const child = spawn("pulumi", full, { env: this.env, stdio: ["pipe", "pipe", "pipe"] });
      child.stdin.end(opts.input ?? "");
      const sampler = startSampler(child.pid!);
      const out: string[] = [];
      const err: Buffer[] = [];
      let partial = "";
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (d: string) => {
        out.push(d);
        if (!opts.onLine) return;
        const lines = (partial + d).split("\n");
        partial = lines.pop()!;
        for (const l of lines) opts.onLine(l);
      });
      child.stderr.on("data", (d: Buffer) => err.push(d));
      child.on("error", (e) => {
        sampler.stop();
        reject(e);
      });
      child.on("close", (code, signal) => {
        const seconds = (performance.now() - t0) / 1000;
        const memory = sampler.stop();
        if (partial && opts.onLine) opts.onLine(partial);
        const r: BenchRun = {
          status: code ?? (signal ? 128 : -1),
          seconds,
          stdout: out.join(""),
          stderr: Buffer.concat(err).toString("utf8"),
          memory,
        };
        if (r.status !== 0 && !opts.allowFail)
          reject(
            new Error(`pulumi ${args.join(" ")} exited ${r.status}\n${r.stdout.slice(-4000)}\n${r.stderr}`),
          );
        else resolve(r);
      });
    });
  }

  async init(): Promise<void> {
    await this.run(["stack", "init"]);
  }

  /** `pulumi config set [--secret] --raw key`, the value on stdin (a PEM starts with dashes). */
  async setConfig(key: string, value: string, secret = false): Promise<void> {
    await this.run(["config", "set", key, "--raw", ...(secret ? ["--secret"] : [])], { input: value });
  }

  checkpointFile(): string {
    const dir = path.join(this.backend, ".pulumi", "stacks");
    const proj = fs.readdirSync(dir)[0]!;
    return path.join(dir, proj, `${this.stack}.json`);
  }

  /** Bytes of every file in the backend (checkpoint, its backups, update history). */
  backendBytes(): number {
    let total = 0;
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else total += fs.statSync(p).size;
      }
    };
    walk(this.backend);
    return total;
  }
}
