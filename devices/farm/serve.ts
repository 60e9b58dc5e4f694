/**
 * Start a device farm on a state directory: pin the farm's identity (seed, model) in
 * farm.json on first start and check it on every later one, keep the vendor CA certificate,
 * take a PID lock so two farms never write one log, recover the device states, and serve the
 * station protocol on loopback. Used by `fleet devices serve` and by tests in-process.
 *
 * State directory:
 *   farm.json             {"format":1,"seed":hex,"model":...,"created":...}
 *   vendor-ca.der/.pem    the emulated silicon vendor's CA certificate (public)
 *   farm.lock             PID of the farm using the directory
 *   wal-<gen>.log         write-ahead log (store.ts)
 *   snapshot-<gen>.bin    compacted states (store.ts)
 */
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { ensurePrivateDir, writeFileDurably } from "../../core/durable";
import { FleetError, invalid } from "../../core/errors";
import { checkModel, MAX_COUNT } from "../../core/station/ids";
import type { PufApi, PufConditions } from "../firmware/identity";
import { toPem } from "../firmware/pkix";
import { SiliconVendor } from "../injection/vendor";
import { DEFAULT_LIMITS, LIMIT_RANGES, type Limits, StationServer } from "../protocol/server";
import { Farm, type FaultSpec, MAX_WORKERS } from "./farm";
import { StateStore } from "./store";

export interface StartOptions {
  stateDir: string;
  count: number;
  port?: number;
  host?: string;
  /** hex; required to match farm.json if that exists; random on first start if omitted */
  seed?: string;
  model?: string;
  clones?: string[];
  noisy?: string[];
  drop?: FaultSpec[];
  hang?: FaultSpec[];
  keyCache?: number;
  cells?: number;
  noisyBer?: number;
  conditions?: PufConditions;
  compactBytes?: number;
  /** station protocol limits per connection and per farm (defaults: DEFAULT_LIMITS) */
  maxInFlight?: number;
  maxBody?: number;
  writeHighWater?: number;
  idleTimeoutMs?: number;
  maxConnections?: number;
  deviceTimeoutMs?: number;
  /** CONNECT sessions open at once over the farm (default CONNECT_SESSIONS_MAX, 8,192) */
  connectSessionsMax?: number;
  puf?: PufApi;
  /**
   * worker threads for the device-side cryptography (0 = all in the main thread); default
   * defaultWorkers(), or 0 when a custom `puf` is given (it cannot cross threads)
   */
  workers?: number;
  /** activate every blank device's PUF before listening (Farm.activate), progress to `log` */
  activatePufs?: boolean;
  log?: (line: string) => void;
}

/**
 * The default number of farm worker threads: FLEET_FARM_WORKERS if set (to run a whole test
 * suite both ways), else one per CPU.
 */
export function defaultWorkers(): number {
  const env = process.env.FLEET_FARM_WORKERS;
  if (env !== undefined && env !== "") {
    const n = Number(env);
    if (!/^\d+$/.test(env) || n > MAX_WORKERS)
      throw invalid("FLEET_FARM_WORKERS", env, `an integer in 0..${MAX_WORKERS}`);
    return n;
  }
  return availableParallelism();
}

/**
 * `fleet devices serve` flags for the station protocol limits: flag -> option, in the flag's
 * unit (`scale` option units per flag unit). The CLI takes the names, the usage lines and
 * limitOptions() from here, so that a limit is added in one place.
 */
export const LIMIT_FLAGS: ReadonlyArray<{
  flag: string;
  option: keyof Limits;
  scale: number;
  /** `$default` stands for the default, in the flag's unit */
  help: string;
}> = [
  {
    flag: "max-in-flight",
    option: "maxInFlight",
    scale: 1,
    help: "requests (batch items) in flight per connection; past it the farm stops reading it (default $default)",
  },
  {
    flag: "max-connections",
    option: "maxConnections",
    scale: 1,
    help: "connections open at once; one more gets BUSY and is closed (default $default)",
  },
  {
    flag: "idle-timeout-s",
    option: "idleTimeoutMs",
    scale: 1000,
    help: "close a connection that completes no frame and drains no reply for N s (default $default; 0 = never)",
  },
  {
    flag: "write-buffer-kb",
    option: "writeHighWater",
    scale: 1024,
    help: "stop reading a connection while its unsent replies exceed N KiB (default $default)",
  },
  {
    flag: "max-body-kb",
    option: "maxBody",
    scale: 1024,
    help: "largest request body accepted, KiB (default $default)",
  },
];

/** Usage lines for LIMIT_FLAGS, in the layout of the CLI's usage text. */
export function limitUsage(indent = "      ", column = 19): string {
  return LIMIT_FLAGS.map(({ flag, option, scale, help }) => {
    const name = `--${flag} N`;
    const text = help.replace("$default", String(DEFAULT_LIMITS[option] / scale));
    return name.length < column - 1
      ? `${indent}${name.padEnd(column)}${text}`
      : `${indent}${name}\n${indent}${" ".repeat(column)}${text}`;
  }).join("\n");
}

/** Parse the LIMIT_FLAGS present in `flags` (flag name without dashes -> value) into options. */
export function limitOptions(flags: Readonly<Record<string, string | undefined>>): Partial<Limits> {
  const out: Partial<Limits> = {};
  for (const { flag, option, scale } of LIMIT_FLAGS) {
    const v = flags[flag];
    if (v === undefined) continue;
    const min = Math.ceil(LIMIT_RANGES[option][0] / scale);
    const max = Math.floor(LIMIT_RANGES[option][1] / scale);
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max) throw invalid(`--${flag}`, v, `an integer in ${min}..${max}`);
    out[option] = n * scale;
  }
  return out;
}

export interface RunningFarm {
  port: number;
  farm: Farm;
  store: StateStore;
  server: StationServer;
  vendor: SiliconVendor;
  close(): Promise<void>;
}

function takeLock(dir: string): string {
  const path = join(dir, "farm.lock");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(path, String(process.pid), { flag: "wx" });
      return path;
    } catch {
      const pid = Number(readFileSync(path, "utf8"));
      let alive = false;
      if (pid === process.pid)
        alive = true; // another farm in this very process
      else if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch (e) {
          alive = (e as NodeJS.ErrnoException).code === "EPERM";
        }
      }
      if (alive)
        throw new FleetError("CONFLICT", `stateDir: got ${dir} in use by pid ${pid}, want a free one`);
      unlinkSync(path); // left by a farm that died (kill -9): take it over
    }
  }
  throw new FleetError("CONFLICT", `stateDir: could not lock ${dir}`);
}

/** Farm.activate with a progress line about every 5 s (count, rate, ETA) and a summary. */
async function activateAll(farm: Farm, log: (line: string) => void): Promise<void> {
  const t0 = Date.now();
  let shown = t0;
  const rate = (n: number) => Math.round(n / Math.max((Date.now() - t0) / 1000, 1e-3));
  const { activated } = await farm.activate((done, todo) => {
    if (Date.now() - shown < 5000 && done < todo) return;
    shown = Date.now();
    const r = rate(done);
    log(
      `fleet devices: activating PUFs ${done.toLocaleString("en-US")}/${todo.toLocaleString("en-US")}, ${r}/s, ETA ${Math.round((todo - done) / Math.max(r, 1))} s`,
    );
  });
  log(
    `fleet devices: ${activated.toLocaleString("en-US")} PUFs activated in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  );
}

export async function startFarm(o: StartOptions): Promise<RunningFarm> {
  if (!Number.isInteger(o.count) || o.count < 1 || o.count > MAX_COUNT)
    throw invalid("count", o.count, `an integer in 1..${MAX_COUNT}`);
  if (o.seed !== undefined && !/^([0-9a-fA-F]{2}){16,64}$/.test(o.seed))
    throw invalid("seed", "a malformed seed", "16..64 bytes of hex");
  const model = checkModel(o.model ?? "fg100");
  const workers = o.workers ?? (o.puf ? 0 : defaultWorkers());
  if (!Number.isInteger(workers) || workers < 0 || workers > MAX_WORKERS)
    throw invalid("workers", workers, `an integer in 0..${MAX_WORKERS}`);
  if (workers > 0 && o.puf)
    throw invalid("workers", workers, "0 with a custom PUF model (it cannot cross threads)");
  ensurePrivateDir(o.stateDir); // the farm's seed and device secrets live here: 0700
  const lock = takeLock(o.stateDir);
  try {
    const metaPath = join(o.stateDir, "farm.json");
    let seedHex: string;
    if (existsSync(metaPath)) {
      const meta = JSON.parse(readFileSync(metaPath, "utf8")) as { seed: string; model: string };
      if (o.seed !== undefined && o.seed.toLowerCase() !== meta.seed)
        throw invalid("seed", "another seed", `the seed this state directory was made with (farm.json)`);
      if (meta.model !== model) throw invalid("model", model, `${meta.model} (farm.json)`);
      seedHex = meta.seed;
    } else {
      seedHex = (o.seed ?? randomBytes(32).toString("hex")).toLowerCase();
      writeFileDurably(
        metaPath,
        `${JSON.stringify({ format: 1, seed: seedHex, model, created: new Date().toISOString() })}\n`,
      );
    }
    const seed = Buffer.from(seedHex, "hex");
    const caPath = join(o.stateDir, "vendor-ca.der");
    const vendor = new SiliconVendor(seed, existsSync(caPath) ? readFileSync(caPath) : undefined);
    if (!existsSync(caPath)) {
      writeFileDurably(join(o.stateDir, "vendor-ca.pem"), toPem(vendor.certificate));
      writeFileDurably(caPath, vendor.certificate);
    }
    const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
    const store = await StateStore.open(o.stateDir, { compactBytes: o.compactBytes, log });
    for (const i of store.states.keys())
      if (i >= o.count) throw invalid("count", o.count, `> ${i}: the state directory holds device ${i}`);
    const farm = new Farm({
      count: o.count,
      model,
      seed,
      vendor,
      store,
      clones: o.clones,
      noisy: o.noisy,
      drop: o.drop,
      hang: o.hang,
      keyCache: o.keyCache,
      cells: o.cells,
      noisyBer: o.noisyBer,
      conditions: o.conditions,
      puf: o.puf,
      deviceTimeoutMs: o.deviceTimeoutMs,
      connectSessionsMax: o.connectSessionsMax,
      workers,
      log,
    });
    if (o.activatePufs) await activateAll(farm, log);
    const server = new StationServer(farm, {
      maxBody: o.maxBody,
      maxInFlight: o.maxInFlight,
      writeHighWater: o.writeHighWater,
      idleTimeoutMs: o.idleTimeoutMs,
      maxConnections: o.maxConnections,
      log,
    });
    const port = await server.listen(o.port ?? 0, o.host ?? "127.0.0.1");
    let closed = false;
    return {
      port,
      farm,
      store,
      server,
      vendor,
      async close() {
        if (closed) return;
        closed = true;
        await server.close();
        await farm.close();
        await store.close();
        try {
          unlinkSync(lock);
        } catch {
          // already gone
        }
      },
    };
  } catch (e) {
    try {
      unlinkSync(lock);
    } catch {
      // already gone
    }
    throw e;
  }
}
