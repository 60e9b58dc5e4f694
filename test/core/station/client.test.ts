import { afterEach, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import type { CborMap } from "../../../core/station/cbor";
import { StationClient } from "../../../core/station/client";
import { Op, StationError, Status } from "../../../core/station/frame";
import { type Reply, type Service, StationServer } from "../../../devices/protocol/server";

// A scriptable service: `script(op, body, n)` decides each answer (n = call number).
function service(script: (op: number, body: CborMap, n: number) => Reply | Promise<Reply>) {
  let n = 0;
  let active = 0;
  let maxActive = 0;
  const svc: Service & { calls: () => number; maxActive: () => number } = {
    knows: (op) => op === Op.PING || op === Op.STATUS || op === Op.INJECT,
    async handle(op, _batch, body) {
      active++;
      maxActive = Math.max(maxActive, active);
      try {
        return await script(op, body, n++);
      } finally {
        active--;
      }
    },
    calls: () => n,
    maxActive: () => maxActive,
  };
  return svc;
}

const statusBody = (device: string): CborMap => ({
  device,
  model: "m",
  lifecycle: "blank",
  epoch: 0,
  pendingEpoch: null,
  source: "puf",
  helperBytes: 0,
  trustAnchors: [],
  chain: [],
  otp: [],
});

let servers: StationServer[] = [];
let clients: StationClient[] = [];
afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  clients = [];
});

async function setup(svc: Service, opts: Partial<ConstructorParameters<typeof StationClient>[0]> = {}) {
  const server = new StationServer(svc, { log: () => {} });
  servers.push(server);
  const port = await server.listen(0);
  const client = new StationClient({ port, backoffMs: 1, random: () => 0.5, ...opts });
  clients.push(client);
  return { server, client, port };
}

describe("station client", () => {
  it("matches out-of-order responses to their requests", async () => {
    const svc = service(async (_op, body) => {
      await new Promise((r) => setTimeout(r, Math.random() * 20));
      return { kind: "ok", body: statusBody(body.device as string) };
    });
    const { client } = await setup(svc, { poolSize: 1 });
    const ids = Array.from({ length: 100 }, (_, i) => `d${i}`);
    const res = await Promise.all(ids.map((d) => client.status(d)));
    expect(res.map((r) => r.device)).toEqual(ids);
  });

  it("applies backpressure: at most maxInFlight per connection, the rest wait", async () => {
    const gates: Array<() => void> = [];
    const svc = service(
      (_op, body) =>
        new Promise<Reply>((resolve) =>
          gates.push(() => resolve({ kind: "ok", body: statusBody(body.device as string) })),
        ),
    );
    const { client } = await setup(svc, { poolSize: 2, maxInFlight: 3 });
    const all = Promise.all(Array.from({ length: 20 }, (_, i) => client.status(`d${i}`)));
    await new Promise((r) => setTimeout(r, 100));
    expect(client.inFlight).toBe(6);
    expect(client.waiting).toBe(14);
    expect(svc.maxActive()).toBe(6);
    // open the gates until every request went through; at no time more than 2 x 3 in the service
    let finished = false;
    all.then(() => {
      finished = true;
    });
    while (!finished) {
      for (const g of gates.splice(0)) g();
      await new Promise((r) => setTimeout(r, 5));
    }
    expect((await all).length).toBe(20);
    expect(svc.maxActive()).toBeLessThanOrEqual(6);
    expect(client.connections).toBe(2);
  });

  it("times out a silent request and retries idempotent calls a bounded number of times", async () => {
    const svc = service(() => ({ kind: "hang" }));
    const { client } = await setup(svc, { timeoutMs: 40, retries: 2 });
    const e = await client.status("d").catch((x) => x);
    expect(e).toBeInstanceOf(StationError);
    expect(e.status).toBe(Status.TIMEOUT);
    expect(e).toBeInstanceOf(FleetError);
    expect(e.code).toBe("UNAVAILABLE");
    expect(svc.calls()).toBe(3);
  });

  it("never resends a non-idempotent call (INJECT)", async () => {
    const svc = service(() => ({ kind: "hang" }));
    const { client } = await setup(svc, { timeoutMs: 40, retries: 5 });
    const e = await client.inject("d", Buffer.from([1]), Buffer.from([2])).catch((x) => x);
    expect(e.status).toBe(Status.TIMEOUT);
    expect(svc.calls()).toBe(1);
  });

  it("retries BUSY and lost connections, then succeeds", async () => {
    const svc = service((_op, body, n) =>
      n === 0
        ? { kind: "error", status: Status.BUSY, message: "busy" }
        : n === 1
          ? { kind: "drop" }
          : { kind: "ok", body: statusBody(body.device as string) },
    );
    const { client } = await setup(svc, { retries: 3 });
    expect((await client.status("d")).device).toBe("d");
    expect(svc.calls()).toBe(3);
  });

  it("does not retry a definite answer", async () => {
    const svc = service(() => ({ kind: "error", status: Status.UNKNOWN_DEVICE, message: "no such device" }));
    const { client } = await setup(svc, { retries: 3 });
    const e = await client.status("d").catch((x) => x);
    expect(e.status).toBe(Status.UNKNOWN_DEVICE);
    expect(e.code).toBe("NOT_FOUND");
    expect(e.message).toContain("UNKNOWN_DEVICE: no such device");
    expect(svc.calls()).toBe(1);
  });

  it("reports a farm that is not there as UNAVAILABLE after its retries", async () => {
    const { port, server } = await setup(service(() => ({ kind: "hang" })));
    await server.close();
    servers = [];
    const client = new StationClient({ port, retries: 1, backoffMs: 1 });
    clients.push(client);
    const e = await client.ping().catch((x) => x);
    expect(e.status).toBe(Status.DISCONNECTED);
    expect(e.code).toBe("UNAVAILABLE");
  });

  it("refuses a malformed result instead of returning it", async () => {
    const svc = service(() => ({ kind: "ok", body: { device: "d", lifecycle: "weird" } }));
    const { client } = await setup(svc);
    const e = await client.status("d").catch((x) => x);
    expect(e.status).toBe(Status.BAD_FRAME);
  });

  it("validates its options", () => {
    expect(() => new StationClient({ port: 0 })).toThrow(/port/);
    expect(() => new StationClient({ port: 1, maxInFlight: 0 })).toThrow(/maxInFlight/);
    expect(() => new StationClient({ port: 1, retries: -1 })).toThrow(/retries/);
  });
});
