/**
 * `fleet batch`: look into the device registry (core/registry) without Pulumi.
 *
 *   fleet batch status --registry <path|url> [--batch NAME] [--watch SECONDS] [--json]
 *   fleet batch audit  --registry <path|url> --device ID [--json]
 *
 * `status` prints, per batch, the devices in each state and a progress bar of the devices that
 * are done (active, quarantined, decommissioned or revoked) out of all; with --watch it samples
 * again every SECONDS and adds the rate and ETA computed from successive samples, until every
 * batch shown is done or it is interrupted. `audit` prints a device's audit trail, oldest first.
 * With --json each prints one JSON document instead (--watch: one compact document per sample, a
 * line each), in the shapes of docs/cli.md. A registry location never shows its password
 * (Registry.location is redacted). See docs/registry.md.
 */
import * as fs from "node:fs";
import { FleetError, invalid } from "../core/errors";
import { openRegistry, parseLocation } from "../core/registry";
import {
  type AuditRecord,
  type BatchRecord,
  DEVICE_STATES,
  type Registry,
  type StateCounts,
} from "../core/registry/types";
import {
  answer,
  type Flags,
  type GroupSpec,
  JSON_OPTION,
  jsonDocument,
  type OptionSpec,
  route,
} from "./args";

const REGISTRY: OptionSpec = {
  name: "registry",
  arg: "<path|postgres://...>",
  help: "the registry: a SQLite file (it must exist) or a PostgreSQL URL",
  required: true,
};

export const spec: GroupSpec = {
  name: "batch",
  summary: "device batches in the registry: status with progress, audit trail",
  commands: [
    {
      name: "status",
      summary: "devices of each batch in each state, and a progress bar of those done",
      options: [
        REGISTRY,
        { name: "batch", arg: "NAME", help: "only this batch" },
        {
          name: "watch",
          arg: "SECONDS",
          help: "sample again every SECONDS (0.1..3600), with rate and ETA, until all are done",
        },
        JSON_OPTION,
      ],
      json: "{registry, kind, schema, at, batches: [{name, model, source, deletedAt, devices, done, counts, ratePerSecond, etaSeconds}]}; with --watch one such line per sample",
    },
    {
      name: "audit",
      summary: "a device's audit trail, oldest first",
      options: [REGISTRY, { name: "device", arg: "ID", help: "the device ID", required: true }, JSON_OPTION],
      json: "{registry, device: {deviceId, batch, state, reason, certSerial}, audit: [{seq, at, batch, from, to, reason, detail}]}",
    },
  ],
};

export interface BatchIo {
  out: (line: string) => void;
  /** usage errors (default: out) */
  err?: (line: string) => void;
  sleep: (ms: number) => Promise<void>;
  now: () => number;
}

const defaultIo = (): BatchIo => ({
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
  now: () => Date.now(),
});

const DONE_STATES = ["active", "quarantined", "decommissioned", "revoked"] as const;

/** Open the registry named by --registry; a file that does not exist is an error, not a new registry. */
async function open(flags: Flags): Promise<Registry> {
  const loc = flags.registry;
  if (!loc) throw invalid("--registry", undefined, "a registry file path or a postgres:// URL");
  let where: ReturnType<typeof parseLocation>;
  try {
    where = parseLocation(loc);
  } catch (err) {
    if (err instanceof FleetError)
      throw new FleetError(err.code, err.message.replace(/^registry/, "--registry"));
    throw err;
  }
  if (where.kind === "sqlite" && !fs.existsSync(where.file))
    throw invalid("--registry", where.file, "an existing registry file (or a postgres:// URL)");
  return openRegistry(loc);
}

export function progressBar(done: number, total: number, width = 30): string {
  const f = total > 0 ? done / total : 0;
  const full = Math.min(width, Math.floor(f * width));
  return `[${"#".repeat(full)}${".".repeat(width - full)}] ${(f * 100).toFixed(1).padStart(5)}%`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "-";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0
    ? `${h}h${String(m).padStart(2, "0")}m`
    : m > 0
      ? `${m}m${String(sec).padStart(2, "0")}s`
      : `${sec}s`;
}

const total = (c: StateCounts) => DEVICE_STATES.reduce((n, s) => n + c[s], 0);
const doneOf = (c: StateCounts) => DONE_STATES.reduce((n, s) => n + c[s], 0);

interface Sample {
  at: number;
  done: number;
}

function render(b: BatchRecord, c: StateCounts, rate?: { perSecond: number }): string[] {
  const n = total(c);
  const done = doneOf(c);
  const lines = [
    `batch ${b.name} (model ${b.model}, ${b.source})${b.deletedAt ? `, deleted ${b.deletedAt.toISOString()}` : ""}: ${n.toLocaleString("en-US")} devices`,
    `  ${DEVICE_STATES.map((s) => `${s} ${c[s]}`).join("  ")}`,
  ];
  let bar = `  ${progressBar(done, n)}  ${done}/${n} done`;
  if (rate) {
    const left = n - done;
    const eta = left === 0 ? "done" : rate.perSecond > 0 ? formatDuration(left / rate.perSecond) : "-";
    bar += `  rate ${rate.perSecond.toFixed(1)}/s  ETA ${eta}`;
  }
  lines.push(bar);
  return lines;
}

/** One batch in `fleet batch status --json` (docs/cli.md). */
export interface BatchStatusJson {
  name: string;
  model: string;
  source: string;
  deletedAt: string | null;
  devices: number;
  done: number;
  /** every state of DEVICE_STATES, in that order */
  counts: StateCounts;
  /** devices done per second between the last two samples (--watch); null on the first */
  ratePerSecond: number | null;
  /** seconds until all are done at that rate: 0 when done, null when unknown */
  etaSeconds: number | null;
}

function statusJson(b: BatchRecord, c: StateCounts, rate?: { perSecond: number }): BatchStatusJson {
  const n = total(c);
  const done = doneOf(c);
  const left = n - done;
  return {
    name: b.name,
    model: b.model,
    source: b.source,
    deletedAt: b.deletedAt ? b.deletedAt.toISOString() : null,
    devices: n,
    done,
    counts: Object.fromEntries(DEVICE_STATES.map((s) => [s, c[s]])) as StateCounts,
    ratePerSecond: rate ? rate.perSecond : null,
    etaSeconds: left === 0 ? 0 : rate && rate.perSecond > 0 ? left / rate.perSecond : null,
  };
}

async function status(flags: Flags, io: BatchIo): Promise<number> {
  const json = flags.json === "true";
  let watch: number | undefined;
  if (flags.watch !== undefined) {
    watch = Number(flags.watch);
    if (!/^\d+(\.\d+)?$/.test(flags.watch) || watch < 0.1 || watch > 3600)
      throw invalid("--watch", flags.watch, "a number of seconds in 0.1..3600");
  }
  const reg = await open(flags);
  let interrupted = false;
  const onInt = () => {
    interrupted = true;
  };
  if (watch !== undefined) process.once("SIGINT", onInt);
  try {
    let batches = await reg.listBatches();
    if (flags.batch !== undefined) {
      batches = batches.filter((b) => b.name === flags.batch);
      if (batches.length === 0) {
        const names = (await reg.listBatches()).map((b) => b.name);
        throw new FleetError(
          "NOT_FOUND",
          `--batch: got ${JSON.stringify(flags.batch)}, want one of ${names.length ? names.join(", ") : "(no batches in the registry)"}`,
          "--batch",
        );
      }
    }
    const schema = await reg.schemaVersion();
    if (!json) io.out(`registry ${reg.location} (${reg.kind}, schema ${schema})`);
    if (batches.length === 0) {
      if (json)
        io.out(
          jsonDocument({
            registry: reg.location,
            kind: reg.kind,
            schema,
            at: new Date(io.now()).toISOString(),
            batches: [],
          }),
        );
      else io.out("no batches");
      return 0;
    }
    const prev = new Map<string, Sample>();
    for (;;) {
      let allDone = true;
      const sample: BatchStatusJson[] = [];
      const sampledAt = new Date(io.now()).toISOString();
      for (const b of batches) {
        const c = await reg.counts(b.name);
        const at = io.now();
        const done = doneOf(c);
        if (done < total(c)) allDone = false;
        let rate: { perSecond: number } | undefined;
        const p = prev.get(b.name);
        if (watch !== undefined && p && at > p.at)
          rate = { perSecond: ((done - p.done) * 1000) / (at - p.at) };
        prev.set(b.name, { at, done });
        if (json) sample.push(statusJson(b, c, rate));
        else for (const line of render(b, c, rate)) io.out(line);
      }
      if (json) {
        const doc = { registry: reg.location, kind: reg.kind, schema, at: sampledAt, batches: sample };
        // --watch: JSON Lines, so a consumer reads one sample per line as it comes
        io.out(watch === undefined ? jsonDocument(doc) : JSON.stringify(doc));
      }
      if (watch === undefined || allDone || interrupted) return 0;
      await io.sleep(watch * 1000);
      if (interrupted) return 0;
      if (!json) io.out(`-- ${new Date(io.now()).toISOString()}`);
    }
  } finally {
    process.removeListener("SIGINT", onInt);
    await reg.close();
  }
}

function auditJson(a: AuditRecord) {
  return {
    seq: a.seq,
    at: a.at.toISOString(),
    batch: a.batch,
    from: a.from,
    to: a.to,
    reason: a.reason,
    detail: a.detail,
  };
}

async function audit(flags: Flags, io: BatchIo): Promise<number> {
  const json = flags.json === "true";
  if (!flags.device) throw invalid("--device", flags.device, "a device ID");
  const reg = await open(flags);
  try {
    const d = await reg.getDevice(flags.device);
    if (!d)
      throw new FleetError(
        "NOT_FOUND",
        `--device: got ${JSON.stringify(flags.device)}, want a device recorded in ${reg.location}`,
        "--device",
      );
    if (!json)
      io.out(
        `device ${d.deviceId} of batch ${d.batch}: ${d.state}${d.reason ? ` (${d.reason})` : ""}` +
          `${d.certSerial ? `, certificate ${d.certSerial}` : ""}`,
      );
    const trail: ReturnType<typeof auditJson>[] = [];
    let afterSeq = 0;
    for (;;) {
      const page = await reg.audit({ deviceId: d.deviceId, afterSeq, limit: 1000 });
      for (const a of page)
        if (json) trail.push(auditJson(a));
        else
          io.out(
            `${String(a.seq).padStart(8)}  ${a.at.toISOString()}  ${a.batch}  ${a.from ?? "(declared)"} -> ${a.to}` +
              `${a.reason ? `  reason: ${a.reason}` : ""}${a.detail ? `  ${JSON.stringify(a.detail)}` : ""}`,
          );
      if (page.length < 1000) break;
      afterSeq = page[page.length - 1]!.seq;
    }
    if (json)
      io.out(
        jsonDocument({
          registry: reg.location,
          device: {
            deviceId: d.deviceId,
            batch: d.batch,
            state: d.state,
            reason: d.reason,
            certSerial: d.certSerial,
          },
          audit: trail,
        }),
      );
    return 0;
  } finally {
    await reg.close();
  }
}

/** `fleet batch <status|audit> ...`; bad input throws FleetError (INVALID_INPUT / NOT_FOUND). */
export async function batchCommand(argv: string[], io: BatchIo = defaultIo()): Promise<number> {
  const r = route(spec, argv);
  if (r.kind !== "run") return answer(r, io.out, io.err ?? io.out)!;
  return r.command.name === "status" ? status(r.parsed.flags, io) : audit(r.parsed.flags, io);
}

/** The dispatcher's convention (cli/fleet.ts loads a group's `run`). */
export const run = (argv: string[]): Promise<number> => batchCommand(argv);
