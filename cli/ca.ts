/**
 * `fleet ca summary`: what a CA hierarchy stack holds, read from its outputs (no keys), with
 * every chain checked by OpenSSL and the PEMs written out for `openssl verify` by hand.
 */
import { spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { CaSummary } from "../components/CaHierarchy";
import { FleetError, invalid } from "../core/errors";

function parseArgs(argv: string[]): { stack: string; out?: string; cwd: string } {
  const opts: { stack: string; out?: string; cwd: string } = { stack: "demo", cwd: process.cwd() };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    if (!v || !["--stack", "--out", "--cwd"].includes(a))
      throw invalid("argument", a, "--stack NAME, --out DIR or --cwd DIR");
    if (a === "--stack") opts.stack = v;
    if (a === "--out") opts.out = v;
    if (a === "--cwd") opts.cwd = v;
    i++;
  }
  return opts;
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
  return r.status === 0 ? "OK" : `FAILED: ${(r.stdout + r.stderr).trim().split("\n").pop()}`;
}

async function summary(argv: string[]): Promise<number> {
  const o = parseArgs(argv);
  const r = spawnSync(
    "pulumi",
    ["stack", "output", "cas", "--json", "--stack", o.stack, "--cwd", o.cwd, "--non-interactive"],
    {
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    },
  );
  if (r.status !== 0)
    throw new FleetError(
      "UNAVAILABLE",
      `pulumi stack output: got exit ${r.status}, want 0: ${r.stderr.trim()}`,
    );
  const cas = JSON.parse(r.stdout) as Record<string, CaSummary>;
  const out = o.out ?? path.join(o.cwd, ".state", `${o.stack}-pki`);
  fs.mkdirSync(out, { recursive: true });
  const rows: string[][] = [
    ["CA", "role", "subject", "algorithm", "not after", "SHA-256 fingerprint", "openssl verify"],
  ];
  let failed = 0;
  for (const [name, ca] of Object.entries(cas)) {
    fs.writeFileSync(path.join(out, `${name}.pem`), ca.certificatePem);
    const x = new crypto.X509Certificate(ca.certificatePem);
    const alg =
      x.publicKey.asymmetricKeyType === "ec"
        ? `ecdsa ${x.publicKey.asymmetricKeyDetails?.namedCurve}`
        : `${x.publicKey.asymmetricKeyType}${x.publicKey.asymmetricKeyDetails?.modulusLength ? `-${x.publicKey.asymmetricKeyDetails.modulusLength}` : ""}`;
    const verdict = opensslVerify(out, name, ca);
    if (verdict !== "OK") failed++;
    rows.push([
      name,
      ca.role,
      x.subject.split("\n").join(", "),
      alg,
      ca.notAfter.slice(0, 10),
      `${ca.fingerprintSha256.slice(0, 16)}…`,
      verdict,
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  for (const [i, row] of rows.entries()) {
    console.log(row.map((c, j) => c.padEnd(widths[j]!)).join("  "));
    if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
  console.log(
    `\n${Object.keys(cas).length} CAs in stack '${o.stack}'; certificates and chains written to ${path.relative(process.cwd(), out) || "."}/`,
  );
  console.log(
    `check one yourself: openssl verify -CAfile ${path.join(out, "root.pem")} -untrusted <intermediates> ${path.join(out, "<ca>.pem")}`,
  );
  return failed ? 1 : 0;
}

export async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === "summary") return summary(rest);
  console.error("usage: fleet ca summary [--stack NAME] [--out DIR] [--cwd DIR]");
  return 2;
}
