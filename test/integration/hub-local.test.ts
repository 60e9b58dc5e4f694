/**
 * HubRegistration with the embedded local hub under the real engine (issue 11): a CaHierarchy
 * (root -> intermediate -> issuing), a batch enrolled from a device farm, and the registration;
 * then the hub (hub/local/server.ts) serves what the registration wrote and the farm's devices
 * connect over mutual TLS with their own keys. Refused: a device of a foreign CA, a client ID that
 * is not the certificate's device, a publish outside the device's prefix; a device decommissioned
 * by the next `up` has its live session closed and is refused after. OpenSSL checks the bundle and
 * the CRLs the hub holds (every CA of the chain). Refresh finds a registration removed at the hub
 * behind fleetguard's back and the next up puts it back; destroy empties the hub and keeps the
 * audit history.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  readRegistration,
  registrationPath,
  statePaths,
  writeRegistration,
} from "../../core/hubs/local-state";
import { openRegistry } from "../../core/registry";
import { StationClient } from "../../core/station/client";
import { connectDevices } from "../../core/station/connect";
import { type LocalHub, startLocalHub } from "../../hub/local/server";
import { openssl, tmpdir } from "../helpers/openssl";
import { PulumiStack, REPO } from "../helpers/pulumi";
import { connectDevice, waitFor } from "../hub/mqtt";
import { makePki } from "../hub/pki";
import { configureHubStack, FarmProc } from "./batch-helpers";

const PROGRAM = path.join(REPO, "test", "integration", "fixtures", "hub-program");
const id = (i: number) => `fg100-${String(i).padStart(7, "0")}`;

describe("HubRegistration with the local hub, real engine", () => {
  const work = tmpdir("fleetguard-hub-it-");
  const farm = new FarmProc(path.join(work, "farm"), 12);
  const stack = new PulumiStack(PROGRAM, "it-hub");
  const state = path.join(work, "hub");
  let hub: LocalHub | undefined;
  let station: StationClient;
  let hubCaPem = "";

  beforeAll(async () => {
    await farm.start();
    station = new StationClient({ port: farm.port, poolSize: 1, timeoutMs: 60_000 });
    await configureHubStack(stack, work, farm.port, 10);
  }, 240_000);

  afterAll(async () => {
    await hub?.close();
    await station?.close();
    await farm.stop();
    stack.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }, 120_000);

  const hubTarget = () => ({ host: "127.0.0.1", port: hub!.port, caPem: hubCaPem });

  it("up registers every device; the hub trusts the chain with a CRL for every CA; every device connects", async () => {
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(`${up.stdout}${up.stderr}`).toMatch(
      /10 active, 0 disabled at local hub 'hub' \(10 registered, 0 disabled this run\)/,
    );
    const out = await stack.outputs();
    expect(out.registration).toMatchObject({ registered: 10, active: 10, disabled: 0, failed: 0 });
    expect((out.registration as { caIds: string[] }).caIds).toHaveLength(1);

    hub = await startLocalHub({ stateDir: state, port: 0, reloadMs: 200 });
    hubCaPem = fs.readFileSync(hub.hubCaFile, "utf8");
    // the issuing CA and the chain above it (root, intermediate)
    expect(hub.stats()).toMatchObject({ cas: 3, devices: 10 });

    // OpenSSL, independently: the bundle and CRLs the hub holds accept a live device chain with
    // CRL checks on every CA of it (root, intermediate, issuing)
    const reg = await openRegistry(path.join(work, "registry.db"));
    const [c] = await reg.certificates({ deviceId: id(0), status: ["live"] });
    await reg.close();
    const leaf = path.join(work, "leaf.pem");
    fs.writeFileSync(
      leaf,
      `-----BEGIN CERTIFICATE-----\n${c!.der.toString("base64").replace(/.{64}/g, "$&\n")}\n-----END CERTIFICATE-----\n`,
    );
    const p = statePaths(state);
    const v = openssl(["verify", "-crl_check_all", "-CAfile", p.caBundle, "-CRLfile", p.crls, leaf]);
    expect(v.out).toMatch(/: OK/);
    expect(v.status).toBe(0);

    const r = await connectDevices(station, { hub: hubTarget(), first: 0, count: 12 });
    expect(r.connected).toBe(10);
    expect(r.refusedCount).toBe(0);
    expect(r.skipped).toBe(2);
    expect(hub.stats().admitted).toBeGreaterThanOrEqual(10);
  }, 300_000);

  it("refuses a device of a foreign CA, a client ID that is not the certificate's device, and a publish outside the device's prefix", async () => {
    const foreign = makePki("foreign").device("fg100-0000001");
    const a = await connectDevice(hub!.port, hubCaPem, foreign);
    expect(a.client).toBeUndefined();
    expect(hub!.stats().refused.tls).toBeGreaterThan(0);

    const spoof = await connectDevices(station, { hub: hubTarget(), devices: [id(2)], clientId: id(3) });
    expect(spoof.connected).toBe(0);
    expect(spoof.refused[0]).toMatchObject({ deviceId: id(2), stage: "connack" });

    const outside = await connectDevices(station, {
      hub: hubTarget(),
      devices: [id(4)],
      topic: "devices/fg100-0000005/telemetry",
    });
    expect(outside.connected).toBe(0);
    expect(hub!.stats().refused.acl).toBeGreaterThan(0);
  }, 120_000);

  it("a device decommissioned by the next up: its live session is closed and it is refused after; the others still connect", async () => {
    // device 9 holds a session open while the program drops it from the batch
    const held = connectDevices(station, { hub: hubTarget(), devices: [id(9)], holdMs: 90_000 });
    await waitFor(() => hub!.stats().sessions >= 1, 30_000, "the held session");
    await stack.setConfig("fleetguard:count", "9");
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(`${up.stdout}${up.stderr}`).toMatch(/register 0, disable 1 at local hub 'hub'/);
    expect((await stack.outputs()).registration).toMatchObject({ active: 9, disabled: 1 });
    const h = await held;
    expect(h.connected).toBe(1);
    expect(h.closedByHub).toBe(1);
    expect(hub!.stats().closedOnReload).toBeGreaterThanOrEqual(1);

    const again = await connectDevices(station, { hub: hubTarget(), devices: [id(9)] });
    expect(again.connected).toBe(0);
    const rest = await connectDevices(station, { hub: hubTarget(), first: 0, count: 9 });
    expect(rest.connected).toBe(9);

    // nothing outstanding: the preview shows no change
    const steps = await stack.previewSteps();
    expect(steps.filter((s) => s.op !== "same")).toEqual([]);
  }, 300_000);

  it("refresh finds a registration removed at the hub behind fleetguard's back; the next up registers it again", async () => {
    const file = registrationPath(state, "hub", "lot");
    const reg = readRegistration(file)!;
    const [sha] = Object.keys(reg.devices);
    delete reg.devices[sha!];
    writeRegistration(state, reg);
    const r = await stack.run(["refresh", "--yes", "--skip-preview"]);
    expect(`${r.stdout}${r.stderr}`).toMatch(/refresh: 1 certificate\(s\) not active at the hub/);
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(`${up.stdout}${up.stderr}`).toMatch(/register 1, disable 0 at local hub 'hub'/);
    expect(Object.keys(readRegistration(file)!.devices)).toHaveLength(9);
  }, 300_000);

  it("destroy removes every registration at the hub and keeps the audit history", async () => {
    const d = await stack.run(["destroy", "--yes", "--skip-preview"]);
    expect(d.status).toBe(0);
    const file = registrationPath(state, "hub", "lot");
    expect(Object.keys(readRegistration(file)?.devices ?? {})).toHaveLength(0);
    const reg = await openRegistry(path.join(work, "registry.db"));
    try {
      const counts = await reg.hubCounts("hub", "lot");
      expect(counts.active).toBe(0);
      expect(counts.removed).toBe(10);
      const rows = await reg.audit({ deviceId: id(0) });
      expect(rows.some((a) => (a.detail as { hub?: { to: string } } | null)?.hub?.to === "removed")).toBe(
        true,
      );
      expect((await reg.verify()).ok).toBe(true);
    } finally {
      await reg.close();
    }
  }, 300_000);
});
