// CONNECT: enrolled farm devices connect to a real MQTT broker (aedes over Node's tls) with
// mutual TLS, each with its own key and installed chain, publish one telemetry message at QoS 1
// and report how far they got. Run with and without farm worker threads (the key stays in the
// thread that holds the device either way).
import { createServer, type Socket, connect as tcpConnect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StationClient } from "../../../core/station/client";
import { connectDevices } from "../../../core/station/connect";
import { StationError, Status } from "../../../core/station/frame";
import { deviceId } from "../../../core/station/ids";
import type { RunningFarm } from "../../../devices/farm/serve";
import { toPem } from "../../../devices/firmware/pkix";
import { farmFor, makeCa, type TestCa, tempDir } from "./helpers";
import { type HubPki, hubPki, startTestBroker, type TestBroker } from "./mqtt-broker";

const id = (i: number) => deviceId("fg100", i);
const ENROLLED = 12; // devices 0..11 under the trusted CA
const FOREIGN = 12; // device 12 under a CA the broker does not trust
const REFUSED = 5; // a client ID the broker refuses

async function enroll(client: StationClient, ca: TestCa, i: number): Promise<void> {
  const d = id(i);
  const { publicKey } = await client.identify(d);
  await client.setTrustAnchor(d, ca.root);
  await client.install(d, ca.chainFor(publicKey!, d));
}

describe.each([0, 2])("CONNECT with %i farm workers", (workers) => {
  const dir = tempDir("fg-connect-");
  const ca = makeCa("Devices");
  const stranger = makeCa("Stranger");
  let pki: HubPki;
  let otherHub: HubPki;
  let farm: RunningFarm;
  let client: StationClient;
  let broker: TestBroker;
  const hub = () => ({ host: "127.0.0.1", port: broker.port, caPem: pki.caPem });

  beforeAll(async () => {
    pki = hubPki(dir.path, "Hub");
    otherHub = hubPki(dir.path, "Other");
    farm = await farmFor(dir.path, { workers, count: 100 });
    client = new StationClient({ port: farm.port });
    for (let i = 0; i < ENROLLED; i++) await enroll(client, ca, i);
    await enroll(client, stranger, FOREIGN);
    broker = await startTestBroker({
      pki,
      trustPem: `${toPem(ca.root)}${toPem(ca.issuing)}`,
      refuseIds: new Set([id(REFUSED)]),
    });
  }, 60_000);

  afterAll(async () => {
    await client?.close();
    await broker?.close();
    await farm?.close();
    dir.remove();
  });

  it("every enrolled device connects and publishes on its own topic", async () => {
    broker.published.clear();
    const devices = Array.from({ length: ENROLLED }, (_, i) => id(i)).filter((d) => d !== id(REFUSED));
    const r = await connectDevices(client, { hub: hub(), devices, concurrency: 4 });
    expect(r).toMatchObject({
      attempted: devices.length,
      connected: devices.length,
      refusedCount: 0,
      skipped: 0,
    });
    expect(r.refused).toEqual([]);
    for (const d of devices) expect(broker.published.get(d)).toEqual([`devices/${d}/telemetry`]);
  });

  it("a range connects its enrolled devices and skips the others; refusals come with their stage", async () => {
    broker.published.clear();
    const progress: number[] = [];
    const r = await connectDevices(client, {
      hub: hub(),
      first: 0,
      count: 20,
      chunkSize: 8,
      topic: "fleet/{deviceId}/hello",
      onProgress: (p) => progress.push(p.done),
    });
    // 0..12 are enrolled (12 under the foreign CA); 13..19 are not
    expect(r.attempted).toBe(ENROLLED + 1);
    expect(r.skipped).toBe(20 - ENROLLED - 1);
    expect(r.connected).toBe(ENROLLED - 1);
    expect(r.refusedCount).toBe(2);
    // requests of at most 8 devices, three in flight (the first ones of 3, 6 and 8 devices, so
    // that they finish in turn): progress after each, up to all 20
    expect(progress.length).toBeGreaterThanOrEqual(3);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    expect(progress.at(-1)).toBe(20);
    const by = new Map(r.refused.map((x) => [x.deviceId, x]));
    expect(by.get(id(REFUSED))).toMatchObject({
      stage: "connack",
      reason: "return code 2 (identifier rejected)",
    });
    expect(by.get(id(FOREIGN))?.stage).toBe("tls");
    // aedes on Node's tls sends no alert for a refused client certificate: it closes the session
    expect(by.get(id(FOREIGN))?.reason).toBe(
      "hub closed the connection after the handshake without a CONNACK (device certificate not accepted)",
    );
    expect(broker.published.get(id(0))).toEqual([`fleet/${id(0)}/hello`]);
    expect(broker.published.has(id(FOREIGN))).toBe(false);
  });

  it("a device refuses a hub whose certificate does not chain to the CA it was given", async () => {
    broker.published.clear();
    const r = await connectDevices(client, {
      hub: { ...hub(), caPem: otherHub.caPem },
      devices: [id(0), id(1)],
    });
    expect(r.connected).toBe(0);
    expect(r.reasons).toEqual([
      {
        stage: "tls",
        reason: "hub certificate does not chain to the hub CA (device refused the hub)",
        count: 2,
      },
    ]);
    expect(broker.published.size).toBe(0);
  });

  it("a hub name that the certificate does not carry is refused by the device", async () => {
    const r = await connectDevices(client, {
      hub: { ...hub(), servername: "hub.example.com" },
      devices: [id(0)],
    });
    expect(r.refused).toEqual([
      {
        deviceId: id(0),
        stage: "tls",
        reason: "hub certificate does not name the hub (device refused the hub)",
      },
    ]);
  });

  it("devices that are not enrolled, not of this farm, or with nothing listening say so", async () => {
    const r = await connectDevices(client, { hub: hub(), devices: [id(50), "zz999-0000001"] });
    expect(r.refused.sort((a, b) => a.deviceId.localeCompare(b.deviceId))).toEqual([
      {
        deviceId: id(50),
        stage: "device",
        reason: "lifecycle blank, want closed (enrolled, chain installed)",
      },
      { deviceId: "zz999-0000001", stage: "device", reason: "not a device of this farm" },
    ]);
    const dead = createServer();
    await new Promise<void>((res) => dead.listen(0, "127.0.0.1", res));
    const port = (dead.address() as { port: number }).port;
    await new Promise<void>((res) => dead.close(() => res()));
    const down = await connectDevices(client, { hub: { ...hub(), port }, devices: [id(0)] });
    expect(down.refused[0]).toMatchObject({
      stage: "tcp",
      reason: expect.stringMatching(/^connection refused/),
    });
  });

  it("bad requests are refused with the field named", async () => {
    const bad = (over: Record<string, unknown>) =>
      client.connect({
        hub: hub(),
        first: 0,
        count: 1,
        topic: "devices/{deviceId}/telemetry",
        concurrency: 1,
        timeoutMs: 1000,
        ...over,
      } as never);
    const refused = async (p: Promise<unknown>) => {
      const e = await p.then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(StationError);
      expect((e as StationError).status).toBe(Status.BAD_REQUEST);
      return (e as StationError).detail;
    };
    expect(await refused(bad({ topic: "devices/+/telemetry" }))).toMatch(/^topic: got/);
    expect(await refused(bad({ topic: "devices/{serial}" }))).toMatch(/no placeholder but \{deviceId\}/);
    expect(await refused(bad({ first: 99, count: 2 }))).toMatch(/^first \+ count: got 101, want at most 100/);
    expect(await refused(bad({ model: "fg200" }))).toMatch(/^model: got "fg200"/);
    expect(await refused(bad({ concurrency: 0 }))).toMatch(/^concurrency: got 0/);
    expect(await refused(bad({ hub: { ...hub(), caPem: "nothing" } }))).toMatch(/^hub.caPem: got/);
  });

  it("no private key crosses the station protocol: the bytes both ways hold IDs, the hub CA and counts", async () => {
    // a recording TCP relay between the station client and the farm
    const seen: Buffer[] = [];
    const relay = createServer((inbound: Socket) => {
      const out = tcpConnect(farm.port, "127.0.0.1");
      inbound.on("data", (b) => {
        seen.push(b);
        out.write(b);
      });
      out.on("data", (b) => {
        seen.push(b);
        inbound.write(b);
      });
      inbound.on("close", () => out.destroy());
      out.on("close", () => inbound.destroy());
    });
    await new Promise<void>((res) => relay.listen(0, "127.0.0.1", res));
    const spy = new StationClient({ port: (relay.address() as { port: number }).port });
    try {
      const r = await connectDevices(spy, { hub: hub(), devices: [id(0), id(1), id(2)] });
      expect(r.connected).toBe(3);
    } finally {
      await spy.close();
      await new Promise<void>((res) => relay.close(() => res()));
    }
    const wire = Buffer.concat(seen);
    expect(wire.length).toBeGreaterThan(0);
    expect(wire.includes("PRIVATE KEY")).toBe(false);
    // the devices' own private scalars (the farm's agent derives them; without workers we can ask it)
    if (workers === 0) {
      const agent = farm.farm.agent as unknown as {
        credentials(d: unknown): { ok: boolean; key: import("node:crypto").KeyObject };
      };
      for (const i of [0, 1, 2]) {
        const c = agent.credentials({ id: id(i), index: i, state: farm.store.get(i)! });
        const d = Buffer.from(c.key.export({ format: "jwk" }).d!, "base64url");
        expect(d.length).toBe(32);
        expect(wire.includes(d)).toBe(false);
      }
    }
    // nor any certificate of the devices: the hub learns them from the devices, not from the station
    const leaf = farm.store.get(0)!.chain[0]!;
    expect(wire.includes(leaf)).toBe(false);
  });
});
