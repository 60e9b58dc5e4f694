/**
 * An intermediate CA revoked with everything under it, from the program (issue 12, point 4), on
 * the real engine with the local hub: root -> intermediate 'mfg' -> issuing 'line' -> a batch.
 * Declaring `revoked: { reason: "cACompromise" }` on 'mfg' and running `pulumi up` puts mfg's
 * certificate on the root's CRL (one CRL, its cRLNumber sequence continued), revokes every device
 * of the batch under it (reason cACompromise, on the issuing CA's CRL), and the hub refuses them
 * all in the same run. OpenSSL with the CRLs of every CA refuses a device chain. A program that
 * then drops the declaration is refused: a revoked CA is never reinstated.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crlEntriesOf, crlFilesOf } from "../../core/enroll/crl";
import { openRegistry } from "../../core/registry";
import { StationClient } from "../../core/station/client";
import { connectDevices } from "../../core/station/connect";
import { toPem } from "../../core/x509/pem";
import { type LocalHub, startLocalHub } from "../../hub/local/server";
import { tmpdir, verifyWithCrls } from "../helpers/openssl";
import { PulumiStack, REPO } from "../helpers/pulumi";
import { configureHubStack, FarmProc } from "./batch-helpers";

const PROGRAM = path.join(REPO, "test", "integration", "fixtures", "hub-program");
const COUNT = 8;
type Cas = Record<
  string,
  { certificatePem: string; chainPem: string; fingerprintSha256: string; crlPem: string }
>;

describe("an intermediate CA revoked with everything under it, real engine", () => {
  const work = tmpdir("fleetguard-ca-revoke-it-");
  const farm = new FarmProc(path.join(work, "farm"), COUNT);
  const stack = new PulumiStack(PROGRAM, "it-ca-revoke");
  const state = path.join(work, "hub");
  const crlDir = path.join(work, "crl");
  let hub: LocalHub | undefined;
  let station: StationClient;
  let cas: Cas;

  const connectAll = () =>
    connectDevices(station, {
      hub: { host: "127.0.0.1", port: hub!.port, caPem: fs.readFileSync(hub!.hubCaFile, "utf8") },
      first: 0,
      count: COUNT,
    });
  const serialOf = (pem: string) => new crypto.X509Certificate(pem).serialNumber.toLowerCase();
  const crlSerials = (fp: string) =>
    crlEntriesOf(fs.readFileSync(crlFilesOf(crlDir, fp).der)).map((e) => e.serial.replace(/^0+/, ""));

  beforeAll(async () => {
    await farm.start();
    station = new StationClient({ port: farm.port, poolSize: 1, timeoutMs: 60_000 });
    await configureHubStack(stack, work, farm.port, COUNT);
    await stack.run(["up", "--yes", "--skip-preview"]);
    cas = (await stack.outputs()).cas as Cas;
    hub = await startLocalHub({ stateDir: state, port: 0, reloadMs: 200 });
    expect((await connectAll()).connected).toBe(COUNT);
  }, 300_000);

  afterAll(async () => {
    await hub?.close();
    await station?.close();
    await farm.stop();
    stack.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }, 120_000);

  it("up puts the intermediate on the root's CRL, revokes every device under it, and the hub refuses them", async () => {
    const mfgSerial = serialOf(cas.mfg!.certificatePem).replace(/^0+/, "");
    expect(crlSerials(cas.root!.fingerprintSha256)).not.toContain(mfgSerial);
    await stack.setConfig("fleetguard:revokeMfg", { reason: "cACompromise" });
    const pre = await stack.run(["preview"]);
    expect(pre.stdout).toMatch(/revoke 8/);
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(up.status).toBe(0);
    // the root's one CRL lists mfg, with the reason
    const rootEntries = crlEntriesOf(fs.readFileSync(crlFilesOf(crlDir, cas.root!.fingerprintSha256).der));
    const e = rootEntries.find((x) => x.serial.replace(/^0+/, "") === mfgSerial);
    expect(e?.reason).toBe("cACompromise");
    // every device of the batch under it is revoked, its certificate on the issuing CA's CRL
    const reg = await openRegistry(path.join(work, "registry.db"));
    try {
      const devs = await reg.listDevices("lot");
      expect(devs).toHaveLength(COUNT);
      expect(devs.every((d) => d.state === "revoked")).toBe(true);
      const certs = await reg.certificates({ batch: "lot" });
      expect(certs.every((c) => c.status === "revoked" && c.revocationReason === "cACompromise")).toBe(true);
      const onLine = new Set(crlSerials(cas.line!.fingerprintSha256));
      for (const c of certs) expect(onLine.has(c.serial.replace(/^0+/, ""))).toBe(true);
      // OpenSSL with every CA's CRL refuses a device chain (the intermediate is revoked)
      const crls = [cas.root!, cas.mfg!, cas.line!].map((c) =>
        fs.readFileSync(crlFilesOf(crlDir, c.fingerprintSha256).pem, "utf8"),
      );
      const v = verifyWithCrls(toPem("CERTIFICATE", certs[0]!.der), cas.line!.chainPem, crls);
      expect(v.ok).toBe(false);
      expect(v.out).toMatch(/certificate revoked/);
    } finally {
      await reg.close();
    }
    // the hub, in the same run: no device connects
    await new Promise((r) => setTimeout(r, 1500));
    const r = await connectAll();
    expect(r.connected).toBe(0);
    const same = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(same.status, same.stdout).toBe(0);
  }, 300_000);

  it("a program that drops the revocation is refused with the field named: a revoked CA is never reinstated", async () => {
    await stack.run(["config", "rm", "fleetguard:revokeMfg"]);
    const pre = await stack.run(["preview"], { allowFail: true });
    expect(pre.status).not.toBe(0);
    expect(`${pre.stdout}${pre.stderr}`).toMatch(
      /revoked: got none for CA 'mfg', which is revoked, want it kept/,
    );
    expect(`${pre.stdout}${pre.stderr}`).not.toMatch(/\n\s+at .*\.(ts|js):\d+/);
  }, 300_000);
});
