/**
 * The command line's grammar, written once for every `fleet` group: each group declares its
 * commands and their options as data (a GroupSpec), and this module parses argv against it,
 * renders `--help` from it, and refuses what it does not declare with a UsageError that carries
 * the command's usage. Conventions (docs/cli.md): `--name VALUE` or `--name=VALUE`, switches
 * take no value, `--help`/`-h` anywhere an option may stand, `--` ends the options.
 */
import { FleetError, invalid } from "../core/errors";
import { EXIT_CODE_TABLE } from "./exit-codes";

export interface OptionSpec {
  /** without the leading dashes */
  readonly name: string;
  /** the value's placeholder in usage ("FILE"); absent: a switch, which takes no value */
  readonly arg?: string;
  readonly help: string;
  /** shown without brackets in the usage line; the command itself checks presence (its own message) */
  readonly required?: boolean;
  /** may be given more than once: every value is in Parsed.lists (flags holds the last) */
  readonly repeat?: boolean;
}

export interface CommandSpec {
  readonly name: string;
  readonly summary: string;
  readonly options: readonly OptionSpec[];
  /** positional arguments, in order ("DEVICE"); none by default */
  readonly positionals?: readonly { readonly name: string; readonly help: string }[];
  /** what the command prints with --json, one line (docs/cli.md has the fields) */
  readonly json?: string;
  /** more lines of help after the options */
  readonly details?: string;
}

export interface GroupSpec {
  readonly name: string;
  readonly summary: string;
  readonly commands: readonly CommandSpec[];
}

/** Bad usage (an undeclared option or command, a missing value): exit 2 with the usage shown. */
export class UsageError extends FleetError {
  constructor(
    field: string,
    got: unknown,
    want: string,
    readonly usage: string,
  ) {
    super("INVALID_INPUT", invalid(field, got, want).message, field);
  }
}

export type Flags = Record<string, string>;

export interface Parsed {
  /** by option name; a switch that was given is "true"; a repeated option: its last value */
  readonly flags: Flags;
  /** every value of each repeatable option given, in order */
  readonly lists: Readonly<Record<string, readonly string[]>>;
  readonly positionals: readonly string[];
}

export const JSON_OPTION: OptionSpec = {
  name: "json",
  help: "print one JSON document on stdout instead of text (shape: docs/cli.md)",
};

const isHelp = (a: string) => a === "--help" || a === "-h";

function optionUsage(o: OptionSpec): string {
  const s = o.arg ? `--${o.name} ${o.arg}` : `--${o.name}`;
  return `${o.required ? s : `[${s}]`}${o.repeat ? "..." : ""}`;
}

/** The usage of a command, wrapped at 100 columns under its name. */
export function usageLine(group: GroupSpec, cmd: CommandSpec): string {
  const head = `fleet ${group.name} ${cmd.name}`;
  const words = [...cmd.options.map(optionUsage), ...(cmd.positionals ?? []).map((p) => p.name)];
  const indent = " ".repeat("usage: ".length + head.length + 1);
  const lines: string[] = [];
  let line = head;
  for (const w of words) {
    if (line.length + 1 + w.length > 100 - "usage: ".length && line !== head) {
      lines.push(line);
      line = indent.slice("usage: ".length) + w;
    } else line += ` ${w}`;
  }
  lines.push(line);
  return lines.join(`\n${" ".repeat("usage: ".length)}`);
}

/** Two-column lines, the left column padded to the widest entry. */
function table(rows: ReadonlyArray<readonly [string, string]>, indent = "  "): string[] {
  const w = Math.max(0, ...rows.map(([l]) => l.length));
  return rows.map(([l, r]) => `${indent}${l.padEnd(w)}  ${r}`);
}

export function commandHelp(group: GroupSpec, cmd: CommandSpec): string {
  const lines = [`usage: ${usageLine(group, cmd)}`, "", cmd.summary];
  if (cmd.positionals?.length)
    lines.push("", "arguments:", ...table(cmd.positionals.map((p) => [p.name, p.help])));
  const opts: Array<[string, string]> = cmd.options.map((o) => [
    o.arg ? `--${o.name} ${o.arg}` : `--${o.name}`,
    o.help,
  ]);
  opts.push(["-h, --help", "show this help"]);
  lines.push("", "options:", ...table(opts));
  if (cmd.json) lines.push("", `--json: ${cmd.json}`);
  if (cmd.details) lines.push("", cmd.details);
  lines.push("", exitCodesLine(), "see docs/cli.md");
  return lines.join("\n");
}

export function groupHelp(group: GroupSpec): string {
  const lines = [`usage: fleet ${group.name} <command> [options]`, "", group.summary, "", "commands:"];
  lines.push(...table(group.commands.map((c) => [c.name, c.summary])));
  lines.push("", `fleet ${group.name} <command> --help shows a command's options`, exitCodesLine());
  return lines.join("\n");
}

export function exitCodesLine(): string {
  return `exit codes: ${EXIT_CODE_TABLE.map((e) => `${e.code} ${e.short}`).join(", ")}`;
}

/** A short usage for an error: the usage line and where the full help is. */
function shortUsage(group: GroupSpec, cmd: CommandSpec): string {
  return `usage: ${usageLine(group, cmd)}\n(fleet ${group.name} ${cmd.name} --help for more)`;
}

/** True when `--help`/`-h` stands where an option may (not as an option's value, not after `--`). */
export function wantsHelp(cmd: CommandSpec, argv: readonly string[]): boolean {
  const takesValue = new Set(cmd.options.filter((o) => o.arg).map((o) => o.name));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") return false;
    if (isHelp(a)) return true;
    if (a.startsWith("--") && !a.includes("=") && takesValue.has(a.slice(2))) i++;
  }
  return false;
}

/** Parse a command's arguments against its spec; anything it does not declare is a UsageError. */
export function parse(group: GroupSpec, cmd: CommandSpec, argv: readonly string[]): Parsed {
  const usage = shortUsage(group, cmd);
  const byName = new Map(cmd.options.map((o) => [o.name, o]));
  const want = `one of ${cmd.options.map((o) => `--${o.name}`).join(" ")}`;
  const maxPositionals = cmd.positionals?.length ?? 0;
  const flags: Flags = {};
  const lists: Record<string, string[]> = {};
  const positionals: string[] = [];
  let optionsEnded = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (optionsEnded || !a.startsWith("-") || a === "-") {
      if (positionals.length >= maxPositionals)
        throw new UsageError(
          "argument",
          a,
          maxPositionals
            ? `at most ${maxPositionals} argument(s) (${cmd.positionals!.map((p) => p.name).join(" ")})`
            : want,
          usage,
        );
      positionals.push(a);
      continue;
    }
    if (a === "--") {
      optionsEnded = true;
      continue;
    }
    const eq = a.indexOf("=");
    const name = a.startsWith("--") ? (eq > 0 ? a.slice(2, eq) : a.slice(2)) : a;
    const o = byName.get(name);
    if (!o) throw new UsageError("option", a.startsWith("--") ? `--${name}` : a, want, usage);
    if (!o.arg) {
      if (eq > 0) throw new UsageError(`--${name}`, a.slice(eq + 1), "no value (a switch)", usage);
      flags[name] = "true";
      continue;
    }
    const value = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined || (eq < 0 && value.startsWith("--")))
      throw new UsageError(`--${name}`, undefined, `a value (${o.arg})`, usage);
    flags[name] = value;
    if (o.repeat) lists[name] = [...(lists[name] ?? []), value];
  }
  return { flags, lists, positionals };
}

export type Route =
  | { readonly kind: "help"; readonly text: string }
  | { readonly kind: "usage"; readonly text: string }
  | { readonly kind: "run"; readonly command: CommandSpec; readonly parsed: Parsed };

/**
 * Answer a route that is not a command to run: help on `out` (exit 0), usage on `err` (exit 2).
 * Returns the exit code, or undefined when the route is a command the group runs itself.
 */
export function answer(
  r: Route,
  out: (text: string) => void = console.log,
  err: (text: string) => void = console.error,
): number | undefined {
  if (r.kind === "help") out(r.text);
  else if (r.kind === "usage") err(r.text);
  else return undefined;
  return r.kind === "help" ? 0 : 2;
}

/**
 * What `fleet <group> ...` asks for: the group's help (exit 0 on stdout), its usage for a missing
 * command (exit 2 on stderr), a command's help, or a command with its parsed arguments.
 */
export function route(group: GroupSpec, argv: readonly string[]): Route {
  const [name, ...rest] = argv;
  if (name === undefined) return { kind: "usage", text: groupHelp(group) };
  if (isHelp(name) || name === "help") {
    const sub = rest[0] !== undefined ? group.commands.find((c) => c.name === rest[0]) : undefined;
    return { kind: "help", text: sub ? commandHelp(group, sub) : groupHelp(group) };
  }
  const command = group.commands.find((c) => c.name === name);
  if (!command && rest.some(isHelp)) return { kind: "help", text: groupHelp(group) };
  if (!command) {
    const names = group.commands.map((c) => c.name);
    const list = names.length > 1 ? `${names.slice(0, -1).join(", ")} or ${names.at(-1)}` : names[0]!;
    const want = name.startsWith("-") ? `a command first (${list}), then its options` : list;
    throw new UsageError(
      "command",
      name,
      want,
      `usage: fleet ${group.name} <command> [options]\n(fleet ${group.name} --help for more)`,
    );
  }
  if (wantsHelp(command, rest)) return { kind: "help", text: commandHelp(group, command) };
  return { kind: "run", command, parsed: parse(group, command, rest) };
}

/** Print the JSON document of a read command: one document, two-space indented, then a newline. */
export function jsonDocument(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
