/**
 * An issuing-CA rollover on the real engine (issue 12, point 3): the program raises the issuing
 * CA's `generation` from 1 to 2 and nothing else. `pulumi preview` says it in words; `pulumi up`
 * creates the successor (new key, same subject) and keeps the predecessor; the local hub trusts
 * both during the overlap; the RotationSchedule moves the batch's devices to the successor in
 * waves no larger than its fraction, each new certificate registered at the hub before the device
 * switches; every device connects after every run; once the last device has moved, every
 * predecessor certificate is revoked (superseded) on the predecessor's own CRL, the hub stops
 * trusting the predecessor, and a preview shows no changes. OpenSSL checks both chains with the
 * CRLs of every CA, fetched over HTTP at the certificates' distribution points. Raising the generation again plans the predecessor's retirement.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { statePaths } from "../../core/hubs/local-state";
import type { Registry } from "../../core/registry/types";
import { StationClient } from "../../core/station/client";
import { connectDevices } from "../../core/station/connect";
import { toPem } from "../../core/x509/pem";
import { startCrlServer } from "../../hub/crl/server";
import { type LocalHub, startLocalHub } from "../../hub/local/server";
import { tmpdir, verifyWithCrls } from "../helpers/openssl";
import { PulumiStack, REPO } from "../helpers/pulumi";
import {
  cdpOf,
  configureHubStack,
  currentCertificates,
  FarmProc,
  fetchCrlPem,
  planOps,
  withRegistry,
} from "./batch-helpers";

const PROGRAM = path.join(REPO, "test", "integration", "fixtures", "rollover-program");
const COUNT = 20;
const WAVE = 5; // maxWaveFraction 0.25 of 20

type Cas = Record<
  string,
  { certificatePem: string; chainPem: string; fingerprintSha256: string; generation?: number }
>;
type Plan = {
  rollover: { generation: number; predecessor: boolean; devices: number };
  heldForHubs: number;
  resume: number;
};

describe("CA rollover of an issuing CA, real engine", () => {
  const work = tmpdir("fleetguard-rollover-it-");
  const farm = new FarmProc(path.join(work, "farm"), COUNT);
  const stack = new PulumiStack(PROGRAM, "it-rollover");
  const state = path.join(work, "hub");
  const crlDir = path.join(work, "crl");
  let hub: LocalHub | undefined;
  let station: StationClient;
  let cas: Cas;
  const hubLog: string[] = [];

  const registry = <T>(f: (r: Registry) => Promise<T>) => withRegistry(work, f);
  /** device -> its current certificate record */
  const current = () => currentCertificates(work, "lot");
  const connectAll = async () => {
    const r = await connectDevices(station, {
      hub: { host: "127.0.0.1", port: hub!.port, caPem: fs.readFileSync(hub!.hubCaFile, "utf8") },
      first: 0,
      count: COUNT,
    });
    return r;
  };
  /** openssl verify -crl_check_all of a leaf (DER) against a chain, with CRLs (PEM) */
  const verify = (leaf: Buffer, chainPem: string, crls: string[]) =>
    verifyWithCrls(toPem("CERTIFICATE", leaf), chainPem, crls);
  const fetchCrl = fetchCrlPem;
  /** the distribution-point URL a certificate (DER) names */
  const cdpOfDer = (der: Buffer): string => cdpOf(toPem("CERTIFICATE", der));

  beforeAll(async () => {
    await farm.start();
    station = new StationClient({ port: farm.port, poolSize: 1, timeoutMs: 60_000 });
    await configureHubStack(stack, work, farm.port, COUNT);
  }, 240_000);

  afterAll(async () => {
    await hub?.close();
    await station?.close();
    await farm.stop();
    stack.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }, 120_000);

  it("generation 1: enroll, register at the hub, every device connects; nothing to roll over", async () => {
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(up.stdout).toMatch(/nightly-lot created/);
    cas = (await stack.outputs()).cas as Cas;
    expect(Object.keys(cas).sort()).toEqual(["line", "root"]);
    hub = await startLocalHub({ stateDir: state, port: 0, reloadMs: 200, log: (m) => hubLog.push(m) });
    expect(hub.stats()).toMatchObject({ cas: 2, devices: COUNT });
    const r = await connectAll();
    expect(r.connected).toBe(COUNT);
    const same = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(same.status, same.stdout).toBe(0);
    expect(same.stdout).toMatch(/CA rollover: none/);
  }, 300_000);

  it("generation 2: preview says the rollover; up creates the successor beside the predecessor and stages the first wave at the hub", async () => {
    await stack.setConfig("fleetguard:generation", "2");
    const pre = await stack.run(["preview", "--diff"]);
    // the program says it (on stderr, where the CLI writes a program's messages)
    expect(`${pre.stdout}${pre.stderr}`).toMatch(/CA rollover of 'line': generation 1 -> 2/);
    const planned = planOps(pre.stdout);
    expect(planned.get("pki-line-g2")).toBe("create");
    expect(planned.get("pki-line")).toBeUndefined(); // the predecessor stays as it is
    expect(planned.get("pki-root")).toBeUndefined();

    const g1 = cas.line!;
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(up.stdout).toMatch(/pki-line-g2 created/);
    expect(up.stdout).toMatch(/CA rollover of 'line': devices still hold certificates of generation 1/);
    cas = (await stack.outputs()).cas as Cas;
    expect(cas["line@g1"]!.fingerprintSha256).toBe(g1.fingerprintSha256);
    expect(cas.line!.fingerprintSha256).not.toBe(g1.fingerprintSha256);
    expect(cas.line!.generation).toBe(2);
    // the same subject, another key
    const a = new crypto.X509Certificate(g1.certificatePem);
    const b = new crypto.X509Certificate(cas.line!.certificatePem);
    expect(b.subject).toBe(a.subject);
    expect(b.publicKey.equals(a.publicKey)).toBe(false);
    // the hub trusts both issuing CAs (and the root) during the overlap
    await waitFor(() => hub!.stats().cas === 3);
    const cur = await current();
    expect([...cur.values()].every((c) => c.issuer === g1.fingerprintSha256)).toBe(true);
    // the first wave: new certificates issued, recorded and registered at the hub, not yet installed
    const staged = await registry(async (r) =>
      (await r.listDevices("lot")).filter((d) => d.state === "issued"),
    );
    expect(staged).toHaveLength(WAVE);
    expect((await connectAll()).connected).toBe(COUNT);
  }, 300_000);

  it("each up moves at most one wave, registered at the hub before the devices switch; every device connects after every run", async () => {
    const g1 = cas["line@g1"]!.fingerprintSha256;
    const g2 = cas.line!.fingerprintSha256;
    let moved = 0;
    for (let run = 0; run < 8; run++) {
      const up = await stack.run(["up", "--yes", "--skip-preview"]);
      expect(up.status).toBe(0);
      const cur = await current();
      const now = [...cur.values()].filter((c) => c.issuer === g2).length;
      expect(now - moved).toBeLessThanOrEqual(WAVE);
      moved = now;
      expect([...cur.values()].every((c) => c.issuer === g1 || c.issuer === g2)).toBe(true);
      // a device on its new certificate is one the hub holds: all connect
      const c = await connectAll();
      expect(c.connected, JSON.stringify({ c, hub: hub!.stats(), log: hubLog.slice(-8) })).toBe(COUNT);
      const plan = ((await stack.outputs()).plans as Record<string, Plan>).lot!;
      if (moved === COUNT && plan.heldForHubs === 0 && plan.resume === 0) break;
    }
    expect(moved).toBe(COUNT);
  }, 900_000);

  it("complete: every predecessor certificate is revoked on its own CRL, the hub drops the predecessor, OpenSSL accepts the new chains, no changes left", async () => {
    const g1 = cas["line@g1"]!;
    const g2 = cas.line!;
    const { old, now } = await registry(async (r) => ({
      old: await r.certificates({ batch: "lot", issuer: g1.fingerprintSha256 }),
      now: await r.certificates({ batch: "lot", issuer: g2.fingerprintSha256, status: ["live"] }),
    }));
    expect(now).toHaveLength(COUNT);
    expect(old.length).toBeGreaterThanOrEqual(COUNT);
    expect(old.every((c) => c.status === "revoked" && c.revocationReason === "superseded")).toBe(true);
    // each CA's CRL under its own distribution point (line.crl generation 1's, line-g2.crl
    // generation 2's), fetched over HTTP at the URLs the certificates name
    expect(cdpOfDer(now[0]!.der)).toBe("http://pki.rollover.example.com/crl/line-g2.crl");
    expect(cdpOfDer(old[0]!.der)).toBe("http://pki.rollover.example.com/crl/line.crl");
    const server = await startCrlServer({ dir: crlDir, port: 0 });
    try {
      const issuingCdp = cdpOf;
      const rootCrl = await fetchCrl(server, issuingCdp(g2.certificatePem));
      const okNew = verify(now[0]!.der, g2.chainPem, [
        await fetchCrl(server, cdpOfDer(now[0]!.der)),
        rootCrl,
      ]);
      expect(okNew.ok, okNew.out).toBe(true);
      const revoked = verify(old[0]!.der, g1.chainPem, [
        await fetchCrl(server, cdpOfDer(old[0]!.der)),
        rootCrl,
      ]);
      expect(revoked.ok).toBe(false);
      expect(revoked.out).toMatch(/certificate revoked/);
    } finally {
      await server.close();
    }
    // the hub trusts the successor alone once no live certificate is the predecessor's
    await waitFor(() => hub!.stats().cas === 2);
    const bundle = fs.readFileSync(statePaths(state).caBundle, "utf8");
    expect(bundle).toContain(g2.certificatePem.trim().split("\n")[1]!);
    expect(bundle).not.toContain(g1.certificatePem.trim().split("\n")[1]!);
    expect((await connectAll()).connected).toBe(COUNT);
    const same = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(same.status, same.stdout).toBe(0);
    expect(same.stdout).toMatch(/CA rollover: complete, every device under generation 2/);
  }, 300_000);

  it("generation 3 plans the retirement of generation 1 and a successor, and nothing else", async () => {
    await stack.setConfig("fleetguard:generation", "3");
    const pre = await stack.run(["preview", "--diff"]);
    expect(`${pre.stdout}${pre.stderr}`).toMatch(/CA rollover of 'line': generation 2 -> 3/);
    const planned = planOps(pre.stdout);
    expect(planned.get("pki-line-g3")).toBe("create");
    expect(planned.get("pki-line")).toBe("delete");
    expect(planned.get("pki-line-g2")).toBeUndefined();
    await stack.setConfig("fleetguard:generation", "2");
  }, 300_000);
});

async function waitFor(f: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error("timed out waiting for the hub");
    await new Promise((r) => setTimeout(r, 100));
  }
}
