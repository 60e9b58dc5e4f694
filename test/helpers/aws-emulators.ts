/**
 * Start the AWS emulators the AWS IoT tests and benchmark use, on loopback and free ports:
 * moto's server (`moto_server`, getmoto/moto 5.2.5: a shallow control plane) and ministack
 * (1.5.33: IoT control plane plus an mTLS MQTT listener that admits only registered ACTIVE
 * certificates). Both come from the venv scripts/ensure-moto makes (.cache/pyenv, or
 * $FLEETGUARD_PYENV); the helper runs that script when the venv is missing. Each emulator is
 * reset between tests (`reset()`) and stopped after (`stop()`).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

const repo = path.resolve(__dirname, "../..");

export interface AwsEmulator {
  kind: "moto" | "ministack";
  /** the control-plane URL for the SDK's `endpoint` */
  endpoint: string;
  port: number;
  /** the emulator's process (for its CPU time in benchmarks) */
  pid: number;
  /** ministack only: the mTLS MQTT listener */
  mqttPort?: number;
  /** forget every resource (moto: POST /moto-api/reset; ministack: POST /_ministack/reset) */
  reset(): Promise<void>;
  stop(): Promise<void>;
  /** what the emulator printed (for a failing test's message) */
  output(): string;
}

/** The venv's bin folder, made by scripts/ensure-moto when it is not there yet. */
export function pyenvBin(): string {
  const venv = process.env.FLEETGUARD_PYENV ?? path.join(repo, ".cache/pyenv");
  const bin = path.join(venv, "bin");
  if (fs.existsSync(path.join(bin, "moto_server")) && fs.existsSync(path.join(bin, "ministack"))) return bin;
  const r = spawnSync("bash", [path.join(repo, "scripts/ensure-moto")], {
    encoding: "utf8",
    timeout: 600_000,
  });
  if (r.status !== 0) throw new Error(`scripts/ensure-moto failed (exit ${r.status}): ${r.stderr}`);
  return bin;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitReady(
  url: string,
  child: ChildProcess,
  out: () => string,
  timeoutMs = 90_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null)
      throw new Error(`emulator exited with ${child.exitCode} before it was ready:\n${out()}`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`emulator not ready at ${url} after ${timeoutMs} ms:\n${out()}`);
}

function spawnLogged(cmd: string, args: string[], env: NodeJS.ProcessEnv) {
  const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"], detached: false });
  let log = "";
  const keep = (d: Buffer) => {
    log = (log + d.toString("utf8")).slice(-20_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  return { child, output: () => log };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const t = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(t);
}

const pyEnv = (extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv => ({
  PATH: process.env.PATH,
  HOME: process.env.HOME ?? os.tmpdir(),
  LANG: "C.UTF-8",
  PYTHONDONTWRITEBYTECODE: "1",
  ...extra,
});

/** moto's server (moto.server.main, as `moto_server` runs it) on 127.0.0.1:<free port>. */
export async function startMoto(): Promise<AwsEmulator> {
  const bin = pyenvBin();
  const port = await freePort();
  // like AWS, the certificate id must be the SHA-256 of the DER: moto hashes the PEM text unless its
  // in-process config says use_valid_cert (moto 5.2.5's /moto-api/config does not take the iot key)
  const boot = [
    "import sys",
    "from moto.core.config import default_user_config",
    "default_user_config['iot']['use_valid_cert'] = True",
    "from moto.server import main",
    "sys.exit(main(sys.argv[1:]))",
  ].join("; ");
  const { child, output } = spawnLogged(
    path.join(bin, "python"),
    ["-c", boot, "-H", "127.0.0.1", "-p", String(port)],
    pyEnv({}),
  );
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await waitReady(`${endpoint}/moto-api/data.json`, child, output);
  } catch (e) {
    await stopChild(child);
    throw e;
  }
  return {
    kind: "moto",
    pid: child.pid as number,
    endpoint,
    port,
    output,
    async reset() {
      const r = await fetch(`${endpoint}/moto-api/reset`, { method: "POST" });
      if (!r.ok) throw new Error(`moto reset: HTTP ${r.status}`);
    },
    stop: () => stopChild(child),
  };
}

/** ministack on 127.0.0.1:<free port>, its mTLS MQTT listener on another free port. */
export async function startMinistack(opts: { auth?: boolean } = {}): Promise<AwsEmulator> {
  const bin = pyenvBin();
  const port = await freePort();
  const mqttPort = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "fg-ministack-"));
  const { child, output } = spawnLogged(
    path.join(bin, "ministack"),
    [],
    pyEnv({
      GATEWAY_PORT: String(port),
      BIND_HOST: "127.0.0.1",
      MINISTACK_HOST: "localhost",
      IOT_MTLS_PORT: String(mqttPort),
      SERVICES: "iot,iot-data,sts",
      AUTH: opts.auth ? "true" : "false",
      TMPDIR: dataDir,
      S3_DATA_DIR: path.join(dataDir, "s3"),
    }),
  );
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await waitReady(`${endpoint}/_ministack/ready`, child, output);
  } catch (e) {
    await stopChild(child);
    throw e;
  }
  return {
    kind: "ministack",
    pid: child.pid as number,
    endpoint,
    port,
    mqttPort,
    output,
    async reset() {
      const r = await fetch(`${endpoint}/_ministack/reset`, { method: "POST" });
      if (!r.ok) throw new Error(`ministack reset: HTTP ${r.status}`);
    },
    async stop() {
      await stopChild(child);
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
