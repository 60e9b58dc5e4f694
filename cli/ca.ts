/**
 * `fleet ca summary`: what a CA hierarchy stack holds, read from its outputs (no keys), with
 * every chain checked by OpenSSL and the PEMs written out for `openssl verify` by hand; --json
 * prints the same as one document (docs/cli.md).
 */
import { type SpawnSyncReturns, spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { CaSummary } from "../components/CaHierarchy";
import { FleetError, invalid } from "../core/errors";
import type { StateCounts } from "../core/registry/types";
import { answer, type Flags, type GroupSpec, JSON_OPTION, jsonDocument, route } from "./args";

export const spec: GroupSpec = {
  name: "ca",
  summary: "inspect the CA hierarchy of a stack (and verify device certificates)",
  commands: [
    {
      name: "summary",
      summary: "every CA of a stack's `cas` output, each chain checked by openssl verify, PEMs written out",
      options: [
        { name: "stack", arg: "NAME", help: "the Pulumi stack (default demo)" },
        { name: "out", arg: "DIR", help: "where the PEMs go (default <cwd>/.state/<stack>-pki)" },
        { name: "cwd", arg: "DIR", help: "the Pulumi program's directory (default: the current one)" },
        {
          name: "registry",
          arg: "<path|postgres://...>",
          help: "also verify every live device certificate in this registry against the hierarchy",
        },
        JSON_OPTION,
      ],
      json: "{stack, out, ok, cas: [{name, role, subject, algorithm, notAfter, fingerprintSha256, verify, ok}], batches: null | [{batch, model, source, counts, live, verified, ok, failure, dir}]}",
      details: "needs the Pulumi CLI (it reads `pulumi stack output cas`) and OpenSSL 3 on PATH",
    },
  ],
};

interface Args {
  stack: string;
  out?: string;
  cwd: string;
  registry?: string;
  json: boolean;
}

/** A batch's device certificates as `--registry` checked them (docs/cli.md). */
export interface BatchVerifyJson {
  batch: string;
  model: string;
  source: string;
  counts: StateCounts;
  live: number;
  verified: number;
  ok: boolean;
  /** openssl's first complaint, or why a certificate could not be checked; null when ok */
  failure: string | null;
  dir: string;
}

/** One CA of `fleet ca summary --json`. */
export interface CaJson {
  name: string;
  role: string;
  subject: string;
  algorithm: string;
  notAfter: string;
  fingerprintSha256: string;
  /** "OK" or "FAILED: <openssl's last line>" */
  verify: string;
  ok: boolean;
}

/**
 * A tool this command runs (pulumi, openssl) that did not run at all: spawnSync reports it in
 * `error` with stdout and stderr null, so say what is missing and how to get it.
 */
function notRun(tool: string, r: SpawnSyncReturns<string>, install: string): FleetError | undefined {
  if (!r.error) return undefined;
  const code = (r.error as NodeJS.ErrnoException).code;
  const why = code === "ENOENT" ? "not found on PATH" : `could not be started (${code ?? r.error.message})`;
  return new FleetError("UNAVAILABLE", `${tool}: ${why}, want ${install}`, tool);
}

const PULUMI_INSTALL =
  "the Pulumi CLI on PATH (in this checkout: bash scripts/setup-pulumi && source .cache/pulumi/env; see docs/engine.md)";
const OPENSSL_INSTALL = "OpenSSL 3 on PATH (e.g. apt-get install openssl)";

function parseArgs(flags: Flags): Args {
  return {
    stack: flags.stack ?? "demo",
    cwd: flags.cwd ?? process.cwd(),
    json: flags.json === "true",
    ...(flags.out !== undefined ? { out: flags.out } : {}),
    ...(flags.registry !== undefined ? { registry: flags.registry } : {}),
  };
}

/**
 * Every live device certificate of every batch in the registry, checked with `openssl verify`
 * against the hierarchy (root trusted, intermediates untrusted), 500 certificates per call.
 */
async function verifyDevices(
  registry: string,
  cas: Record<string, CaSummary>,
  out: string,
): Promise<BatchVerifyJson[]> {
  const { openRegistry } = await import("../core/registry");
  const { toPem } = await import("../core/x509/pem");
  const reg = await openRegistry(registry);
  const results: BatchVerifyJson[] = [];
  try {
    const byFp = new Map(Object.values(cas).map((c) => [c.fingerprintSha256, c]));
    for (const b of await reg.listBatches()) {
      if (b.deletedAt) continue;
      const counts = await reg.counts(b.name);
      const live = await reg.certificates({ batch: b.name, status: ["live"], limit: 10_000_000 });
      let ok = 0;
      let bad = "";
      const dir = path.join(out, `batch-${b.name}`);
      fs.mkdirSync(dir, { recursive: true });
      const groups = new Map<string, typeof live>();
      for (const c of live) {
        const g = groups.get(c.issuer);
        if (g) g.push(c);
        else groups.set(c.issuer, [c]);
      }
      for (const [fp, certs] of groups) {
        const ca = byFp.get(fp);
        if (!ca) {
          bad ||= `issuer ${fp.slice(0, 16)}… is not in stack`;
          continue;
        }
        const chain =
          ca.chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g) ?? [];
        fs.writeFileSync(path.join(dir, "root.pem"), chain[chain.length - 1]!);
        fs.writeFileSync(path.join(dir, "untrusted.pem"), chain.slice(0, -1).join(""));
        for (let i = 0; i < certs.length; i += 500) {
          const files = certs.slice(i, i + 500).map((c) => {
            const f = path.join(dir, `${c.deviceId}.pem`);
            fs.writeFileSync(f, toPem("CERTIFICATE", c.der));
            return f;
          });
          const r = spawnSync(
            "openssl",
            [
              "verify",
              "-x509_strict",
              "-CAfile",
              path.join(dir, "root.pem"),
              "-untrusted",
              path.join(dir, "untrusted.pem"),
              ...files,
            ],
            { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 },
          );
          const missing = notRun("openssl", r, OPENSSL_INSTALL);
          if (missing) throw missing;
          ok += (r.stdout.match(/: OK$/gm) ?? []).length;
          if (r.status !== 0)
            bad ||=
              (r.stdout + r.stderr)
                .trim()
                .split("\n")
                .find((l) => !/: OK$/.test(l)) ?? "";
        }
      }
      results.push({
        batch: b.name,
        model: b.model,
        source: b.source,
        counts,
        live: live.length,
        verified: ok,
        ok: ok === live.length,
        failure: ok === live.length ? null : bad,
        dir: path.resolve(dir),
      });
    }
  } finally {
    await reg.close();
  }
  return results;
}

function opensslVerify(dir: string, name: string, ca: CaSummary): string {
  const certs = ca.chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g) ?? [];
  const root = certs[certs.length - 1]!;
  const inter = certs.slice(1, -1).join("");
  fs.writeFileSync(path.join(dir, "root.pem"), root);
  fs.writeFileSync(path.join(dir, `${name}.chain.pem`), ca.chainPem);
  const args = ["verify", "-x509_strict", "-CAfile", path.join(dir, "root.pem")];
  if (inter) {
    fs.writeFileSync(path.join(dir, `${name}.untrusted.pem`), inter);
    args.push("-untrusted", path.join(dir, `${name}.untrusted.pem`));
  }
  args.push(path.join(dir, `${name}.pem`));
  const r = spawnSync("openssl", args, { encoding: "utf8" });
  const missing = notRun("openssl", r, OPENSSL_INSTALL);
  if (missing) throw missing;
  return r.status === 0 ? "OK" : `FAILED: ${(r.stdout + r.stderr).trim().split("\n").pop()}`;
}

/** Pulumi's error, one line of it: the useful part is its last line ("error: no stack named ..."). */
function lastLine(text: string | null): string {
  const lines = (text ?? "").trim().split("\n");
  return (lines[lines.length - 1] ?? "").trim() || "(no message)";
}

/** The stack's `cas` output, or an error that says why it is not a CA hierarchy's output. */
function parseCas(stdout: string, stack: string): Record<string, CaSummary> {
  let v: unknown;
  try {
    v = JSON.parse(stdout);
  } catch {
    v = undefined;
  }
  const ok =
    typeof v === "object" &&
    v !== null &&
    !Array.isArray(v) &&
    Object.values(v).every(
      (c) =>
        typeof c === "object" &&
        c !== null &&
        typeof (c as CaSummary).certificatePem === "string" &&
        typeof (c as CaSummary).chainPem === "string",
    );
  if (!ok)
    throw invalid(
      "--stack",
      stack,
      "a stack whose `cas` output is a CA hierarchy's summary (a map of CA name to certificatePem, chainPem, ...)",
    );
  return v as Record<string, CaSummary>;
}

async function summary(flags: Flags): Promise<number> {
  const o = parseArgs(flags);
  // pulumi would say "chdir ...: no such file or directory" and exit 1, which reads as an outage
  if (!fs.statSync(o.cwd, { throwIfNoEntry: false })?.isDirectory())
    throw invalid("--cwd", o.cwd, "the directory of a Pulumi program (its Pulumi.yaml)");
  const r = spawnSync(
    "pulumi",
    ["stack", "output", "cas", "--json", "--stack", o.stack, "--cwd", o.cwd, "--non-interactive"],
    {
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    },
  );
  const missing = notRun("pulumi", r, PULUMI_INSTALL);
  if (missing) throw missing;
  if (r.status !== 0)
    throw new FleetError(
      "UNAVAILABLE",
      `pulumi stack output: got ${r.status === null ? `signal ${r.signal}` : `exit ${r.status}`}, want 0: ${lastLine(r.stderr)}`,
      "stack",
    );
  const cas = parseCas(r.stdout, o.stack);
  const out = o.out ?? path.join(o.cwd, ".state", `${o.stack}-pki`);
  fs.mkdirSync(out, { recursive: true });
  const rows: CaJson[] = [];
  for (const [name, ca] of Object.entries(cas)) {
    fs.writeFileSync(path.join(out, `${name}.pem`), ca.certificatePem);
    const x = new crypto.X509Certificate(ca.certificatePem);
    const alg =
      x.publicKey.asymmetricKeyType === "ec"
        ? `ecdsa ${x.publicKey.asymmetricKeyDetails?.namedCurve}`
        : `${x.publicKey.asymmetricKeyType}${x.publicKey.asymmetricKeyDetails?.modulusLength ? `-${x.publicKey.asymmetricKeyDetails.modulusLength}` : ""}`;
    const verdict = opensslVerify(out, name, ca);
    rows.push({
      name,
      role: ca.role,
      subject: x.subject.split("\n").join(", "),
      algorithm: alg,
      notAfter: ca.notAfter,
      fingerprintSha256: ca.fingerprintSha256,
      verify: verdict,
      ok: verdict === "OK",
    });
  }
  const batches = o.registry ? await verifyDevices(o.registry, cas, out) : null;
  const failed = rows.filter((c) => !c.ok).length + (batches ?? []).filter((b) => !b.ok).length;
  if (o.json) {
    console.log(
      jsonDocument({ stack: o.stack, out: path.resolve(out), ok: failed === 0, cas: rows, batches }),
    );
    return failed ? 1 : 0;
  }
  const table: string[][] = [
    ["CA", "role", "subject", "algorithm", "not after", "SHA-256 fingerprint", "openssl verify"],
    ...rows.map((c) => [
      c.name,
      c.role,
      c.subject,
      c.algorithm,
      c.notAfter.slice(0, 10),
      `${c.fingerprintSha256.slice(0, 16)}…`,
      c.verify,
    ]),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  for (const [i, row] of table.entries()) {
    console.log(row.map((c, j) => c.padEnd(widths[j]!)).join("  "));
    if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
  console.log(
    `\n${Object.keys(cas).length} CAs in stack '${o.stack}'; certificates and chains written to ${path.relative(process.cwd(), out) || "."}/`,
  );
  console.log(
    `check one yourself: openssl verify -CAfile ${path.join(out, "root.pem")} -untrusted <intermediates> ${path.join(out, "<ca>.pem")}`,
  );
  if (batches) {
    const { describeCounts } = await import("../core/enroll/engine");
    for (const b of batches)
      console.log(
        `\nbatch ${b.batch} (${b.model}, ${b.source}): ${describeCounts(b.counts)}\n` +
          `  ${b.live.toLocaleString("en-US")} live device certificates; openssl verify: ${b.verified.toLocaleString("en-US")} OK` +
          (b.ok ? "" : `, FAILED: ${b.failure}`) +
          `\n  written to ${path.relative(process.cwd(), b.dir) || "."}/`,
      );
  }
  return failed ? 1 : 0;
}

export async function run(argv: string[]): Promise<number> {
  const r = route(spec, argv);
  if (r.kind !== "run") return answer(r)!;
  return summary(r.parsed.flags);
}
