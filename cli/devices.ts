/**
 * `fleet devices`: run the emulated device farm and talk to it.
 *
 *   fleet devices serve --count N --port P --state DIR [--seed HEX] [--model M]
 *                       [--clones ids] [--noisy ids] [--drop ids] [--hang ids] ...
 *   fleet devices ping|stats --port P
 *   fleet devices identify|status --port P DEVICE
 *
 * The farm listens on loopback only: the station protocol has no authentication of its own.
 * See docs/devices.md.
 */
import { invalid } from "../core/errors";
import type { Value } from "../core/station/cbor";
import { StationClient } from "../core/station/client";
import { parseFaults } from "../devices/farm/farm";

const USAGE = `usage:
  fleet devices serve --count N --port P --state DIR [options]
      --seed HEX         farm seed (16..64 bytes hex); random on first start, then pinned in DIR/farm.json
      --model M          device model, used in device IDs <model>-<serial> (default fg100)
      --clones IDS       comma-separated device IDs that are clones (no genuine PUF or chip key)
      --noisy IDS        devices whose PUF is noisier than the fuzzy extractor corrects
      --noisy-ber X      bit error rate of noisy devices (default 0.35)
      --drop IDS         devices that drop the connection instead of answering (ID:n = first n times)
      --hang IDS         devices that never answer (ID:n = first n times)
      --key-cache N      reconstructed keys kept per farm, as a powered device keeps its key (default 4096)
      --compact-mb N     compact the write-ahead log into a snapshot past N MiB (default 256; 0 = never)
      --max-in-flight N  requests (batch items) in flight per connection; past it the farm stops
                         reading it (default 4096)
      --max-connections N  connections open at once; one more gets BUSY and is closed (default 64)
      --idle-timeout-s N   close a connection that completes no frame and drains no reply for N s
                           (default 120; 0 = never)
      --write-buffer-kb N  stop reading a connection while its unsent replies exceed N KiB (default 1024)
      --max-body-kb N      largest request body accepted, KiB (default 4096)
      --host H           loopback address to bind (default 127.0.0.1)
      --workers N        worker threads for the device-side cryptography (default: one per CPU;
                         0 = all in the main thread)
  fleet devices ping|stats --port P
  fleet devices identify|status --port P DEVICE`;

type Flags = Record<string, string>;

function parse(argv: string[], allowed: string[]): { flags: Flags; rest: string[] } {
  const flags: Flags = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) {
      rest.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    if (!allowed.includes(name))
      throw invalid("option", `--${name}`, `one of ${allowed.map((x) => `--${x}`).join(" ")}`);
    const value = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined) throw invalid(`--${name}`, undefined, "a value");
    flags[name] = value;
  }
  return { flags, rest };
}

function int(flags: Flags, name: string, min: number, max: number, def?: number): number {
  const v = flags[name];
  if (v === undefined) {
    if (def === undefined) throw invalid(`--${name}`, undefined, `an integer in ${min}..${max}`);
    return def;
  }
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) throw invalid(`--${name}`, v, `an integer in ${min}..${max}`);
  return n;
}

const ids = (v: string | undefined) =>
  v
    ? v
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean)
    : [];

async function serve(argv: string[]): Promise<number> {
  // loaded here so that `fleet devices ping` does not pay for the farm
  const { startFarm, LIMIT_FLAGS, limitOptions } = await import("../devices/farm/serve");
  const { flags, rest } = parse(argv, [
    ...LIMIT_FLAGS.map((f) => f.flag),
    "count",
    "port",
    "state",
    "seed",
    "model",
    "clones",
    "noisy",
    "noisy-ber",
    "drop",
    "hang",
    "key-cache",
    "compact-mb",
    "host",
    "workers",
  ]);
  if (rest.length) throw invalid("argument", rest[0], "options only");
  if (!flags.state) throw invalid("--state", undefined, "a state directory");
  const host = flags.host ?? "127.0.0.1";
  if (!/^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(host)) throw invalid("--host", host, "a loopback address");
  let noisyBer: number | undefined;
  if (flags["noisy-ber"] !== undefined) {
    noisyBer = Number(flags["noisy-ber"]);
    if (!(noisyBer > 0 && noisyBer <= 0.5))
      throw invalid("--noisy-ber", flags["noisy-ber"], "a number in (0, 0.5]");
  }
  const { MAX_WORKERS } = await import("../devices/farm/farm");
  const farm = await startFarm({
    stateDir: flags.state,
    count: int(flags, "count", 1, 10_000_000),
    port: int(flags, "port", 0, 65535),
    host,
    seed: flags.seed,
    model: flags.model,
    clones: ids(flags.clones),
    noisy: ids(flags.noisy),
    drop: parseFaults(flags.drop, "--drop"),
    hang: parseFaults(flags.hang, "--hang"),
    noisyBer,
    keyCache: flags["key-cache"] === undefined ? undefined : int(flags, "key-cache", 0, 10_000_000),
    compactBytes:
      flags["compact-mb"] === undefined ? undefined : int(flags, "compact-mb", 0, 1 << 20) * 1024 * 1024,
    ...limitOptions(flags),
    workers: flags.workers === undefined ? undefined : int(flags, "workers", 0, MAX_WORKERS),
  });
  const info = farm.farm.stats();
  console.log(
    `fleet devices: serving ${int(flags, "count", 1, 10_000_000)} devices on ${host}:${farm.port} ` +
      `(state ${flags.state}, ${info.changedDevices} provisioned before)`,
  );
  return new Promise<number>((resolve) => {
    const stop = (sig: string) => {
      process.stderr.write(`fleet devices: ${sig}, closing\n`);
      farm.close().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });
}

/** JSON with byte strings as hex, for people reading the output. */
function show(v: unknown): string {
  return JSON.stringify(
    v,
    (_k, x: Value) => {
      if (x && typeof x === "object" && (x as { type?: string }).type === "Buffer")
        return Buffer.from((x as unknown as { data: number[] }).data).toString("hex");
      return x;
    },
    2,
  );
}

async function query(cmd: string, argv: string[]): Promise<number> {
  const { flags, rest } = parse(argv, ["port", "host"]);
  const client = new StationClient({ host: flags.host ?? "127.0.0.1", port: int(flags, "port", 1, 65535) });
  try {
    if (cmd === "ping") console.log(show(await client.ping()));
    else if (cmd === "stats") console.log(show(await client.stats()));
    else {
      if (rest.length !== 1) throw invalid("DEVICE", rest.length, "exactly one device ID");
      console.log(
        show(
          cmd === "identify"
            ? await client.identify(rest[0]!, { chipCert: true })
            : await client.status(rest[0]!),
        ),
      );
    }
    return 0;
  } finally {
    await client.close();
  }
}

export async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "serve":
      return serve(rest);
    case "ping":
    case "stats":
    case "identify":
    case "status":
      return query(cmd, rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(USAGE);
      return cmd ? 0 : 2;
    default:
      console.error(`fleet devices: unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
      return 2;
  }
}
