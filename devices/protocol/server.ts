/**
 * Station protocol server (framing in core/station/frame.ts): accepts TCP connections on
 * loopback, parses frames incrementally, and hands each request to a Service. Requests are
 * pipelined: many can be in flight per connection and responses go out as they complete, in
 * any order, matched by request ID; a connection with `maxInFlight` requests pending gets
 * BUSY. Bad input is answered, never fatal to the process: a frame of an unknown version, an
 * unknown opcode or a malformed body gets its error response and the connection goes on; a
 * bad magic, an oversized length or a truncated frame cannot be resynchronised, so the
 * connection gets one error frame and is closed. Other connections are unaffected.
 */
import { createServer, type Server, type Socket } from "node:net";
import { FleetError } from "../../core/errors";
import { type CborMap, decode, encode, isMap, type Value } from "../../core/station/cbor";
import {
  DEFAULT_MAX_BODY,
  encodeFrame,
  Flag,
  FrameDecoder,
  type Header,
  isDeviceOp,
  StationError,
  Status,
} from "../../core/station/frame";

export type Reply =
  | { kind: "ok"; body: CborMap }
  | { kind: "error"; status: number; message: string }
  /** close the connection instead of answering (a device that drops the link) */
  | { kind: "drop" }
  /** never answer (a device that stops responding) */
  | { kind: "hang" };

export interface Service {
  /** true if the opcode is implemented */
  knows(op: number): boolean;
  handle(op: number, batch: boolean, body: CborMap): Reply | Promise<Reply>;
}

export interface ServerOptions {
  maxBody?: number;
  maxInFlight?: number;
  /** where to report internal errors (never with key material); default stderr */
  log?: (line: string) => void;
}

/** Map any thrown value to a protocol error reply. */
export function errorReply(e: unknown, log?: (line: string) => void): Reply {
  if (e instanceof StationError) return { kind: "error", status: e.status, message: e.detail };
  if (e instanceof FleetError) {
    if (e.code === "INVALID_INPUT") return { kind: "error", status: Status.BAD_REQUEST, message: e.message };
    if (e.code === "CONFLICT") return { kind: "error", status: Status.INVALID_STATE, message: e.message };
    if (e.code === "NOT_FOUND") return { kind: "error", status: Status.UNKNOWN_DEVICE, message: e.message };
    if (e.code === "INTEGRITY") return { kind: "error", status: Status.BAD_SIGNATURE, message: e.message };
    if (e.code === "UNAVAILABLE") return { kind: "error", status: Status.BUSY, message: e.message };
  }
  log?.(`internal error: ${e instanceof Error ? e.message : String(e)}`);
  return { kind: "error", status: Status.INTERNAL, message: "internal error" };
}

class Conn {
  private readonly decoder: FrameDecoder;
  private inFlight = 0;
  private corked = false;
  private closing = false;

  constructor(
    private readonly socket: Socket,
    private readonly service: Service,
    private readonly maxInFlight: number,
    maxBody: number,
    private readonly log: (line: string) => void,
  ) {
    this.decoder = new FrameDecoder(maxBody);
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("end", () => {
      const ev = this.decoder.end();
      if (ev && ev.kind === "error") this.send(ev.op, ev.requestId, ev.status, { message: ev.message });
      this.closing = true;
      if (this.inFlight === 0) socket.end();
    });
    socket.on("error", () => {}); // peer reset: "close" follows
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    for (const ev of this.decoder.push(chunk)) {
      if (ev.kind === "error") {
        this.send(ev.op, ev.requestId, ev.status, { message: ev.message });
        if (ev.fatal) {
          this.closing = true;
          this.socket.end();
          return;
        }
        continue;
      }
      this.onFrame(ev.header, ev.body);
    }
  }

  private onFrame(h: Header, raw: Buffer): undefined {
    const fail = (status: number, message: string): undefined => {
      this.send(h.op, h.requestId, status, { message });
    };
    if (h.flags & Flag.RESPONSE)
      return fail(Status.BAD_FRAME, "flags: got RESPONSE on a request, want it clear");
    if (!this.service.knows(h.op))
      return fail(Status.UNKNOWN_OPCODE, `opcode: got 0x${h.op.toString(16)}, want a known one`);
    const batch = (h.flags & Flag.BATCH) !== 0;
    if (batch && !isDeviceOp(h.op))
      return fail(Status.BAD_REQUEST, "flags: got BATCH on a farm operation, want a device operation");
    if (this.inFlight >= this.maxInFlight)
      return fail(
        Status.BUSY,
        `in flight: got ${this.inFlight} requests, want at most ${this.maxInFlight} per connection`,
      );
    let body: Value;
    try {
      body = raw.length ? decode(raw) : Object.create(null);
    } catch (e) {
      return fail(Status.BAD_REQUEST, `body: ${(e as Error).message}`);
    }
    if (!isMap(body)) return fail(Status.BAD_REQUEST, "body: got a non-map, want a CBOR map");
    this.inFlight++;
    let r: Reply | Promise<Reply>;
    try {
      r = this.service.handle(h.op, batch, body);
    } catch (e) {
      r = errorReply(e, this.log);
    }
    if (r instanceof Promise) {
      r.then(
        (reply) => this.finish(h, reply),
        (e) => this.finish(h, errorReply(e, this.log)),
      );
    } else {
      this.finish(h, r);
    }
  }

  private finish(h: Header, r: Reply): void {
    this.inFlight--;
    switch (r.kind) {
      case "ok":
        this.send(h.op, h.requestId, Status.OK, r.body, h.flags & Flag.BATCH);
        break;
      case "error":
        this.send(h.op, h.requestId, r.status, { message: r.message });
        break;
      case "drop":
        this.socket.destroy();
        return;
      case "hang":
        break;
    }
    if (this.closing && this.inFlight === 0 && !this.socket.destroyed) this.socket.end();
  }

  private send(op: number, requestId: number, status: number, body: CborMap, extraFlags = 0): void {
    if (this.socket.destroyed || this.socket.writableEnded) return;
    let payload: Buffer;
    try {
      payload = encode(body as Value, 512);
    } catch (e) {
      this.log(`encode failed: ${(e as Error).message}`);
      payload = encode({ message: "internal error" });
      status = Status.INTERNAL;
    }
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(encodeFrame(op, requestId, payload, Flag.RESPONSE | extraFlags, status));
  }
}

export class StationServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor(service: Service, opts: ServerOptions = {}) {
    const maxBody = opts.maxBody ?? DEFAULT_MAX_BODY;
    const maxInFlight = opts.maxInFlight ?? 4096;
    const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
    this.server = createServer((socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
      new Conn(socket, service, maxInFlight, maxBody, log);
    });
  }

  get connections(): number {
    return this.sockets.size;
  }

  /** Listen on loopback; resolves with the bound port (pass 0 for any free one). */
  listen(port: number, host = "127.0.0.1"): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        const a = this.server.address();
        resolve(typeof a === "object" && a ? a.port : port);
      });
    });
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
