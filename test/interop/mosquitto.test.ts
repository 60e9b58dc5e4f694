/**
 * Interoperability: the trust bundle and CRL file the local hub's state folder holds configure
 * Eclipse Mosquitto (Debian 2.0.11, installed by scripts/ensure-mosquitto) as they are. A device
 * connects through it with mosquitto_pub (an independent client) and is refused once revoked: the
 * driver writes the new CRL into trust/crls.pem and Mosquitto re-reads it on SIGHUP.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalHubDriver } from "../../core/hubs/local";
import { ensureServerIdentity, statePaths } from "../../core/hubs/local-state";
import { openssl, tmpdir } from "../helpers/openssl";
import { waitFor } from "../hub/mqtt";
import { makePki, type TestDevice } from "../hub/pki";

const MOSQUITTO = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"].find((p) =>
  fs.existsSync(p),
);
if (!MOSQUITTO || spawnSync("mosquitto_pub", ["--help"]).error)
  throw new Error("Mosquitto is not installed: run `bash scripts/ensure-mosquitto` (CI does)");

const dir = tmpdir("fleetguard-mosq-");
const p = statePaths(dir);
const pki = makePki("mosq");
const driver = new LocalHubDriver({ stateDir: dir, registration: "demo", batch: "b1" });
const [live, revoked] = [pki.device("fg100-1"), pki.device("fg100-2")] as [TestDevice, TestDevice];
let broker: ChildProcess;
let port = 0;
let brokerLog = "";

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** mosquitto_pub as the device: its key in a 0600 file of the test's own, its chain, the hub CA. */
function publish(
  dev: TestDevice,
  topic = `devices/${dev.id}/telemetry`,
): { status: number | null; out: string } {
  const key = path.join(dir, `${dev.id}.key`);
  const cert = path.join(dir, `${dev.id}.chain.pem`);
  fs.writeFileSync(key, dev.keyPem, { mode: 0o600 });
  fs.writeFileSync(cert, dev.chainPem);
  const r = spawnSync(
    "mosquitto_pub",
    [
      ...["-h", "localhost", "-p", String(port), "-V", "mqttv311", "-q", "1", "-d"],
      ...["--cafile", p.hubCa, "--cert", cert, "--key", key],
      ...["-i", dev.id, "-t", topic, "-m", "hello"],
    ],
    { encoding: "utf8", timeout: 20_000 },
  );
  fs.rmSync(key);
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

async function logShows(re: RegExp, from = 0): Promise<void> {
  await waitFor(() => re.test(brokerLog.slice(from)), 10_000, `mosquitto to log ${re}`).catch(() => {
    throw new Error(`mosquitto did not log ${re}:\n${brokerLog.slice(from)}`);
  });
}

beforeAll(async () => {
  await driver.ensureTrust([pki.trusted()]);
  await driver.register([live.cert, revoked.cert]);
  await driver.flush();
  ensureServerIdentity(dir); // the hub's own identity: what `fleet hub serve` would make
  port = await freePort();
  const conf = path.join(dir, "mosquitto.conf");
  const acl = path.join(dir, "mosquitto.acl");
  // the local hub's ACL in Mosquitto's words: the username is the certificate's CN, the device ID
  fs.writeFileSync(acl, "pattern readwrite devices/%u/#\n");
  fs.writeFileSync(
    conf,
    [
      "per_listener_settings false",
      "persistence false",
      "log_dest stderr",
      "log_type error",
      "log_type warning",
      "log_type notice",
      "log_type information",
      "log_type debug",
      "connection_messages true",
      // as root Mosquitto would switch to the user 'mosquitto', who cannot read the 0700 state folder
      ...(process.getuid?.() === 0 ? ["user root"] : []),
      "allow_anonymous false",
      `acl_file ${acl}`,
      `listener ${port} 127.0.0.1`,
      `cafile ${p.caBundle}`,
      `crlfile ${p.crls}`,
      `certfile ${p.serverCert}`,
      `keyfile ${p.serverKey}`,
      "require_certificate true",
      "use_identity_as_username true",
      "",
    ].join("\n"),
  );
  broker = spawn(MOSQUITTO!, ["-c", conf], { stdio: ["ignore", "pipe", "pipe"] });
  broker.stdout!.setEncoding("utf8").on("data", (c: string) => {
    brokerLog += c;
  });
  broker.stderr!.setEncoding("utf8").on("data", (c: string) => {
    brokerLog += c;
  });
  await waitFor(
    () => /Opening ipv4 listen socket/.test(brokerLog) || broker.exitCode !== null,
    20_000,
    "mosquitto",
  );
  if (broker.exitCode !== null) throw new Error(`mosquitto exited: ${brokerLog}`);
}, 60_000);

afterAll(async () => {
  if (broker && broker.exitCode === null) {
    const gone = new Promise((r) => broker.once("exit", r));
    broker.kill("SIGTERM");
    await gone;
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("Mosquitto configured from the local hub's state folder", () => {
  it("admits a registered device with mosquitto_pub and enforces the prefix ACL", async () => {
    const ok = publish(live);
    expect(ok.out).toMatch(/received PUBACK/);
    expect(ok.status).toBe(0);
    // the broker's log is read while the test waits (spawnSync blocks the event loop)
    await logShows(/New client connected from 127\.0\.0\.1:\d+ as fg100-1 .*u'fg100-1'/);
    // Mosquitto does not refuse a publish the ACL denies: it acknowledges and drops it (MQTT 3.1.1)
    const other = publish(live, "devices/fg100-2/telemetry");
    expect(other.status).toBe(0);
    await logShows(/Denied PUBLISH from fg100-1 .*devices\/fg100-2\/telemetry/);
  });

  it("refuses a device once revoked: new CRL written by the driver, SIGHUP", async () => {
    expect(publish(revoked).status).toBe(0);
    pki.revoke(revoked.serial);
    await driver.ensureTrust([pki.trusted()]);
    expect(fs.readFileSync(p.crls, "utf8")).toMatch(/BEGIN X509 CRL/);
    // Mosquitto read its crlfile at start: the new CRL on disk changes nothing until it reloads
    expect(publish(revoked).status).toBe(0);
    const before = brokerLog.length;
    broker.kill("SIGHUP");
    await waitFor(() => /Reloading config/.test(brokerLog.slice(before)), 10_000, "mosquitto to reload");
    const r = publish(revoked);
    expect(r.status).not.toBe(0);
    // the client sees the alert or only the closed connection, as the timing falls
    expect(r.out).toMatch(/alert certificate revoked|Error: Protocol error|connection was lost/);
    await logShows(/certificate verify failed/i, before);
    // the live device is not affected
    expect(publish(live).status).toBe(0);
  });

  it("checks the leaf's CRL only: a device under a revoked issuing CA still connects (the local hub refuses it)", async () => {
    const second = makePki("mosq2");
    const dev = second.device("fg200-1");
    second.revokeIssuing(); // the root's CRL lists the issuing CA
    const d = new LocalHubDriver({ stateDir: dir, registration: "demo", batch: "b2" });
    await d.ensureTrust([second.trusted()]);
    await d.register([dev.cert]);
    await d.flush();
    const before = brokerLog.length;
    broker.kill("SIGHUP");
    await waitFor(() => /Reloading config/.test(brokerLog.slice(before)), 10_000, "mosquitto to reload");
    expect(publish(dev).out).toMatch(/received PUBACK/);
    // OpenSSL with every CRL of the chain (what the local hub does) refuses it
    const f = path.join(dir, "fg200-1.pem");
    fs.writeFileSync(f, dev.certPem);
    const v = openssl(["verify", "-crl_check_all", "-CAfile", p.caBundle, "-CRLfile", p.crls, f]);
    expect(v.status).not.toBe(0);
    expect(v.out).toMatch(/certificate revoked/);
  });
});
