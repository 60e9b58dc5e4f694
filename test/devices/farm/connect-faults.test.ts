// CONNECT against hubs that misbehave (hand-rolled TLS servers with mutual TLS): silent after
// TCP, silent after TLS, a partial CONNACK then close, CONNACK but no PUBACK; and a farm worker
// that dies while its devices are connecting.

import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import * as tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StationClient } from "../../../core/station/client";
import { connectDevices } from "../../../core/station/connect";
import { type StationError, Status } from "../../../core/station/frame";
import { deviceId } from "../../../core/station/ids";
import type { RunningFarm } from "../../../devices/farm/serve";
import { toPem } from "../../../devices/firmware/pkix";
import { farmFor, makeCa, tempDir } from "./helpers";
import { type HubPki, hubPki } from "./mqtt-broker";

const id = (i: number) => deviceId("fg100", i);

describe("CONNECT: hubs that misbehave, a worker that dies", () => {
  const dir = tempDir("fg-connect-faults-");
  const ca = makeCa("Devices");
  let pki: HubPki;
  let farm: RunningFarm;
  let client: StationClient;
  const servers: Array<Server | tls.Server> = [];
  const sockets = new Set<Socket>();

  /** A TLS server with mutual TLS that does `onData` with what the device sends. */
  async function hub(onSession: (s: tls.TLSSocket) => void): Promise<number> {
    const s = tls.createServer(
      { key: pki.keyPem, cert: pki.certPem, ca: toPem(ca.root), requestCert: true, rejectUnauthorized: true },
      (sock) => {
        sockets.add(sock);
        sock.on("error", () => {});
        onSession(sock);
      },
    );
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
    return (s.address() as { port: number }).port;
  }
  const target = (port: number) => ({ host: "127.0.0.1", port, caPem: pki.caPem });

  beforeAll(async () => {
    pki = hubPki(dir.path);
    farm = await farmFor(dir.path, { count: 20, workers: 1 });
    client = new StationClient({ port: farm.port });
    for (let i = 0; i < 4; i++) {
      const d = id(i);
      const { publicKey } = await client.identify(d);
      await client.setTrustAnchor(d, ca.root);
      await client.install(d, ca.chainFor(publicKey!, d));
    }
  }, 60_000);

  afterAll(async () => {
    for (const s of sockets) s.destroy();
    for (const s of servers) await new Promise<void>((r) => s.close(() => r()));
    await client?.close();
    await farm?.close();
    dir.remove();
  });

  it("silent after TCP: timeout waiting for the TLS handshake", async () => {
    const s = createServer((sock) => sockets.add(sock)); // accepts, never speaks
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
    const r = await connectDevices(client, {
      hub: target((s.address() as { port: number }).port),
      devices: [id(0)],
      deviceTimeoutMs: 300,
    });
    expect(r.refused).toEqual([
      { deviceId: id(0), stage: "timeout", reason: "no TLS handshake within 300 ms" },
    ]);
  });

  it("silent after TLS: timeout waiting for the CONNACK", async () => {
    const port = await hub(() => {});
    const r = await connectDevices(client, { hub: target(port), devices: [id(0)], deviceTimeoutMs: 300 });
    expect(r.refused).toEqual([{ deviceId: id(0), stage: "timeout", reason: "no CONNACK within 300 ms" }]);
  });

  it("half a CONNACK, then close: stage closed", async () => {
    const port = await hub((s) => s.once("data", () => s.end(Buffer.from([0x20]))));
    const r = await connectDevices(client, { hub: target(port), devices: [id(1)] });
    expect(r.refused).toEqual([
      { deviceId: id(1), stage: "closed", reason: "hub closed the connection before the CONNACK" },
    ]);
  });

  it("CONNACK accepted but no PUBACK: stage timeout (waiting for the PUBACK), or puback when the hub closes", async () => {
    const silent = await hub((s) => s.once("data", () => s.write(Buffer.from([0x20, 2, 0, 0]))));
    const r = await connectDevices(client, { hub: target(silent), devices: [id(2)], deviceTimeoutMs: 300 });
    expect(r.refused).toEqual([{ deviceId: id(2), stage: "timeout", reason: "no PUBACK within 300 ms" }]);
    const closing = await hub((s) => {
      let n = 0;
      s.on("data", () => {
        if (n++ === 0) s.write(Buffer.from([0x20, 2, 0, 0]));
        else s.end();
      });
    });
    const c = await connectDevices(client, { hub: target(closing), devices: [id(2)] });
    expect(c.refused).toEqual([
      { deviceId: id(2), stage: "puback", reason: "connection closed before the PUBACK" },
    ]);
  });

  it("a CONNACK with a refusal code names it", async () => {
    const port = await hub((s) => s.once("data", () => s.end(Buffer.from([0x20, 2, 0, 4]))));
    const r = await connectDevices(client, { hub: target(port), devices: [id(3)] });
    expect(r.refused).toEqual([
      { deviceId: id(3), stage: "connack", reason: "return code 4 (bad user name or password)" },
    ]);
  });

  it("the farm bounds the sessions open at once over all requests: one more is BUSY", async () => {
    const small = await farmFor(join(dir.path, "small"), { count: 20, workers: 0, connectSessionsMax: 3 });
    const c = new StationClient({ port: small.port });
    try {
      for (let i = 0; i < 3; i++) {
        const d = id(i);
        const { publicKey } = await c.identify(d);
        await c.setTrustAnchor(d, ca.root);
        await c.install(d, ca.chainFor(publicKey!, d));
      }
      const port = await hub(() => {}); // holds every session until its timeout
      const req = (devices: string[], concurrency: number) =>
        c.connect(
          { hub: target(port), devices, topic: "devices/{deviceId}/telemetry", concurrency, timeoutMs: 500 },
          { retries: 0 },
        );
      const first = req([id(0), id(1)], 2); // takes 2 of 3
      await new Promise((r) => setTimeout(r, 100));
      const e = await req([id(2), id(0)], 2).then(
        () => undefined,
        (x: unknown) => x as StationError,
      );
      expect(e?.status).toBe(Status.BUSY);
      expect(e?.detail).toBe(
        "sessions: got 2 open and 2 more asked, want at most 3 at once (lower the concurrency, or wait)",
      );
      expect((await req([id(2)], 1)).attempted).toBe(1); // fits beside the first
      expect((await first).failures.map((x) => x.stage)).toEqual(["timeout", "timeout"]);
      expect((await req([id(0), id(1), id(2)], 3)).attempted).toBe(3); // free again
    } finally {
      await c.close();
      await small.close();
    }
  });

  it("a worker that dies mid-storm: its devices are refused, the farm goes on", async () => {
    const port = await hub(() => {}); // sessions wait for a CONNACK that never comes
    const pending = connectDevices(client, {
      hub: target(port),
      devices: [id(0), id(1)],
      deviceTimeoutMs: 30_000,
    });
    // both devices are on the one worker; kill it while their sessions wait
    await new Promise((r) => setTimeout(r, 300));
    await farm.farm.pool!.workerOf(0)!.terminate();
    const r = await pending;
    expect(r).toMatchObject({ attempted: 2, connected: 0, refusedCount: 2 });
    expect(r.reasons).toEqual([
      { stage: "device", reason: "farm worker died (device power-cycled)", count: 2 },
    ]);
    // a new worker serves the next request
    const again = await connectDevices(client, {
      hub: target(await hub((s) => s.once("data", () => s.end(Buffer.from([0x20, 2, 0, 5]))))),
      devices: [id(0)],
    });
    expect(again.refused[0]).toMatchObject({ stage: "connack", reason: "return code 5 (not authorized)" });
  });
});
