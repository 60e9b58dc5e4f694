#!/usr/bin/env node
/**
 * The `fleet` command: a thin dispatcher. Each command group lives in its own module
 * (cli/<group>.ts exporting `run(argv): Promise<number>` and, for the shared grammar of
 * cli/args.ts, its `spec`), loaded lazily so that `fleet policy check` never pays for the device
 * farm and vice versa. Global: `fleet --help`, `fleet --version`, `fleet help <group> [command]`.
 * Exit codes are one table, cli/exit-codes.ts (docs/cli.md): 0 clean, 1 findings, 2 bad input or
 * usage, 3 unavailable, 70 internal error (a bug of ours: one line, no stack; FLEETGUARD_DEBUG=1
 * prints the stack).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { FleetError, type FleetErrorCode } from "../core/errors";
import type { GroupSpec } from "./args";
import { UsageError } from "./args";
import { EXIT, EXIT_CODE_TABLE, exitCodeFor } from "./exit-codes";

interface GroupModule {
  run(argv: string[]): Promise<number>;
  /** present when the group uses cli/args.ts: it then answers --help itself */
  spec?: GroupSpec;
}

const groups: Record<string, { summary: string; load: () => Promise<GroupModule> }> = {
  ca: {
    summary: "inspect the CA hierarchy of a stack (and verify device certificates)",
    load: () => import("./ca"),
  },
  batch: {
    summary: "device batches in the registry: status with progress, audit trail",
    load: () => import("./batch"),
  },
  registry: { summary: "verify the registry against its audit log", load: () => import("./registry") },
  manifest: {
    summary: "verify a signed device manifest before a bulk import",
    load: () => import("./manifest"),
  },
  devices: { summary: "run and inspect the emulated device farm", load: () => import("./devices") },
  hub: {
    summary: "run the embedded local MQTT hub (mutual TLS, registrations reloaded live)",
    load: () => import("./hub"),
  },
  crl: {
    summary: "serve the CRL folder over HTTP at the CRL distribution points' URL paths",
    load: () => import("./crl"),
  },
  policy: {
    summary: "validate policies, evaluate a fleet, review a pull request",
    load: () => import("./policy"),
  },
  audit: {
    summary: "audit what is deployed (registry, CRLs, hubs) against the policy: audit.md and audit.json",
    load: () => import("./audit"),
  },
};

export const GROUP_NAMES: readonly string[] = Object.keys(groups);

function usage(): string {
  const lines = [
    "usage: fleet <group> <command> [options]",
    "       fleet <group> [<command>] --help   (or: fleet help <group> [<command>])",
    "       fleet --version",
    "",
    "groups:",
  ];
  for (const [name, g] of Object.entries(groups)) lines.push(`  ${name.padEnd(10)} ${g.summary}`);
  lines.push(
    "",
    "read commands take --json (one JSON document on stdout); docs/cli.md has every command,",
    "its JSON shape and the exit codes:",
    ...EXIT_CODE_TABLE.map((e) => `  ${String(e.code).padStart(2)}  ${e.short}`),
  );
  return lines.join("\n");
}

/**
 * fleetguard's package.json, found by walking up from this file: cli/ in a checkout, dist/cli/ in
 * an installed package (node_modules/fleetguard/dist/cli), so no path of the checkout is assumed.
 */
export function packageVersion(from: string = __dirname): string {
  for (let dir = from; ; ) {
    const file = path.join(dir, "package.json");
    if (fs.existsSync(file)) {
      const pkg = JSON.parse(fs.readFileSync(file, "utf8")) as { name?: string; version?: string };
      if (pkg.name === "fleetguard" && typeof pkg.version === "string") return pkg.version;
    }
    const up = path.dirname(dir);
    if (up === dir)
      throw new FleetError("INTERNAL", `package.json: got none named fleetguard above ${from}, want one`);
    dir = up;
  }
}

/** What an error shows under its message: the usage lines and where the help is. */
function shortUsage(): string {
  return `usage: fleet <group> <command> [options]   (groups: ${GROUP_NAMES.join(", ")})\n(fleet --help for more)`;
}

const isHelp = (a: string | undefined) => a === "--help" || a === "-h";

function reportError(group: string | undefined, err: FleetError): number {
  const where = group ? `fleet ${group}` : "fleet";
  console.error(`${where}: ${err.message}`);
  if (err instanceof UsageError) console.error(err.usage);
  return exitCodeFor(err.code);
}

export async function main(argv: string[]): Promise<number> {
  const [group, ...rest] = argv;
  if (group === undefined) {
    console.error(usage());
    return EXIT.USAGE;
  }
  if (isHelp(group) || (group === "help" && rest.length === 0)) {
    console.log(usage());
    return EXIT.OK;
  }
  if (group === "--version") {
    console.log(`fleetguard ${packageVersion()}`);
    return EXIT.OK;
  }
  // `fleet help batch status` is `fleet batch status --help`
  if (group === "help") return main([...rest, "--help"]);
  if (group.startsWith("-")) {
    return reportError(
      undefined,
      new UsageError("option", group, "--help or --version (options go after the command)", shortUsage()),
    );
  }
  const entry = groups[group];
  if (!entry) {
    return reportError(
      undefined,
      new UsageError("group", group, `one of ${GROUP_NAMES.join(", ")}`, shortUsage()),
    );
  }
  try {
    const mod = await entry.load();
    // a group without a spec (policy) has one help text: every --help shows it
    if (!mod.spec && rest.some(isHelp)) return await mod.run(["--help"]);
    return await mod.run(rest);
  } catch (err) {
    const known = asFleetError(err);
    if (known) return reportError(group, known);
    throw err;
  }
}

/** The exit code of a FleetError (the table of cli/exit-codes.ts). */
export function exitCode(err: FleetError | { code: FleetErrorCode }): number {
  return exitCodeFor(err.code);
}

const fileProblems: Record<string, string> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EISDIR: "a directory, not a file",
  ENOTDIR: "a path through something that is not a directory",
  ELOOP: "a symlink loop",
  ENAMETOOLONG: "a name too long",
};

/**
 * Errors a person caused that arrive as Node errors rather than FleetErrors: a file named on the
 * command line that cannot be opened (the path is theirs, so it is shown; the content never is) and
 * a malformed option from util.parseArgs. Both are bad input (exit 2), not internal errors.
 */
export function asFleetError(err: unknown): FleetError | undefined {
  if (err instanceof FleetError) return err;
  const e = err as NodeJS.ErrnoException | undefined;
  if (!(e instanceof Error) || typeof e.code !== "string") return undefined;
  if (e.code.startsWith("ERR_PARSE_ARGS")) return new FleetError("INVALID_INPUT", e.message, "argument");
  const what = fileProblems[e.code];
  // a read(2) on a directory reports no path: the command's file arguments are all it can be
  if (what && typeof e.path !== "string")
    return new FleetError("INVALID_INPUT", `file argument: got ${what}, want an accessible file`, "file");
  if (what && typeof e.path === "string")
    return new FleetError(
      "INVALID_INPUT",
      `${e.path}: got ${what}, want ${e.syscall === "mkdir" ? "a directory that can be created" : "an accessible file"}`,
      "file",
    );
  return undefined;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      // A bug of ours: one line, no stack (FLEETGUARD_DEBUG=1 shows it), exit 70 (EX_SOFTWARE).
      console.error(`fleet: internal error: ${err instanceof Error ? err.message : String(err)}`);
      if (process.env.FLEETGUARD_DEBUG && err instanceof Error && err.stack) console.error(err.stack);
      process.exit(EXIT.INTERNAL);
    },
  );
}
