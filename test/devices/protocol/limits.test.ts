// Issue 9, finding 8: what one connection may hold is bounded. A peer that pipelines and never
// reads stays within a fixed number of replies and bytes (errors included) while another
// client is served; a silent, stalled or trickling connection is closed; connections over the
// cap are refused with a BUSY notice. Everything over real TCP on loopback.
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CborMap, decode, encode } from "../../../core/station/cbor";
import { StationClient } from "../../../core/station/client";
import { encodeFrame, Flag, FrameDecoder, HEADER_SIZE, Op, Status } from "../../../core/station/frame";
import { deviceId } from "../../../core/station/ids";
import { PROTOCOL } from "../../../core/station/messages";
import type { RunningFarm } from "../../../devices/farm/serve";
import { type Reply, type Service, StationServer } from "../../../devices/protocol/server";
import { farmFor, makeCa, tempDir } from "../farm/helpers";

const id = (i: number) => deviceId("fg100", i);
const frame = (op: number, rid: number, body: CborMap = {}, flags = 0) =>
  encodeFrame(op, rid, encode(body), flags);
const UNKNOWN_OP = 0x7f;

interface Answer {
  status: number;
  requestId: number;
  bytes: number;
  body: CborMap;
}

/** A raw connection that collects every frame it is sent (unless `read` is false). */
function raw(port: number, o: { read?: boolean } = {}) {
  const s: Socket = connect(port, "127.0.0.1");
  const answers: Answer[] = [];
  const dec = new FrameDecoder();
  const waiters: Array<() => void> = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  let closed = false;
  if (o.read !== false)
    s.on("data", (c) => {
      for (const ev of dec.push(c)) {
        if (ev.kind !== "frame") throw new Error(`server sent a bad frame: ${ev.message}`);
        answers.push({
          status: ev.header.status,
          requestId: ev.header.requestId,
          bytes: HEADER_SIZE + ev.body.length,
          body: decode(ev.body) as CborMap,
        });
      }
      wake();
    });
  s.on("error", () => {});
  s.on("close", () => {
    closed = true;
    wake();
  });
  const until = async (cond: () => boolean) => {
    while (!cond()) await new Promise<void>((r) => waiters.push(r));
  };
  return {
    socket: s,
    answers,
    get closed() {
      return closed;
    },
    connected: new Promise<void>((r) => s.once("connect", () => r())),
    /** resolves once `n` answers have arrived (or the server closed the connection) */
    answered: (n: number) => until(() => closed || answers.length >= n),
    whenClosed: () => until(() => closed),
  };
}

/** Poll the server (a turn of the event loop at a time) until `cond` holds. */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

/** A scripted service: PING and STATUS, answered by `answer` (default: at once). */
function service(answer: (op: number, body: CborMap) => Reply | Promise<Reply> = () => ok): Service {
  return { knows: (op) => op === Op.PING || op === Op.STATUS, handle: (op, _b, body) => answer(op, body) };
}
const ok: Reply = { kind: "ok", body: {} };

function gate() {
  const opened: Array<() => void> = [];
  let open = false;
  return {
    wait: () =>
      new Promise<Reply>((r) => {
        if (open) r(ok);
        else opened.push(() => r(ok));
      }),
    open() {
      open = true;
      for (const f of opened.splice(0)) f();
    },
    get waiting() {
      return opened.length;
    },
  };
}

const servers: StationServer[] = [];
async function serve(svc: Service, limits: ConstructorParameters<typeof StationServer>[1] = {}) {
  const server = new StationServer(svc, { log: () => {}, ...limits });
  servers.push(server);
  return { server, port: await server.listen(0) };
}
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

describe("a connection that pipelines and never reads (real farm)", () => {
  const dir = tempDir();
  const ca = makeCa();
  let farm: RunningFarm;
  const MAX_IN_FLIGHT = 64;
  const HIGH_WATER = 64 * 1024;
  const BATCH = 16;

  beforeAll(async () => {
    farm = await farmFor(dir.path);
    // a closed device: its STATUS carries a three-certificate chain, a heavy reply
    const c = new StationClient({ port: farm.port });
    const k = (await c.identify(id(1))).publicKey!;
    await c.setTrustAnchor(id(1), ca.root);
    await c.install(id(1), ca.chainFor(k, id(1)));
    await c.close();
  });
  afterAll(async () => {
    await farm.close();
    dir.remove();
  });

  it("holds a bounded number of replies and bytes for it, errors included, while another client is served", async () => {
    // the farm's own device service behind a server with small limits
    const { server, port } = await serve(farm.farm, {
      maxInFlight: MAX_IN_FLIGHT,
      writeHighWater: HIGH_WATER,
    });
    const heavy = frame(
      Op.STATUS,
      0,
      { items: Array.from({ length: BATCH }, () => ({ device: id(1) })), protocol: PROTOCOL },
      Flag.BATCH,
    );
    // the size of one heavy reply, from a client that reads
    const probe = raw(port);
    probe.socket.write(heavy);
    await probe.answered(1);
    expect(probe.answers[0]!.status).toBe(Status.OK);
    const results = probe.answers[0]!.body.results as CborMap[];
    expect(results.map((r) => r.status)).toEqual(Array(BATCH).fill(Status.OK));
    const heavyReply = probe.answers[0]!.bytes;
    probe.socket.destroy();
    await probe.whenClosed();

    // 200,000 frames that each earn an error reply, with a valid heavy batch every 100th:
    // ~3.9 MB sent that ask for ~66 MB of replies
    const parts: Buffer[] = [];
    let frames = 0;
    for (let i = 0; i < 200_000; i++) {
      parts.push(frame(UNKNOWN_OP, i + 1));
      frames++;
      if (i % 100 === 0) {
        parts.push(heavy);
        frames++;
      }
    }
    const flood = raw(port, { read: false });
    await flood.connected;
    flood.socket.write(Buffer.concat(parts));

    const good = new StationClient({ port, poolSize: 1, retries: 0 });
    const floodStats = () => server.connectionStats()[0]!;
    // the good client drives the event loop until the flood connection is stuck: paused, no
    // work in progress, nothing more read across a round trip of the other client
    let served = 0;
    for (let last = -1; ; ) {
      expect((await good.status(id(1))).lifecycle).toBe("closed");
      served++;
      const s = floodStats();
      if (s.paused && s.handling === 0 && s.framesRead === last) break;
      last = s.framesRead;
    }
    for (let i = 0; i < 50; i++) expect((await good.ping()).count).toBe(1000);
    const s = floodStats();
    const perRequest = Math.ceil(heavyReply / BATCH); // an error reply is far smaller
    const bound = (MAX_IN_FLIGHT - 1 + BATCH) * perRequest;
    console.log(
      `flood: ${s.framesRead}/${frames} frames read, peak in flight ${s.peakInFlight}, ` +
        `peak write buffer ${s.peakWriteBuffered} B (bound ${bound} B), good client served ${served + 50} calls`,
    );
    expect(s.framesRead).toBeLessThan(frames); // it stopped reading that peer
    expect(s.peakInFlight).toBeLessThanOrEqual(MAX_IN_FLIGHT - 1 + BATCH);
    expect(s.peakWriteBuffered).toBeLessThanOrEqual(bound);
    expect(s.writeBuffered).toBeLessThanOrEqual(bound);

    // once it reads, every frame is answered: nothing was dropped, reading resumed on drain
    let answers = 0;
    let heavies = 0;
    const dec = new FrameDecoder();
    const all = new Promise<void>((resolve) => {
      flood.socket.on("data", (c: Buffer) => {
        for (const ev of dec.push(c)) {
          if (ev.kind !== "frame") throw new Error(ev.message);
          answers++;
          if (ev.header.status === Status.OK) heavies++;
        }
        if (answers === frames) resolve();
      });
    });
    await all;
    expect(heavies).toBe(2000);
    expect(server.connectionStats()[0]!.peakInFlight).toBeLessThanOrEqual(MAX_IN_FLIGHT - 1 + BATCH);
    await good.close();
    flood.socket.destroy();
  }, 120_000);

  it("a peer that stops reading is closed by the idle timeout, and the farm goes on serving", async () => {
    const { server, port } = await serve(farm.farm, {
      maxInFlight: 16,
      writeHighWater: 16 * 1024,
      idleTimeoutMs: 300,
    });
    const heavy = frame(
      Op.STATUS,
      1,
      { items: Array.from({ length: 16 }, () => ({ device: id(1) })), protocol: PROTOCOL },
      Flag.BATCH,
    );
    const flood = raw(port, { read: false });
    await flood.connected;
    flood.socket.write(Buffer.concat(Array.from({ length: 2000 }, () => heavy)));
    // (the flood socket reads nothing, so it is the server that tells)
    await until(() => server.stats().idleClosed === 1 && server.connections === 0);
    const c = new StationClient({ port, retries: 0 });
    expect((await c.ping()).count).toBe(1000);
    await c.close();
  }, 60_000);
});

describe("every reply counts toward the in-flight limit", () => {
  it("error replies wait behind a full connection instead of piling up", async () => {
    const g = gate();
    const { server, port } = await serve(
      service(() => g.wait()),
      { maxInFlight: 4 },
    );
    const c = raw(port);
    await c.connected;
    const errors = Array.from({ length: 100 }, (_, i) => frame(UNKNOWN_OP, 100 + i));
    c.socket.write(Buffer.concat([...[1, 2, 3, 4].map((i) => frame(Op.PING, i)), ...errors]));
    await until(() => server.connectionStats()[0]?.framesRead === 104);
    const s = server.connectionStats()[0]!;
    expect(s).toMatchObject({ inFlight: 4, handling: 4, held: 100, paused: true });
    // a round trip elsewhere: the held frames still have no answer
    const other = raw(port);
    other.socket.write(frame(UNKNOWN_OP, 1));
    await other.answered(1);
    other.socket.destroy();
    expect(c.answers).toHaveLength(0);
    g.open();
    await c.answered(104);
    expect(c.answers.filter((a) => a.status === Status.OK)).toHaveLength(4);
    expect(c.answers.filter((a) => a.status === Status.UNKNOWN_OPCODE)).toHaveLength(100);
    expect(server.connectionStats()[0]!.peakInFlight).toBe(4);
    c.socket.destroy();
  });

  it("past the limit requests wait in TCP, not BUSY: a client pipelining 200 gets 200 answers", async () => {
    const { server, port } = await serve(
      service(async (_op, body) => {
        await new Promise((r) => setImmediate(r));
        return { kind: "ok", body: statusBody(body.device as string) };
      }),
      { maxInFlight: 8 },
    );
    const client = new StationClient({ port, poolSize: 1, maxInFlight: 200, retries: 0 });
    const devices = Array.from({ length: 200 }, (_, i) => `d${i}`);
    const res = await Promise.all(devices.map((d) => client.status(d)));
    expect(res.map((r) => r.device)).toEqual(devices);
    expect(server.connectionStats()[0]!.peakInFlight).toBeLessThanOrEqual(8);
    await client.close();
  });

  it("a BATCH frame weighs as many requests as it has items", async () => {
    const g = gate();
    const { server, port } = await serve(
      service(() => g.wait()),
      { maxInFlight: 10 },
    );
    const c = raw(port);
    await c.connected;
    const batch = (rid: number) =>
      frame(
        Op.STATUS,
        rid,
        { items: Array.from({ length: 8 }, (_, i) => ({ device: `d${i}` })) },
        Flag.BATCH,
      );
    c.socket.write(Buffer.concat([batch(1), batch(2), frame(Op.PING, 3)]));
    await until(() => server.connectionStats()[0]?.framesRead === 3);
    // the second batch starts at 8 < 10 in flight; the ping waits behind 16
    expect(server.connectionStats()[0]).toMatchObject({ inFlight: 16, handling: 2, held: 1 });
    g.open();
    await c.answered(3);
    expect(c.answers.map((a) => a.status)).toEqual([Status.OK, Status.OK, Status.OK]);
    c.socket.destroy();
  });

  it("a request that is never answered (a hung device) frees its place", async () => {
    const { port } = await serve(
      service((op) => (op === Op.STATUS ? { kind: "hang" } : ok)),
      { maxInFlight: 2 },
    );
    const c = raw(port);
    c.socket.write(
      Buffer.concat([...[1, 2, 3, 4, 5].map((i) => frame(Op.STATUS, i, { device: "d" })), frame(Op.PING, 9)]),
    );
    await c.answered(1);
    expect(c.answers.map((a) => [a.requestId, a.status])).toEqual([[9, Status.OK]]);
    c.socket.destroy();
  });

  it("held frames are started once each when a full connection resumes through hung devices", async () => {
    const g = gate();
    let pings = 0;
    const { server, port } = await serve(
      service((op) => {
        if (op === Op.STATUS) return { kind: "hang" };
        return ++pings <= 2 ? g.wait() : ok;
      }),
      { maxInFlight: 2 },
    );
    const c = raw(port);
    c.socket.write(
      Buffer.concat([
        frame(Op.PING, 1),
        frame(Op.PING, 2),
        ...[3, 4, 5].map((i) => frame(Op.STATUS, i, { device: "d" })),
        frame(Op.PING, 9),
      ]),
    );
    await until(() => server.connectionStats()[0]?.held === 4);
    g.open();
    await c.answered(3);
    // one more round trip: nothing else comes
    c.socket.write(frame(Op.PING, 10));
    await c.answered(4);
    expect(c.answers.map((a) => a.requestId).sort((x, y) => x - y)).toEqual([1, 2, 9, 10]);
    expect(pings).toBe(4);
    c.socket.destroy();
  });
});

describe("a peer that ends its side", () => {
  it("still gets the answers to what it sent, then the server ends too", async () => {
    const { server, port } = await serve(
      service(async () => {
        await new Promise((r) => setTimeout(r, 20));
        return ok;
      }),
    );
    const c = raw(port);
    c.socket.end(Buffer.concat(Array.from({ length: 10 }, (_, i) => frame(Op.PING, i + 1))));
    await c.whenClosed();
    expect(c.answers.map((a) => a.requestId).sort((x, y) => x - y)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    await until(() => server.connections === 0);
  });
});

describe("idle timeout", () => {
  const IDLE = 300;

  it("closes a connection that sends nothing, with a TIMEOUT notice", async () => {
    const { server, port } = await serve(service(), { idleTimeoutMs: IDLE });
    const c = raw(port);
    await c.whenClosed();
    expect(c.answers).toHaveLength(1);
    expect(c.answers[0]).toMatchObject({ status: Status.TIMEOUT, requestId: 0 });
    expect(c.answers[0]!.body.message).toBe("idle: got no frame for 300 ms, want one at least every 300 ms");
    expect(server.stats().idleClosed).toBe(1);
  });

  it("closes a connection that sends part of a frame and stalls", async () => {
    const { port } = await serve(service(), { idleTimeoutMs: IDLE });
    const c = raw(port);
    const f = frame(Op.STATUS, 7, { device: "a".repeat(40) });
    c.socket.write(Buffer.concat([frame(Op.PING, 1), f.subarray(0, 20)]));
    await c.whenClosed();
    expect(c.answers.map((a) => [a.requestId, a.status])).toEqual([
      [1, Status.OK],
      [0, Status.TIMEOUT],
    ]);
    expect(c.answers[1]!.body.message).toMatch(/^idle: got 20 bytes of a frame and no complete frame/);
  });

  it("closes a connection that trickles a frame a byte at a time", async () => {
    const { port } = await serve(service(), { idleTimeoutMs: IDLE });
    const c = raw(port);
    await c.connected;
    const f = encodeFrame(Op.STATUS, 7, Buffer.alloc(1_000_000)); // never completes at this rate
    let sent = 0;
    const t = setInterval(() => {
      if (!c.closed) c.socket.write(f.subarray(sent, ++sent));
    }, 20);
    await c.whenClosed();
    clearInterval(t);
    expect(sent).toBeLessThan(f.length);
    expect(c.answers.at(-1)).toMatchObject({ status: Status.TIMEOUT, requestId: 0 });
  });

  it("keeps a connection whose request the service is still working on", async () => {
    const { port } = await serve(
      service(async () => {
        await new Promise((r) => setTimeout(r, 4 * IDLE));
        return ok;
      }),
      { idleTimeoutMs: IDLE },
    );
    const c = raw(port);
    c.socket.write(frame(Op.PING, 1));
    await c.answered(1);
    expect(c.answers[0]).toMatchObject({ requestId: 1, status: Status.OK });
  });

  it("the station client opens a new connection after the farm closed an idle one", async () => {
    const { server, port } = await serve(
      service((_op, body) => ({ kind: "ok", body: statusBody(body.device as string) })),
      { idleTimeoutMs: IDLE },
    );
    const client = new StationClient({ port, poolSize: 1, retries: 0 });
    expect((await client.status("d1")).device).toBe("d1");
    await until(() => server.stats().idleClosed === 1 && client.connections === 0);
    expect((await client.status("d2")).device).toBe("d2");
    expect(server.stats()).toMatchObject({ connections: 1, idleClosed: 1 });
    await client.close();
  });
});

describe("connection cap", () => {
  it("refuses a connection over the cap with a BUSY notice, counts it, and takes new ones once below", async () => {
    const { server, port } = await serve(service(), { maxConnections: 2 });
    const a = raw(port);
    const b = raw(port);
    for (const c of [a, b]) c.socket.write(frame(Op.PING, 1));
    await a.answered(1);
    await b.answered(1);
    const refused = raw(port);
    refused.socket.write(frame(Op.PING, 1));
    await refused.whenClosed();
    expect(refused.answers).toHaveLength(1);
    expect(refused.answers[0]).toMatchObject({ status: Status.BUSY, requestId: 0 });
    expect(refused.answers[0]!.body.message).toBe("connections: got 2 open, want at most 2; try again later");
    expect(server.stats()).toMatchObject({ connections: 2, refusedConnections: 1 });
    a.socket.destroy();
    await until(() => server.connections === 1);
    const c = raw(port);
    c.socket.write(frame(Op.PING, 5));
    await c.answered(1);
    expect(c.answers[0]).toMatchObject({ requestId: 5, status: Status.OK });
    b.socket.destroy();
    c.socket.destroy();
  });
});

describe("limits are options", () => {
  it("refuses out-of-range limits naming the option", () => {
    expect(() => new StationServer(service(), { maxConnections: 0 })).toThrow(
      "maxConnections: got 0, want an integer in 1..65536",
    );
    expect(() => new StationServer(service(), { idleTimeoutMs: 1.5 })).toThrow(/idleTimeoutMs: got 1\.5/);
    expect(() => new StationServer(service(), { writeHighWater: 10 })).toThrow(/writeHighWater/);
    expect(() => new StationServer(service(), { maxInFlight: -1 })).toThrow(/maxInFlight/);
    expect(() => new StationServer(service(), { maxBody: 2 ** 40 })).toThrow(/maxBody/);
  });
});

function statusBody(device: string): CborMap {
  return {
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
  };
}
