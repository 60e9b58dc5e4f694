// `fleet devices connect` in a child process against an in-process farm and an mTLS MQTT broker:
// the summary line, refusals by reason, progress on stderr, --json, exit codes.
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StationClient } from "../../../core/station/client";
import { deviceId } from "../../../core/station/ids";
import type { RunningFarm } from "../../../devices/farm/serve";
import { toPem } from "../../../devices/firmware/pkix";
import { fleetAsync } from "../../cli/cli-run";
import { farmFor, makeCa, type TestCa, tempDir } from "./helpers";
import { hubPki, startTestBroker, type TestBroker } from "./mqtt-broker";

const id = (i: number) => deviceId("fg100", i);

async function enroll(client: StationClient, ca: TestCa, i: number): Promise<void> {
  const d = id(i);
  const { publicKey } = await client.identify(d);
  await client.setTrustAnchor(d, ca.root);
  await client.install(d, ca.chainFor(publicKey!, d));
}

describe("fleet devices connect", () => {
  const dir = tempDir("fg-connect-cli-");
  const ca = makeCa("Devices");
  const stranger = makeCa("Stranger");
  let farm: RunningFarm;
  let broker: TestBroker;
  let caFile: string;
  const args = (...more: string[]) => [
    "devices",
    "connect",
    "--hub",
    `127.0.0.1:${broker.port}`,
    "--hub-ca",
    caFile,
    "--station",
    `127.0.0.1:${farm.port}`,
    ...more,
  ];

  beforeAll(async () => {
    const pki = hubPki(dir.path);
    caFile = join(dir.path, "hub-ca.pem");
    writeFileSync(caFile, pki.caPem);
    farm = await farmFor(dir.path, { count: 10, workers: 1 });
    const client = new StationClient({ port: farm.port });
    for (let i = 0; i < 5; i++) await enroll(client, ca, i);
    await enroll(client, stranger, 5);
    await client.close();
    broker = await startTestBroker({ pki, trustPem: toPem(ca.root) + toPem(ca.issuing) });
  }, 60_000);

  afterAll(async () => {
    await broker?.close();
    await farm?.close();
    dir.remove();
  });

  it("connects the devices asked for and says so; exit 0", async () => {
    const r = await fleetAsync(args("--devices", [0, 1, 2, 3, 4].map(id).join(","), "--concurrency", "2"));
    expect(r.stderr).toMatch(
      /^fleet devices connect: 5 of 5 devices \(5 connected, 0 refused, 0 not enrolled\), [\d,]+\/s\n$/,
    );
    expect(r.stdout).toBe("5 of 5 devices connected over mTLS\n");
    expect(r.code).toBe(0);
  });

  it("a range: refusals listed by reason, unenrolled devices counted; exit 1", async () => {
    const r = await fleetAsync(args());
    expect(r.stdout.split("\n")).toEqual([
      "5 of 6 devices connected over mTLS",
      "4 devices of the range are not enrolled (not attempted)",
      "  1 refused at tls: hub closed the connection after the handshake without a CONNACK (device certificate not accepted)",
      `    ${id(5)}: tls: hub closed the connection after the handshake without a CONNACK (device certificate not accepted)`,
      "",
    ]);
    expect(r.code).toBe(1);
    const j = await fleetAsync(args("--first", "0", "--count", "6", "--json"));
    expect(j.code).toBe(1);
    const doc = JSON.parse(j.stdout);
    expect(doc).toMatchObject({ attempted: 6, connected: 5, refusedCount: 1, skipped: 0 });
    expect(doc.refused).toEqual([
      {
        deviceId: id(5),
        stage: "tls",
        reason:
          "hub closed the connection after the handshake without a CONNACK (device certificate not accepted)",
      },
    ]);
  });

  it("a station that cannot be reached: exit 3, named in words", async () => {
    const dead = createServer();
    await new Promise<void>((res) => dead.listen(0, "127.0.0.1", res));
    const port = (dead.address() as { port: number }).port;
    await new Promise<void>((res) => dead.close(() => res()));
    const argv = args();
    argv[argv.indexOf("--station") + 1] = `127.0.0.1:${port}`;
    const r = await fleetAsync(argv);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(`station 127.0.0.1:${port} could not be reached`);
  });

  it("bad options: exit 2, the option named", async () => {
    const cases: Array<[string[], RegExp]> = [
      [
        ["devices", "connect", "--hub", "nohost", "--hub-ca", "x", "--station", "127.0.0.1:1"],
        /--hub: got "nohost", want HOST:PORT/,
      ],
      [args("--devices", id(0), "--first", "1"), /--devices: got .*, want device IDs or a range/],
      [args("--concurrency", "0"), /--concurrency: got "0", want an integer in 1\.\.8192/],
      [args("--topic", "a/#"), /topic: got "a\/#", want an MQTT topic name/],
      [
        [...args().slice(0, 4), "--hub-ca", join(dir.path, "missing.pem"), ...args().slice(6)],
        /--hub-ca: got .*missing\.pem", want a readable PEM file/,
      ],
    ];
    for (const [argv, want] of cases) {
      const r = await fleetAsync(argv);
      expect(r.code, argv.join(" ")).toBe(2);
      expect(r.stderr).toMatch(want);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });
});
