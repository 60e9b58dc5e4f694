/**
 * `fleet audit` on a large registry: builds a deployed fleet of N devices through the registry API
 * (test/cli/fixtures/audit-fleet.ts: real certificates, hub records, CRLs, a local hub state with one of
 * each planted defect), then runs the real CLI in a child process and reports its wall time, its peak
 * RSS (getrusage of the child, from /proc) and the findings. The fleet is kept under bench/out/ and
 * reused when it has the asked size.
 *
 *   npx tsx bench/audit.ts [--count 100000] [--page-size 2000] [--rebuild]
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { buildFleet } from "../test/cli/fixtures/audit-fleet";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const COUNT = Number(arg("count", "100000"));
const PAGE = arg("page-size", "2000");
const ROOT = path.join(__dirname, "..");
const DIR = path.join(__dirname, "out", `audit-${COUNT}`);
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

async function main() {
  const stamp = path.join(DIR, "built.json");
  if (process.argv.includes("--rebuild") || !fs.existsSync(stamp)) {
    fs.rmSync(DIR, { recursive: true, force: true });
    fs.mkdirSync(DIR, { recursive: true });
    const t0 = performance.now();
    let last = 0;
    await buildFleet({
      dir: DIR,
      count: COUNT,
      revokedStillAtLocalHub: true,
      staleCrl: true,
      sharedKey: true,
      oldKey: true,
      onProgress: (done, total) => {
        const t = performance.now();
        if (t - last < 2000 && done < total) return;
        last = t;
        const rate = (done / (t - t0)) * 1000;
        process.stderr.write(
          `build: ${fmt(done)}/${fmt(total)} devices, ${fmt(rate)}/s, ETA ${((total - done) / rate).toFixed(0)} s\n`,
        );
      },
    });
    fs.writeFileSync(stamp, JSON.stringify({ count: COUNT, seconds: (performance.now() - t0) / 1000 }));
  }
  const built = JSON.parse(fs.readFileSync(stamp, "utf8")) as { count: number; seconds: number };
  const out = path.join(DIR, "report");
  const args = [
    "--import",
    pathToFileURL(path.join(ROOT, "node_modules/tsx/dist/loader.mjs")).href,
    path.join(ROOT, "cli/fleet.ts"),
    "audit",
    "--registry",
    path.join(DIR, "registry.db"),
    "--ca-dir",
    path.join(DIR, "pki"),
    "--crl-dir",
    path.join(DIR, "crl"),
    "--hub-state",
    path.join(DIR, "hub"),
    "--out",
    out,
    "--page-size",
    PAGE,
  ];
  const t0 = performance.now();
  // the child reports its own peak RSS on exit (getrusage ru_maxrss of the audit process itself)
  const child = spawn(
    process.execPath,
    ["--require", path.join(__dirname, "lib", "report-rss.cjs"), ...args],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  let stdout = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => {
    stdout += c;
  });
  const code: number = await new Promise((r) => child.on("close", (c) => r(c ?? -1)));
  const seconds = (performance.now() - t0) / 1000;
  const rss = /^peak-rss-kib (\d+)$/m.exec(stdout)?.[1];
  const report = JSON.parse(fs.readFileSync(path.join(out, "audit.json"), "utf8")) as {
    totals: Record<string, number>;
    runs: Array<{ id: string; count: number }>;
    inventory: { certificates: { live: number; revoked: number } };
  };
  const certs = report.inventory.certificates.live + report.inventory.certificates.revoked;
  console.log(`fleet audit, ${fmt(COUNT)} devices (${fmt(certs)} certificates), page size ${PAGE}:`);
  console.log(
    `  fleet built through the registry API in ${built.seconds.toFixed(1)} s (cached under ${path.relative(ROOT, DIR)})`,
  );
  console.log(
    `  audit: exit ${code}, ${seconds.toFixed(1)} s wall (${fmt(certs / seconds)} certificates/s), peak RSS ${rss ? fmt(Number(rss) / 1024) : "?"} MiB`,
  );
  console.log(
    `  findings: ${report.runs
      .filter((r) => r.count)
      .map((r) => `${r.id} ${r.count}`)
      .join(", ")}`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
