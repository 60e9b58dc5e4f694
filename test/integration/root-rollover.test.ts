/**
 * A root rollover on the real engine (issue 12, point 3): the program raises the root's
 * `generation` from 1 to 2 and nothing else. `pulumi preview` says it in words and plans a new
 * root and a successor for every CA below it, the old tree untouched; `pulumi up` makes the new
 * root, cross-signed by the old one. Devices trust only the old root (its hash fused): the
 * RotationSchedule moves them in waves, each device first taking the new root as its second
 * trust anchor on a command it checks through the cross certificate, then its certificate under
 * the new tree. Every device connects to the local hub after every run. OpenSSL, given only the
 * old root as trust anchor, accepts a new device certificate through the cross certificate (the
 * cross certificate is self-issued, so the old root's pathLen 1 allows it), and with the CRLs of
 * every CA fetched over HTTP at the distribution points it accepts the new chains and refuses the
 * superseded ones. A preview of a new stack that declares generation 2 at once is refused.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Registry } from "../../core/registry/types";
import { StationClient } from "../../core/station/client";
import { connectDevices } from "../../core/station/connect";
import { deviceId } from "../../core/station/ids";
import { toPem } from "../../core/x509/pem";
import { startCrlServer } from "../../hub/crl/server";
import { type LocalHub, startLocalHub } from "../../hub/local/server";
import { openssl, tmpdir, verifyWithCrls } from "../helpers/openssl";
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
type Plan = { heldForHubs: number; resume: number };

const sha = (pem: string) =>
  crypto.createHash("sha256").update(new crypto.X509Certificate(pem).raw).digest("hex");

describe("root CA rollover with a cross certificate, real engine", () => {
  const work = tmpdir("fleetguard-root-rollover-it-");
  const farm = new FarmProc(path.join(work, "farm"), COUNT);
  const stack = new PulumiStack(PROGRAM, "it-root-rollover");
  const state = path.join(work, "hub");
  const crlDir = path.join(work, "crl");
  let hub: LocalHub | undefined;
  let station: StationClient;
  let cas: Cas;
  let cross: string;

  const registry = <T>(f: (r: Registry) => Promise<T>) => withRegistry(work, f);
  const current = () => currentCertificates(work, "lot");
  const connectAll = () =>
    connectDevices(station, {
      hub: { host: "127.0.0.1", port: hub!.port, caPem: fs.readFileSync(hub!.hubCaFile, "utf8") },
      first: 0,
      count: COUNT,
    });
  /** device -> the SHA-256 (hex) of the roots fused into it, from its STATUS */
  const anchors = async () => {
    const out = new Map<string, string[]>();
    for (let i = 0; i < COUNT; i++) {
      const id = deviceId("fg100", i);
      const s = await station.status(id);
      out.set(
        id,
        s.trustAnchors.map((a) => a.toString("hex")),
      );
    }
    return out;
  };
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

  it("generation 1: devices enrolled under the old root, which is their only trust anchor", async () => {
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(up.status).toBe(0);
    cas = (await stack.outputs()).cas as Cas;
    hub = await startLocalHub({ stateDir: state, port: 0, reloadMs: 200 });
    expect((await connectAll()).connected).toBe(COUNT);
    const a = await anchors();
    expect([...a.values()].every((x) => x.length === 1 && x[0] === sha(cas.root!.certificatePem))).toBe(true);
  }, 300_000);

  it("root generation 2: the preview says it, plans a new root and a successor below it, and leaves the old tree alone", async () => {
    await stack.setConfig("fleetguard:rootGeneration", "2");
    const pre = await stack.run(["preview", "--diff"]);
    const said = `${pre.stdout}${pre.stderr}`;
    expect(said).toMatch(/CA rollover of root 'root': generation 1 -> 2, cross-signed by generation 1/);
    expect(said).toMatch(/every CA below it gets a successor \(line\)/);
    const planned = planOps(pre.stdout);
    expect(planned.get("pki-root-g2")).toBe("create");
    expect(planned.get("pki-line-g2")).toBe("create");
    expect(planned.get("pki-root")).toBeUndefined();
    expect(planned.get("pki-line")).toBeUndefined();
  }, 300_000);

  it("up: the new root, cross-signed by the old one; OpenSSL accepts a new chain with only the old root trusted", async () => {
    const old = cas;
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(up.status, up.stdout).toBe(0);
    const out = await stack.outputs();
    cas = out.cas as Cas;
    cross = out.cross as string;
    expect(cas["root@g1"]!.fingerprintSha256).toBe(old.root!.fingerprintSha256);
    expect(cas["line@g1"]!.fingerprintSha256).toBe(old.line!.fingerprintSha256);
    expect(cas.root!.fingerprintSha256).not.toBe(old.root!.fingerprintSha256);
    expect(cas.line!.generation).toBe(2);
    const r1 = new crypto.X509Certificate(old.root!.certificatePem);
    const r2 = new crypto.X509Certificate(cas.root!.certificatePem);
    const x = new crypto.X509Certificate(cross);
    // the same subject, a new key; the cross certificate: the new key, issued by the old root
    expect(r2.subject).toBe(r1.subject);
    expect(r2.publicKey.equals(r1.publicKey)).toBe(false);
    expect(x.publicKey.equals(r2.publicKey)).toBe(true);
    expect(x.checkIssued(r1)).toBe(true);
    expect(x.verify(r1.publicKey)).toBe(true);
    // the successor issuing CA's CRL distribution point names the new root's CRL
    expect(cdpOf(cas.line!.certificatePem)).toBe("http://pki.rollover.example.com/crl/root-g2.crl");

    // a wave was staged: its new certificates are under the new tree
    const cur = await current();
    expect([...cur.values()].every((c) => c.issuer === old.line!.fingerprintSha256)).toBe(true);
    const staged = await registry(async (r) =>
      (await r.certificates({ batch: "lot", issuer: cas.line!.fingerprintSha256, status: ["live"] })).map(
        (c) => toPem("CERTIFICATE", c.der),
      ),
    );
    expect(staged.length).toBeGreaterThan(0);
    const dir = tmpdir("fleetguard-cross-");
    try {
      const write = (n: string, pem: string) => {
        fs.writeFileSync(path.join(dir, n), pem);
        return path.join(dir, n);
      };
      const leaf = write("leaf.pem", staged[0]!);
      const oldOnly = write("r1.pem", old.root!.certificatePem);
      const newOnly = write("r2.pem", cas.root!.certificatePem);
      const viaCross = write("via-cross.pem", `${cas.line!.certificatePem.trim()}\n${cross.trim()}\n`);
      const lineOnly = write("line.pem", cas.line!.certificatePem);
      const a = openssl(["verify", "-x509_strict", "-CAfile", oldOnly, "-untrusted", viaCross, leaf]);
      expect(a.status, a.out).toBe(0);
      const b = openssl(["verify", "-x509_strict", "-CAfile", newOnly, "-untrusted", lineOnly, leaf]);
      expect(b.status, b.out).toBe(0);
      // without the cross certificate the old root alone does not reach the new chain
      const c = openssl(["verify", "-CAfile", oldOnly, "-untrusted", lineOnly, leaf]);
      expect(c.status).not.toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect((await connectAll()).connected).toBe(COUNT);
  }, 300_000);

  it("each up moves at most one wave; a moved device trusts both roots; every device connects after every run", async () => {
    const g1 = cas["line@g1"]!.fingerprintSha256;
    const g2 = cas.line!.fingerprintSha256;
    let moved = 0;
    for (let run = 0; run < 8; run++) {
      const up = await stack.run(["up", "--yes", "--skip-preview"]);
      expect(up.status, up.stdout).toBe(0);
      const cur = await current();
      const now = [...cur.values()].filter((c) => c.issuer === g2).length;
      expect(now - moved).toBeLessThanOrEqual(WAVE);
      moved = now;
      expect([...cur.values()].every((c) => c.issuer === g1 || c.issuer === g2)).toBe(true);
      const c = await connectAll();
      expect(c.connected, JSON.stringify({ c, hub: hub!.stats() })).toBe(COUNT);
      const plan = ((await stack.outputs()).plans as Record<string, Plan>).lot!;
      if (moved === COUNT && plan.heldForHubs === 0 && plan.resume === 0) break;
    }
    expect(moved).toBe(COUNT);
    const a = await anchors();
    const both = [sha(cas["root@g1"]!.certificatePem), sha(cas.root!.certificatePem)].sort();
    for (const [id, x] of a) expect([...x].sort(), id).toEqual(both);
  }, 900_000);

  it("complete: OpenSSL with every CA's CRL over HTTP accepts the new chains and refuses the superseded ones; no changes left", async () => {
    const g1 = cas["line@g1"]!;
    const g2 = cas.line!;
    const { old, now } = await registry(async (r) => ({
      old: await r.certificates({ batch: "lot", issuer: g1.fingerprintSha256 }),
      now: await r.certificates({ batch: "lot", issuer: g2.fingerprintSha256, status: ["live"] }),
    }));
    expect(now).toHaveLength(COUNT);
    expect(old.every((c) => c.status === "revoked" && c.revocationReason === "superseded")).toBe(true);
    const server = await startCrlServer({ dir: crlDir, port: 0 });
    try {
      const nowPem = toPem("CERTIFICATE", now[0]!.der);
      const oldPem = toPem("CERTIFICATE", old[0]!.der);
      expect(cdpOf(nowPem)).toBe("http://pki.rollover.example.com/crl/line-g2.crl");
      const okNew = verifyWithCrls(nowPem, g2.chainPem, [
        await fetchCrlPem(server, cdpOf(nowPem)),
        await fetchCrlPem(server, cdpOf(g2.certificatePem)),
      ]);
      expect(okNew.ok, okNew.out).toBe(true);
      const revoked = verifyWithCrls(oldPem, g1.chainPem, [
        await fetchCrlPem(server, cdpOf(oldPem)),
        await fetchCrlPem(server, cdpOf(g1.certificatePem)),
      ]);
      expect(revoked.ok).toBe(false);
      expect(revoked.out).toMatch(/certificate revoked/);
    } finally {
      await server.close();
    }
    expect((await connectAll()).connected).toBe(COUNT);
    const same = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(same.status, same.stdout).toBe(0);
  }, 300_000);

  it("a new stack that declares root generation 2 at once is refused before anything is made", async () => {
    const fresh = new PulumiStack(PROGRAM, "it-root-rollover-fresh");
    try {
      const w = tmpdir("fleetguard-root-fresh-");
      await configureHubStack(fresh, w, farm.port, COUNT);
      await fresh.setConfig("fleetguard:rootGeneration", "2");
      const pre = await fresh.run(["preview"], { allowFail: true });
      expect(pre.status).not.toBe(0);
      const said = `${pre.stdout}${pre.stderr}`;
      expect(said).toMatch(
        /generation: got CA 'root' generation 1 kept as a predecessor, but it is not in this stack's state/,
      );
      expect(said).not.toMatch(/\n\s+at .+\(.+:\d+:\d+\)/); // no stack trace
      fs.rmSync(w, { recursive: true, force: true });
    } finally {
      fresh.cleanup();
    }
  }, 300_000);
});
