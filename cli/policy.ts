/**
 * `fleet policy`: validate policy files, evaluate a declared fleet against its policy, and review a pull
 * request (effective policy and fleet at a base ref vs HEAD, as Markdown). One engine (policies/engine.ts)
 * behind all of it. Exit codes: 0 clean, 1 violations, 2 bad input or usage. Never prints a stack trace:
 * every problem is a located diagnostic or a one-line error.
 */
import { execFileSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { isAbsolute, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import { catalog } from "../policies/checks/index";
import { type Evaluation, evaluate, type Finding } from "../policies/engine";
import { loadFleet } from "../policies/fleet";
import { loadPolicy, type PolicyLoad } from "../policies/layering";
import { buildReview, type ReviewSide } from "../policies/review";
import { type Diagnostic, formatDiagnostic, readSourceText } from "../policies/source";

const USAGE = `usage:
  fleet policy check [--policy FILE]... [--fleet FILE] [--now ISO-DATE] [--json]
      Validate policy files (schema, layering, waivers) and evaluate a fleet file against its policy.
      Without arguments: --fleet fleet.yaml under the policy it names.
  fleet policy review --base GIT-REF [--fleet FILE] [--policy FILE] [--out FILE] [--now ISO-DATE]
      Compare the effective policy and the declared fleet at GIT-REF and at HEAD; write a Markdown report.
  fleet policy list
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

function review(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      base: { type: "string" },
      fleet: { type: "string" },
      policy: { type: "string" },
      out: { type: "string" },
      now: { type: "string" },
    },
    allowPositionals: false,
  });
  if (!values.base) throw new UsageError("review: --base GIT-REF is required");
  const now = parseNow(values.now);
  const fleetFile = values.fleet ?? "fleet.yaml";
  let top: string;
  try {
    top = git(["rev-parse", "--show-toplevel"]).trim();
  } catch {
    throw new UsageError("review: not inside a git repository");
  }
  let baseSha: string;
  try {
    baseSha = git(["rev-parse", "--verify", "--quiet", `${values.base}^{commit}`]).trim();
  } catch {
    throw new UsageError(`--base: got ${JSON.stringify(values.base)}, want a git ref that names a commit`);
  }
  const headSha = git(["rev-parse", "HEAD"]).trim();
  const repoPath = (p: string) =>
    relative(top, isAbsolute(p) ? p : resolve(p))
      .split("\\")
      .join("/");
  const readAtBase = (p: string) =>
    execFileSync("git", ["show", `${baseSha}:${repoPath(p)}`], {
      cwd: top,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });

  const side = (lbl: string, read?: (p: string) => string): ReviewSide => {
    const fleet = loadFleet(fleetFile, { readFile: read ?? boundedReader(fleetFile) });
    const policyFile = values.policy ?? fleet.policyPath;
    const s: ReviewSide = {
      label: lbl,
      policyFile,
      fleet: fleet.fleet,
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
  let baseSide: ReviewSide;
  try {
    readAtBase(fleetFile);
    baseSide = side(`\`${values.base}\` (${baseSha.slice(0, 7)})`, readAtBase);
  } catch {
    baseSide = {
      label: `\`${values.base}\` (${baseSha.slice(0, 7)}, no ${fleetFile})`,
      diagnostics: [],
      granted: [],
    };
  }
  const headSide = side(`HEAD (${headSha.slice(0, 7)})`);
  const fatal = headSide.diagnostics.filter((d) => d.kind === "input");
  if (fatal.length && !headSide.fleet) {
    console.error(fatal.map(formatDiagnostic).join("\n"));
    return 2;
  }
  const r = buildReview(baseSide, headSide, { fleetName: headSide.fleet?.name, now });
  if (values.out) {
    writeFileSync(values.out, r.markdown);
    console.log(
      `wrote ${values.out}: ${r.newlyFailing.length} newly failing, ${r.newlyPassing.length} newly passing, ${r.totals.devices.toLocaleString("en-US")} device(s) touched`,
    );
  } else process.stdout.write(r.markdown);
  if (fatal.length) return 2;
  return headSide.diagnostics.length || (headSide.evaluation?.blocking.length ?? 0) ? 1 : 0;
}

function list(): number {
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
        return review(rest);
      case "list":
        return list();
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
