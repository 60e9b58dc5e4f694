/**
 * The enrollment engine phase by phase, without Pulumi, CPU time per device (issue 9: what device
 * ownership, registry-derived convergence and attesting refresh cost). One command:
 *
 *   npx tsx bench/engine-phases.ts [--devices 10000]
 *       [--phases enroll,plan,verify,verify-checkpoint,converge,refresh,reissue]
 *       [--prof-phase plan --prof-dir DIR]   # a .cpuprofile of this process for that phase only
 *       [--farm-prof DIR]                    # the farm under node --cpu-prof
 *       [--farm N]                           # the farm's size (default --devices); its peak RSS is reported
 *       [--keep DIR]                         # keep the enrolled registry and issuer in DIR (then --from DIR)
 *       [--from DIR]                         # no farm, no enrollment: the plan and verify phases on a kept registry
 *
 * A farm of --devices PUF devices in its own process (`fleet devices serve`, default workers), the
 * engine in this process with a SQLite registry. Phases, each timed (wall) and charged CPU from
 * this process (process.cpuUsage) and from the farm (its STATS):
 *   enroll    first contact of every device (identify, attest, CSR, issue, trust, install)
 *   plan      a no-change plan (what a preview asks the registry)
 *   converge  a no-change run
 *   refresh   refresh (STATUS of every active device, and, where the engine does it, attestation)
 *   reissue   a profile change: every closed device re-issued (set-trust and install again)
 * CPU is the fair measure on a shared machine: wall time moves with the load, CPU time much less.
 * Runs on any version of the engine that has BatchEngine.converge/plan/refresh.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import { Session } from "node:inspector/promises";
import * as os from "node:os";
import * as path from "node:path";
import { issueCa } from "../core/ca";
import { BatchEngine, type BatchSpec } from "../core/enroll/engine";
import { type IssuerMaterial, resolveProfile } from "../core/enroll/profile";
import { openRegistry } from "../core/registry";
import { StationClient } from "../core/station/client";
import { loadPrivateKey } from "../core/x509/keys";
import { pemBlocks } from "../core/x509/pem";
import { startFarmProcess, stopFarmProcess } from "../devices/farm/process";
import { start as startSampler } from "./lib/procmem";

/** The value after `--k`, if given. */
const argOf = (k: string) =>
  process.argv.includes(`--${k}`) ? process.argv[process.argv.indexOf(`--${k}`) + 1] : undefined;
const arg = (name: string, def: number) => {
  const v = argOf(name);
  return v === undefined ? def : Number(v);
};
const N = arg("devices", 10_000);
const PROF_PHASE = argOf("prof-phase");
const PROF_DIR = argOf("prof-dir") ?? ".";

/** The batch every phase runs on (validityDays: a profile change re-issues). */
const specOf = (validityDays = 365): BatchSpec => ({
  name: "lot",
  model: "fg100",
  source: "puf",
  firstSerial: 0,
  count: N,
  profile: resolveProfile({ subject: { organization: "Acme" }, validityDays }),
  maxQuarantinedFraction: 0.01,
  maxWaveFraction: 1,
});

/** Run `f`, under this process's CPU profiler when the phase is --prof-phase's (its .cpuprofile in --prof-dir). */
async function profiled<T>(name: string, f: () => Promise<T>): Promise<T> {
  const session = PROF_PHASE && name.startsWith(PROF_PHASE) ? new Session() : undefined;
  if (!session) return f();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  const out = await f();
  const { profile } = await session.post("Profiler.stop");
  fs.mkdirSync(PROF_DIR, { recursive: true });
  fs.writeFileSync(path.join(PROF_DIR, `engine-${PROF_PHASE}.cpuprofile`), JSON.stringify(profile));
  session.disconnect();
  return out;
}
const PHASES = new Set((argOf("phases") ?? "enroll,plan,converge,refresh,reissue").split(","));

function issuer(): IssuerMaterial {
  const root = issueCa({
    name: "root",
    role: "root",
    algorithm: "ecdsa-p256",
    subject: { commonName: "Bench Root" },
    validityDays: 3650,
    pathLen: 1,
  });
  const iss = issueCa(
    {
      name: "iss",
      role: "issuing",
      algorithm: "ecdsa-p256",
      subject: { commonName: "Bench Issuing" },
      validityDays: 730,
    },
    { name: "root", ...root },
  );
  const chain = pemBlocks(iss.chainPem, "CERTIFICATE", "chain");
  return {
    certificate: chain[0]!,
    chain: chain.slice(1),
    key: loadPrivateKey((iss as { keyPem: string }).keyPem, "key"),
    fingerprint: crypto.createHash("sha256").update(chain[0]!).digest("hex"),
  };
}

/** The issuer as PEMs (--keep), and back (--from). */
function saveIssuer(m: IssuerMaterial, file: string) {
  const pem = (b: Uint8Array) =>
    `-----BEGIN CERTIFICATE-----\n${Buffer.from(b).toString("base64")}\n-----END CERTIFICATE-----\n`;
  fs.writeFileSync(
    file,
    JSON.stringify({
      certificate: pem(m.certificate),
      chain: m.chain.map(pem),
      key: (m.key as crypto.KeyObject).export({ format: "pem", type: "pkcs8" }),
      fingerprint: m.fingerprint,
    }),
  );
}
function loadIssuer(file: string): IssuerMaterial {
  const j = JSON.parse(fs.readFileSync(file, "utf8"));
  return {
    certificate: pemBlocks(j.certificate, "CERTIFICATE", "certificate")[0]!,
    chain: j.chain.map((c: string) => pemBlocks(c, "CERTIFICATE", "chain")[0]!),
    key: loadPrivateKey(j.key, "key"),
    fingerprint: j.fingerprint,
  };
}

async function main() {
  const from = argOf("from");
  if (from) return fromKept(from);
  const keep = argOf("keep");
  const work = keep ?? fs.mkdtempSync(path.join(os.tmpdir(), "fg-phases-"));
  if (keep) fs.mkdirSync(keep, { recursive: true });
  const farmProf = argOf("farm-prof");
  const farmCount = arg("farm", N);
  const { child, port } = await startFarmProcess({
    count: farmCount,
    state: path.join(work, "farm"),
    seed: crypto.randomBytes(32).toString("hex"),
    ...(farmProf ? { nodeArgs: ["--cpu-prof", "--cpu-prof-dir", farmProf] } : {}),
  });
  // VmHWM is the kernel's own peak: a slow sampler (it runs in this process, charged to the engine) will do
  const farmMem = startSampler(child.pid!, { intervalMs: 2000 });
  const station = new StationClient({ port, poolSize: 2, maxInFlight: 64, timeoutMs: 120_000 });
  const registry = await openRegistry(path.join(work, "registry.db"));
  const material = issuer();
  if (keep) saveIssuer(material, path.join(work, "issuer.json"));
  const engine = (days = 365) => new BatchEngine({ registry, station, issuer: material }, specOf(days));
  const farmCpu = async () => {
    const s = await station.stats();
    return (s.cpuUserMs ?? 0) + (s.cpuSystemMs ?? 0);
  };
  const rows: string[] = [];
  const phase = (name: string, f: () => Promise<unknown>) =>
    profiled(name, async () => {
      const f0 = await farmCpu();
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await f();
      const wall = (performance.now() - t0) / 1000;
      const c = process.cpuUsage(c0);
      const farm = (await farmCpu()) - f0;
      const engineMs = (c.user + c.system) / 1000;
      rows.push(`| ${name} | ${wall.toFixed(2)} | ${(engineMs / N).toFixed(3)} | ${(farm / N).toFixed(3)} |`);
      process.stderr.write(`${rows[rows.length - 1]}\n`);
    });
  try {
    // enrollment always runs: the other phases need enrolled devices
    await phase("enroll", () => engine().converge());
    if (PHASES.has("plan")) await phase("plan (no change)", () => engine().plan());
    // what every preview and up does before the plan (providers/runtime/batch.ts checkIntegrity)
    if (PHASES.has("verify")) await phase("verify (batch)", () => registry.verify({ batch: "lot" }));
    // what a no-change preview does since issue 13: verify from the checkpoint the last run recorded
    if (PHASES.has("verify-checkpoint")) {
      const base = await registry.verify({ batch: "lot" });
      const anchor = { ...base.head, tables: base.checkpoint! };
      await phase("verify (batch, from the checkpoint)", async () => {
        const rep = await registry.verify({ batch: "lot", anchor });
        if (rep.mode !== "checkpoint") throw new Error("bench: the checkpoint was not used");
      });
    }
    if (PHASES.has("converge")) await phase("converge (no change)", () => engine().converge());
    if (PHASES.has("refresh")) await phase("refresh", () => engine().refresh());
    if (PHASES.has("reissue")) await phase("reissue (profile change)", () => engine(180).converge());
  } finally {
    await station.close();
    await registry.close();
    await stopFarmProcess(child);
    const peak = farmMem.stop().processes.reduce((m, p) => Math.max(m, p.peakKb), 0);
    rows.push(
      `| farm of ${farmCount.toLocaleString("en-US")}: peak RSS ${(peak / 1024).toFixed(0)} MiB | | | |`,
    );
    if (!keep) fs.rmSync(work, { recursive: true, force: true });
  }
  console.log(`## engine phases, ${N.toLocaleString("en-US")} devices, load ${os.loadavg()[0]!.toFixed(1)}`);
  console.log("| phase | wall (s) | engine CPU ms/device | farm CPU ms/device |");
  console.log("|---|---|---|---|");
  for (const r of rows) console.log(r);
}

/**
 * --from DIR: the phases that need no devices (plan, verify, verify-checkpoint, and `parallel`: the
 * verify from the checkpoint on a thread beside the plan, as a preview's diff runs them), on the
 * registry and issuer --keep left in DIR, CPU of this process (worker threads included).
 */
async function fromKept(dir: string) {
  const registry = await openRegistry(path.join(dir, "registry.db"));
  const material = loadIssuer(path.join(dir, "issuer.json"));
  const engine = () => new BatchEngine({ registry, station: undefined as never, issuer: material }, specOf());
  const rows: string[] = [];
  const phase = (name: string, f: () => Promise<unknown>) =>
    profiled(name, async () => {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await f();
      const wall = (performance.now() - t0) / 1000;
      const c = process.cpuUsage(c0);
      rows.push(`| ${name} | ${wall.toFixed(2)} | ${((c.user + c.system) / 1e6).toFixed(2)} |`);
      process.stderr.write(`${rows[rows.length - 1]}\n`);
    });
  const base = await registry.verify({ batch: "lot" });
  const anchor = { ...base.head, tables: base.checkpoint! };
  const checkpointed = (thread: boolean) => async () => {
    const rep = await registry.verify({ batch: "lot", anchor, thread });
    if (!rep.ok || rep.mode !== "checkpoint") throw new Error("bench: the checkpoint was not used");
  };
  const repeat = arg("repeat", 1);
  for (let k = 0; k < repeat; k++) {
    if (PHASES.has("plan")) await phase("plan (no change)", () => engine().plan());
    if (PHASES.has("verify")) await phase("verify (batch)", () => registry.verify({ batch: "lot" }));
    if (PHASES.has("verify-checkpoint"))
      await phase("verify (batch, from the checkpoint)", checkpointed(false));
    if (PHASES.has("verify-thread"))
      await phase("verify (batch, from the checkpoint, on a thread)", checkpointed(true));
    if (PHASES.has("parallel"))
      await phase("parallel: verify on a thread + plan", () =>
        Promise.all([checkpointed(true)(), engine().plan()]),
      );
  }
  await registry.close();
  console.log(
    `## engine phases on ${dir}, ${N.toLocaleString("en-US")} devices, load ${os.loadavg()[0]!.toFixed(1)}`,
  );
  console.log("| phase | wall (s) | CPU of this process (s) |");
  console.log("|---|---:|---:|");
  for (const r of rows) console.log(r);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
