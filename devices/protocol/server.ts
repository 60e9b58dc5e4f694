/**
 * Station protocol server (framing in core/station/frame.ts): accepts TCP connections on
 * loopback, parses frames incrementally, and hands each request to a Service. Requests are
 * pipelined: many can be in flight per connection and responses go out as they complete, in
 * any order, matched by request ID. Bad input is answered, never fatal to the process: a frame
 * of an unknown version, an unknown opcode or a malformed body gets its error response and the
 * connection goes on; a bad magic, an oversized length or a truncated frame cannot be
 * resynchronised, so the connection gets one error frame and is closed. Other connections are
 * unaffected.
 *
 * What one connection may hold is bounded, so that a peer that pipelines and never reads
 * cannot grow the process (issue 9, finding 8):
 * - every request counts toward `maxInFlight` (a BATCH frame as its number of items) from
 *   the moment it is read until its reply, error replies included, has been handed to the
 *   kernel; at the limit the server stops reading the socket, so the excess waits in the
 *   peer's and the kernel's buffers (TCP flow control) instead of the farm's heap;
 * - reading also stops while the socket's write buffer holds more than `writeHighWater`
 *   bytes, and resumes as it drains;
 * - a connection with nothing in progress that completes no frame and drains no reply for
 *   `idleTimeoutMs` is closed (a partial frame that stalls, or trickles, included);
 * - at most `maxConnections` are open; one more gets a BUSY error frame and is closed.
 * The bookkeeping is per event-loop turn (one write and one clock reading per turn), not per
 * frame, so it costs nothing measurable in bench/station-roundtrip.ts.
 */
import { createServer, type Server, type Socket } from "node:net";
import { FleetError, invalid } from "../../core/errors";
import { type CborMap, decode, encode, isMap, type Value } from "../../core/station/cbor";
import {
  DEFAULT_MAX_BODY,
  encodeFrame,
  Flag,
  FrameDecoder,
  type FrameEvent,
  type Header,
  isDeviceOp,
  StationError,
  Status,
} from "../../core/station/frame";
import { BATCH_MAX } from "../../core/station/messages";

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

export interface Limits {
  /** largest request body, bytes */
  maxBody: number;
  /** requests (batch items) read and not yet answered onto the wire, per connection */
  maxInFlight: number;
  /** bytes in a connection's write buffer above which the server stops reading it */
  writeHighWater: number;
  /** close a connection that makes no progress this long, ms; 0 = never */
  idleTimeoutMs: number;
  /** connections open at once; more are refused */
  maxConnections: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = {
  maxBody: DEFAULT_MAX_BODY,
  maxInFlight: 4096,
  writeHighWater: 1024 * 1024,
  idleTimeoutMs: 120_000,
  maxConnections: 64,
};

/** Valid ranges, for the options and for `fleet devices serve`'s flags. */
export const LIMIT_RANGES: Readonly<Record<keyof Limits, readonly [number, number]>> = {
  maxBody: [1024, 256 * 1024 * 1024],
  maxInFlight: [1, 1 << 20],
  writeHighWater: [1024, 1024 * 1024 * 1024],
  idleTimeoutMs: [0, 86_400_000],
  maxConnections: [1, 65_536],
};

export interface ServerOptions extends Partial<Limits> {
  /** where to report internal errors (never with key material); default stderr */
  log?: (line: string) => void;
}

/** A connection the peer did not close is destroyed this long after the server ended it. */
const CLOSE_GRACE_MS = 2_000;

/** One connection's accounting, for tests and diagnostics. */
export interface ConnectionStats {
  inFlight: number;
  /** frames the service is still working on */
  handling: number;
  /** bytes in the socket's write buffer now */
  writeBuffered: number;
  /** bytes received towards the next, incomplete frame */
  readBuffered: number;
  /** frames read but held because the connection is at a limit */
  held: number;
  paused: boolean;
  framesRead: number;
  peakInFlight: number;
  peakWriteBuffered: number;
}

export interface ServerStats {
  connections: number;
  /** connections refused over maxConnections, since the server started */
  refusedConnections: number;
  /** connections closed by the idle timeout */
  idleClosed: number;
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

/** An error frame that answers no request (request ID 0): why the server closes a connection. */
const noticeFrame = (status: number, message: string): Buffer =>
  encodeFrame(0, 0, encode({ message }), Flag.RESPONSE, status);

const NO_EVENTS: FrameEvent[] = [];

function flushTick(c: Conn): void {
  c.flush();
}

class Conn {
  private readonly decoder: FrameDecoder;
  /** requests read and not yet handed to the kernel (their replies included) */
  private inFlight = 0;
  private handling = 0;
  /** replies of this turn, written together at its end */
  private out: Buffer[] = [];
  private outWeight = 0;
  private flushQueued = false;
  /** frames parsed but not yet started, because a limit was reached */
  private held: FrameEvent[] = NO_EVENTS;
  private heldAt = 0;
  private running = false;
  private paused = false;
  private peerEnded = false;
  /** no more input is taken: the peer ended, a fatal framing error, or a timeout */
  private closing = false;
  private lastProgress = performance.now();
  private timer: NodeJS.Timeout | undefined;
  private grace: NodeJS.Timeout | undefined;
  private framesRead = 0;
  private peakInFlight = 0;
  private peakWriteBuffered = 0;

  constructor(
    private readonly socket: Socket,
    private readonly service: Service,
    private readonly limits: Limits,
    private readonly log: (line: string) => void,
    private readonly onIdleClose: () => void,
  ) {
    this.decoder = new FrameDecoder(limits.maxBody);
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("end", () => {
      this.peerEnded = true;
      if (this.heldAt >= this.held.length) this.onInputEnd();
    });
    socket.on("error", () => {}); // peer reset: "close" follows
    // our side is ended and flushed: a peer that does not close its side too is not waited for
    socket.on("finish", () => {
      this.grace = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
      this.grace.unref();
    });
    socket.on("close", () => {
      if (this.timer) clearTimeout(this.timer);
      if (this.grace) clearTimeout(this.grace);
    });
    if (limits.idleTimeoutMs > 0) this.arm(limits.idleTimeoutMs);
  }

  stats(): ConnectionStats {
    return {
      inFlight: this.inFlight,
      handling: this.handling,
      writeBuffered: this.socket.writableLength,
      readBuffered: this.decoder.buffered,
      held: this.held.length - this.heldAt,
      paused: this.paused,
      framesRead: this.framesRead,
      peakInFlight: this.peakInFlight,
      peakWriteBuffered: this.peakWriteBuffered,
    };
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    const evs = this.decoder.push(chunk);
    if (evs.length === 0) return;
    // only a complete frame is progress: a trickled partial frame does not keep a connection
    this.lastProgress = performance.now();
    this.framesRead += evs.length;
    if (this.heldAt < this.held.length) {
      for (const ev of evs) this.held.push(ev);
    } else {
      this.held = evs;
      this.heldAt = 0;
    }
    this.run();
  }

  /** Start held frames while under the limits; stop reading the socket when one is reached. */
  private run(): void {
    // a reply released synchronously (a hung device) may resume from inside this loop
    if (this.running) return;
    this.running = true;
    try {
      this.startHeld();
    } finally {
      this.running = false;
    }
    if (this.heldAt < this.held.length || this.closing) return;
    if (this.peerEnded) this.onInputEnd();
    else if (this.paused) this.resumeIfBelow();
  }

  private startHeld(): void {
    const evs = this.held;
    while (this.heldAt < evs.length) {
      if (this.closing) return;
      if (this.inFlight >= this.limits.maxInFlight) {
        this.pause();
        return;
      }
      const ev = evs[this.heldAt++]!;
      // counted before anything is answered, so that an error reply holds its place too
      this.inFlight++;
      if (this.inFlight > this.peakInFlight) this.peakInFlight = this.inFlight;
      if (ev.kind === "error") {
        this.reply(ev.op, ev.requestId, ev.status, { message: ev.message }, 0, 1);
        if (ev.fatal) {
          this.close();
          return;
        }
        continue;
      }
      this.onFrame(ev.header, ev.body);
    }
    this.held = NO_EVENTS;
    this.heldAt = 0;
  }

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.socket.pause();
  }

  private resumeIfBelow(): void {
    if (this.closing || this.socket.destroyed) return;
    if (this.inFlight >= this.limits.maxInFlight) return;
    if (this.socket.writableLength > this.limits.writeHighWater) return;
    if (this.heldAt < this.held.length) {
      this.run();
      return; // run() resumes once the held frames are all started
    }
    this.paused = false;
    this.socket.resume();
  }

  private onFrame(h: Header, raw: Buffer): undefined {
    const fail = (status: number, message: string): undefined => {
      this.reply(h.op, h.requestId, status, { message }, 0, 1);
    };
    if (h.flags & Flag.RESPONSE)
      return fail(Status.BAD_FRAME, "flags: got RESPONSE on a request, want it clear");
    if (!this.service.knows(h.op))
      return fail(Status.UNKNOWN_OPCODE, `opcode: got 0x${h.op.toString(16)}, want a known one`);
    const batch = (h.flags & Flag.BATCH) !== 0;
    if (batch && !isDeviceOp(h.op))
      return fail(Status.BAD_REQUEST, "flags: got BATCH on a farm operation, want a device operation");
    let body: Value;
    try {
      body = raw.length ? decode(raw) : Object.create(null);
    } catch (e) {
      return fail(Status.BAD_REQUEST, `body: ${(e as Error).message}`);
    }
    if (!isMap(body)) return fail(Status.BAD_REQUEST, "body: got a non-map, want a CBOR map");
    // a batch answers for each of its items, so it weighs as many requests
    let weight = 1;
    if (batch && Array.isArray(body.items) && body.items.length > 1) {
      weight = Math.min(body.items.length, BATCH_MAX);
      this.inFlight += weight - 1;
      if (this.inFlight > this.peakInFlight) this.peakInFlight = this.inFlight;
    }
    this.handling++;
    let r: Reply | Promise<Reply>;
    try {
      r = this.service.handle(h.op, batch, body);
    } catch (e) {
      r = errorReply(e, this.log);
    }
    if (r instanceof Promise) {
      r.then(
        (reply) => this.finish(h, weight, reply),
        (e) => this.finish(h, weight, errorReply(e, this.log)),
      );
    } else {
      this.finish(h, weight, r);
    }
  }

  private finish(h: Header, weight: number, r: Reply): void {
    this.handling--;
    switch (r.kind) {
      case "ok":
        this.reply(h.op, h.requestId, Status.OK, r.body, h.flags & Flag.BATCH, weight);
        break;
      case "error":
        this.reply(h.op, h.requestId, r.status, { message: r.message }, 0, weight);
        break;
      case "drop":
        this.closing = true; // the frames after it in this chunk are not started
        this.socket.destroy();
        return;
      case "hang":
        this.release(weight);
        break;
    }
  }

  /** Queue a reply; it keeps `weight` in flight until the kernel has taken it. */
  private reply(
    op: number,
    requestId: number,
    status: number,
    body: CborMap,
    extraFlags: number,
    weight: number,
  ): void {
    if (this.socket.destroyed || this.socket.writableEnded) {
      this.release(weight);
      return;
    }
    let payload: Buffer;
    try {
      payload = encode(body as Value, 512);
    } catch (e) {
      this.log(`encode failed: ${(e as Error).message}`);
      payload = encode({ message: "internal error" });
      status = Status.INTERNAL;
    }
    this.out.push(encodeFrame(op, requestId, payload, Flag.RESPONSE | extraFlags, status));
    this.outWeight += weight;
    if (!this.flushQueued) {
      this.flushQueued = true;
      process.nextTick(flushTick, this);
    }
  }

  /** Write this turn's replies in one go (writev); release their weight once written. */
  flush(): void {
    this.flushQueued = false;
    const out = this.out;
    if (out.length === 0) return;
    const weight = this.outWeight;
    this.out = [];
    this.outWeight = 0;
    const s = this.socket;
    if (s.destroyed || s.writableEnded) {
      this.release(weight);
      return;
    }
    const written = () => {
      this.lastProgress = performance.now();
      this.release(weight);
    };
    if (out.length === 1) s.write(out[0]!, written);
    else {
      s.cork();
      for (let i = 0; i < out.length - 1; i++) s.write(out[i]!);
      s.write(out[out.length - 1]!, written);
      s.uncork();
    }
    const buffered = s.writableLength;
    if (buffered > this.peakWriteBuffered) this.peakWriteBuffered = buffered;
    if (buffered > this.limits.writeHighWater) this.pause();
  }

  private release(weight: number): void {
    this.inFlight -= weight;
    if (this.closing) this.endIfDone();
    else if (this.paused) this.resumeIfBelow();
  }

  /** The peer ended its side: answer a truncated frame, finish what is in progress, end ours. */
  private onInputEnd(): void {
    if (this.closing) return;
    this.closing = true;
    const ev = this.decoder.end();
    if (ev && ev.kind === "error") {
      this.inFlight++;
      this.reply(ev.op, ev.requestId, ev.status, { message: ev.message }, 0, 1);
    }
    this.endIfDone();
  }

  private endIfDone(): void {
    if (this.handling > 0 || this.out.length > 0 || this.socket.writableEnded) return;
    this.socket.end();
  }

  /** Stop taking input after a fatal framing error: send what is queued, then end. */
  private close(): void {
    this.closing = true;
    this.held = NO_EVENTS;
    this.heldAt = 0;
    this.flush();
    this.socket.end();
    this.socket.resume(); // discard whatever else the peer sends
  }

  private arm(ms: number): void {
    this.timer = setTimeout(() => this.checkIdle(), ms);
    this.timer.unref();
  }

  private checkIdle(): void {
    this.timer = undefined;
    if (this.socket.destroyed) return;
    const idle = this.limits.idleTimeoutMs;
    const since = performance.now() - this.lastProgress;
    // the service working on a request of this peer is not the peer's idleness
    if (this.handling > 0 || since < idle) {
      this.arm(this.handling > 0 ? idle : Math.max(1, idle - since));
      return;
    }
    this.onIdleClose();
    const t = idle % 1000 === 0 ? `${idle / 1000} s` : `${idle} ms`;
    const partial = this.decoder.buffered;
    const message = partial
      ? `idle: got ${partial} bytes of a frame and no complete frame for ${t}, want one within ${t}`
      : `idle: got no frame for ${t}, want one at least every ${t}`;
    if (this.closing || this.socket.writableLength > 0) {
      // ending already, or it does not read what it was sent: a notice would not get through
      this.socket.destroy();
      return;
    }
    this.closing = true;
    this.out.push(noticeFrame(Status.TIMEOUT, message));
    this.close();
  }
}

function checkLimits(opts: ServerOptions): Limits {
  const out = { ...DEFAULT_LIMITS };
  for (const k of Object.keys(LIMIT_RANGES) as Array<keyof Limits>) {
    const v = opts[k];
    if (v === undefined) continue;
    const [min, max] = LIMIT_RANGES[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
      throw invalid(k, v, `an integer in ${min}..${max}`);
    out[k] = v;
  }
  return out;
}

export class StationServer {
  private readonly server: Server;
  private readonly conns = new Map<Socket, Conn>();
  private refused = 0;
  private idleClosed = 0;
  readonly limits: Readonly<Limits>;
  private readonly log: (line: string) => void;

  constructor(service: Service, opts: ServerOptions = {}) {
    const limits = checkLimits(opts);
    this.limits = limits;
    const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
    this.log = log;
    const onIdleClose = () => {
      this.idleClosed++;
    };
    // half-open, so that replies still in progress when the peer ends its side are delivered
    this.server = createServer({ allowHalfOpen: true }, (socket) => {
      if (this.conns.size >= limits.maxConnections) {
        this.refuse(socket);
        return;
      }
      this.conns.set(socket, new Conn(socket, service, limits, log, onIdleClose));
      socket.on("close", () => this.conns.delete(socket));
    });
  }

  private refuse(socket: Socket): void {
    this.refused++;
    const max = this.limits.maxConnections;
    socket.on("error", () => {});
    socket.resume(); // read and discard, so that closing does not reset the notice away
    socket.end(
      noticeFrame(Status.BUSY, `connections: got ${max} open, want at most ${max}; try again later`),
    );
    setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
  }

  get connections(): number {
    return this.conns.size;
  }

  stats(): ServerStats {
    return { connections: this.conns.size, refusedConnections: this.refused, idleClosed: this.idleClosed };
  }

  /** Per-connection accounting, in the order the connections were accepted. */
  connectionStats(): ConnectionStats[] {
    return [...this.conns.values()].map((c) => c.stats());
  }

  /** Listen on loopback; resolves with the bound port (pass 0 for any free one). */
  listen(port: number, host = "127.0.0.1"): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        // accept() failing (EMFILE under a connection flood) must not take the farm down
        this.server.on("error", (e: NodeJS.ErrnoException) =>
          this.log(`station server: ${e.code ?? e.message}`),
        );
        const a = this.server.address();
        resolve(typeof a === "object" && a ? a.port : port);
      });
    });
  }

  close(): Promise<void> {
    for (const s of this.conns.keys()) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
