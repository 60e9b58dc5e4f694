/**
 * `fleet policy`: validate policy files, evaluate a declared fleet against its policy, and review a pull
 * request (effective policy and fleet at a base ref vs HEAD, as Markdown). One engine (policies/engine.ts)
 * behind all of it. Exit codes: 0 clean, 1 violations, 2 bad input or usage. Never prints a stack trace:
 * every problem is a located diagnostic or a one-line error.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { isAbsolute, join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import { openRegistry } from "../core/registry/index";
import { catalog } from "../policies/checks/index";
import type { FleetContext, InventoryBatch } from "../policies/context";
import { type ProgramDeclarations, programEntry, runProgramWithMocks } from "../policies/declared";
import { type Evaluation, evaluate, type Finding, type PolicyInput } from "../policies/engine";
import { loadFleet } from "../policies/fleet";
import { type EffectivePolicy, loadPolicy, type PolicyLoad } from "../policies/layering";
import { buildReview, type ReviewSide } from "../policies/review";
import { type Diagnostic, formatDiagnostic, readSourceText } from "../policies/source";

const USAGE = `usage:
  fleet policy check [--policy FILE]... [--fleet FILE] [--now ISO-DATE] [--json]
      Validate policy files (schema, layering, waivers) and evaluate a fleet file against its policy.
      Without arguments: --fleet fleet.yaml under the policy it names.
  fleet policy review --base GIT-REF [--head GIT-REF] [--program DIR | --fleet FILE] [--policy FILE]
                      [--registry LOCATION] [--stack NAME] [--out FILE] [--now ISO-DATE] [--json]
      Compare what the Pulumi program declares (Pulumi.yaml under DIR, default the repository root;
      each commit in a worktree, run with mocks) or what a fleet file declares, under its policy, at
      GIT-REF and at HEAD; the deployed side from the registry or the stack. Writes a Markdown report.
  fleet policy list [--json]
      The check catalog.
exit codes: 0 clean, 1 violations, 2 bad input or usage`;

class UsageError extends Error {}

function parseNow(v: string | undefined): Date {
  if (v === undefined) return new Date();
  const d = new Date(v);
  if (Number.isNaN(d.getTime()))
    throw new UsageError(`--now: got ${JSON.stringify(v)}, want an ISO date like 2026-12-01`);
  return d;
}

function label(f: Finding): string {
  if (f.waived) return "WAIVED";
  if (f.code === "CHECK_ERROR") return "ERROR ";
  return f.enforcement === "mandatory" ? "FAIL  " : "WARN  ";
}

function printEvaluation(ev: Evaluation, out: string[]): void {
  for (const f of ev.findings)
    out.push(
      `  ${label(f)} ${f.checkId} [${f.enforcement}] ${f.subject}: ${f.message}${f.waived ? ` (waiver until ${f.waived.expires}: ${f.waived.reason})` : ""}`,
    );
  const counts: Record<string, number> = {};
  for (const r of ev.runs) counts[r.status] = (counts[r.status] ?? 0) + 1;
  out.push(
    `  checks: ${Object.entries(counts)
      .map(([k, n]) => `${n} ${k}`)
      .join(", ")}`,
  );
}

/** Inventory PEMs (a CRL of a big fleet runs to megabytes) may be larger than a fleet file. */
const MAX_PEM_BYTES = 256 * 1024 * 1024;

/**
 * Read the fleet file like a policy file (a regular file of at most 1 MiB) and the PEM files it
 * names as regular files too, so a path at /dev/zero or a FIFO is refused instead of read forever.
 */
function boundedReader(fleetFile: string): (path: string) => string {
  return (p) => (p === fleetFile ? readSourceText(p) : readSourceText(p, MAX_PEM_BYTES));
}

function check(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      policy: { type: "string", multiple: true },
      fleet: { type: "string" },
      now: { type: "string" },
      json: { type: "boolean" },
    },
    allowPositionals: false,
  });
  const now = parseNow(values.now);
  const policyFiles = values.policy ?? [];
  let fleetFile = values.fleet;
  if (!fleetFile && policyFiles.length === 0) {
    if (!existsSync("fleet.yaml"))
      throw new UsageError("nothing to check: pass --policy FILE or --fleet FILE (no fleet.yaml here)");
    fleetFile = "fleet.yaml";
  }
  const out: string[] = [];
  const diagnostics: Diagnostic[] = [];
  const evaluations: Array<{ policy: string; evaluation: Evaluation }> = [];
  const fleet = fleetFile ? loadFleet(fleetFile, { readFile: boundedReader(fleetFile) }) : undefined;
  if (fleet) diagnostics.push(...fleet.diagnostics);
  const targets = policyFiles.length ? policyFiles : fleet?.policyPath ? [fleet.policyPath] : [];
  if (fleet?.fleet && targets.length === 0)
    diagnostics.push({
      kind: "input",
      file: fleetFile!,
      line: 1,
      column: 1,
      path: "spec.policy",
      message: "got none, want a policy file (spec.policy or --policy)",
    });
  const loads: Array<[string, PolicyLoad]> = targets.map((p) => [p, loadPolicy(p, { now })]);
  for (const [, l] of loads) diagnostics.push(...l.diagnostics);
  const seen = new Set<string>();
  for (const d of diagnostics) {
    const line = formatDiagnostic(d);
    if (!seen.has(line)) out.push(line);
    seen.add(line);
  }
  for (const [p, l] of loads) {
    for (const g of l.granted)
      out.push(
        `${g.file}: note: ${g.path}: ${g.message} (allowed by waiver for ${g.check} until ${g.expires})`,
      );
    if (fleet?.fleet && l.policy) {
      const ev = evaluate(l.policy, fleet.fleet, { now });
      evaluations.push({ policy: p, evaluation: ev });
      out.push(`${fleetFile} under ${l.policy.name} (${p}):`);
      printEvaluation(ev, out);
    } else if (l.policy && l.diagnostics.length === 0)
      out.push(
        `${p}: policy '${l.policy.name}' is valid (${l.policy.chain
          .map((c) => c.name)
          .reverse()
          .join(" <- ")})`,
      );
  }
  const inputErrors = diagnostics.filter((d) => d.kind === "input").length;
  const violations = diagnostics.filter((d) => d.kind === "violation").length;
  const blocking = evaluations.reduce((a, e) => a + e.evaluation.blocking.length, 0);
  const advisory = evaluations.reduce((a, e) => a + e.evaluation.advisory.length, 0);
  const code = inputErrors ? 2 : violations || blocking ? 1 : 0;
  if (values.json) {
    console.log(JSON.stringify({ exitCode: code, diagnostics, evaluations }, null, 2));
    return code;
  }
  out.push(
    `summary: ${inputErrors} input error(s), ${violations} policy violation(s), ${blocking} mandatory finding(s), ${advisory} advisory finding(s)`,
  );
  console.log(out.join("\n"));
  return code;
}

function git(args: string[], cwd?: string): string {
  return execFileSync("git", args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

interface ReviewValues {
  base?: string;
  head?: string;
  program?: string;
  fleet?: string;
  policy?: string;
  stack?: string;
  registry?: string;
  out?: string;
  now?: string;
}

/** Diagnostics and policy paths read inside a worktree, shown as the repository's paths. */
function unroot<T>(v: T, roots: string[]): T {
  let text = JSON.stringify(v);
  for (const r of roots) text = text.split(`${r}/`).join("");
  return JSON.parse(text) as T;
}

/** Every policy the program's components name (a review evaluates one, the one they share). */
function programPolicy(
  d: ProgramDeclarations,
  wt: string,
): { file?: string; inline?: PolicyInput; names: string[] } {
  const files = new Set<string>();
  let inline: PolicyInput | undefined;
  for (const c of d.components) {
    if (!c.policy) continue;
    if ("file" in c.policy) files.add(c.policy.file);
    else inline ??= c.policy.inline as PolicyInput;
  }
  const names = [...files].map((f) => relative(wt, f).split("\\").join("/"));
  if (files.size > 1)
    throw new UsageError(
      `review: the program's components name ${files.size} policies (${names.join(", ")}), want one: pass --policy FILE to choose the one to review`,
    );
  return { file: [...files][0], inline: files.size ? undefined : inline, names };
}

/** The deployed side: the registry's per-batch state counts, or the stack's batch resources. */
async function deployedSide(
  v: ReviewValues,
  programDir: string,
): Promise<{ batches?: InventoryBatch[]; what?: string }> {
  if (v.registry) {
    // a review reads: a SQLite path that does not exist is refused, not created empty
    const file = v.registry.replace(/^sqlite:(\/\/(?=\/))?/i, "");
    if (!/^postgres(ql)?:\/\//i.test(v.registry) && !existsSync(file))
      throw new UsageError(
        `--registry: got ${JSON.stringify(v.registry)}, which does not exist, want the SQLite file or postgres:// URL of the fleet's registry`,
      );
    const reg = await openRegistry(v.registry);
    try {
      const batches: InventoryBatch[] = [];
      for (const b of await reg.listBatches())
        batches.push({ id: b.name, states: (await reg.counts(b.name)) as InventoryBatch["states"] });
      const devices = batches.reduce(
        (a, b) => a + Object.values(b.states).reduce((x, n) => x + (n ?? 0), 0),
        0,
      );
      return {
        batches,
        what: `registry \`${reg.location}\` (${batches.length} batch(es), ${devices.toLocaleString("en-US")} device record(s))`,
      };
    } finally {
      await reg.close();
    }
  }
  if (v.stack) {
    let state: { deployment?: { resources?: Array<{ outputs?: Record<string, unknown> }> } };
    try {
      state = JSON.parse(
        execFileSync("pulumi", ["stack", "export", "--stack", v.stack], {
          cwd: programDir,
          encoding: "utf8",
          stdio: ["ignore", "pipe", "pipe"],
          maxBuffer: 256 * 1024 * 1024,
        }),
      );
    } catch (err) {
      const why = String((err as { stderr?: string }).stderr ?? (err as Error).message)
        .trim()
        .split("\n")[0];
      throw new UsageError(
        `--stack: got ${JSON.stringify(v.stack)}, want a stack \`pulumi stack export\` can read (${why})`,
      );
    }
    const batches: InventoryBatch[] = [];
    for (const r of state.deployment?.resources ?? []) {
      const o = r.outputs ?? {};
      if (
        o.kind === "fleetguard:batch" &&
        typeof o.name === "string" &&
        o.counts &&
        typeof o.counts === "object"
      )
        batches.push({ id: o.name, states: o.counts as InventoryBatch["states"] });
    }
    return { batches, what: `stack \`${v.stack}\` (${batches.length} batch resource(s))` };
  }
  return {};
}

async function review(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      base: { type: "string" },
      head: { type: "string" },
      program: { type: "string" },
      fleet: { type: "string" },
      policy: { type: "string" },
      stack: { type: "string" },
      registry: { type: "string" },
      out: { type: "string" },
      now: { type: "string" },
      json: { type: "boolean" },
    },
    allowPositionals: false,
  });
  if (!values.base) throw new UsageError("review: --base GIT-REF is required");
  if (values.fleet && values.program)
    throw new UsageError(
      "review: --fleet FILE and --program DIR: got both, want one (a YAML-declared fleet or a Pulumi program)",
    );
  const now = parseNow(values.now);
  let top: string;
  try {
    top = git(["rev-parse", "--show-toplevel"]).trim();
  } catch {
    throw new UsageError("review: not inside a git repository");
  }
  const commit = (flag: string, ref: string) => {
    try {
      return git(["rev-parse", "--verify", "--quiet", `${ref}^{commit}`]).trim();
    } catch {
      throw new UsageError(`${flag}: got ${JSON.stringify(ref)}, want a git ref that names a commit`);
    }
  };
  const baseSha = commit("--base", values.base);
  const headRef = values.head ?? "HEAD";
  const headSha = commit("--head", headRef);
  const repoPath = (p: string) =>
    relative(top, isAbsolute(p) ? p : resolve(p))
      .split("\\")
      .join("/");
  const baseLabel = `\`${values.base}\` (${baseSha.slice(0, 7)})`;
  const headLabel = `${values.head ? `\`${values.head}\`` : "HEAD"} (${headSha.slice(0, 7)})`;
  const programRel = repoPath(values.program ?? top) || ".";
  if (programRel.startsWith(".."))
    throw new UsageError(
      `--program: got ${JSON.stringify(values.program)}, want a directory inside the repository`,
    );
  const deployed = await deployedSide(values, resolve(top, programRel));
  const withDeployed = (fleet: FleetContext | undefined): FleetContext | undefined =>
    fleet && deployed.batches
      ? { ...fleet, deployed: { ...fleet.deployed, batches: deployed.batches } }
      : fleet;

  let baseSide: ReviewSide;
  let headSide: ReviewSide;
  let fleetName: string | undefined;
  if (values.fleet) {
    // a YAML-declared fleet: its file at each commit, read from git
    const fleetFile = values.fleet;
    const readAt = (sha: string) => (p: string) =>
      execFileSync("git", ["show", `${sha}:${repoPath(p)}`], {
        cwd: top,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
        maxBuffer: MAX_PEM_BYTES,
      });
    const side = (lbl: string, sha: string): ReviewSide => {
      const read = readAt(sha);
      try {
        read(fleetFile);
      } catch {
        return { label: `${lbl.slice(0, -1)}, no ${fleetFile})`, diagnostics: [], granted: [] };
      }
      const fleet = loadFleet(fleetFile, { readFile: read });
      const policyFile = values.policy ?? fleet.policyPath;
      const s: ReviewSide = {
        label: lbl,
        source: `the fleet file \`${repoPath(fleetFile)}\``,
        policyFile,
        fleet: withDeployed(fleet.fleet),
        diagnostics: [...fleet.diagnostics],
        granted: [],
      };
      if (policyFile) {
        const p = loadPolicy(policyFile, { now, readFile: read });
        s.policy = p.policy;
        s.granted = p.granted;
        s.diagnostics.push(...p.diagnostics);
      }
      if (s.policy && s.fleet) s.evaluation = evaluate(s.policy, s.fleet, { now });
      return s;
    };
    baseSide = side(baseLabel, baseSha);
    headSide = side(headLabel, headSha);
    fleetName = headSide.fleet?.name;
  } else {
    // the Pulumi program at each commit, in a worktree of its own, run with mocks
    const side = (lbl: string, sha: string): ReviewSide => {
      const wt = mkdtempSync(join(tmpdir(), "fleet-review-wt-"));
      try {
        git(["worktree", "add", "--detach", "--quiet", wt, sha], top);
        // the worktree shares the checkout's installed packages (a fresh worktree has none)
        if (existsSync(join(top, "node_modules")) && !existsSync(join(wt, "node_modules")))
          symlinkSync(join(top, "node_modules"), join(wt, "node_modules"), "dir");
        const dir = join(wt, programRel);
        if (!existsSync(join(dir, "Pulumi.yaml")))
          return {
            label: `${lbl.slice(0, -1)}, no ${programRel === "." ? "" : `${programRel}/`}Pulumi.yaml)`,
            diagnostics: [],
            granted: [],
          };
        const roots = [wt, realpathSync(wt)];
        const d = runProgramWithMocks({ dir, stack: values.stack });
        fleetName ??= d.project;
        const named = programPolicy(d, wt);
        const policyAbs = values.policy ? join(wt, repoPath(values.policy)) : named.file;
        const s: ReviewSide = {
          label: lbl,
          source: `the Pulumi program \`${repoPath(join(top, relative(wt, programEntry(dir).main)))}\` (run with mocks: ${d.components.length} fleetguard component(s))`,
          fleet: withDeployed({ name: d.project, declared: d.declared }),
          diagnostics: [],
          granted: [],
          program: unroot({ refusals: d.refusals, errors: d.errors }, roots),
        };
        if (policyAbs) {
          s.policyFile = relative(wt, policyAbs).split("\\").join("/");
          const p = loadPolicy(policyAbs, { now });
          s.policy = p.policy && unroot(p.policy, roots);
          s.granted = unroot(p.granted, roots);
          s.diagnostics.push(...unroot(p.diagnostics, roots));
        } else if (named.inline) s.policy = { chain: [], waivers: [], ...named.inline } as EffectivePolicy;
        if (s.policy && s.fleet) s.evaluation = evaluate(s.policy, s.fleet, { now });
        return s;
      } finally {
        try {
          git(["worktree", "remove", "--force", wt], top);
        } catch {
          // not added (a bad commit): nothing registered to remove
        }
        rmSync(wt, { recursive: true, force: true });
        try {
          git(["worktree", "prune"], top);
        } catch {}
      }
    };
    baseSide = side(baseLabel, baseSha);
    headSide = side(headLabel, headSha);
    if (!headSide.fleet)
      throw new UsageError(
        `--program: got ${programRel === "." ? "the repository root" : programRel}, which holds no Pulumi.yaml at ${headRef}, want the directory of the Pulumi program (or --fleet FILE for a YAML-declared fleet)`,
      );
  }
  const fatal = headSide.diagnostics.filter((d) => d.kind === "input");
  if (fatal.length && !headSide.fleet) {
    console.error(fatal.map(formatDiagnostic).join("\n"));
    return 2;
  }
  const r = buildReview(baseSide, headSide, { fleetName, now, deployed: deployed.what });
  const stops = (headSide.program?.refusals.length ?? 0) + (headSide.program?.errors.length ?? 0);
  const exit = fatal.length
    ? 2
    : headSide.diagnostics.length || stops || (headSide.evaluation?.blocking.length ?? 0)
      ? 1
      : 0;
  if (values.json) {
    // the review as a document (docs/cli.md): what changes, what newly fails or passes, what up would do
    const { markdown: _m, ...doc } = r;
    const json = `${JSON.stringify(
      {
        base: { ref: values.base, sha: baseSha },
        head: { ref: values.head ?? "HEAD", sha: headSha },
        ...doc,
        stops: { refusals: headSide.program?.refusals ?? [], errors: headSide.program?.errors ?? [] },
        exitCode: exit,
      },
      null,
      2,
    )}\n`;
    if (values.out) writeFileSync(values.out, json);
    else process.stdout.write(json);
    return exit;
  }
  if (values.out) {
    writeFileSync(values.out, r.markdown);
    console.log(
      `wrote ${values.out}: ${r.newlyFailing.length} newly failing, ${r.newlyPassing.length} newly passing, ${r.totals.devices.toLocaleString("en-US")} device(s) touched`,
    );
  } else process.stdout.write(r.markdown);
  return exit;
}

function list(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: { json: { type: "boolean" } },
    allowPositionals: false,
  });
  if (values.json) {
    const doc = catalog.map((c) => ({
      id: c.id,
      severity: c.severity,
      title: c.title,
      standards: c.standards,
    }));
    process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
    return 0;
  }
  for (const c of catalog)
    console.log(
      `${c.id.padEnd(12)} ${c.severity.padEnd(8)} ${c.title}${c.standards.awsDeviceDefender ? `  [${c.standards.awsDeviceDefender.join(", ")}]` : ""}`,
    );
  return 0;
}

export async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case "check":
        return check(rest);
      case "review":
        return await review(rest);
      case "list":
        return list(rest);
      case "help":
      case "--help":
      case "-h":
        console.log(USAGE);
        return 0;
      default:
        console.error(cmd ? `fleet policy: unknown command ${JSON.stringify(cmd)}\n${USAGE}` : USAGE);
        return 2;
    }
  } catch (err) {
    // parseArgs reports unknown or malformed options with a TypeError carrying an ERR_PARSE_ARGS_* code.
    const code = (err as { code?: string }).code ?? "";
    if (err instanceof UsageError || code.startsWith("ERR_PARSE_ARGS")) {
      console.error(`fleet policy: ${(err as Error).message}`);
      return 2;
    }
    throw err;
  }
}
