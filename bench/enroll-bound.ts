/**
 * The enrollment bounds on this machine, on 1 and on 2 worker threads, each configuration
 * `--repeat` times, interleaved (on a shared machine the best run is the bound: the others lost
 * CPU to someone else; the median shows the spread):
 *  - `--kind full` (default; issue 13): bench/lib/enroll-bound.ts, the cryptography a first-contact
 *    PUF enrollment cannot avoid on both sides (PUF reconstruction and key derivation, attestation
 *    and CSR signatures, the install's chain check; attestation and CSR verification, certificate
 *    signature), with the CPU per device of each side;
 *  - `--kind old`: the older raw bound (bench/lib/bound.ts: P-256 key generation, PKCS#10 CSR build
 *    + sign, CSR parse + verify, certificate from the template), which the older tables of
 *    docs/benchmarks.md used. A sample certificate is checked with `openssl verify`.
 *
 *   npx tsx bench/enroll-bound.ts [--kind full|old] [--devices 20000] [--threads 1,2] [--repeat 3]
 */
import * as os from "node:os";
import { toPem } from "../core/x509/pem";
import { verifyChain } from "../test/helpers/openssl";
import { measureBound } from "./lib/bound";
import { enrollContext, enrollDevice, makeBenchIssuer } from "./lib/enroll";
import { measureEnrollBound } from "./lib/enroll-bound";

const argOf = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const DEVICES = Number(argOf("devices") ?? 20_000);
const THREADS = (argOf("threads") ?? "1,2").split(",").map(Number);
const REPEAT = Number(argOf("repeat") ?? 3);
const KIND = argOf("kind") ?? "full";

async function main() {
  const load = () =>
    os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ");
  console.log(
    `raw enrollment bound: ${DEVICES} devices per run; ${os.cpus().length} cores, Node ${process.version}, OpenSSL ${process.versions.openssl}; load ${load()}`,
  );
  if (KIND === "full") return full(load);
  if (KIND !== "old") throw new Error(`--kind: got ${KIND}, want full or old`);
  const issuer = makeBenchIssuer();
  const sample = enrollDevice(enrollContext(issuer), "dev-sample");
  const v = verifyChain(
    issuer.rootCertificatePem,
    issuer.certificatePem,
    toPem("CERTIFICATE", sample.certificate),
  );
  console.log(`openssl verify of a sample device certificate: ${v.ok ? "OK" : `FAIL\n${v.out}`}`);
  if (!v.ok) process.exitCode = 1;
  const results = new Map<number, number[]>(THREADS.map((t) => [t, []]));
  for (let rep = 0; rep < REPEAT; rep++)
    for (const threads of THREADS) {
      let last = 0;
      const r = await measureBound({
        devices: DEVICES,
        threads,
        issuer,
        onProgress: (done, total, s) => {
          if (s - last < 2) return;
          last = s;
          const rate = done / s;
          process.stderr.write(
            `  ${threads} thread(s): ${done}/${total} ${rate.toFixed(0)}/s ETA ${((total - done) / rate).toFixed(1)}s\n`,
          );
        },
      });
      results.get(threads)!.push(r.perSecond);
      console.log(
        `run ${rep + 1}: ${threads} thread(s): ${r.devices} devices in ${r.seconds.toFixed(2)} s = ${r.perSecond.toFixed(0)} devices/s`,
      );
    }
  console.log(`load at end ${load()}`);
  const best = (t: number) => Math.max(...results.get(t)!);
  for (const [t, rates] of results) {
    const sorted = [...rates].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)]!;
    console.log(
      `${t} thread(s): best ${best(t).toFixed(0)} devices/s, median ${median.toFixed(0)} (${rates.map((r) => r.toFixed(0)).join(", ")})`,
    );
  }
  if (THREADS.length > 1)
    console.log(
      `speed-up ${THREADS.at(-1)} vs ${THREADS[0]} thread(s), best runs: ${(best(THREADS.at(-1)!) / best(THREADS[0]!)).toFixed(2)}x`,
    );
}

async function full(load: () => string) {
  const results = new Map<number, number[]>(THREADS.map((t) => [t, []]));
  for (let rep = 0; rep < REPEAT; rep++)
    for (const threads of THREADS) {
      const r = await measureEnrollBound({ devices: DEVICES, threads });
      results.get(threads)!.push(r.perSecond);
      console.log(
        `run ${rep + 1}: ${threads} thread(s): ${r.devices} devices in ${r.seconds.toFixed(2)} s = ${r.perSecond.toFixed(0)} devices/s; CPU per device: device ${r.deviceMsPerDevice.toFixed(3)} ms, fleetguard ${r.fleetMsPerDevice.toFixed(3)} ms; PUF enrollment (not in the bound) ${r.pufEnrollMs.toFixed(3)} ms; load ${load()}`,
      );
    }
  for (const [t, rates] of results) {
    const sorted = [...rates].sort((a, b) => a - b);
    console.log(
      `${t} thread(s): best ${sorted.at(-1)!.toFixed(0)} devices/s, median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)} (${rates.map((r) => r.toFixed(0)).join(", ")})`,
    );
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
