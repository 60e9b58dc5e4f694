/**
 * The local hub for real: aedes on node:tls started on a free loopback port, registrations
 * written by the driver, devices connecting with mqtt.js (an independent client) with their own
 * key and chain, OpenSSL as the independent verifier of the bundles the hub writes.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalHubDriver } from "../../core/hubs/local";
import { emptyRegistration, statePaths, writeRegistration } from "../../core/hubs/local-state";
import { type LocalHub, startLocalHub } from "../../hub/local/server";
import { openssl, tmpdir } from "../helpers/openssl";
import { type Attempt, connectDevice, waitFor } from "./mqtt";
import { makePki, type TestDevice } from "./pki";

const dir = tmpdir("fleetguard-hub-");
const logs: string[] = [];
let hub: LocalHub;
let hubCa: string;
const open: Attempt[] = [];

const acme = makePki("acme");
const foreign = makePki("foreign");
const driver = new LocalHubDriver({ stateDir: dir, registration: "demo", batch: "b1" });
const [d1, d2, d3, unregistered] = ["fg100-1", "fg100-2", "fg100-3", "fg100-4"].map((id) =>
  acme.device(id),
) as [TestDevice, TestDevice, TestDevice, TestDevice];

async function connect(device: TestDevice, clientId?: string): Promise<Attempt> {
  const a = await connectDevice(hub.port, hubCa, device, clientId);
  if (a.client) open.push(a);
  return a;
}

beforeAll(async () => {
  await driver.ensureTrust([acme.trusted()]);
  await driver.register([d1.cert, d2.cert, d3.cert]);
  await driver.flush();
  hub = await startLocalHub({ stateDir: dir, port: 0, reloadMs: 200, log: (l) => logs.push(l) });
  hubCa = fs.readFileSync(hub.hubCaFile, "utf8");
}, 30_000);

afterAll(async () => {
  if (process.env.HUB_LOGS) console.log(logs.join("\n"));
  for (const a of open) a.client?.end(true);
  await hub?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("the local hub admits registered devices only", () => {
  it("a registered device connects, publishes and subscribes under its own prefix", async () => {
    const a = await connect(d1);
    expect(a.error).toBeUndefined();
    const c = a.client!;
    const granted = await c.subscribeAsync("devices/fg100-1/cmd/#", { qos: 1 });
    expect(granted.map((g) => g.qos)).toEqual([1]);
    const got = new Promise<string>((resolve) =>
      c.once("message", (t, p) => resolve(`${t} ${p.toString()}`)),
    );
    await c.publishAsync("devices/fg100-1/cmd/ping", "hello", { qos: 1 }); // resolves on PUBACK
    expect(await got).toBe("devices/fg100-1/cmd/ping hello");
    expect(hub.stats()).toMatchObject({ sessions: 1, admitted: 1 });
  });

  it("refuses a device of a foreign CA at the TLS handshake", async () => {
    const before = hub.stats().refused.tls;
    const a = await connect(foreign.device("fg100-1"));
    expect(a.client).toBeUndefined();
    expect(a.error).toMatch(/unknown ca|certificate|closed|ECONNRESET|socket hang up/i);
    await waitFor(() => hub.stats().refused.tls > before, 10_000, "the hub to count the TLS refusal");
    expect(logs.some((l) => /^hub: refused TLS.*: certificate refused \(/.test(l))).toBe(true);
  });

  it("refuses a certificate of a trusted CA that no registration lists (CONNACK 5)", async () => {
    const a = await connect(unregistered);
    expect(a.code).toBe(5);
    expect(a.error).toMatch(/Not authorized/i);
    expect(logs).toContain("hub: refused 'fg100-4': certificate not registered");
  });

  it("refuses a client ID that is not the certificate's device (CONNACK 2)", async () => {
    const a = await connect(d2, "fg100-1");
    expect(a.code).toBe(2);
    expect(a.error).toMatch(/Identifier rejected/i);
    expect(logs).toContain("hub: refused 'fg100-1': client ID is not the certificate's device 'fg100-2'");
  });

  it("answers a subscribe outside the prefix with 0x80 and closes the session on a publish outside it", async () => {
    const a = await connect(d2);
    const c = a.client!;
    // mqtt.js rejects a SUBACK that carries a failure code; the packet is on the error
    const granted = await c.subscribeAsync(["devices/fg100-1/#", "#", "devices/fg100-2/x"], { qos: 0 }).then(
      () => [],
      (e: { packet?: { granted?: number[] } }) => e.packet?.granted ?? [],
    );
    expect(granted).toEqual([128, 128, 0]);
    const closed = new Promise<void>((resolve) => c.once("close", () => resolve()));
    c.publish("devices/fg100-1/telemetry", "spoof", { qos: 1 });
    await closed;
    expect(hub.stats().refused.acl).toBe(3);
    expect(logs).toContain(
      "hub: refused 'fg100-2': publish to 'devices/fg100-1/telemetry' outside its prefix (session closed)",
    );
  });
});

describe("revocation and trust reload without restart", () => {
  it("closes the live session of a revoked device within seconds and refuses it after", async () => {
    const a = await connect(d3);
    expect(a.error).toBeUndefined();
    let closed = false;
    a.client!.once("close", () => {
      closed = true;
    });
    acme.revoke(d3.serial);
    await driver.ensureTrust([acme.trusted()]); // new CRL of the issuing CA
    await driver.disable([{ deviceId: d3.id, serial: d3.serial, remoteId: d3.sha256 }]);
    await driver.flush();
    await waitFor(() => closed, 20_000, "the revoked device's session to close");
    expect(logs.some((l) => l === "hub: closed the session of 'fg100-3': certificate disabled")).toBe(true);
    const again = await connect(d3);
    expect(again.client).toBeUndefined();
    // d1 is still in session
    expect(open[0]!.client!.connected).toBe(true);
  });

  it("refuses at the TLS handshake a certificate a CRL lists even when a registration allows it", async () => {
    // another writer lists the revoked certificate as allowed: the CRL (CRL_CHECK_ALL) still refuses it
    const reg = emptyRegistration("other", "b1");
    const t = acme.trusted();
    reg.cas = [
      { name: t.name, fingerprint: t.fingerprint, certificatePem: t.certificatePem, chainPem: t.chainPem },
    ];
    reg.crls = t.crlPems;
    reg.devices[d3.sha256] = { deviceId: d3.id, serial: d3.serial };
    writeRegistration(dir, reg);
    await hub.reload();
    const before = hub.stats().refused.tls;
    const a = await connect(d3);
    expect(a.client).toBeUndefined();
    await waitFor(() => hub.stats().refused.tls > before, 10_000, "the TLS refusal");
    expect(logs.some((l) => /^hub: refused TLS.*: certificate refused \(CERT_REVOKED\)$/.test(l))).toBe(true);
    fs.rmSync(path.join(statePaths(dir).registrations, "other--b1.json"));
    await hub.reload();
  });

  it("refuses a device whose issuing CA its root's CRL revokes (CRL_CHECK_ALL: every CA of the chain)", async () => {
    const pki = makePki("revoked-ca");
    const dev = pki.device("fg300-1");
    pki.revokeIssuing();
    const d = new LocalHubDriver({ stateDir: dir, registration: "demo", batch: "b3" });
    await d.ensureTrust([pki.trusted()]);
    await d.register([dev.cert]);
    await d.flush();
    await hub.reload();
    const revokedLines = () => logs.filter((l) => l.endsWith("certificate refused (CERT_REVOKED)")).length;
    const before = revokedLines();
    const a = await connect(dev);
    expect(a.client).toBeUndefined();
    await waitFor(() => revokedLines() > before, 10_000, "the refusal");
    await d.remove([{ deviceId: dev.id, serial: dev.serial, remoteId: dev.sha256 }]);
    await d.flush();
    await hub.reload();
  });

  it("refuses the devices of a CA that has no CRL, and says which CA", async () => {
    const pki = makePki("no-crl");
    const dev = pki.device("fg400-1");
    const t = pki.trusted();
    const reg = emptyRegistration("nocrl", "b1");
    reg.cas = [
      { name: t.name, fingerprint: t.fingerprint, certificatePem: t.certificatePem, chainPem: t.chainPem },
    ];
    reg.devices[dev.sha256] = { deviceId: dev.id, serial: dev.serial };
    writeRegistration(dir, reg);
    await hub.reload();
    expect(logs).toContain(
      "hub: CA 'CN=no-crl Issuing' has no CRL: its devices are refused (every CA needs a current CRL)",
    );
    const before = hub.stats().refused.tls;
    expect((await connect(dev)).client).toBeUndefined();
    await waitFor(() => hub.stats().refused.tls > before, 10_000, "the TLS refusal");
    expect(logs.at(-1)).toMatch(/certificate refused \(UNABLE_TO_GET_CRL\)$/);
    fs.rmSync(path.join(statePaths(dir).registrations, "nocrl--b1.json"));
    await hub.reload();
  });

  it("closes a live session when only a CRL revokes its certificate (another writer's registration)", async () => {
    const pki = makePki("crl-only");
    const dev = pki.device("fg500-1");
    const write = () => {
      const t = pki.trusted();
      const reg = emptyRegistration("crlonly", "b1");
      reg.cas = [
        { name: t.name, fingerprint: t.fingerprint, certificatePem: t.certificatePem, chainPem: t.chainPem },
      ];
      reg.crls = t.crlPems;
      reg.devices[dev.sha256] = { deviceId: dev.id, serial: dev.serial };
      writeRegistration(dir, reg);
    };
    write();
    await hub.reload();
    const a = await connect(dev);
    expect(a.error).toBeUndefined();
    const closed = new Promise<void>((resolve) => a.client!.once("close", () => resolve()));
    pki.revoke(dev.serial);
    write(); // still listed in devices: the CRL alone revokes it
    await closed;
    expect(logs).toContain("hub: closed the session of 'fg500-1': certificate revoked");
    fs.rmSync(path.join(statePaths(dir).registrations, "crlonly--b1.json"));
    await hub.reload();
  });

  it("trusts a second CA added without a restart", async () => {
    const second = makePki("second");
    const dev = second.device("fg200-1");
    const d = new LocalHubDriver({ stateDir: dir, registration: "demo", batch: "b2" });
    expect((await connect(dev)).client).toBeUndefined();
    await d.ensureTrust([second.trusted()]);
    await d.register([dev.cert]);
    await d.flush();
    // no reload() call: the watch or the poll sees the new file
    await waitFor(() => hub.stats().devices === 3, 20_000, "the hub to reload");
    const a = await connect(dev);
    expect(a.error).toBeUndefined();
    await a.client!.publishAsync("devices/fg200-1/telemetry", "{}", { qos: 1 });
  });

  it("logs a garbled registration file and keeps serving the others", async () => {
    const file = path.join(statePaths(dir).registrations, "garbled--b1.json");
    fs.writeFileSync(file, "{");
    await hub.reload();
    expect(logs.some((l) => l.startsWith(`hub: ignoring ${file}: got 1 bytes that are not JSON`))).toBe(true);
    const a = await connect(d1, "fg100-1");
    expect(a.error).toBeUndefined();
    fs.rmSync(file);
    await hub.reload();
  });

  it("keeps its state across a restart", async () => {
    const caBefore = fs.readFileSync(hub.hubCaFile, "utf8");
    for (const a of open.splice(0)) a.client?.end(true);
    await hub.close();
    hub = await startLocalHub({ stateDir: dir, port: 0, reloadMs: 200, log: (l) => logs.push(l) });
    expect(fs.readFileSync(hub.hubCaFile, "utf8")).toBe(caBefore);
    expect(hub.stats()).toMatchObject({ devices: 3, cas: 4 });
    expect((await connect(d1)).error).toBeUndefined();
    expect((await connect(d3)).client).toBeUndefined();
    expect(JSON.parse(fs.readFileSync(statePaths(dir).endpoint, "utf8"))).toEqual({
      host: "127.0.0.1",
      port: hub.port,
    });
  });
});

describe("the bundles the hub writes, checked by OpenSSL", () => {
  it("openssl verify -crl_check_all accepts a live device and refuses a revoked one", () => {
    const p = statePaths(dir);
    const check = (dev: TestDevice) => {
      const f = path.join(dir, `${dev.id}.pem`);
      fs.writeFileSync(f, dev.certPem);
      return openssl(["verify", "-crl_check_all", "-CAfile", p.caBundle, "-CRLfile", p.crls, f]);
    };
    const live = check(d1);
    expect(live.out).toMatch(/: OK/);
    expect(live.status).toBe(0);
    const revoked = check(d3);
    expect(revoked.status).not.toBe(0);
    expect(revoked.out).toMatch(/certificate revoked/);
  });
});

describe("the poll alone (no fs.watch) sees a new registration", () => {
  it("within a few polls", async () => {
    const d2 = tmpdir("fleetguard-hub-poll-");
    const pki = makePki("poll");
    const dev = pki.device("fg600-1");
    const h = await startLocalHub({ stateDir: d2, port: 0, reloadMs: 100, watch: false });
    try {
      const drv = new LocalHubDriver({ stateDir: d2, registration: "p", batch: "b1" });
      await drv.ensureTrust([pki.trusted()]);
      await drv.register([dev.cert]);
      await drv.flush();
      await waitFor(() => h.stats().devices === 1, 20_000, "the poll to reload");
      const a = await connectDevice(h.port, fs.readFileSync(h.hubCaFile, "utf8"), dev);
      expect(a.error).toBeUndefined();
      a.client!.end(true);
    } finally {
      await h.close();
      fs.rmSync(d2, { recursive: true, force: true });
    }
  });
});

describe("startLocalHub refuses bad options", () => {
  it("a file where the state folder should be, a port in use, a bad prefix", async () => {
    const f = path.join(dir, "a-file");
    fs.writeFileSync(f, "x");
    await expect(startLocalHub({ stateDir: f, port: 0 })).rejects.toThrow(
      `stateDir: got ${JSON.stringify(f).length > 62 ? "" : JSON.stringify(f)}`.slice(0, 14),
    );
    await expect(startLocalHub({ stateDir: dir, port: hub.port })).rejects.toThrow(
      `port: got ${hub.port} in use on 127.0.0.1, want a free port`,
    );
    await expect(startLocalHub({ stateDir: dir, port: 0, topicPrefix: "devices/#" })).rejects.toThrow(
      /^topicPrefix: got "devices\/#", want a topic prefix with \{deviceId\}/,
    );
  });
});
