/**
 * `fleet audit`: evaluate the policy's checks on what is deployed now (the registry, the published CRLs,
 * the hubs; policies/deployed.ts), in the spirit of AWS IoT Device Defender's audit, and write the report
 * as Markdown (audit.md) and JSON (audit.json) into --out; --json prints the same JSON on stdout.
 *
 *   fleet audit --registry LOC [--policy FILE] [--ca-dir DIR] [--crl-dir DIR] [--hub-state DIR]
 *               [--out DIR] [--now ISO-DATE] [--page-size N] [--json]
 *
 * Exit codes (cli/exit-codes.ts): 0 no unwaived finding of a mandatory check, 1 findings of mandatory
 * checks, 2 bad input or usage, 3 registry unavailable. Progress (counts, rate, ETA) on stderr for runs
 * longer than a second. AWS IoT and Azure hubs are audited through the registry's hub records, not by
 * asking the cloud services (docs/audit.md).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { invalid } from "../core/errors";
import { makeDirs } from "../core/hubs/local-state";
import { type AuditRun, auditDeployed, type DeployedAudit } from "../policies/deployed";
import { loadPolicyFile } from "../policies/engine";
import {
  answer,
  type CommandSpec,
  commandHelp,
  type Flags,
  type GroupSpec,
  JSON_OPTION,
  jsonDocument,
  parse,
  UsageError,
  wantsHelp,
} from "./args";
import { openExistingRegistry } from "./registry";

export const command: CommandSpec = {
  name: "audit",
  summary:
    "evaluate the policy's checks on what is deployed (registry, CRLs, hubs); write audit.md and audit.json",
  options: [
    {
      name: "registry",
      arg: "<path|postgres://...>",
      help: "the registry: a SQLite file (it must exist) or a PostgreSQL URL",
      required: true,
    },
    { name: "policy", arg: "FILE", help: "the policy (default: the baseline, policies/baseline.yaml)" },
    {
      name: "ca-dir",
      arg: "DIR",
      help: "CA certificate PEM files (e.g. what `fleet ca summary --out DIR` writes)",
    },
    { name: "crl-dir", arg: "DIR", help: "the folder the CAs' CRLs are published into" },
    { name: "hub-state", arg: "DIR", help: "the local hub's state folder (its registration files)" },
    { name: "out", arg: "DIR", help: "where audit.md and audit.json are written (default: .)" },
    { name: "now", arg: "ISO-DATE", help: "the clock for expiry, key age and CRL freshness (default: now)" },
    { name: "page-size", arg: "N", help: "certificates read and evaluated at once (default 2000)" },
    JSON_OPTION,
  ],
  json: "{policy, at, registry, sources, inventory: {devices, devicesByState, certificates, cas, crls, hubRecords, localHub?, unknownAtRegistry, issuersWithoutCa}, runs: [{id, title, severity, enforcement, status, details?, standards, count, waived, findings: [...]}], totals: {findings, blocking, advisory, waived}, durationMs}",
  details:
    "exit 1 means a mandatory check has unwaived findings; the report names the devices (docs/audit.md)",
};

/** `fleet audit` has no sub-command: the grammar of cli/args.ts with the group's name as the command. */
const group: GroupSpec = { name: "audit", summary: command.summary, commands: [command] };
const usageOf = (s: string) => s.replaceAll("fleet audit audit", "fleet audit");

export interface AuditIo {
  out: (text: string) => void;
  err: (text: string) => void;
  progress: (line: string, final: boolean) => void;
  now: () => number;
}

const defaultIo = (): AuditIo => ({
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
  progress: (line, final) => {
    if (process.stderr.isTTY) process.stderr.write(`\r${line}${final ? "\n" : ""}`);
    else process.stderr.write(`${line}\n`);
  },
  now: () => Date.now(),
});

const fmt = (n: number) => n.toLocaleString("en-US");

function folder(flag: string, v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (!fs.statSync(v, { throwIfNoEntry: false })?.isDirectory()) throw invalid(flag, v, "an existing folder");
  return v;
}

function defaultPolicy(): string {
  for (const p of [
    path.join(__dirname, "..", "policies", "baseline.yaml"),
    path.join(__dirname, "..", "..", "policies", "baseline.yaml"),
  ])
    if (fs.existsSync(p)) return p;
  throw invalid("--policy", undefined, "a policy file (no baseline.yaml next to fleetguard)");
}

const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/[\r\n]+/g, " ");

/** Findings shown per check in the Markdown (audit.json keeps more; every one is counted). */
export const MARKDOWN_FINDINGS = 20;

function statusWord(r: AuditRun): string {
  if (r.status === "fail" && r.count === r.waived) return "waived";
  return r.status;
}

/** The Markdown report: what was read, a summary table, findings by check with the devices named. */
export function renderMarkdown(a: DeployedAudit): string {
  const inv = a.inventory;
  const lines: string[] = [];
  lines.push(`# Fleet audit: ${a.registry}`, "");
  lines.push(
    `Policy \`${a.policy}\`, at ${a.at}: ${fmt(inv.devices)} devices, ${fmt(inv.certificates.live + inv.certificates.revoked)} certificates (${fmt(inv.certificates.live)} live, ${fmt(inv.certificates.revoked)} revoked), ${fmt(inv.cas.length)} CA certificates, ${fmt(inv.crls.length)} CRLs, ${fmt(Object.keys(inv.hubRecords).length)} hubs in the registry.`,
    "",
  );
  const src = [`registry \`${a.registry}\``];
  src.push(a.sources.caDir ? `CA folder \`${a.sources.caDir}\`` : "no CA folder");
  src.push(a.sources.crlDir ? `CRL folder \`${a.sources.crlDir}\`` : "no CRL folder (CRL checks not run)");
  src.push(a.sources.hubState ? `local hub state \`${a.sources.hubState}\`` : "no local hub state");
  lines.push(
    `Read: ${src.join(", ")}. AWS IoT and Azure hubs are audited through the registry's hub records, not by asking the cloud services.`,
    "",
  );
  const t = a.totals;
  lines.push(
    `**Result: ${t.blocking ? "FAIL" : "PASS"}**: ${fmt(t.blocking)} mandatory finding${t.blocking === 1 ? "" : "s"}, ${fmt(t.advisory)} advisory, ${fmt(t.waived)} waived.`,
    "",
  );
  lines.push("## Summary", "");
  lines.push("| Check | Title | Severity | Enforcement | Status | Findings | Device Defender |");
  lines.push("|---|---|---|---|---|---:|---|");
  for (const r of a.runs)
    lines.push(
      `| ${r.id} | ${cell(r.title)} | ${r.severity} | ${r.enforcement} | ${statusWord(r)} | ${fmt(r.count)} | ${(r.standards.awsDeviceDefender ?? []).join(", ")} |`,
    );
  lines.push("");
  const failing = a.runs.filter((r) => r.count > 0);
  lines.push("## Findings", "");
  if (!failing.length) lines.push("None.", "");
  for (const r of failing) {
    lines.push(`### ${r.id}: ${r.title} (${fmt(r.count)}, ${r.enforcement})`, "");
    for (const f of r.findings.slice(0, MARKDOWN_FINDINGS))
      lines.push(
        `- \`${f.subject}\`: ${cell(f.message)}${f.waived ? ` (waived until ${f.waived.expires}: ${cell(f.waived.reason)})` : ""}`,
      );
    const more = r.count - Math.min(r.findings.length, MARKDOWN_FINDINGS);
    if (more > 0)
      lines.push(
        `- ... and ${fmt(more)} more (audit.json lists the first ${fmt(r.findings.length)} of ${fmt(r.count)})`,
      );
    lines.push("");
  }
  lines.push("## Inventory", "");
  lines.push(
    `Devices by state: ${
      Object.entries(inv.devicesByState)
        .sort()
        .map(([s, n]) => `${s} ${fmt(n)}`)
        .join(", ") || "none"
    }.`,
    "",
  );
  if (inv.cas.length) {
    lines.push("| CA | Role | Not after | SHA-256 |", "|---|---|---|---|");
    for (const c of inv.cas)
      lines.push(
        `| ${cell(c.id)} | ${c.role} | ${c.notAfter.slice(0, 10)} | \`${c.fingerprint.slice(0, 16)}…\` |`,
      );
    lines.push("");
  }
  if (inv.crls.length) {
    lines.push("| CRL of | This update | Next update | Revoked | File |", "|---|---|---|---:|---|");
    for (const c of inv.crls)
      lines.push(
        `| ${cell(c.issuer)} | ${c.thisUpdate} | ${c.nextUpdate ?? "none"} | ${fmt(c.revoked)} | \`${cell(path.basename(c.file))}\` |`,
      );
    lines.push("");
  }
  for (const [hub, counts] of Object.entries(inv.hubRecords))
    lines.push(
      `- hub \`${hub}\` (registry records): ${
        Object.entries(counts)
          .filter(([, n]) => n > 0)
          .map(([s, n]) => `${s} ${fmt(n)}`)
          .join(", ") || "no records"
      }`,
    );
  if (inv.localHub)
    lines.push(
      `- local hub state: ${fmt(inv.localHub.registrations)} registration files, ${fmt(inv.localHub.admitted)} certificates admitted, ${fmt(inv.localHub.disabled)} disabled`,
    );
  if (inv.unknownAtRegistry.count)
    lines.push(
      `- **${fmt(inv.unknownAtRegistry.count)} certificates admitted by a local hub are not in the registry**: ${inv.unknownAtRegistry.certificates
        .slice(0, MARKDOWN_FINDINGS)
        .map((c) => `\`${c.deviceId}\` (serial ${c.serial}, ${c.hub})`)
        .join(", ")}${inv.unknownAtRegistry.count > MARKDOWN_FINDINGS ? ", ..." : ""}`,
    );
  for (const i of inv.issuersWithoutCa)
    lines.push(
      `- ${fmt(i.certificates)} certificates are issued by a CA whose certificate was not found (SHA-256 \`${i.fingerprint.slice(0, 16)}…\`): chain checks skip them; pass --ca-dir`,
    );
  return `${lines.join("\n").trimEnd()}\n`;
}

async function audit(flags: Flags, io: AuditIo): Promise<number> {
  const now = flags.now !== undefined ? new Date(flags.now) : new Date(io.now());
  if (Number.isNaN(now.getTime())) throw invalid("--now", flags.now, "an ISO date like 2026-12-01");
  let pageSize: number | undefined;
  if (flags["page-size"] !== undefined) {
    pageSize = Number(flags["page-size"]);
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 100_000)
      throw invalid("--page-size", flags["page-size"], "an integer from 1 to 100000");
  }
  const caDir = folder("--ca-dir", flags["ca-dir"]);
  const crlDir = folder("--crl-dir", flags["crl-dir"]);
  const hubStateDir = folder("--hub-state", flags["hub-state"]);
  const outDir = flags.out ?? ".";
  if (fs.statSync(outDir, { throwIfNoEntry: false })?.isDirectory() === false)
    throw invalid("--out", outDir, "a folder (or a path where one can be made)");
  const policy = loadPolicyFile(flags.policy ?? defaultPolicy(), { now });
  const reg = await openExistingRegistry(flags.registry);
  let report: DeployedAudit;
  try {
    const t0 = io.now();
    let last = t0;
    let shown = false;
    report = await auditDeployed(
      policy,
      { registry: reg, caDir, crlDir, hubStateDir },
      {
        now,
        pageSize,
        onProgress: (p) => {
          const t = io.now();
          if (t - t0 < 1000 || t - last < 1000) return;
          last = t;
          shown = true;
          const rate = p.done / Math.max(p.elapsedMs / 1000, 1e-3);
          io.progress(
            p.phase === "index"
              ? `audit: indexing ${fmt(p.done)} certificates (${fmt(Math.round(rate))}/s)`
              : `audit: evaluated ${fmt(p.done)}/${fmt(p.total)} certificates, ${fmt(Math.round(rate))}/s overall, ETA ${Math.ceil((p.total - p.done) / Math.max(rate, 1))} s`,
            false,
          );
        },
      },
    );
    if (shown) io.progress(`audit: done in ${((io.now() - t0) / 1000).toFixed(1)} s`, true);
  } finally {
    await reg.close();
  }
  // not fs.mkdirSync's recursive mode, which loops forever on some paths (core/hubs/local-state makeDirs)
  try {
    makeDirs(outDir);
  } catch (e) {
    throw invalid(
      "--out",
      outDir,
      `a folder that can be created (${(e as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
  const json = jsonDocument(report);
  fs.writeFileSync(path.join(outDir, "audit.json"), `${json}\n`);
  fs.writeFileSync(path.join(outDir, "audit.md"), renderMarkdown(report));
  if (flags.json) io.out(json);
  else {
    const t = report.totals;
    for (const r of report.runs.filter((x) => x.count > 0))
      io.out(`  ${r.enforcement === "mandatory" ? "FAIL" : "WARN"} ${r.id} ${r.title}: ${fmt(r.count)}`);
    io.out(
      `audit: ${t.blocking ? "FAIL" : "PASS"}: ${fmt(t.blocking)} mandatory, ${fmt(t.advisory)} advisory, ${fmt(t.waived)} waived finding(s) over ${fmt(report.inventory.devices)} devices; wrote ${path.join(outDir, "audit.md")} and audit.json`,
    );
  }
  return report.totals.blocking ? 1 : 0;
}

/** `fleet audit ...`; bad input throws FleetError (INVALID_INPUT), cli/fleet.ts maps it to exit 2. */
export async function auditCommand(argv: string[], io: AuditIo = defaultIo()): Promise<number> {
  if (wantsHelp(command, argv))
    return answer({ kind: "help", text: usageOf(commandHelp(group, command)) }, io.out, io.err)!;
  let flags: Flags;
  try {
    flags = parse(group, command, argv).flags;
  } catch (e) {
    // the usage names `fleet audit`, not a sub-command
    if (e instanceof UsageError) Object.defineProperty(e, "usage", { value: usageOf(e.usage) });
    throw e;
  }
  return audit(flags, io);
}

/** The dispatcher's convention (cli/fleet.ts loads a group's `run`). */
export const run = (argv: string[]): Promise<number> => auditCommand(argv);
