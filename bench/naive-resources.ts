/**
 * The naive design, measured: N devices as N Pulumi dynamic resources (one `create` per
 * device doing that device's key generation, CSR, CSR check and certificate), on the real
 * engine with a file:// (DIY) backend, the design brief.md rule 1 rejects because Pulumi
 * rewrites the whole checkpoint at every step (pulumi/pulumi#10668). Reports `pulumi up` wall
 * time and devices/s, the checkpoint size, bytes the CLI wrote, a no-change preview time and
 * each process's peak memory. `runNaive` is exported so the DeviceIdentityBatch benchmark can
 * put the naive design beside the batch in the same run.
 *
 *   npx tsx bench/naive-resources.ts [--devices 100,300,1000] [--parallel 8] [--keep]
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { invalid } from "../core/errors";
import { verifyChain } from "../test/helpers/openssl";
import { makeBenchIssuer } from "./lib/enroll";
import { formatReport, type ProcReport } from "./lib/procmem";
import { BenchStack } from "./lib/pulumi-run";

const REPO = path.resolve(__dirname, "..");
const FIXTURE = path.join(__dirname, "fixtures", "naive-program");
const RUNTIME = path.join(__dirname, "lib", "naive-provider.js");

export interface NaiveOptions {
  devices: number;
  /** where the program copy and the backend go; default a new directory in os.tmpdir() */
  workDir?: string;
  /** `pulumi up --parallel`; default: the CLI's default (8 on this machine) */
  parallel?: number;
  /** keep the work directory (default: removed) */
  keep?: boolean;
  /** called as `pulumi up` reports resources created */
  onProgress?: (created: number, total: number, elapsedSeconds: number) => void;
}

export interface NaiveResult {
  devices: number;
  /** the `pulumi up` arguments used */
  upArgs: string[];
  /** wall time of `pulumi up --skip-preview` (CLI start to exit: program, engine, providers) */
  upSeconds: number;
  /** devices / upSeconds */
  perSecond: number;
  /** the stack checkpoint (.pulumi/stacks/<project>/<stack>.json) after the up */
  stateBytes: number;
  /** every file in the backend: checkpoint, backups, history */
  backendBytes: number;
  /** bytes the pulumi CLI process passed to write(2) during the up (last sample; a lower bound) */
  cliWriteBytes: number;
  /** wall time of a `pulumi preview` with nothing to change */
  previewSeconds: number;
  /** resources the preview reported unchanged (devices + the stack) */
  previewSame: number;
  upMemory: ProcReport;
  previewMemory: ProcReport;
  workDir: string;
}

/** Copy the fixture program into `dir` with node_modules linked to the repository's. */
function stageProgram(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  for (const f of ["Pulumi.yaml", "index.ts", "device.ts"])
    fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
  fs.symlinkSync(path.join(REPO, "node_modules"), path.join(dir, "node_modules"), "dir");
}

export async function runNaive(o: NaiveOptions): Promise<NaiveResult> {
  if (!Number.isInteger(o.devices) || o.devices < 1) throw invalid("devices", o.devices, "an integer >= 1");
  if (o.parallel !== undefined && (!Number.isInteger(o.parallel) || o.parallel < 1))
    throw invalid("parallel", o.parallel, "an integer >= 1");
  const ownDir = !o.workDir;
  const workDir = o.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-naive-"));
  const sub = path.join(workDir, `naive-${o.devices}-${process.pid}-${Date.now()}`);
  const programDir = path.join(sub, "program");
  stageProgram(programDir);
  const stack = new BenchStack(programDir, sub);
  try {
    const issuer = makeBenchIssuer();
    await stack.init();
    await stack.setConfig("fleetguard-bench:devices", String(o.devices));
    await stack.setConfig("fleetguard-bench:runtime", RUNTIME);
    await stack.setConfig("fleetguard-bench:issuerCertificatePem", issuer.certificatePem);
    await stack.setConfig("fleetguard-bench:issuerKeyPem", issuer.keyPem, true);

    const upArgs = [
      "up",
      "--yes",
      "--skip-preview",
      ...(o.parallel ? ["--parallel", String(o.parallel)] : []),
    ];
    let created = 0;
    const t0 = performance.now();
    const up = await stack.run(upArgs, {
      onLine: (line) => {
        if (/dynamic:Resource\s.*\bcreated\b/.test(line)) {
          created++;
          o.onProgress?.(created, o.devices, (performance.now() - t0) / 1000);
        }
      },
    });
    const checkpoint = stack.checkpointFile();
    const stateBytes = fs.statSync(checkpoint).size;
    const state = JSON.parse(fs.readFileSync(checkpoint, "utf8")) as {
      checkpoint: { latest: { resources?: { type: string; outputs?: Record<string, unknown> }[] } };
    };
    const devices = (state.checkpoint.latest.resources ?? []).filter(
      (r) => r.type === "pulumi-nodejs:dynamic:Resource",
    );
    if (devices.length !== o.devices)
      throw new Error(`naive: ${devices.length} device resources in the state, want ${o.devices}`);
    // the work was real: a device certificate from the state verifies with OpenSSL
    const pem = devices[devices.length - 1]!.outputs?.certificatePem;
    const v = verifyChain(issuer.rootCertificatePem, issuer.certificatePem, String(pem));
    if (!v.ok) throw new Error(`naive: a device certificate from the state does not verify: ${v.out}`);

    const preview = await stack.run(["preview", "--json"]);
    const summary =
      (JSON.parse(preview.stdout) as { changeSummary?: Record<string, number> }).changeSummary ?? {};
    const changed = Object.entries(summary).filter(([op, n]) => op !== "same" && n > 0);
    if (changed.length)
      throw new Error(`naive: the second preview is not a no-change: ${JSON.stringify(summary)}`);

    const cli = up.memory.processes.find((p) => p.pid === up.memory.rootPid);
    return {
      devices: o.devices,
      upArgs,
      upSeconds: up.seconds,
      perSecond: o.devices / up.seconds,
      stateBytes,
      backendBytes: stack.backendBytes(),
      cliWriteBytes: cli?.wcharBytes ?? 0,
      previewSeconds: preview.seconds,
      previewSame: summary.same ?? 0,
      upMemory: up.memory,
      previewMemory: preview.memory,
      workDir: sub,
    };
  } finally {
    if (!o.keep) fs.rmSync(ownDir ? workDir : sub, { recursive: true, force: true });
  }
}

const MB = (b: number) => `${(b / 1e6).toFixed(2)} MB`;

async function main() {
  const argOf = (name: string) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const sizes = (argOf("devices") ?? "1000").split(",").map(Number);
  const parallel = argOf("parallel") ? Number(argOf("parallel")) : undefined;
  const keep = process.argv.includes("--keep");
  const load = () =>
    os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ");
  console.log(
    `naive design: one Pulumi dynamic resource per device; N = ${sizes.join(", ")}; ${os.cpus().length} cores, Node ${process.version}; load ${load()}`,
  );
  const rows: NaiveResult[] = [];
  for (const n of sizes) {
    let last = 0;
    const r = await runNaive({
      devices: n,
      parallel,
      keep,
      onProgress: (c, total, s) => {
        if (s - last < 5 && c !== total) return;
        last = s;
        const rate = c / s;
        process.stderr.write(
          `  N=${total}: ${c}/${total} created, ${rate.toFixed(1)}/s, ETA ${((total - c) / rate).toFixed(0)} s (load ${load()})\n`,
        );
      },
    });
    rows.push(r);
    console.log(
      `N=${n}: up ${r.upSeconds.toFixed(1)} s = ${r.perSecond.toFixed(1)} devices/s; checkpoint ${MB(r.stateBytes)} (${(r.stateBytes / n).toFixed(0)} B/device), backend ${MB(r.backendBytes)}; pulumi CLI wrote ${MB(r.cliWriteBytes)}; no-change preview ${r.previewSeconds.toFixed(1)} s (${r.previewSame} same); load ${load()}${keep ? `; kept ${r.workDir}` : ""}`,
    );
    console.log(`  peak memory during up:\n${formatReport(r.upMemory)}`);
    console.log(`  peak memory during preview:\n${formatReport(r.previewMemory)}`);
  }
  const peak = (r: ProcReport, name: string) => `${((r.byName[name]?.peakKb ?? 0) / 1024).toFixed(0)}`;
  console.log(
    "\n| devices (resources) | `pulumi up` s | devices/s | s per device | checkpoint | B/device | CLI wrote | no-change preview s | peak MB: pulumi / language host / program / dynamic provider |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|");
  for (const r of rows)
    console.log(
      `| ${r.devices.toLocaleString("en-US")} | ${r.upSeconds.toFixed(1)} | ${r.perSecond.toFixed(1)} | ${(r.upSeconds / r.devices).toFixed(3)} | ${MB(r.stateBytes)} | ${(r.stateBytes / r.devices).toFixed(0)} | ${MB(r.cliWriteBytes)} | ${r.previewSeconds.toFixed(1)} | ${peak(r.upMemory, "pulumi")} / ${peak(r.upMemory, "pulumi-language-nodejs")} / ${peak(r.upMemory, "node program")} / ${peak(r.upMemory, "node dynamic provider")} |`,
    );
}

if (require.main === module)
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
