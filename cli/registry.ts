/**
 * `fleet registry verify`: check a device registry against its own hash-chained audit log
 * (core/registry/chain.ts), without Pulumi.
 *
 *   fleet registry verify --registry <path|postgres://...> [--batch NAME] [--anchor SEQ:HASH[:TABLES]] [--json]
 *
 * It re-hashes the audit chain (reporting the first broken link), checks the anchor if given (the
 * head a batch recorded in Pulumi state: a log rewritten and hashed again is caught there), and
 * re-derives every device's state, key and certificates from the log, printing every difference
 * with the devices and certificates tables. Progress goes to stderr on runs longer than a second.
 * Exit codes (cli/exit-codes.ts): 0 clean, 1 differences found, 2 bad input, 3 registry unavailable.
 * The registry's location is printed without its password. See docs/registry.md.
 */
import * as fs from "node:fs";
import { FleetError, invalid } from "../core/errors";
import { openRegistry, parseAnchor, parseLocation } from "../core/registry";
import type { Registry, VerifyReport } from "../core/registry/types";
import { answer, type Flags, type GroupSpec, JSON_OPTION, jsonDocument, route } from "./args";

export const spec: GroupSpec = {
  name: "registry",
  summary: "verify the registry against its audit log",
  commands: [
    {
      name: "verify",
      summary: "re-hash the audit chain, check an anchor, replay the log against the tables",
      options: [
        {
          name: "registry",
          arg: "<path|postgres://...>",
          help: "the registry: a SQLite file (it must exist) or a PostgreSQL URL",
          required: true,
        },
        {
          name: "batch",
          arg: "NAME",
          help: "compare only this batch's devices (the chain is checked whole)",
        },
        {
          name: "anchor",
          arg: "SEQ:HASH[:TABLES]",
          help: "a head recorded earlier (a batch's auditHead output; with TABLES, a checkpoint)",
        },
        JSON_OPTION,
      ],
      json: "{registry, ok, count, findings: [{kind, message, ...}], truncated, head: {seq, hash}, rows, devices, batch?}",
      details: "exit 1 means differences were found: the registry was changed outside fleetguard",
    },
  ],
};

export interface RegistryIo {
  out: (line: string) => void;
  /** usage errors (default: out) */
  err?: (line: string) => void;
  /** progress: the line so far (rewritten in place on a terminal) */
  progress: (line: string, final: boolean) => void;
  now: () => number;
}

const defaultIo = (): RegistryIo => ({
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  progress: (line, final) => {
    if (process.stderr.isTTY) process.stderr.write(`\r${line}${final ? "\n" : ""}`);
    else process.stderr.write(`${line}\n`);
  },
  now: () => Date.now(),
});

/** Open the registry --registry names; a SQLite file that is not there is an error, never a new, empty registry. */
export async function openExistingRegistry(loc: string | undefined): Promise<Registry> {
  if (!loc) throw invalid("--registry", undefined, "a registry file path or a postgres:// URL");
  let where: ReturnType<typeof parseLocation>;
  try {
    where = parseLocation(loc);
  } catch (err) {
    if (err instanceof FleetError)
      throw new FleetError(err.code, err.message.replace(/^registry/, "--registry"));
    throw err;
  }
  // verify and audit must never create an empty registry and call it clean
  if (where.kind === "sqlite" && !fs.statSync(where.file, { throwIfNoEntry: false })?.isFile())
    throw invalid("--registry", where.file, "an existing registry file (or a postgres:// URL)");
  return openRegistry(loc);
}

const fmt = (n: number) => n.toLocaleString("en-US");

async function verify(flags: Flags, io: RegistryIo): Promise<number> {
  const anchor = flags.anchor !== undefined ? parseAnchor(flags.anchor, "--anchor") : undefined;
  if (flags.batch !== undefined && flags.batch === "") throw invalid("--batch", "", "a batch name");
  const reg = await openExistingRegistry(flags.registry);
  try {
    if (flags.batch !== undefined && !(await reg.getBatch(flags.batch))) {
      const names = (await reg.listBatches()).map((b) => b.name);
      // bad input (exit 2), not a difference (exit 1)
      throw invalid(
        "--batch",
        flags.batch,
        `one of ${names.length ? names.join(", ") : "(no batches in the registry)"}`,
      );
    }
    const t0 = io.now();
    let last = t0;
    let shown = false;
    const report: VerifyReport = await reg.verify({
      ...(flags.batch !== undefined ? { batch: flags.batch } : {}),
      ...(anchor ? { anchor } : {}),
      onProgress: (done, total) => {
        const now = io.now();
        // quiet for short runs; then a line a second
        if (now - t0 < 1000 || (now - last < 1000 && done < total)) return;
        last = now;
        shown = true;
        const pct = total > 0 ? ((100 * done) / total).toFixed(1) : "100.0";
        io.progress(
          `verify: ${pct}% (${fmt(done)}/${fmt(total)} audit rows hashed and replayed)`,
          done >= total,
        );
      },
    });
    if (shown) io.progress(`verify: done in ${((io.now() - t0) / 1000).toFixed(1)} s`, true);
    if (flags.json) {
      io.out(jsonDocument({ registry: reg.location, ...report }));
      return report.ok ? 0 : 1;
    }
    io.out(
      `registry ${reg.location} (${reg.kind}, schema ${await reg.schemaVersion()}): ` +
        `audit head ${report.head.seq}:${report.head.hash}`,
    );
    for (const f of report.findings) io.out(`  ${f.kind}: ${f.message}`);
    if (report.truncated) io.out(`  ... and ${fmt(report.count - report.findings.length)} more`);
    const scope = `${fmt(report.rows)} audit rows, ${fmt(report.devices)} devices${report.batch !== undefined ? ` of batch ${report.batch}` : ""}${anchor ? `, anchor ${anchor.seq}` : ""}`;
    io.out(
      report.ok
        ? `verify: ok (${scope})`
        : `verify: ${fmt(report.count)} difference${report.count === 1 ? "" : "s"} (${scope}); the registry was changed outside fleetguard`,
    );
    return report.ok ? 0 : 1;
  } finally {
    await reg.close();
  }
}

/** `fleet registry <verify> ...`; bad input throws FleetError (INVALID_INPUT / NOT_FOUND). */
export async function registryCommand(argv: string[], io: RegistryIo = defaultIo()): Promise<number> {
  const r = route(spec, argv);
  if (r.kind !== "run") return answer(r, io.out, io.err ?? io.out)!;
  return verify(r.parsed.flags, io);
}

/** The dispatcher's convention (cli/fleet.ts loads a group's `run`). */
export const run = (argv: string[]): Promise<number> => registryCommand(argv);
