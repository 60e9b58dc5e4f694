// The conventions of the `fleet` command (issue 10, point 5), on the real CLI in child processes:
// --help for the command, every group and every command; --version; unknown flags and commands
// named with the usage, exit 2, no stack; one exit-code table, equal in code and in docs/cli.md.
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { type GroupSpec, parse, UsageError, usageLine } from "../../cli/args";
import { spec as batch } from "../../cli/batch";
import { spec as ca } from "../../cli/ca";
import { spec as devices } from "../../cli/devices";
import { EXIT_CODE_TABLE, exitCodeFor } from "../../cli/exit-codes";
import { GROUP_NAMES, packageVersion } from "../../cli/fleet";
import { spec as manifest } from "../../cli/manifest";
import { spec as registry } from "../../cli/registry";
import { FleetError, type FleetErrorCode } from "../../core/errors";
import { clean, fleetAsync, fleetMany, ROOT } from "./cli-run";

const SPECS: GroupSpec[] = [ca, batch, registry, manifest, devices];
const COMMANDS = SPECS.flatMap((g) => g.commands.map((c) => ({ g, c })));

describe("fleet --help and --version", () => {
  it("fleet --help lists every group (exit 0, stdout); bare fleet is a usage error on stderr (exit 2)", async () => {
    const [help, h, bare, helpWord] = await fleetMany([["--help"], ["-h"], [], ["help"]]);
    for (const r of [help!, h!, helpWord!]) {
      expect(r.code, r.args.join(" ")).toBe(0);
      expect(r.stderr).toBe("");
      expect(r.stdout).toMatch(/^usage: fleet <group> <command> \[options\]$/m);
      for (const g of GROUP_NAMES) expect(r.stdout).toMatch(new RegExp(`^ {2}${g} +\\S`, "m"));
      expect(r.stdout).toContain("docs/cli.md");
      // the dispatcher's one-line summaries (it loads no group for this) are the groups' own
      for (const g of SPECS) expect(r.stdout).toContain(`  ${g.name.padEnd(10)} ${g.summary}\n`);
    }
    expect(bare!.code).toBe(2);
    expect(bare!.stdout).toBe("");
    expect(bare!.stderr).toContain("usage: fleet <group> <command> [options]");
  });

  it("fleet --version is the package's version, read from its package.json", async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
    const r = await fleetAsync(["--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`fleetguard ${pkg.version}\n`);
    expect(r.stderr).toBe("");
  });

  it("the version is found by walking up: from a checkout's cli/ and an installed package's dist/cli/", () => {
    const work = realpathSync(mkdtempSync(join(tmpdir(), "fleet-version-")));
    try {
      // a platform repository with fleetguard installed: its own package.json is not fleetguard's
      const repo = join(work, "platform");
      const pkgDir = join(repo, "node_modules", "fleetguard");
      mkdirSync(join(pkgDir, "dist", "cli"), { recursive: true });
      writeFileSync(join(repo, "package.json"), JSON.stringify({ name: "platform", version: "1.0.0" }));
      writeFileSync(join(pkgDir, "package.json"), JSON.stringify({ name: "fleetguard", version: "9.8.7" }));
      // a package.json of another name between the file and fleetguard's is passed over
      writeFileSync(join(pkgDir, "dist", "package.json"), JSON.stringify({ type: "commonjs" }));
      expect(packageVersion(join(pkgDir, "dist", "cli"))).toBe("9.8.7");
      expect(packageVersion(join(ROOT, "cli"))).toBe(
        (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version,
      );
      let err: unknown;
      try {
        packageVersion(join(repo, "src"));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FleetError);
      expect((err as FleetError).message).toMatch(/^package\.json: got none named fleetguard above /);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  it("fleet <group> --help and fleet help <group>, for every group (policy's own help included)", async () => {
    const runs = await fleetMany([
      ...GROUP_NAMES.map((g) => [g, "--help"]),
      ...GROUP_NAMES.map((g) => ["help", g]),
    ]);
    for (const r of runs) {
      expect(r.code, r.args.join(" ")).toBe(0);
      expect(r.stderr, r.args.join(" ")).toBe("");
      expect(r.stdout, r.args.join(" ")).toMatch(/^usage:/);
      clean(r);
    }
    for (const g of SPECS) {
      const r = runs.find((x) => x.args[0] === g.name)!;
      expect(r.stdout).toContain(`usage: fleet ${g.name} <command> [options]`);
      for (const c of g.commands)
        expect(r.stdout).toMatch(new RegExp(`^ {2}${c.name} +${c.summary.slice(0, 20)}`, "m"));
      // `fleet help <group>` is the same text
      expect(runs.find((x) => x.args[0] === "help" && x.args[1] === g.name)!.stdout).toBe(r.stdout);
    }
    const policy = runs.find((x) => x.args[0] === "policy")!;
    expect(policy.stdout).toContain("fleet policy check");
    expect(policy.stdout).toContain("fleet policy review");
  });

  it("fleet <group> <command> --help, for every command: usage, every option, exit 0, even beside a mistake", async () => {
    const runs = await fleetMany([
      ...COMMANDS.map(({ g, c }) => [g.name, c.name, "--help"]),
      ["batch", "status", "--bogus", "-h"],
      ["help", "registry", "verify"],
      ["policy", "review", "--help"],
    ]);
    for (const [i, { g, c }] of COMMANDS.entries()) {
      const r = runs[i]!;
      expect(r.code, r.args.join(" ")).toBe(0);
      expect(r.stderr).toBe("");
      expect(r.stdout.startsWith(`usage: ${usageLine(g, c)}\n`), r.stdout).toBe(true);
      for (const o of c.options) expect(r.stdout).toContain(`--${o.name}${o.arg ? ` ${o.arg}` : ""} `);
      expect(r.stdout).toContain("exit codes: 0 clean, 1 findings, 2 bad input or usage");
      if (c.options.some((o) => o.name === "json")) expect(r.stdout).toMatch(/^--json: \{/m);
    }
    const [beside, helpWord, policyReview] = runs.slice(COMMANDS.length);
    expect(beside!.code).toBe(0);
    expect(beside!.stdout).toBe(runs[COMMANDS.findIndex(({ c }) => c.name === "status")]!.stdout);
    expect(helpWord!.code).toBe(0);
    expect(helpWord!.stdout).toContain("usage: fleet registry verify --registry");
    expect(policyReview!.code).toBe(0);
    expect(policyReview!.stdout).toContain("fleet policy review");
  });

  it("every read command takes --json", () => {
    const read = COMMANDS.filter(({ c }) => c.name !== "serve");
    expect(read.map(({ g, c }) => `${g.name} ${c.name}`)).toEqual([
      "ca summary",
      "batch status",
      "batch audit",
      "registry verify",
      "manifest verify",
      "devices ping",
      "devices stats",
      "devices connect",
      "devices identify",
      "devices status",
    ]);
    for (const { c } of read) {
      expect(c.options.map((o) => o.name)).toContain("json");
      expect(c.json, c.name).toMatch(/^\{/);
    }
  });
});

describe("unknown flags, commands and groups", () => {
  it("an unknown flag of any command: named, with the command's usage, exit 2, nothing on stdout, no stack", async () => {
    const runs = await fleetMany(COMMANDS.map(({ g, c }) => [g.name, c.name, "--no-such-flag", "1"]));
    for (const [i, { g, c }] of COMMANDS.entries()) {
      const r = runs[i]!;
      expect(r.code, r.args.join(" ")).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain(`fleet ${g.name}: option: got "--no-such-flag", want one of --`);
      expect(r.stderr).toContain(`usage: ${usageLine(g, c)}\n(fleet ${g.name} ${c.name} --help for more)`);
      clean(r);
    }
  });

  it("an unknown command of any group, an unknown group, a global option that is not one: exit 2", async () => {
    const runs = await fleetMany([
      ...GROUP_NAMES.map((g) => [g, "frobnicate"]),
      ["frobnicate"],
      ["--verbose"],
      ["batch", "--registry", "x.db"],
    ]);
    for (const [i, g] of GROUP_NAMES.entries()) {
      const r = runs[i]!;
      expect(r.code, r.args.join(" ")).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(new RegExp(`^fleet ${g}: .*"frobnicate"`));
      clean(r);
    }
    for (const g of SPECS) {
      const r = runs[GROUP_NAMES.indexOf(g.name)]!;
      expect(r.stderr).toContain(`fleet ${g.name}: command: got "frobnicate", want `);
      expect(r.stderr).toContain(
        `usage: fleet ${g.name} <command> [options]\n(fleet ${g.name} --help for more)`,
      );
    }
    const [group, global, optionFirst] = runs.slice(GROUP_NAMES.length);
    expect(group!.code).toBe(2);
    expect(group!.stderr).toContain(`fleet: group: got "frobnicate", want one of ${GROUP_NAMES.join(", ")}`);
    expect(global!.code).toBe(2);
    expect(global!.stderr).toContain('fleet: option: got "--verbose", want --help or --version');
    expect(optionFirst!.code).toBe(2);
    expect(optionFirst!.stderr).toContain(
      'fleet batch: command: got "--registry", want a command first (status or audit), then its options',
    );
    for (const r of runs) clean(r);
  });

  it("a missing value, a value given to a switch, an argument too many: named, with the usage, exit 2", async () => {
    const runs = await fleetMany([
      ["batch", "status", "--registry"],
      ["batch", "status", "--registry", "--json"],
      ["registry", "verify", "--registry", "x.db", "--json=yes"],
      ["devices", "identify", "--port", "1", "fg100-0000001", "fg100-0000002"],
      ["manifest", "verify", "stray"],
    ]);
    const want = [
      "fleet batch: --registry: got undefined, want a value (<path|postgres://...>)",
      "fleet batch: --registry: got undefined, want a value (<path|postgres://...>)",
      'fleet registry: --json: got "yes", want no value (a switch)',
      'fleet devices: argument: got "fg100-0000002", want at most 1 argument(s) (DEVICE)',
      'fleet manifest: argument: got "stray", want one of --manifest --signer --root --json',
    ];
    for (const [i, r] of runs.entries()) {
      expect(r.code, r.args.join(" ")).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr.split("\n")[0]).toBe(want[i]);
      expect(r.stderr).toContain(`usage: fleet ${r.args[0]} ${r.args[1]} `);
      clean(r);
    }
  });
});

describe("the grammar (cli/args.ts parse)", () => {
  const g: GroupSpec = {
    name: "demo",
    summary: "a group for the grammar",
    commands: [
      {
        name: "run",
        summary: "a command",
        options: [
          { name: "policy", arg: "FILE", help: "repeatable", repeat: true },
          { name: "out", arg: "FILE", help: "one" },
          { name: "json", help: "a switch" },
        ],
        positionals: [{ name: "TARGET", help: "one target" }],
      },
    ],
  };
  const cmd = g.commands[0]!;

  it("values as --name VALUE or --name=VALUE, repeats kept in order, -- ends the options", () => {
    const p = parse(g, cmd, ["--policy", "a.yaml", "--policy=b.yaml", "--out", "x", "--json", "--", "--odd"]);
    expect(p.flags).toEqual({ policy: "b.yaml", out: "x", json: "true" });
    expect(p.lists).toEqual({ policy: ["a.yaml", "b.yaml"] });
    expect(p.positionals).toEqual(["--odd"]);
    expect(usageLine(g, cmd)).toBe("fleet demo run [--policy FILE]... [--out FILE] [--json] TARGET");
  });

  it("refusals are UsageErrors (INVALID_INPUT) carrying the command's usage", () => {
    for (const [argv, message] of [
      [["--nope"], 'option: got "--nope", want one of --policy --out --json'],
      [["-x"], 'option: got "-x", want one of --policy --out --json'],
      [["--out"], "--out: got undefined, want a value (FILE)"],
      [["--out", "--json"], "--out: got undefined, want a value (FILE)"],
      [["--json=1"], '--json: got "1", want no value (a switch)'],
      [["a", "b"], 'argument: got "b", want at most 1 argument(s) (TARGET)'],
    ] as const) {
      let err: unknown;
      try {
        parse(g, cmd, argv);
      } catch (e) {
        err = e;
      }
      expect(err, argv.join(" ")).toBeInstanceOf(UsageError);
      expect((err as UsageError).code).toBe("INVALID_INPUT");
      expect((err as UsageError).message).toBe(message);
      expect((err as UsageError).usage).toContain("usage: fleet demo run [--policy FILE]...");
    }
  });
});

describe("exit codes: one table", () => {
  it("maps every FleetError code, with the values the CLI always had", () => {
    const codes: FleetErrorCode[] = [
      "INVALID_INPUT",
      "POLICY_VIOLATION",
      "INTEGRITY",
      "UNAVAILABLE",
      "NOT_FOUND",
      "CONFLICT",
      "INTERNAL",
    ];
    expect(Object.fromEntries(codes.map((c) => [c, exitCodeFor(c)]))).toEqual({
      INVALID_INPUT: 2,
      POLICY_VIOLATION: 1,
      INTEGRITY: 1,
      UNAVAILABLE: 3,
      NOT_FOUND: 1,
      CONFLICT: 1,
      INTERNAL: 1,
    });
    // each code in exactly one row
    const placed = EXIT_CODE_TABLE.flatMap((r) => r.errors);
    expect([...placed].sort()).toEqual([...codes].sort());
  });

  it("docs/cli.md shows the same table", () => {
    const doc = readFileSync(join(ROOT, "docs", "cli.md"), "utf8");
    const section = doc.slice(doc.indexOf("## Exit codes"), doc.indexOf("## JSON output"));
    const rows = section
      .split("\n")
      .filter((l) => /^\| \d+ \|/.test(l))
      .map((l) => l.split("|").map((c) => c.trim()));
    expect(
      rows.map((r) => ({ code: Number(r[1]), meaning: r[2], errors: r[3] ? r[3].split(", ") : [] })),
    ).toEqual(EXIT_CODE_TABLE.map((r) => ({ code: r.code, meaning: r.meaning, errors: [...r.errors] })));
  });
});
