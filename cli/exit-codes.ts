/**
 * The exit codes of `fleet`, in one table: what each means, and which FleetError codes map to it.
 * cli/fleet.ts maps every error through `exitCodeFor`; docs/cli.md shows the same table (a test
 * keeps the two equal). Values are part of the CLI's contract: scripts and CI branch on them.
 */
import type { FleetErrorCode } from "../core/errors";

export const EXIT = {
  OK: 0,
  FINDINGS: 1,
  USAGE: 2,
  UNAVAILABLE: 3,
  INTERNAL: 70,
} as const;

export interface ExitCodeRow {
  readonly code: number;
  /** a word or two, for help texts */
  readonly short: string;
  readonly meaning: string;
  /** FleetError codes that end the command with this exit code */
  readonly errors: readonly FleetErrorCode[];
}

export const EXIT_CODE_TABLE: readonly ExitCodeRow[] = [
  { code: EXIT.OK, short: "clean", meaning: "clean", errors: [] },
  {
    code: EXIT.FINDINGS,
    short: "findings",
    meaning: "findings (violations, differences, failed verifications, not found)",
    errors: ["POLICY_VIOLATION", "INTEGRITY", "NOT_FOUND", "CONFLICT", "INTERNAL"],
  },
  { code: EXIT.USAGE, short: "bad input or usage", meaning: "bad input or usage", errors: ["INVALID_INPUT"] },
  {
    code: EXIT.UNAVAILABLE,
    short: "unavailable",
    meaning: "unavailable (a tool, station or registry)",
    errors: ["UNAVAILABLE"],
  },
  // EX_SOFTWARE (sysexits.h): an error that is not a FleetError is a bug of ours
  {
    code: EXIT.INTERNAL,
    short: "internal error",
    meaning: "internal error (a bug; FLEETGUARD_DEBUG=1 shows the stack)",
    errors: [],
  },
];

const BY_ERROR = new Map<FleetErrorCode, number>(
  EXIT_CODE_TABLE.flatMap((row) => row.errors.map((e) => [e, row.code] as const)),
);

export function exitCodeFor(code: FleetErrorCode): number {
  // a code added to FleetErrorCode and not yet placed in the table: findings, as before the table
  return BY_ERROR.get(code) ?? EXIT.FINDINGS;
}
