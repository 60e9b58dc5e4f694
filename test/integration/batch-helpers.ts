// Shared by the batch integration tests: a device farm in its own process, a batch stack on
// the real engine, and the invariants a batch must hold, checked against the registry, the
// devices (STATUS over the station protocol) and OpenSSL.
import type { ChildProcess } from "node:child_process";
import * as path from "node:path";
import { expect } from "vitest";
import { openRegistry } from "../../core/registry";
import type { CertificateRecord, Registry } from "../../core/registry/types";
import { StationClient } from "../../core/station/client";
import { toPem } from "../../core/x509/pem";
import { startFarmProcess, stopFarmProcess } from "../../devices/farm/process";
import { openssl, verifyLeaves as verifyMany } from "../helpers/openssl";
import { PulumiStack, REPO } from "../helpers/pulumi";

export const SEED = "b1".repeat(32);

export class FarmProc {
  child?: ChildProcess;
  port = 0;
  constructor(
    readonly state: string,
    readonly count: number,
    readonly extraArgs: string[] = [],
  ) {}
  async start(): Promise<void> {
    const r = await startFarmProcess({
      count: this.count,
      state: this.state,
      seed: SEED,
      port: this.port,
      extraArgs: this.extraArgs,
    });
    this.child = r.child;
    this.port = r.port;
  }
  kill9(): Promise<void> {
    const c = this.child!;
    const done = new Promise((r) => c.once("exit", r));
    c.kill("SIGKILL");
    return done.then(() => undefined);
  }
  async stop(): Promise<void> {
    if (this.child) await stopFarmProcess(this.child);
  }
}

export function batchStack(name: string): PulumiStack {
  return new PulumiStack(path.join(REPO, "test", "integration", "fixtures", "batch-program"), name);
}

export async function configure(
  stack: PulumiStack,
  work: string,
  port: number,
  batch: Record<string, unknown>,
  policy?: string,
): Promise<void> {
  await stack.setConfig("fleetguard:batch", batch);
  await stack.setConfig("fleetguard:stationPort", String(port));
  await stack.setConfig("fleetguard:registry", path.join(work, "registry.db"));
  await stack.setConfig("fleetguard:crlDir", path.join(work, "crl"));
  if (policy) await stack.setConfig("fleetguard:policy", policy);
}

/**
 * A stack of a program with a batch and a local hub (hub-program, rollover-program): the device
 * count, the farm's port, and the registry, CRL folder and hub state under `work`.
 */
export async function configureHubStack(
  stack: PulumiStack,
  work: string,
  port: number,
  count: number,
): Promise<void> {
  await stack.init();
  await stack.setConfig("fleetguard:count", String(count));
  await stack.setConfig("fleetguard:stationPort", String(port));
  await stack.setConfig("fleetguard:registry", path.join(work, "registry.db"));
  await stack.setConfig("fleetguard:crlDir", path.join(work, "crl"));
  await stack.setConfig("fleetguard:hubState", path.join(work, "hub"));
}

export async function withRegistry<T>(work: string, f: (r: Registry) => Promise<T>): Promise<T> {
  const r = await openRegistry(path.join(work, "registry.db"));
  try {
    return await f(r);
  } finally {
    await r.close();
  }
}

/** device -> its live certificate's record, for the active devices of `batch` */
export function currentCertificates(work: string, batch: string): Promise<Map<string, CertificateRecord>> {
  return withRegistry(work, async (r) => {
    const out = new Map<string, CertificateRecord>();
    const certs = new Map((await r.certificates({ batch })).map((c) => [c.serial, c]));
    for (const d of await r.listDevices(batch))
      if (d.state === "active" && d.certSerial) out.set(d.deviceId, certs.get(d.certSerial)!);
    return out;
  });
}

/** resource name -> the operation `pulumi preview --diff` plans for it (create, update, delete, ...) */
export function planOps(out: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const x of out.matchAll(/: \((\w[\w-]*)\)\n(?:\s+\[id=[^\]]*\]\n)?\s+\[urn=[^\]]*::([^\]:]+)\]/g))
    m.set(x[2]!, x[1]!);
  return m;
}

/** the CRL distribution-point URL a certificate (PEM) names */
export function cdpOf(pem: string): string {
  const out = openssl(["x509", "-noout", "-ext", "crlDistributionPoints"], pem).out;
  return /URI:(\S+)/.exec(out)![1]!;
}

/** the CRL (PEM) at a distribution point, fetched over HTTP from `fleet crl serve`'s server at the URL's path */
export async function fetchCrlPem(server: { url: string }, url: string): Promise<string> {
  const r = await fetch(`${server.url}${new URL(url).pathname}`);
  expect(r.status, url).toBe(200);
  return toPem("X509 CRL", Buffer.from(await r.arrayBuffer()));
}

/**
 * The crash-safety invariants (issue 5 point 5): every active device has exactly one live
 * certificate, it is the one the device holds, every certificate a device holds is recorded,
 * and the counts are exact.
 */
export async function checkInvariants(
  work: string,
  port: number,
  batch: string,
  expect_: { active: number; quarantined?: number },
): Promise<{ liveDer: Buffer[] }> {
  return withRegistry(work, async (reg) => {
    const counts = await reg.counts(batch);
    expect(counts.active).toBe(expect_.active);
    expect(counts.quarantined).toBe(expect_.quarantined ?? 0);
    expect(counts.pending + counts.attested + counts.issued + counts.installed).toBe(0);
    const devices = await reg.listDevices(batch, { limit: 1_000_000 });
    const live = await reg.certificates({ batch, status: ["live"], limit: 1_000_000 });
    const byDevice = new Map<string, Buffer[]>();
    for (const c of live) byDevice.set(c.deviceId, [...(byDevice.get(c.deviceId) ?? []), c.der]);
    const st = new StationClient({ port, poolSize: 2, timeoutMs: 30_000 });
    try {
      const active = devices.filter((d) => d.state === "active");
      for (let i = 0; i < active.length; i += 1000) {
        const part = active.slice(i, i + 1000);
        const status = await st.statusBatch(part.map((d) => d.deviceId));
        part.forEach((d, j) => {
          const mine = byDevice.get(d.deviceId) ?? [];
          expect(mine, `${d.deviceId} live certificates`).toHaveLength(1);
          const s = status[j]!;
          expect(s.ok, d.deviceId).toBe(true);
          if (s.ok)
            expect(s.value.chain[0]?.equals(mine[0]!), `${d.deviceId} holds its recorded certificate`).toBe(
              true,
            );
        });
      }
    } finally {
      await st.close();
    }
    for (const d of devices.filter((x) => x.state !== "active"))
      expect(
        byDevice.get(d.deviceId) ?? [],
        `${d.deviceId} (${d.state}) has no live certificate`,
      ).toHaveLength(0);
    return { liveDer: live.map((c) => c.der) };
  });
}

/** `openssl verify` of many leaves under root (trusted) and the issuing CA. */
export const verifyLeaves = (rootPem: string, issuingPem: string, leaves: Buffer[], crlPem?: string) =>
  verifyMany(rootPem, issuingPem, leaves, crlPem);
