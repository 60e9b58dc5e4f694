/**
 * Revocation declared in the program, under the real engine (issue 12, points 4 and 5): a batch
 * enrolled from a device farm and registered with the embedded local hub; then a revocation file
 * the program reads names three devices. `pulumi preview` says the plan in words, `pulumi up`
 * revokes them in the registry, publishes the issuing CA's CRL with the reasons (OpenSSL reads
 * them), and the hub registration that depends on the batch disables them in the same run: the
 * local hub (hub/local/server.ts) refuses them while the others connect. A second preview shows no
 * change. A file naming a device outside the batch fails the preview with file:line:column and the
 * field. End of life: a device dropped from the batch is zeroized at the station, revoked, disabled
 * at the hub, and the registry keeps its history.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { statePaths } from "../../core/hubs/local-state";
import { openRegistry } from "../../core/registry";
import { StationClient } from "../../core/station/client";
import { connectDevices } from "../../core/station/connect";
import { type LocalHub, startLocalHub } from "../../hub/local/server";
import { openssl, tmpdir } from "../helpers/openssl";
import { PulumiStack, REPO } from "../helpers/pulumi";
import { FarmProc } from "./batch-helpers";

const PROGRAM = path.join(REPO, "test", "integration", "fixtures", "revocation-program");
const id = (i: number) => `fg100-${String(i).padStart(7, "0")}`;
const pemOf = (der: Buffer) =>
  `-----BEGIN CERTIFICATE-----\n${der.toString("base64").replace(/.{64}/g, "$&\n")}\n-----END CERTIFICATE-----\n`;

describe("revocation declared in the program, real engine", () => {
  const work = tmpdir("fleetguard-revocation-it-");
  const farm = new FarmProc(path.join(work, "farm"), 8);
  const stack = new PulumiStack(PROGRAM, "it-revocation");
  const state = path.join(work, "hub");
  const crlDir = path.join(work, "crl");
  const file = path.join(work, "revocations.yaml");
  let hub: LocalHub | undefined;
  let station: StationClient;
  let hubCaPem = "";
  const serials: Record<string, string> = {};

  beforeAll(async () => {
    await farm.start();
    station = new StationClient({ port: farm.port, poolSize: 1, timeoutMs: 60_000 });
    await stack.init();
    await stack.setConfig("fleetguard:count", "6");
    await stack.setConfig("fleetguard:stationPort", String(farm.port));
    await stack.setConfig("fleetguard:registry", path.join(work, "registry.db"));
    await stack.setConfig("fleetguard:crlDir", crlDir);
    await stack.setConfig("fleetguard:hubState", state);
  }, 240_000);

  afterAll(async () => {
    await hub?.close();
    await station?.close();
    await farm.stop();
    stack.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }, 120_000);

  const hubTarget = () => ({ host: "127.0.0.1", port: hub!.port, caPem: hubCaPem });

  it("up enrolls and registers every device; each connects to the local hub", async () => {
    await stack.run(["up", "--yes", "--skip-preview"]);
    expect((await stack.outputs()).registration).toMatchObject({ active: 6, disabled: 0, failed: 0 });
    const reg = await openRegistry(path.join(work, "registry.db"));
    for (let i = 0; i < 6; i++) serials[id(i)] = (await reg.certificates({ deviceId: id(i) }))[0]!.serial;
    await reg.close();
    hub = await startLocalHub({ stateDir: state, port: 0, reloadMs: 200 });
    hubCaPem = fs.readFileSync(hub.hubCaFile, "utf8");
    expect((await connectDevices(station, { hub: hubTarget(), first: 0, count: 6 })).connected).toBe(6);
  }, 300_000);

  it("a revocation file: preview says the plan in words, up revokes, the CRL has the reasons, the hub refuses the devices", async () => {
    fs.writeFileSync(
      file,
      [
        "# devices taken out of service",
        "revocations:",
        `  - device: ${id(1)}`,
        "    reason: keyCompromise",
        `  - device: ${id(2)}`,
        "    reason: keyCompromise",
        "    at: 2026-11-30T08:00:00Z",
        `  - device: ${id(3)}`,
        "    reason: cessationOfOperation",
        "",
      ].join("\n"),
    );
    await stack.setConfig("fleetguard:revocations", file);
    const preview = await stack.run(["preview"]);
    expect(`${preview.stdout}${preview.stderr}`).toMatch(
      /batch lot: enroll 0 devices, re-issue 0, decommission 0, revoke 3 devices \(keyCompromise 2, cessationOfOperation 1\)/,
    );

    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    const log = `${up.stdout}${up.stderr}`;
    expect(log).toMatch(/batch lot: revoked 3 device\(s\) as declared; CRL #\d+/);
    // the hub registration runs after the batch in the same up and disables the three
    expect(log).toMatch(/register 0, disable 3 at local hub 'hub'/);
    expect((await stack.outputs()).registration).toMatchObject({ active: 3, disabled: 3 });
    expect((await stack.outputs()).batch).toMatchObject({ counts: { active: 3, revoked: 3 } });

    // the issuing CA's one CRL (under its distribution point's name) lists them with their reasons
    const text = openssl([
      "crl",
      "-inform",
      "DER",
      "-in",
      path.join(crlDir, "line.crl"),
      "-noout",
      "-text",
    ]).out;
    const entry = (serial: string) =>
      new RegExp(
        `Serial Number: 0*${serial.toUpperCase().replace(/^0+/, "")}\\s*\\n\\s*Revocation Date: ([^\\n]+)\\n\\s*CRL entry extensions:\\s*\\n\\s*X509v3 CRL Reason Code:\\s*\\n\\s*([^\\n]+)`,
      ).exec(text);
    expect(entry(serials[id(1)]!)?.[2]?.trim()).toBe("Key Compromise");
    expect(entry(serials[id(2)]!)?.[1]?.trim()).toBe("Nov 30 08:00:00 2026 GMT");
    expect(entry(serials[id(2)]!)?.[2]?.trim()).toBe("Key Compromise");
    expect(entry(serials[id(3)]!)?.[2]?.trim()).toBe("Cessation Of Operation");
    expect(text.match(/Serial Number:/g)).toHaveLength(3);

    // OpenSSL with the hub's bundle and CRLs (every CA of the chain) refuses a revoked device
    const reg = await openRegistry(path.join(work, "registry.db"));
    const [revoked] = await reg.certificates({ deviceId: id(1) });
    const [live] = await reg.certificates({ deviceId: id(0), status: ["live"] });
    await reg.close();
    const p = statePaths(state);
    const check = (der: Buffer) => {
      const leaf = path.join(work, "leaf.pem");
      fs.writeFileSync(leaf, pemOf(der));
      return openssl(["verify", "-crl_check_all", "-CAfile", p.caBundle, "-CRLfile", p.crls, leaf]).out;
    };
    expect(check(revoked!.der)).toMatch(/certificate revoked/);
    expect(check(live!.der)).toMatch(/: OK/);

    // the local hub refuses the revoked devices and admits the others
    const gone = await connectDevices(station, { hub: hubTarget(), devices: [id(1), id(2), id(3)] });
    expect(gone.connected).toBe(0);
    const rest = await connectDevices(station, { hub: hubTarget(), devices: [id(0), id(4), id(5)] });
    expect(rest.connected).toBe(3);

    // nothing outstanding: the second preview shows no change
    const steps = await stack.previewSteps();
    expect(steps.filter((s) => s.op !== "same")).toEqual([]);
  }, 400_000);

  it("a file naming a device outside the batch fails the preview with file:line:column and the field", async () => {
    const bad = path.join(work, "bad.yaml");
    fs.writeFileSync(
      bad,
      `- device: ${id(1)}\n  reason: keyCompromise\n- device: ${id(42)}\n  reason: keyCompromise\n`,
    );
    await stack.setConfig("fleetguard:revocations", bad);
    const r = await stack.run(["preview"], { allowFail: true });
    expect(r.status).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toContain(
      `bad.yaml:3:11: revocations[1].device: got "${id(42)}", want a device of batch lot (fg100-0000000 .. fg100-0000005)`,
    );
    await stack.setConfig("fleetguard:revocations", file);
  }, 200_000);

  it("end of life: a device dropped from the batch is zeroized, revoked, disabled at the hub; the registry keeps its history", async () => {
    await stack.setConfig("fleetguard:count", "5");
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(`${up.stdout}${up.stderr}`).toMatch(/register 0, disable 1 at local hub 'hub'/);
    expect((await stack.outputs()).registration).toMatchObject({ active: 2, disabled: 4 });
    // zeroized at the station (the firmware's DECOMMISSION)
    const [st] = await station.statusBatch([id(5)]);
    expect(st).toMatchObject({ ok: true, value: { lifecycle: "decommissioned" } });
    const reg = await openRegistry(path.join(work, "registry.db"));
    expect((await reg.getDevice(id(5)))!.state).toBe("decommissioned");
    const [c] = await reg.certificates({ deviceId: id(5) });
    expect(c).toMatchObject({ status: "revoked", revocationReason: "cessationOfOperation" });
    const hubRecs = await reg.hubRegistrations("hub", { deviceId: id(5) });
    expect(hubRecs.map((h) => h.status)).toEqual(["disabled"]);
    // its whole history stays: enrollment steps, the hub registration and its disabling, the decommission
    const history = await reg.audit({ deviceId: id(5) });
    expect(history.map((a) => a.to)).toEqual(
      expect.arrayContaining(["pending", "issued", "active", "decommissioned"]),
    );
    expect(history.filter((a) => (a.detail as { hub?: unknown } | null)?.hub)).not.toHaveLength(0);
    expect((await reg.verify()).ok).toBe(true);
    await reg.close();
    // a revoked device stays revoked (it is not zeroized: it is still in the batch)
    expect((await connectDevices(station, { hub: hubTarget(), devices: [id(5)] })).connected).toBe(0);
    const steps = await stack.previewSteps();
    expect(steps.filter((s) => s.op !== "same")).toEqual([]);
  }, 400_000);
});
