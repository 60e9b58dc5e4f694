// CONNECT against fleetguard's own local hub (hub/local/server.ts, startLocalHub): devices
// enrolled by the real engine (SQLite registry), the hub's state written by its driver
// (core/hubs/local.ts: the issuing CA with the CRLs of its chain, the batch's certificates), the
// devices verifying the hub with the hub-ca.pem it writes. The aedes broker of connect.test.ts
// checks the client against an independent broker; this is the path the product takes.
import * as crypto from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { issueCa, signCrl } from "../../../core/ca";
import type { IssuerMaterial } from "../../../core/enroll/profile";
import { LocalHubDriver } from "../../../core/hubs/local";
import type { TrustedCa } from "../../../core/hubs/types";
import { openRegistry } from "../../../core/registry";
import { sha256Hex } from "../../../core/registry/chain";
import type { Registry } from "../../../core/registry/types";
import { StationClient } from "../../../core/station/client";
import { connectDevices } from "../../../core/station/connect";
import { deviceId } from "../../../core/station/ids";
import { loadPrivateKey } from "../../../core/x509/keys";
import { pemBlocks } from "../../../core/x509/pem";
import type { RunningFarm } from "../../../devices/farm/serve";
import { type LocalHub, startLocalHub } from "../../../hub/local/server";
import { batchSpec, engineOf } from "../../core/enroll/helpers";
import { farmFor, tempDir } from "./helpers";
import { hubPki } from "./mqtt-broker";

const id = (i: number) => deviceId("fg100", i);

/** root -> issuing (P-256), with the issuer material the engine signs with and the CA as a hub trusts it. */
function hierarchy(name: string): { material: IssuerMaterial; trusted: TrustedCa } {
  const root = issueCa({
    name: "root",
    role: "root",
    algorithm: "ecdsa-p256",
    subject: { commonName: `${name} Root` },
    validityDays: 3650,
    pathLen: 1,
  });
  const iss = issueCa(
    {
      name: "iss",
      role: "issuing",
      algorithm: "ecdsa-p256",
      subject: { commonName: `${name} Issuing` },
      validityDays: 730,
    },
    { name: "root", ...root },
  );
  const chain = pemBlocks(iss.chainPem, "CERTIFICATE", "chain");
  const fingerprint = crypto.createHash("sha256").update(chain[0]!).digest("hex");
  return {
    material: {
      certificate: chain[0]!,
      chain: chain.slice(1),
      key: loadPrivateKey(iss.keyPem!, "key"),
      fingerprint,
    },
    trusted: {
      name: "iss",
      fingerprint,
      certificatePem: iss.certificatePem,
      chainPem: iss.chainPem,
      crlPems: [signCrl(iss, {}).crlPem, signCrl(root, {}).crlPem],
    },
  };
}

describe("CONNECT to the local hub", () => {
  const dir = tempDir("fg-connect-hub-");
  const ours = hierarchy("Trusted");
  const foreign = hierarchy("Foreign");
  let registry: Registry;
  let farm: RunningFarm;
  let station: StationClient;
  let hub: LocalHub;
  let caPem: string;
  const target = () => ({ host: "127.0.0.1", port: hub.port, caPem });

  beforeAll(async () => {
    registry = await openRegistry(join(dir.path, "registry.db"));
    farm = await farmFor(join(dir.path, "farm"), { count: 50 });
    station = new StationClient({ port: farm.port });
    // 0..7 registered at the hub; 8..9 under a CA the hub does not trust; 10..11 under the
    // trusted CA but not registered
    await engineOf(
      registry,
      station,
      ours.material,
      batchSpec({ name: "lot", firstSerial: 0, count: 8 }),
    ).converge();
    await engineOf(
      registry,
      station,
      foreign.material,
      batchSpec({ name: "alien", firstSerial: 8, count: 2 }),
    ).converge();
    await engineOf(
      registry,
      station,
      ours.material,
      batchSpec({ name: "extra", firstSerial: 10, count: 2 }),
    ).converge();
    const hubDir = join(dir.path, "hub");
    const driver = new LocalHubDriver({ stateDir: hubDir, registration: "local", batch: "lot" });
    await driver.ensureTrust([ours.trusted]);
    const certs = await registry.certificates({ batch: "lot", status: ["live"], limit: 100 });
    const outs = await driver.register(
      certs.map((c) => ({
        deviceId: c.deviceId,
        batch: c.batch,
        serial: c.serial,
        der: c.der,
        sha256: sha256Hex(c.der),
        issuer: c.issuer,
      })),
    );
    expect(outs.every((o) => o.ok)).toBe(true);
    await driver.flush();
    await driver.close();
    hub = await startLocalHub({ stateDir: hubDir, port: 0 });
    caPem = readFileSync(hub.hubCaFile, "utf8");
  }, 60_000);

  afterAll(async () => {
    await station?.close();
    await hub?.close();
    await farm?.close();
    await registry?.close();
    dir.remove();
  });

  it("registered devices connect and publish; a foreign CA is refused at TLS, an unregistered certificate at CONNACK", async () => {
    const admitted0 = hub.stats().admitted;
    const r = await connectDevices(station, { hub: target(), first: 0, count: 20, concurrency: 4 });
    expect(r).toMatchObject({ attempted: 12, connected: 8, refusedCount: 4, skipped: 8 });
    const by = new Map(r.refused.map((x) => [x.deviceId, x]));
    for (const i of [8, 9])
      expect(by.get(id(i))).toEqual({
        deviceId: id(i),
        stage: "tls",
        reason:
          "hub closed the connection after the handshake without a CONNACK (device certificate not accepted)",
      });
    for (const i of [10, 11])
      expect(by.get(id(i))).toEqual({
        deviceId: id(i),
        stage: "connack",
        reason: "return code 5 (not authorized)",
      });
    expect(hub.stats().admitted - admitted0).toBe(8);
  });

  it("a publish outside the device's own prefix gets no PUBACK (the hub closes the session)", async () => {
    const r = await connectDevices(station, {
      hub: target(),
      devices: [id(0)],
      topic: "devices/someone-else/telemetry",
    });
    expect(r.refused).toEqual([
      { deviceId: id(0), stage: "puback", reason: "connection closed before the PUBACK" },
    ]);
  });

  it("a device refuses a hub whose certificate does not chain to the CA it was given", async () => {
    const other = hubPki(dir.path, "Impostor");
    const r = await connectDevices(station, {
      hub: { ...target(), caPem: other.caPem },
      devices: [id(0), id(1)],
    });
    expect(r.reasons).toEqual([
      {
        stage: "tls",
        reason: "hub certificate does not chain to the hub CA (device refused the hub)",
        count: 2,
      },
    ]);
  });
});
