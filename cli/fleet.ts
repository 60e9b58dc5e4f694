#!/usr/bin/env node
/**
 * The `fleet` command: a thin dispatcher. Each command group lives in its own module
 * (cli/<group>.ts exporting `run(argv): Promise<number>`), loaded lazily so that
 * `fleet policy check` never pays for the device farm and vice versa.
 * Exit codes: 0 clean, 1 findings/violations, 2 bad input or usage, 3 unavailable, 70 internal
 * error (a bug of ours: one line, no stack; FLEETGUARD_DEBUG=1 prints the stack).
 */
import { FleetError } from "../core/errors";

const groups: Record<
  string,
  { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> }
> = {
  devices: { summary: "run and inspect the emulated device farm", load: () => import("./devices") },
  policy: {
    summary: "validate policies, evaluate a fleet, review a pull request",
    load: () => import("./policy"),
  },
  ca: {
    summary: "inspect the CA hierarchy of a stack (and verify device certificates)",
    load: () => import("./ca"),
  },
  batch: {
    summary: "device batches in the registry: status with progress, audit trail",
    load: () => import("./batch"),
  },
  manifest: {
    summary: "verify a signed device manifest before a bulk import",
    load: () => import("./manifest"),
  },
  registry: { summary: "verify the registry against its audit log", load: () => import("./registry") },
};

function usage(): string {
  const lines = ["usage: fleet <group> <command> [options]", "", "groups:"];
  for (const [name, g] of Object.entries(groups)) lines.push(`  ${name.padEnd(10)} ${g.summary}`);
  return lines.join("\n");
}

export async function main(argv: string[]): Promise<number> {
  const [group, ...rest] = argv;
  if (!group || group === "--help" || group === "-h" || group === "help") {
    console.log(usage());
    return group ? 0 : 2;
  }
  const entry = groups[group];
  if (!entry) {
    console.error(
      `fleet: unknown group ${JSON.stringify(group)}, want one of ${Object.keys(groups).join(", ")}`,
    );
    return 2;
  }
  try {
    return await (await entry.load()).run(rest);
  } catch (err) {
    const known = asFleetError(err);
    if (known) {
      console.error(`fleet ${group}: ${known.message}`);
      return exitCode(known);
    }
    throw err;
  }
}

export function exitCode(err: FleetError): number {
  return err.code === "INVALID_INPUT" ? 2 : err.code === "UNAVAILABLE" ? 3 : 1;
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
      process.exit(70);
    },
  );
}
