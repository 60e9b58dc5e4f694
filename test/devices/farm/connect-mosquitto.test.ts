// CONNECT against Eclipse Mosquitto (an independent broker, in C on OpenSSL; installed by
// scripts/ensure-mosquitto): enrolled farm devices connect with their own keys and publish; a
// device under a CA Mosquitto does not trust is refused in the handshake with a TLS alert, which
// the device names (a broker on Node's tls closes without one: see connect.test.ts).
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StationClient } from "../../../core/station/client";
import { connectDevices } from "../../../core/station/connect";
import { deviceId } from "../../../core/station/ids";
import type { RunningFarm } from "../../../devices/farm/serve";
import { toPem } from "../../../devices/firmware/pkix";
import { farmFor, makeCa, type TestCa, tempDir } from "./helpers";
import { type HubPki, hubPki } from "./mqtt-broker";

const MOSQUITTO = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"].find((p) =>
  fs.existsSync(p),
);
if (!MOSQUITTO) throw new Error("Mosquitto is not installed: run `bash scripts/ensure-mosquitto` (CI does)");

const id = (i: number) => deviceId("fg100", i);

async function enroll(client: StationClient, ca: TestCa, i: number): Promise<void> {
  const d = id(i);
  const { publicKey } = await client.identify(d);
  await client.setTrustAnchor(d, ca.root);
  await client.install(d, ca.chainFor(publicKey!, d));
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe("CONNECT to Mosquitto", () => {
  const dir = tempDir("fg-connect-mosq-");
  const ca = makeCa("Devices");
  const stranger = makeCa("Stranger");
  let pki: HubPki;
  let farm: RunningFarm;
  let client: StationClient;
  let broker: ChildProcess;
  let log = "";
  let port = 0;

  beforeAll(async () => {
    pki = hubPki(dir.path);
    farm = await farmFor(join(dir.path, "farm"), { count: 10 });
    client = new StationClient({ port: farm.port });
    for (let i = 0; i < 4; i++) await enroll(client, ca, i);
    await enroll(client, stranger, 4);
    const f = (name: string, text: string) => {
      const p = join(dir.path, name);
      fs.writeFileSync(p, text, { mode: 0o600 });
      return p;
    };
    port = await freePort();
    const conf = f(
      "mosquitto.conf",
      [
        "per_listener_settings false",
        "persistence false",
        "log_dest stderr",
        "log_type all",
        // as root Mosquitto would switch to the user 'mosquitto', who cannot read the 0700 folder
        ...(process.getuid?.() === 0 ? ["user root"] : []),
        "allow_anonymous false",
        `acl_file ${f("acl", "pattern readwrite devices/%u/#\n")}`,
        `listener ${port} 127.0.0.1`,
        `cafile ${f("devices-ca.pem", toPem(ca.root) + toPem(ca.issuing))}`,
        `certfile ${f("server.pem", pki.certPem)}`,
        `keyfile ${f("server.key", pki.keyPem)}`,
        "require_certificate true",
        "use_identity_as_username true",
        "",
      ].join("\n"),
    );
    broker = spawn(MOSQUITTO!, ["-c", conf], { stdio: ["ignore", "pipe", "pipe"] });
    const onLog = (c: Buffer) => {
      log += c.toString();
    };
    broker.stdout!.on("data", onLog);
    broker.stderr!.on("data", onLog);
    for (let t = 0; t < 200 && !/Opening ipv4 listen socket/.test(log) && broker.exitCode === null; t++)
      await new Promise((r) => setTimeout(r, 50));
    if (!/Opening ipv4 listen socket/.test(log)) throw new Error(`mosquitto did not start: ${log}`);
  }, 60_000);

  afterAll(async () => {
    if (broker && broker.exitCode === null) {
      const gone = new Promise((r) => broker.once("exit", r));
      broker.kill("SIGTERM");
      await gone;
    }
    await client?.close();
    await farm?.close();
    dir.remove();
  });

  it("enrolled devices connect and publish; a foreign CA gets a TLS alert, which the device names", async () => {
    const r = await connectDevices(client, {
      hub: { host: "127.0.0.1", port, caPem: pki.caPem },
      first: 0,
      count: 10,
    });
    expect(r).toMatchObject({ attempted: 5, connected: 4, refusedCount: 1, skipped: 5 });
    expect(r.refused).toEqual([{ deviceId: id(4), stage: "tls", reason: "hub sent TLS alert: unknown ca" }]);
    for (let i = 0; i < 4; i++) expect(log).toContain(`Received PUBLISH from ${id(i)}`);
    expect(log).not.toContain(`Received PUBLISH from ${id(4)}`);
  });
});
