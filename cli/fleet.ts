#!/usr/bin/env node
/**
 * The `fleet` command: a thin dispatcher. Each command group lives in its own module
 * (cli/<group>.ts exporting `run(argv): Promise<number>`), loaded lazily so that
 * `fleet policy check` never pays for the device farm and vice versa.
 * Exit codes: 0 clean, 1 findings/violations, 2 bad input or usage, 3 unavailable.
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
    if (err instanceof FleetError) {
      console.error(`fleet ${group}: ${err.message}`);
      return err.code === "INVALID_INPUT" ? 2 : err.code === "UNAVAILABLE" ? 3 : 1;
    }
    throw err;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`fleet: internal error: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(70);
    },
  );
}
