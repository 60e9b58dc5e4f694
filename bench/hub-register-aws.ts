/**
 * AWS IoT per-device registration throughput against moto's server (started on loopback), through
 * the real driver (core/hubs/aws.ts: RegisterCertificate, CreateThing, AttachPolicy,
 * AttachThingPrincipal, AddThingToThingGroup per device). Two runs on the same machine:
 *  1. rate limit off: devices/s and fleetguard's own CPU per device (this process: the driver,
 *     the AWS SDK's SigV4 signing, HTTP and JSON), beside moto's CPU per device (the emulator's
 *     share, which bounds the wall-clock rate here);
 *  2. rate limit on (default 10 calls/s per API): behind a proxy that enforces an AWS-like quota
 *     of the same rate per API (a token bucket, burst = rate, 429 ThrottlingException past it), so
 *     "holds the rate" means: the highest count of any API's calls in a sliding 1 s window stays
 *     within rate + burst, and the proxy throttled nothing.
 * The certificates are made before the clock starts (a CA and leaves from core/x509).
 *
 *   npx tsx bench/hub-register-aws.ts [--devices 1000] [--limited 200] [--rate 10] [--concurrency 16]
 */
import * as fs from "node:fs";
import * as http from "node:http";
import type * as net from "node:net";
import { AwsIotDriver, type AwsIotDriverOptions } from "../core/hubs/aws";
import { TokenBucket } from "../core/hubs/rate";
import { makeDevice, makePki, provisionHub, region, sdk } from "../test/core/hubs/aws-fixtures";
import { type AwsEmulator, startMoto } from "../test/helpers/aws-emulators";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] as string) : dflt;
};
const DEVICES = Number(arg("devices", "1000"));
const LIMITED = Number(arg("limited", "200"));
const RATE = Number(arg("rate", "10"));
const CONCURRENCY = Number(arg("concurrency", "16"));
const fmt = (n: number, d = 0) =>
  n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });

/** user+system CPU seconds of a process, from /proc (Linux) */
function procCpu(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (100/s)
}

/** REST path -> API name, for the client-iot operations the driver uses */
function apiOf(method: string, url: string): string {
  const p = url.split("?")[0] ?? "";
  if (method === "POST" && p === "/certificate/register") return "RegisterCertificate";
  if (method === "POST" && /^\/things\/[^/]+$/.test(p)) return "CreateThing";
  if (method === "PUT" && p.startsWith("/target-policies/")) return "AttachPolicy";
  if (method === "PUT" && /^\/things\/[^/]+\/principals$/.test(p)) return "AttachThingPrincipal";
  if (method === "PUT" && p === "/thing-groups/addThingToThingGroup") return "AddThingToThingGroup";
  return `${method} ${p.split("/").slice(0, 2).join("/")}`;
}

interface Quota {
  url: string;
  calls: Map<string, number[]>;
  throttled: number;
  close(): Promise<void>;
}

/** A proxy in front of moto that holds every API to `rate` calls/s (burst = rate), as AWS's TPS quotas do. */
async function quotaProxy(upstream: string, rate: number): Promise<Quota> {
  const up = new URL(upstream);
  const buckets = new Map<string, TokenBucket>();
  const sockets = new Set<net.Socket>();
  const q: Quota = {
    url: "",
    calls: new Map(),
    throttled: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const server = http.createServer((req, res) => {
    const api = apiOf(req.method ?? "", req.url ?? "");
    let b = buckets.get(api);
    if (!b) {
      b = new TokenBucket(rate, rate);
      buckets.set(api, b);
    }
    if (!b.tryTake()) {
      q.throttled++;
      res.writeHead(429, { "content-type": "application/json", "x-amzn-errortype": "ThrottlingException" });
      res.end(JSON.stringify({ message: "Rate exceeded" }));
      return;
    }
    const at = q.calls.get(api) ?? [];
    at.push(performance.now());
    q.calls.set(api, at);
    const fwd = http.request(
      { host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    fwd.on("error", () => res.destroy());
    req.pipe(fwd);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  q.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return q;
}

/** the most calls in any window of `ms` */
function maxInWindow(ts: number[], ms: number): number {
  let best = 0;
  for (let i = 0, j = 0; j < ts.length; j++) {
    while ((ts[j] as number) - (ts[i] as number) >= ms) i++;
    best = Math.max(best, j - i + 1);
  }
  return best;
}

async function run(
  moto: AwsEmulator,
  n: number,
  rate: number,
  endpoint: string | undefined,
): Promise<{
  seconds: number;
  devicesPerSec: number;
  cpuMsPerDevice: number;
  motoCpuMsPerDevice: number;
  ok: number;
}> {
  await moto.reset();
  const pki = makePki("bench");
  const iot = sdk(moto.endpoint);
  const hub = await provisionHub(iot, pki);
  process.stderr.write(`making ${fmt(n)} device certificates...\n`);
  const certs = Array.from(
    { length: n },
    (_, i) => makeDevice(pki, `fg100-${String(i).padStart(7, "0")}`).cert,
  );
  const opts: AwsIotDriverOptions = {
    label: "AWS IoT 'bench'",
    region,
    endpoint: endpoint ?? moto.endpoint,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    mode: "per-device",
    ratePerSecond: rate,
    caCertificates: [{ id: hub.caId, pem: pki.issuing.certificatePem }],
    policyName: hub.policyName,
    thingTypeName: hub.thingTypeName,
    thingGroupName: hub.thingGroupName,
    batch: "bench",
    concurrency: CONCURRENCY,
  };
  const driver = new AwsIotDriver(opts);
  await driver.ensureTrust([pki.trusted]);
  const cpu0 = process.cpuUsage();
  const moto0 = procCpu(moto.pid);
  const t0 = performance.now();
  let last = 0;
  const out = await driver.register(certs, (d) => {
    const now = performance.now();
    if (now - last < 1000 && d < n) return;
    last = now;
    const r = (d / (now - t0)) * 1000;
    process.stderr.write(`\r  ${fmt(d)}/${fmt(n)} devices, ${fmt(r, 1)}/s, ETA ${fmt((n - d) / r)} s    `);
  });
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const motoCpu = procCpu(moto.pid) - moto0;
  process.stderr.write("\n");
  await driver.close();
  const ok = out.filter((o) => o.ok).length;
  if (ok !== n)
    throw new Error(`${n - ok} of ${n} registrations failed: ${JSON.stringify(out.find((o) => !o.ok))}`);
  return {
    seconds,
    devicesPerSec: n / seconds,
    cpuMsPerDevice: (cpu.user + cpu.system) / 1000 / n,
    motoCpuMsPerDevice: (motoCpu * 1000) / n,
    ok,
  };
}

async function main() {
  const moto = await startMoto();
  try {
    process.stderr.write(`run 1: ${fmt(DEVICES)} devices, rate limit off, concurrency ${CONCURRENCY}\n`);
    const off = await run(moto, DEVICES, 0, undefined);
    process.stderr.write(
      `run 2: ${fmt(LIMITED)} devices at ${RATE}/s per API, behind a ${RATE}/s-per-API quota proxy\n`,
    );
    const quota = await quotaProxy(moto.endpoint, RATE);
    let on: Awaited<ReturnType<typeof run>>;
    try {
      on = await run(moto, LIMITED, RATE, quota.url);
    } finally {
      await quota.close();
    }
    const perApi = [...quota.calls.entries()]
      .filter(([api]) => /^[A-Z]/.test(api))
      .map(([api, ts]) => {
        const span = ((ts.at(-1) as number) - (ts[0] as number)) / 1000;
        return {
          api,
          calls: ts.length,
          rate: span > 0 ? (ts.length - 1) / span : 0,
          max1s: maxInWindow(ts, 1000),
        };
      });
    const estimate = 100_000 / RATE;
    console.log(
      `\n| run | devices | wall s | devices/s | our CPU ms/device | moto CPU ms/device | throttled |`,
    );
    console.log("|---|---:|---:|---:|---:|---:|---:|");
    console.log(
      `| rate limit off (concurrency ${CONCURRENCY}) | ${fmt(DEVICES)} | ${fmt(off.seconds, 1)} | ${fmt(off.devicesPerSec, 1)} | ${fmt(off.cpuMsPerDevice, 2)} | ${fmt(off.motoCpuMsPerDevice, 2)} | - |`,
    );
    console.log(
      `| ${RATE}/s per API (quota proxy ${RATE}/s, burst ${RATE}) | ${fmt(LIMITED)} | ${fmt(on.seconds, 1)} | ${fmt(on.devicesPerSec, 2)} | ${fmt(on.cpuMsPerDevice, 2)} | ${fmt(on.motoCpuMsPerDevice, 2)} | ${quota.throttled} |`,
    );
    console.log(`\n| API (rate-limited run) | calls | calls/s (first to last) | most calls in any 1 s |`);
    console.log("|---|---:|---:|---:|");
    for (const a of perApi) console.log(`| ${a.api} | ${fmt(a.calls)} | ${fmt(a.rate, 2)} | ${a.max1s} |`);
    console.log(
      `\n100,000 devices at ${RATE}/s: ${fmt(estimate)} s = ${Math.floor(estimate / 3600)} h ${Math.round((estimate % 3600) / 60)} min (measured ${fmt(on.devicesPerSec, 2)} devices/s: ${fmt(100_000 / on.devicesPerSec / 60)} min)`,
    );
  } finally {
    await moto.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
