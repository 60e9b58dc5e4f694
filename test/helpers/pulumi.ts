/**
 * Drive the real Pulumi CLI (built by scripts/setup-pulumi) against a throwaway file://
 * backend with passphrase secrets. No mocks: this is the engine users run.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runCommand } from "./proc";

export const REPO = path.resolve(__dirname, "..", "..");

/** PATH and variables from .cache/pulumi/env (running setup-pulumi first if needed). */
export function pulumiEnv(): NodeJS.ProcessEnv {
  const envFile = path.join(REPO, ".cache", "pulumi", "env");
  if (!fs.existsSync(envFile))
    execFileSync("bash", [path.join(REPO, "scripts", "setup-pulumi")], { stdio: "inherit" });
  const out = execFileSync("bash", ["-c", `source ${JSON.stringify(envFile)} && env -0`], {
    encoding: "utf8",
  });
  const env: NodeJS.ProcessEnv = {};
  for (const kv of out.split("\0")) {
    const i = kv.indexOf("=");
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return env;
}

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

export class PulumiStack {
  readonly backend: string;
  readonly env: NodeJS.ProcessEnv;

  constructor(
    readonly programDir: string,
    readonly stack = "test",
    passphrase = "integration-test-passphrase",
  ) {
    this.backend = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-state-"));
    this.env = {
      ...pulumiEnv(),
      PULUMI_BACKEND_URL: `file://${this.backend}`,
      PULUMI_CONFIG_PASSPHRASE: passphrase,
      PULUMI_HOME: path.join(this.backend, ".pulumi-home"),
      PULUMI_SKIP_CONFIRMATIONS: "true",
      NO_COLOR: "1",
    };
  }

  async run(args: string[], opts: { allowFail?: boolean } = {}): Promise<RunResult> {
    const res = await runCommand(
      "pulumi",
      [...args, "--non-interactive", "--stack", this.stack, "--cwd", this.programDir],
      { env: this.env },
    );
    if (res.status !== 0 && !opts.allowFail) {
      throw new Error(`pulumi ${args.join(" ")} exited ${res.status}\n${res.stdout}\n${res.stderr}`);
    }
    return res;
  }

  async init(): Promise<void> {
    const r = await runCommand(
      "pulumi",
      ["stack", "init", this.stack, "--non-interactive", "--cwd", this.programDir],
      { env: this.env },
    );
    if (r.status !== 0) throw new Error(`stack init failed: ${r.stdout}${r.stderr}`);
  }

  async setConfig(key: string, value: unknown): Promise<void> {
    await this.run(["config", "set", key, typeof value === "string" ? value : JSON.stringify(value)]);
  }

  /** `pulumi preview --json`: the steps the engine plans, by URN suffix. */
  async previewSteps(): Promise<{ op: string; urn: string }[]> {
    const r = await this.run(["preview", "--json"]);
    const j = JSON.parse(r.stdout) as { steps?: { op: string; urn: string }[] };
    return (j.steps ?? []).map((s) => ({ op: s.op, urn: s.urn }));
  }

  async outputs(): Promise<Record<string, unknown>> {
    return JSON.parse((await this.run(["stack", "output", "--json"])).stdout);
  }

  /** All files of the backend, concatenated: what `grep` over the state would see. */
  stateText(): string {
    const files: string[] = [];
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) {
          if (e.name !== ".pulumi-home") walk(p);
        } else files.push(fs.readFileSync(p, "utf8"));
      }
    };
    walk(this.backend);
    return files.join("\n");
  }

  checkpointFile(): string {
    const dir = path.join(this.backend, ".pulumi", "stacks");
    const proj = fs.readdirSync(dir)[0]!;
    return path.join(dir, proj, `${this.stack}.json`);
  }

  cleanup(): void {
    fs.rmSync(this.backend, { recursive: true, force: true });
    fs.rmSync(path.join(this.programDir, `Pulumi.${this.stack}.yaml`), { force: true });
  }
}
