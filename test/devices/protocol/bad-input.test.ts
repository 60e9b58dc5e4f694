// Point 7: bad input sent for real over TCP. Every case gets its error code, the farm keeps
// serving a well-behaved client throughout, and no device state changes.
import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CborMap, decode, encode } from "../../../core/station/cbor";
import { StationClient } from "../../../core/station/client";
import { encodeFrame, Flag, FrameDecoder, Op, Status } from "../../../core/station/frame";
import { deviceId } from "../../../core/station/ids";
import type { DeviceStatus } from "../../../core/station/messages";
import type { RunningFarm } from "../../../devices/farm/serve";
import { farmFor, makeCa, tempDir } from "../farm/helpers";

const id = (i: number) => deviceId("fg100", i);

interface Answer {
  status: number;
  requestId: number;
  flags: number;
  body: CborMap;
}

/** Send raw bytes on a fresh connection; collect answers until the farm closes it or `want` arrive. */
function exchange(port: number, bytes: Buffer, o: { end?: boolean; want?: number } = {}) {
  return new Promise<{ answers: Answer[]; closed: boolean }>((resolve) => {
    const answers: Answer[] = [];
    const dec = new FrameDecoder();
    const s = connect(port, "127.0.0.1");
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      s.destroy();
      resolve({ answers, closed });
    };
    const t = setTimeout(() => finish(false), 2000);
    s.on("data", (c) => {
      for (const ev of dec.push(c)) {
        if (ev.kind !== "frame") throw new Error(`farm sent a bad frame: ${ev.message}`);
        answers.push({
          status: ev.header.status,
          requestId: ev.header.requestId,
          flags: ev.header.flags,
          body: decode(ev.body) as CborMap,
        });
      }
      if (o.want !== undefined && answers.length >= o.want) finish(false);
    });
    s.on("close", () => finish(true));
    s.on("error", () => finish(true));
    s.write(bytes);
    if (o.end) s.end();
  });
}

const frame = (op: number, id: number, body: unknown, flags = 0, version = 1) =>
  encodeFrame(op, id, body instanceof Buffer ? body : encode(body as CborMap), flags, 0, version);

describe("bad input over TCP", () => {
  const dir = tempDir();
  const ca = makeCa();
  let farm: RunningFarm;
  let good: StationClient;
  let loop: Promise<void>;
  let stop = false;
  let goodCalls = 0;
  const goodErrors: unknown[] = [];
  let closedBefore: DeviceStatus;
  let provisionedBefore: DeviceStatus;

  beforeAll(async () => {
    farm = await farmFor(dir.path);
    good = new StationClient({ port: farm.port, retries: 0 });
    // a closed device and a provisioned one whose state must not move
    const k = (await good.identify(id(1))).publicKey!;
    await good.setTrustAnchor(id(1), ca.root);
    await good.install(id(1), ca.chainFor(k, id(1)));
    await good.identify(id(2));
    await good.setTrustAnchor(id(2), ca.root);
    closedBefore = await good.status(id(1));
    provisionedBefore = await good.status(id(2));
    // a well-behaved station keeps working on another device throughout
    loop = (async () => {
      while (!stop) {
        try {
          const n = randomBytes(16);
          await good.attest(id(3), n);
          await good.status(id(1));
          goodCalls++;
        } catch (e) {
          goodErrors.push(e);
        }
      }
    })();
  });

  afterAll(async () => {
    stop = true;
    await loop;
    await good.close();
    await farm.close();
    dir.remove();
  });

  it("bad magic: BAD_FRAME, then the connection is closed", async () => {
    const f = frame(Op.PING, 5, {});
    f.writeUInt16BE(0x1234, 0);
    const r = await exchange(farm.port, f);
    expect(r.answers.map((a) => a.status)).toEqual([Status.BAD_FRAME]);
    expect(r.answers[0]!.body.message).toMatch(/magic/);
    expect(r.closed).toBe(true);
  });

  it("oversized length: TOO_LARGE with the request ID, then closed", async () => {
    const f = frame(Op.PING, 77, {});
    f.writeUInt32BE(0xffffffff, 12);
    const r = await exchange(farm.port, f);
    expect(r.answers).toHaveLength(1);
    expect(r.answers[0]).toMatchObject({ status: Status.TOO_LARGE, requestId: 77 });
    expect(r.closed).toBe(true);
  });

  it("wrong version: UNSUPPORTED_VERSION, and the same connection still serves a good frame", async () => {
    const r = await exchange(farm.port, Buffer.concat([frame(Op.PING, 1, {}, 0, 9), frame(Op.PING, 2, {})]), {
      want: 2,
    });
    expect(r.answers.map((a) => [a.requestId, a.status])).toEqual([
      [1, Status.UNSUPPORTED_VERSION],
      [2, Status.OK],
    ]);
  });

  it("truncated frame (peer ends mid-frame): BAD_FRAME naming the truncation", async () => {
    const f = frame(Op.STATUS, 31, { device: id(1) });
    const r = await exchange(farm.port, f.subarray(0, f.length - 3), { end: true });
    expect(r.answers).toHaveLength(1);
    expect(r.answers[0]).toMatchObject({ status: Status.BAD_FRAME, requestId: 31 });
    expect(r.answers[0]!.body.message).toMatch(/truncated/);
  });

  it("malformed bodies: BAD_REQUEST, the connection goes on", async () => {
    const body = encode({ device: id(1) });
    const r = await exchange(
      farm.port,
      Buffer.concat([
        frame(Op.STATUS, 1, body.subarray(0, body.length - 2)), // truncated CBOR
        frame(Op.STATUS, 2, encode([1, 2, 3])), // not a map
        frame(Op.STATUS, 3, Buffer.from("fb3ff0000000000000", "hex")), // a float
        frame(Op.ATTEST, 4, { device: id(1), nonce: Buffer.alloc(3) }), // nonce too short
        frame(Op.CSR, 5, { device: id(1), subject: [["XX", "y"]] }), // unknown attribute
        frame(Op.INSTALL, 6, { device: id(1), chain: "nope" }),
        frame(Op.PING, 7, {}),
      ]),
      { want: 7 },
    );
    // answers come as they complete (pipelining): order them by request ID
    r.answers.sort((a, b) => a.requestId - b.requestId);
    expect(r.answers.map((a) => a.status)).toEqual([
      Status.BAD_REQUEST,
      Status.BAD_REQUEST,
      Status.BAD_REQUEST,
      Status.BAD_REQUEST,
      Status.BAD_REQUEST,
      Status.BAD_REQUEST,
      Status.OK,
    ]);
    expect(r.answers[3]!.body.message).toMatch(/nonce: got 3 bytes, want 16\.\.64 bytes/);
  });

  it("unknown opcode, RESPONSE flag on a request, BATCH on a farm op", async () => {
    const r = await exchange(
      farm.port,
      Buffer.concat([
        frame(0x7f, 1, {}),
        frame(Op.PING, 2, {}, Flag.RESPONSE),
        frame(Op.PING, 3, { items: [{}] }, Flag.BATCH),
      ]),
      { want: 3 },
    );
    r.answers.sort((a, b) => a.requestId - b.requestId);
    expect(r.answers.map((a) => a.status)).toEqual([
      Status.UNKNOWN_OPCODE,
      Status.BAD_FRAME,
      Status.BAD_REQUEST,
    ]);
  });

  it("unknown devices: UNKNOWN_DEVICE, or BAD_REQUEST for IDs that are not IDs", async () => {
    const c = new StationClient({ port: farm.port, retries: 0 });
    try {
      for (const d of ["fg100-9999999", "other-0000001", "fg100-1", "fg100-00000001"]) {
        const e = await c.status(d).catch((x) => x);
        expect(e.status, d).toBe(Status.UNKNOWN_DEVICE);
      }
      for (const d of ["../etc/passwd", "", "x".repeat(65)]) {
        const e = await c.status(d).catch((x) => x);
        expect(e.status, d).toBe(Status.BAD_REQUEST);
      }
      const batch = await c.batch("STATUS", [{ device: id(1) }, { device: "fg100-9999999" }, 7 as never]);
      expect(batch.map((b) => (b.ok ? Status.OK : b.error.status))).toEqual([
        Status.OK,
        Status.UNKNOWN_DEVICE,
        Status.BAD_REQUEST,
      ]);
    } finally {
      await c.close();
    }
  });

  it("invalid signatures: tampered chains, anchors and licenses are refused", async () => {
    const c = new StationClient({ port: farm.port, retries: 0 });
    try {
      const k = (await c.identify(id(2))).publicKey!;
      const chain = ca.chainFor(k, id(2));
      const tampered = Buffer.from(chain[0]!);
      tampered[tampered.length - 4]! ^= 0x01;
      expect((await c.install(id(2), [tampered, chain[1]!, chain[2]!]).catch((x) => x)).status).toBe(
        Status.BAD_SIGNATURE,
      );
      const badInter = Buffer.from(chain[1]!);
      badInter[badInter.length - 4]! ^= 0x01;
      expect((await c.install(id(2), [chain[0]!, badInter, chain[2]!]).catch((x) => x)).status).toBe(
        Status.BAD_SIGNATURE,
      );
      const badRoot = Buffer.from(ca.root);
      badRoot[badRoot.length - 4]! ^= 0x01;
      expect((await c.setTrustAnchor(id(2), badRoot).catch((x) => x)).status).toBe(Status.BAD_SIGNATURE);
      expect((await c.inject(id(2), randomBytes(200), randomBytes(100)).catch((x) => x)).status).toBe(
        Status.BAD_REQUEST,
      );
      expect((await c.install(id(2), [randomBytes(300), chain[1]!]).catch((x) => x)).status).toBe(
        Status.BAD_CERTIFICATE,
      );
    } finally {
      await c.close();
    }
  });

  it("random garbage on 100 connections never takes the farm down", async () => {
    for (let i = 0; i < 100; i++) {
      const junk = randomBytes(1 + ((i * 37) % 300));
      if (i % 2) junk.writeUInt16BE(0x4647, 0); // half of them with a valid magic
      const r = await exchange(farm.port, junk, { end: true });
      for (const a of r.answers) expect(a.status).not.toBe(Status.OK);
    }
    expect((await good.ping()).count).toBe(1000);
  });

  it("after all that: the good client never failed and no state moved, also after a restart", async () => {
    stop = true;
    await loop;
    expect(goodErrors).toEqual([]);
    expect(goodCalls).toBeGreaterThan(0);
    expect(await good.status(id(1))).toEqual(closedBefore);
    expect(await good.status(id(2))).toEqual(provisionedBefore);
    await good.close();
    await farm.close();
    farm = await farmFor(dir.path);
    good = new StationClient({ port: farm.port });
    expect(await good.status(id(1))).toEqual(closedBefore);
    expect(await good.status(id(2))).toEqual(provisionedBefore);
  });
});
