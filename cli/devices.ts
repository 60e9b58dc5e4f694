/**
 * `fleet devices`: run the emulated device farm and talk to it.
 *
 *   fleet devices serve --count N --port P --state DIR [--seed HEX] [--model M]
 *                       [--clones ids] [--noisy ids] [--drop ids] [--hang ids] ...
 *   fleet devices ping|stats --port P [--json]
 *   fleet devices identify|status --port P [--json] DEVICE
 *
 * The questions print the station's reply as JSON (byte strings as hex) with or without --json;
 * the options and help come from `spec` (cli/args.ts).
 * The farm listens on loopback only: the station protocol has no authentication of its own.
 * See docs/devices.md.
 */
import { invalid } from "../core/errors";
import type { Value } from "../core/station/cbor";
import { StationClient } from "../core/station/client";
import { parseFaults } from "../devices/farm/farm";
import { LIMIT_FLAGS } from "../devices/farm/serve";
import { DEFAULT_LIMITS } from "../devices/protocol/server";
import {
  answer,
  type CommandSpec,
  type Flags,
  type GroupSpec,
  JSON_OPTION,
  type OptionSpec,
  route,
} from "./args";

const PORT: OptionSpec = { name: "port", arg: "P", help: "the farm's TCP port", required: true };
const HOST: OptionSpec = { name: "host", arg: "H", help: "the farm's address (default 127.0.0.1)" };
const DEVICE = [{ name: "DEVICE", help: "a device ID, <model>-<serial>" }];

const query = (name: string, summary: string, json: string, positionals = false): CommandSpec => ({
  name,
  summary,
  options: [PORT, HOST, JSON_OPTION],
  ...(positionals ? { positionals: DEVICE } : {}),
  json: `${json}; always JSON (byte strings as lowercase hex), --json is accepted for scripts`,
});

export const spec: GroupSpec = {
  name: "devices",
  summary: "run and inspect the emulated device farm",
  commands: [
    {
      name: "serve",
      summary: "run an emulated device farm on loopback until SIGINT or SIGTERM",
      options: [
        { name: "count", arg: "N", help: "devices in the farm (1..10,000,000)", required: true },
        { name: "port", arg: "P", help: "TCP port to listen on (0: any free port)", required: true },
        { name: "state", arg: "DIR", help: "the farm's state directory", required: true },
        {
          name: "seed",
          arg: "HEX",
          help: "farm seed (16..64 bytes hex); random on first start, then pinned in DIR/farm.json",
        },
        {
          name: "model",
          arg: "M",
          help: "device model, used in device IDs <model>-<serial> (default fg100)",
        },
        {
          name: "clones",
          arg: "IDS",
          help: "comma-separated device IDs that are clones (no genuine PUF or chip key)",
        },
        { name: "noisy", arg: "IDS", help: "devices whose PUF is noisier than the fuzzy extractor corrects" },
        { name: "noisy-ber", arg: "X", help: "bit error rate of noisy devices (default 0.35)" },
        {
          name: "drop",
          arg: "IDS",
          help: "devices that drop the connection instead of answering (ID:n = first n times)",
        },
        { name: "hang", arg: "IDS", help: "devices that never answer (ID:n = first n times)" },
        {
          name: "key-cache",
          arg: "N",
          help: "reconstructed keys kept per farm, as a powered device keeps its key (default 4096)",
        },
        {
          name: "compact-mb",
          arg: "N",
          help: "compact the write-ahead log into a snapshot past N MiB (default 256; 0 = never)",
        },
        ...LIMIT_FLAGS.map(({ flag, option, scale, help }) => ({
          name: flag,
          arg: "N",
          help: help.replace("$default", String(DEFAULT_LIMITS[option] / scale)),
        })),
        { name: "host", arg: "H", help: "loopback address to bind (default 127.0.0.1)" },
        {
          name: "workers",
          arg: "N",
          help: "worker threads for the device-side cryptography (default: one per CPU; 0 = all in the main thread)",
        },
      ],
      details:
        "prints one line with the port it bound once it serves; the station protocol has no authentication of its own, so it binds loopback only",
    },
    query(
      "ping",
      "the farm's protocol, model, size and vendor CA",
      "{protocol, model, count, farmId, vendorCa}",
    ),
    query(
      "stats",
      "the farm's counters",
      "{requests, reconstructions, reconstructionFailures, enrollments, changedDevices, walRecords, walBytes, walSyncs, uptimeMs, cpuUserMs?, cpuSystemMs?}",
    ),
    query(
      "identify",
      "a device's identity (with its chip certificate)",
      "{device, model, lifecycle, epoch, source, publicKey?, chipCertificate?}",
      true,
    ),
    query(
      "status",
      "a device's state: lifecycle, trust anchors, chain, OTP regions",
      "{device, model, lifecycle, epoch, pendingEpoch, source, helperBytes, trustAnchors, chain, otp: [{name, offset, words, programmed, locked, secret, data}], challenge?}",
      true,
    ),
  ],
};

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

async function serve(flags: Flags): Promise<number> {
  const { startFarm, limitOptions } = await import("../devices/farm/serve");
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

async function ask(cmd: string, flags: Flags, rest: readonly string[]): Promise<number> {
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
  const r = route(spec, argv);
  if (r.kind !== "run") return answer(r)!;
  const { command, parsed } = r;
  if (command.name === "serve") return serve(parsed.flags);
  return ask(command.name, parsed.flags, parsed.positionals);
}
