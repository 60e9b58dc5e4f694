/**
 * `fleet devices`: run the emulated device farm and talk to it.
 *
 *   fleet devices serve --count N --port P --state DIR [--seed HEX] [--model M]
 *                       [--clones ids] [--noisy ids] [--drop ids] [--hang ids] ...
 *   fleet devices ping|stats --port P [--json]
 *   fleet devices identify|status --port P [--json] DEVICE
 *   fleet devices connect --hub HOST:PORT --hub-ca FILE --station HOST:PORT
 *                         [--devices IDS | --model M --first N --count N] [--concurrency C] [--json]
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
import { EXIT } from "./exit-codes";

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
        {
          name: "activate-pufs",
          help: "before serving, activate the PUF of every blank device (helper data made and stored, as a silicon vendor does at wafer sort), so the line's first contact only reconstructs; progress on stderr",
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
    {
      name: "connect",
      summary: "make enrolled farm devices connect to an MQTT hub over mutual TLS and publish once",
      options: [
        { name: "hub", arg: "HOST:PORT", help: "the hub's MQTT over TLS endpoint", required: true },
        {
          name: "hub-ca",
          arg: "FILE",
          help: "PEM of the CA the hub's server certificate must chain to (the local hub writes <state>/hub-ca.pem)",
          required: true,
        },
        { name: "station", arg: "HOST:PORT", help: "the device farm (station protocol)", required: true },
        {
          name: "devices",
          arg: "IDS",
          help: "comma-separated device IDs (default: every enrolled device of the range)",
        },
        { name: "model", arg: "M", help: "the farm's model, checked (default: whatever the farm serves)" },
        { name: "first", arg: "N", help: "first device index of the range (default 0)" },
        { name: "count", arg: "N", help: "devices in the range (default: up to the farm's last)" },
        { name: "concurrency", arg: "C", help: "sessions open at once (default 64)" },
        {
          name: "topic",
          arg: "T",
          help: "telemetry topic, {deviceId} replaced (default devices/{deviceId}/telemetry)",
        },
        {
          name: "servername",
          arg: "NAME",
          help: "name to check in the hub's certificate (default: the hub host)",
        },
        {
          name: "timeout-s",
          arg: "N",
          help: "per device session: TCP, TLS, CONNACK and PUBACK (default 10)",
        },
        JSON_OPTION,
      ],
      json: "{attempted, connected, refusedCount, skipped, reasons: [{stage, reason, count}], refused: [{deviceId, stage, reason}], elapsedMs, perSecond}",
      details:
        "each device uses its own key, which stays in the farm, and its installed chain; progress on stderr; " +
        "exit 1 when any device was refused (or none was enrolled), with the refusals listed by stage and reason",
    },
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
    activatePufs: flags["activate-pufs"] !== undefined,
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

/** "HOST:PORT" (an IPv6 host in brackets) for an option. */
export function hostPort(v: string | undefined, field: string): { host: string; port: number } {
  const m = v === undefined ? null : /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535) throw invalid(field, v, "HOST:PORT");
  return { host: m[1] ?? m[2]!, port };
}

const n = (x: number) => x.toLocaleString("en-US");

function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

async function connect(flags: Flags): Promise<number> {
  const { readFileSync } = await import("node:fs");
  const { connectDevices } = await import("../core/station/connect");
  const hub = hostPort(flags.hub, "--hub");
  const station = hostPort(flags.station, "--station");
  if (!flags["hub-ca"]) throw invalid("--hub-ca", undefined, "a PEM file (the hub's CA)");
  let caPem: string;
  try {
    caPem = readFileSync(flags["hub-ca"], "utf8");
  } catch {
    throw invalid("--hub-ca", flags["hub-ca"], "a readable PEM file");
  }
  if (!caPem.includes("-----BEGIN CERTIFICATE-----"))
    throw invalid("--hub-ca", flags["hub-ca"], "a PEM file with a certificate");
  const devices = flags.devices === undefined ? undefined : ids(flags.devices);
  if (devices && (flags.first !== undefined || flags.count !== undefined))
    throw invalid("--devices", flags.devices, "device IDs or a range (--first/--count), not both");
  if (devices && devices.length === 0) throw invalid("--devices", flags.devices, "one or more device IDs");
  const client = new StationClient({ host: station.host, port: station.port });
  try {
    const r = await connectDevices(client, {
      hub: { ...hub, servername: flags.servername, caPem },
      devices,
      model: flags.model,
      first: flags.first === undefined ? undefined : int(flags, "first", 0, 10_000_000),
      count: flags.count === undefined ? undefined : int(flags, "count", 1, 10_000_000),
      concurrency: flags.concurrency === undefined ? undefined : int(flags, "concurrency", 1, 8192),
      topic: flags.topic,
      deviceTimeoutMs: flags["timeout-s"] === undefined ? undefined : int(flags, "timeout-s", 1, 600) * 1000,
      onProgress: (p) => {
        const rate = p.done / Math.max(0.001, p.elapsedMs / 1000);
        const eta = p.done < p.total ? `, ETA ${duration(((p.total - p.done) / rate) * 1000)}` : "";
        process.stderr.write(
          `fleet devices connect: ${n(p.done)} of ${n(p.total)} devices (${n(p.connected)} connected, ` +
            `${n(p.refused)} refused, ${n(p.skipped)} not enrolled), ${n(Math.round(rate))}/s${eta}\n`,
        );
      },
    });
    const perSecond = r.attempted / Math.max(0.001, r.elapsedMs / 1000);
    if (flags.json) console.log(JSON.stringify({ ...r, perSecond: Math.round(perSecond) }, null, 2));
    else {
      console.log(`${n(r.connected)} of ${n(r.attempted)} devices connected over mTLS`);
      if (r.skipped) console.log(`${n(r.skipped)} devices of the range are not enrolled (not attempted)`);
      for (const x of r.reasons) console.log(`  ${n(x.count)} refused at ${x.stage}: ${x.reason}`);
      const shown = r.refused.slice(0, 20);
      for (const f of shown) console.log(`    ${f.deviceId}: ${f.stage}: ${f.reason}`);
      if (r.refusedCount > shown.length) console.log(`    (${n(r.refusedCount - shown.length)} more)`);
    }
    return r.refusedCount > 0 || r.attempted === 0 ? EXIT.FINDINGS : EXIT.OK;
  } finally {
    await client.close();
  }
}

export async function run(argv: string[]): Promise<number> {
  const r = route(spec, argv);
  if (r.kind !== "run") return answer(r)!;
  const { command, parsed } = r;
  if (command.name === "serve") return serve(parsed.flags);
  if (command.name === "connect") return connect(parsed.flags);
  return ask(command.name, parsed.flags, parsed.positionals);
}
