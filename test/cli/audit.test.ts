// `fleet audit` (issue 12, point 7) on the real CLI in child processes, against real SQLite registries
// built through the registry API (test/cli/fixtures/audit-fleet.ts: devices enrolled, renewed and
// revoked the way the engine writes them, hub records, CRLs signed by core/ca, a local hub state folder).
// A clean fleet passes; each planted defect is reported with the device named; exit codes, the JSON
// document and the Markdown report's lines.
import { createHash, X509Certificate } from "node:crypto";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DeployedAudit } from "../../policies/deployed";
import { clean, fleetAsync, fleetMany, ROOT, type Run } from "./cli-run";
import { type BuiltFleet, buildFleet } from "./fixtures/audit-fleet";

let work: string;
const fleets: Record<string, BuiltFleet> = {};
let agePolicy: string;

const auditArgs = (f: BuiltFleet, out: string, extra: string[] = []) => [
  "audit",
  "--registry",
  f.registryFile,
  "--ca-dir",
  f.caDir,
  "--crl-dir",
  f.crlDir,
  "--hub-state",
  f.hubState,
  "--out",
  out,
  ...extra,
];
const report = (out: string) => JSON.parse(readFileSync(join(out, "audit.json"), "utf8")) as DeployedAudit;
const md = (out: string) => readFileSync(join(out, "audit.md"), "utf8");
const run = (a: DeployedAudit, id: string) => a.runs.find((r) => r.id === id)!;

beforeAll(async () => {
  work = realpathSync(mkdtempSync(join(tmpdir(), "fleet-audit-")));
  const kinds = {
    clean: {},
    revokedAtHub: { revokedStillAtLocalHub: true },
    staleCrl: { staleCrl: true },
    sharedKey: { sharedKey: true },
    oldKey: { oldKey: true },
    all: { revokedStillAtLocalHub: true, staleCrl: true, sharedKey: true, oldKey: true },
  } as const;
  for (const [k, o] of Object.entries(kinds)) fleets[k] = await buildFleet({ dir: join(work, k), ...o });
  // the baseline allows keys of 1,095 days; this copy of it allows 300, so a key certified 400 days
  // ago is old (a copy: a policy extends only files under its own policy root)
  agePolicy = join(work, "short-keys.yaml");
  const baseline = readFileSync(join(ROOT, "policies/baseline.yaml"), "utf8");
  expect(baseline).toContain("maxKeyAgeDays: 1095");
  writeFileSync(
    agePolicy,
    baseline
      .replace("name: baseline", "name: short-keys")
      .replace("maxKeyAgeDays: 1095", "maxKeyAgeDays: 300"),
  );
}, 60_000);

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe("fleet audit on a registry, its CRLs and the local hub", () => {
  it("a clean fleet passes (exit 0): every deployed check runs, audit.md and audit.json written", async () => {
    const out = join(work, "out-clean");
    const r = await fleetAsync(auditArgs(fleets.clean!, out));
    expect(r.code, r.stderr).toBe(0);
    clean(r);
    expect(r.stdout).toMatch(
      /^audit: PASS: 0 mandatory, 0 advisory, 0 waived finding\(s\) over 8 devices; wrote /m,
    );
    const a = report(out);
    expect(a.totals).toEqual({ findings: 0, blocking: 0, advisory: 0, waived: 0 });
    expect(a.policy).toBe("baseline");
    expect(a.inventory.devices).toBe(8);
    expect(a.inventory.certificates).toEqual({ live: 8, revoked: 0 });
    expect(a.inventory.cas.map((c) => [c.id, c.role])).toEqual([
      ["line-a", "issuing"],
      ["root", "root"],
    ]);
    expect(a.inventory.crls.map((c) => c.issuer).sort()).toEqual(["line-a", "root"]);
    expect(a.inventory.hubRecords["line-a-local"]!.active).toBe(8);
    expect(a.inventory.localHub).toEqual({ registrations: 1, admitted: 8, disabled: 0 });
    expect(a.inventory.issuersWithoutCa).toEqual([]);
    for (const id of [
      "FG-KEY-001",
      "FG-KEY-003",
      "FG-CERT-001",
      "FG-CA-001",
      "FG-ID-002",
      "FG-LIFE-001",
      "FG-LIFE-002",
      "FG-LIFE-003",
      "FG-REV-001",
      "FG-REV-002",
      "FG-REV-003",
      "FG-REV-004",
      "FG-REV-005",
      "FG-REV-006",
    ])
      expect(run(a, id).status, id).toBe("pass");
    const text = md(out);
    expect(text).toContain(`# Fleet audit: ${fleets.clean!.registryFile}\n`);
    expect(text).toContain("**Result: PASS**: 0 mandatory findings, 0 advisory, 0 waived.\n");
    expect(text).toContain(
      "| Check | Title | Severity | Enforcement | Status | Findings | Device Defender |\n",
    );
    expect(text).toContain(
      "| FG-REV-004 | No revoked certificate or retired device still admitted by a hub | critical | mandatory | pass | 0 | REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK |\n",
    );
    expect(text).toContain("## Findings\n\nNone.\n");
    expect(text).toContain("- hub `line-a-local` (registry records): active 8\n");
    expect(text).toContain("- local hub state: 1 registration files, 8 certificates admitted, 0 disabled\n");
  });

  it("a revoked device the local hub still admits: FG-REV-004 and FG-REV-001 name it, exit 1", async () => {
    const out = join(work, "out-revoked");
    const r = await fleetAsync(auditArgs(fleets.revokedAtHub!, out));
    expect(r.code, r.stderr).toBe(1);
    clean(r);
    const a = report(out);
    const rev4 = run(a, "FG-REV-004");
    expect(rev4.status).toBe("fail");
    expect(rev4.findings).toHaveLength(1);
    expect(rev4.findings[0]!.message).toBe(
      "device lot-a-000003: certificate revoked in the registry (keyCompromise) but still admitted by local:line-a (allowed)",
    );
    expect(rev4.findings[0]!.subject).toMatch(/^cert:lot-a-000003@[0-9a-f]+$/);
    // the registry's own hub record was disabled: only the local hub's file admits it
    expect(rev4.findings[0]!.message).not.toContain("line-a-local");
    expect(run(a, "FG-REV-001").findings.map((f) => f.subject)).toEqual([rev4.findings[0]!.subject]);
    expect(run(a, "FG-REV-005").status).toBe("pass");
    expect(a.totals.blocking).toBe(2);
    expect(md(out)).toContain(
      "### FG-REV-004: No revoked certificate or retired device still admitted by a hub (1, mandatory)\n\n- `cert:lot-a-000003@",
    );
    expect(r.stdout).toContain(
      "  FAIL FG-REV-004 No revoked certificate or retired device still admitted by a hub: 1\n",
    );
  });

  it("a stale CRL that misses a later revocation: FG-REV-003 (stale) and FG-REV-005 name the CRL and the device", async () => {
    const out = join(work, "out-stale");
    const r = await fleetAsync(auditArgs(fleets.staleCrl!, out));
    expect(r.code, r.stderr).toBe(1);
    const a = report(out);
    const rev3 = run(a, "FG-REV-003");
    expect(rev3.findings.map((f) => [f.subject, f.message.replace(/\d{4}-\d\d-\d\d/, "DAY")])).toEqual([
      ["crl:line-a", "stale: nextUpdate DAY has passed"],
    ]);
    const rev5 = run(a, "FG-REV-005");
    expect(rev5.findings).toHaveLength(1);
    expect(rev5.findings[0]!.message).toMatch(
      /^device lot-a-000004: serial [0-9A-F]+ is revoked in the registry but missing from the CRL of line-a \(thisUpdate \d{4}-\d\d-\d\d\)$/,
    );
    // its hub records were disabled with the revocation: no hub finding
    expect(run(a, "FG-REV-004").status).toBe("pass");
    expect(md(out)).toMatch(
      /\n\| line-a \| [0-9T:.Z-]+ \| [0-9T:.Z-]+ \| 0 \| `[0-9a-f]{64}\.crl\.pem` \|\n/,
    );
  });

  it("a CA whose CRL was never published: FG-REV-006 names it", async () => {
    const f = fleets.clean!;
    const crlDir = join(work, "crl-line-a-only");
    mkdirSync(crlDir);
    // the issuing CA's CRL only: its files are named by the CA certificate's SHA-256
    const der = new X509Certificate(readFileSync(join(f.caDir, "line-a.pem"))).raw;
    const fp = createHash("sha256").update(der).digest("hex");
    for (const file of readdirSync(f.crlDir))
      if (file.startsWith(fp)) copyFileSync(join(f.crlDir, file), join(crlDir, file));
    const out = join(work, "out-no-root-crl");
    const r = await fleetAsync([...auditArgs(f, out), "--crl-dir", crlDir]);
    expect(r.code, r.stderr).toBe(1);
    expect(run(report(out), "FG-REV-006").findings.map((x) => [x.subject, x.message])).toEqual([
      [
        "cert:root",
        "root CA root has no published CRL: verifiers that check the whole chain refuse every certificate under it",
      ],
    ]);
  });

  it("two devices with one key: FG-KEY-003 names both, whatever page each falls in", async () => {
    const outs = [join(work, "out-shared"), join(work, "out-shared-pages")];
    const [whole, paged] = await fleetMany([
      auditArgs(fleets.sharedKey!, outs[0]!),
      auditArgs(fleets.sharedKey!, outs[1]!, ["--page-size", "1"]),
    ]);
    for (const r of [whole!, paged!]) expect(r.code, r.stderr).toBe(1);
    const [a, b] = outs.map(report);
    for (const x of [a!, b!]) {
      const key = run(x, "FG-KEY-003");
      expect(key.findings).toHaveLength(1);
      expect(key.findings[0]!.subject).toBe("cert:lot-a-000005");
      expect(key.findings[0]!.message).toMatch(
        /^public key sha256:[0-9a-f]{16}\.\.\. is shared by 2 identities \(lot-a-000005, lot-a-000006\), want one key per identity$/,
      );
      expect(x.totals.blocking).toBe(1);
    }
    // one page per certificate: CA-level results counted once, the same findings as one page
    expect(b!.runs.map((r) => [r.id, r.status, r.count])).toEqual(
      a!.runs.map((r) => [r.id, r.status, r.count]),
    );
  });

  it("a key certified 400 days ago and renewed since: FG-LIFE-003 (advisory) names the device, exit 0", async () => {
    const out = join(work, "out-old");
    const r = await fleetAsync(auditArgs(fleets.oldKey!, out, ["--policy", agePolicy]));
    expect(r.code, r.stderr).toBe(0);
    const a = report(out);
    expect(a.policy).toBe("short-keys");
    const life = run(a, "FG-LIFE-003");
    expect(life.enforcement).toBe("advisory");
    expect(life.findings.map((f) => f.subject)).toEqual(["cert:lot-a-000007"]);
    // the current certificate is a few minutes old: the age is the key's, from its first certificate
    expect(life.findings[0]!.message).toMatch(
      /^key in use since \d{4}-\d\d-\d\d: 400 days old, policy 'short-keys' allows at most 300$/,
    );
    expect(a.inventory.certificates).toEqual({ live: 8, revoked: 1 });
    expect(a.totals).toMatchObject({ blocking: 0, advisory: 1 });
    expect(r.stdout).toContain("  WARN FG-LIFE-003 Device key and certificate age within the maximum: 1\n");
    // under the baseline (1,095 days) the same fleet is clean
    const base = await fleetAsync(auditArgs(fleets.oldKey!, join(work, "out-old-base")));
    expect(base.code).toBe(0);
    expect(report(join(work, "out-old-base")).totals.findings).toBe(0);
  });

  it("--json prints the audit.json document; without a CRL folder the CRL checks do not run", async () => {
    const out = join(work, "out-json");
    const f = fleets.all!;
    const [withCrl, noCrl] = await fleetMany([
      [...auditArgs(f, out), "--json"],
      [
        "audit",
        "--registry",
        f.registryFile,
        "--ca-dir",
        f.caDir,
        "--out",
        join(work, "out-nocrl"),
        "--json",
      ],
    ]);
    expect(withCrl!.code).toBe(1);
    expect(withCrl!.stdout).toBe(readFileSync(join(out, "audit.json"), "utf8"));
    const a = JSON.parse(withCrl!.stdout) as DeployedAudit;
    expect(Object.keys(a)).toEqual([
      "policy",
      "at",
      "registry",
      "sources",
      "inventory",
      "runs",
      "totals",
      "durationMs",
    ]);
    expect(Object.keys(a.runs[0]!).sort()).toEqual(
      ["count", "enforcement", "findings", "id", "severity", "standards", "status", "title", "waived"].sort(),
    );
    expect(a.runs.filter((r) => r.count).map((r) => r.id)).toEqual([
      "FG-KEY-003",
      "FG-REV-001",
      "FG-REV-003",
      "FG-REV-004",
      "FG-REV-005",
    ]);
    expect(a.runs.find((r) => r.id === "FG-REV-004")!.standards.awsDeviceDefender).toEqual([
      "REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK",
    ]);
    const n = JSON.parse(noCrl!.stdout) as DeployedAudit;
    for (const id of ["FG-REV-001", "FG-REV-002", "FG-REV-003", "FG-REV-005", "FG-REV-006"])
      expect(run(n, id).status, id).toBe("not-applicable");
    // the registry's hub records alone: device 3's record is disabled, so no hub admits it
    expect(run(n, "FG-REV-004").status).toBe("pass");
    expect(n.sources).toEqual({ caDir: f.caDir });
    expect(readFileSync(join(work, "out-nocrl", "audit.md"), "utf8")).toContain(
      "no CRL folder (CRL checks not run), no local hub state.",
    );
  });

  it("bad input exits 2 naming the option; --help exits 0; no stack traces", async () => {
    const f = fleets.clean!;
    const runs: Run[] = await fleetMany([
      ["audit"],
      ["audit", "--registry", join(work, "missing.db")],
      ["audit", "--registry", f.registryFile, "--crl-dir", f.registryFile],
      ["audit", "--registry", f.registryFile, "--page-size", "0"],
      ["audit", "--registry", f.registryFile, "--now", "yesterday"],
      ["audit", "--registry", f.registryFile, "--bogus"],
      ["audit", "--help"],
      ["help", "audit"],
    ]);
    const want = [
      "fleet audit: --registry: got undefined, want a registry file path or a postgres:// URL",
      `fleet audit: --registry: got "${join(work, "missing.db")}", want an existing registry file`,
      `fleet audit: --crl-dir: got "${f.registryFile}", want an existing folder`,
      'fleet audit: --page-size: got "0", want an integer from 1 to 100000',
      'fleet audit: --now: got "yesterday", want an ISO date',
      'fleet audit: option: got "--bogus", want one of --registry',
    ];
    want.forEach((w, i) => {
      expect(runs[i]!.code, runs[i]!.args.join(" ")).toBe(2);
      expect(runs[i]!.stderr).toContain(w);
      expect(runs[i]!.stdout).toBe("");
      clean(runs[i]!);
    });
    expect(runs[5]!.stderr).toContain("usage: fleet audit --registry <path|postgres://...>");
    expect(runs[5]!.stderr).toContain("(fleet audit --help for more)");
    for (const h of runs.slice(6)) {
      expect(h.code).toBe(0);
      expect(h.stdout).toMatch(
        /^usage: fleet audit --registry <path\|postgres:\/\/\.\.\.> \[--policy FILE\]/,
      );
      expect(h.stdout).toContain("exit codes: 0 clean, 1 findings, 2 bad input or usage");
    }
  });
});
