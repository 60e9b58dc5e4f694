/**
 * The station client: what the identity core (and through it the dynamic providers) uses to
 * talk to devices behind a station or device farm over the fleetguard station protocol
 * (frame.ts). It keeps a small pool of TCP connections and pipelines requests on each
 * (responses are matched by request ID, in any order), bounds the requests in flight per
 * connection (callers wait for capacity: backpressure instead of unbounded buffers), gives
 * every request a timeout, and retries idempotent operations a bounded number of times with
 * exponential backoff and full jitter on TIMEOUT, BUSY and lost connections. Non-idempotent
 * operations (INJECT) are never resent: their outcome is settled by asking STATUS.
 *
 * A station that cannot be reached once the retries are spent is one UNAVAILABLE error naming
 * host:port in words (not a bare errno): a person reads it in `pulumi up` and the right move is
 * always the same, start the station and run again (every step is idempotent, progress is in the
 * registry).
 */
import { Socket } from "node:net";
import { invalid } from "../errors";
import { type CborMap, decode, encode, isMap, type Value } from "./cbor";
import { DEFAULT_MAX_BODY, Flag, FrameDecoder, type Header, Op, StationError, Status } from "./frame";
import {
  BATCH_MAX,
  type CommandAuth,
  type ConnectRequest,
  type ConnectResult,
  connectRequestValue,
  DEVICE_OPS,
  type DeviceOpName,
  type DeviceStatus,
  type FarmInfo,
  type FarmStats,
  type IdentifyResult,
  list,
  map,
  PROTOCOL,
  parseConnectResult,
  parseFarmInfo,
  parseFarmStats,
  type RequestOf,
  type ResultOf,
  type Subject,
  uint,
} from "./messages";

export interface StationClientOptions {
  host?: string;
  port: number;
  /** TCP connections to open at most (default 2) */
  poolSize?: number;
  /** requests in flight per connection before callers wait (default 256) */
  maxInFlight?: number;
  /** per request, ms (default 10000) */
  timeoutMs?: number;
  /** extra attempts for idempotent operations (default 2) */
  retries?: number;
  /** first backoff, ms; doubles per attempt, capped at 2 s, full jitter (default 25) */
  backoffMs?: number;
  connectTimeoutMs?: number;
  maxBody?: number;
  /** injected for tests: jitter source in [0, 1) */
  random?: () => number;
}

export interface CallOptions {
  timeoutMs?: number;
  retries?: number;
}

export type BatchItem<T> = { ok: true; value: T } | { ok: false; error: StationError };

const RETRYABLE = new Set<number>([Status.TIMEOUT, Status.BUSY, Status.DISCONNECTED]);

/** The socket errors a dead or missing station gives, in words. */
const CONNECT_ERRORS: Record<string, string> = {
  ECONNREFUSED: "connection refused (nothing listens there: is the device farm running?)",
  ECONNRESET: "connection reset by the station",
  EPIPE: "connection reset by the station",
  ETIMEDOUT: "connect timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ENOTFOUND: "host name not found",
  EAI_AGAIN: "host name lookup failed",
  EADDRNOTAVAIL: "address not available",
};

const connectProblem = (e: NodeJS.ErrnoException): string =>
  (e.code && CONNECT_ERRORS[e.code]) ?? `could not connect (${e.code ?? e.message})`;

interface Pending {
  resolve(v: { header: Header; body: CborMap }): void;
  reject(e: StationError): void;
  timer: NodeJS.Timeout;
}

class Connection {
  readonly socket: Socket;
  readonly ready: Promise<void>;
  readonly pending = new Map<number, Pending>();
  /** requests holding capacity on this connection (including those waiting for connect) */
  slots = 0;
  private nextId = 1;
  private corked = false;
  closed = false;

  constructor(
    host: string,
    port: number,
    connectTimeoutMs: number,
    maxBody: number,
    private readonly onClose: (c: Connection) => void,
  ) {
    const decoder = new FrameDecoder(maxBody);
    this.socket = new Socket();
    this.socket.setNoDelay(true);
    this.ready = new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        reject(new StationError(Status.DISCONNECTED, `connect timed out after ${connectTimeoutMs} ms`));
        this.socket.destroy();
      }, connectTimeoutMs);
      this.socket.once("connect", () => {
        clearTimeout(t);
        resolve();
      });
      this.socket.once("error", (e: NodeJS.ErrnoException) => {
        clearTimeout(t);
        reject(new StationError(Status.DISCONNECTED, connectProblem(e)));
      });
    });
    this.ready.catch(() => {});
    this.socket.on("data", (chunk: Buffer) => {
      for (const ev of decoder.push(chunk)) {
        if (ev.kind === "error") {
          this.fail(`bad frame from station: ${ev.message}`);
          return;
        }
        if (!(ev.header.flags & Flag.RESPONSE)) {
          this.fail("station sent a request frame");
          return;
        }
        const p = this.pending.get(ev.header.requestId);
        if (!p) continue; // answered after its timeout: dropped
        this.pending.delete(ev.header.requestId);
        clearTimeout(p.timer);
        let body: Value;
        try {
          body = ev.body.length ? decode(ev.body) : Object.create(null);
        } catch (e) {
          p.reject(new StationError(Status.BAD_FRAME, `response body: ${(e as Error).message}`));
          continue;
        }
        if (!isMap(body)) {
          p.reject(new StationError(Status.BAD_FRAME, "response body: got a non-map, want a map"));
          continue;
        }
        if (ev.header.status !== Status.OK) {
          const msg = typeof body.message === "string" ? body.message : "(no message)";
          p.reject(new StationError(ev.header.status, msg));
        } else {
          p.resolve({ header: ev.header, body });
        }
      }
    });
    this.socket.on("error", () => {}); // "close" follows and settles everything
    this.socket.on("close", () => this.fail("the connection closed before the answer"));
    this.socket.connect(port, host);
  }

  get inFlight(): number {
    return this.pending.size;
  }

  send(
    op: number,
    flags: number,
    body: Uint8Array,
    timeoutMs: number,
  ): Promise<{ header: Header; body: CborMap }> {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new StationError(Status.DISCONNECTED, "connection closed"));
        return;
      }
      const id = this.nextId;
      this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new StationError(Status.TIMEOUT, `no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      const header = Buffer.allocUnsafe(16);
      header.writeUInt16BE(0x4647, 0);
      header[2] = 1;
      header[3] = flags;
      header[4] = op;
      header[5] = 0;
      header.writeUInt16BE(0, 6);
      header.writeUInt32BE(id, 8);
      header.writeUInt32BE(body.length, 12);
      // coalesce the frames of one tick into one write
      if (!this.corked) {
        this.corked = true;
        this.socket.cork();
        process.nextTick(() => {
          this.corked = false;
          this.socket.uncork();
        });
      }
      this.socket.write(header);
      if (body.length) this.socket.write(body);
    });
  }

  fail(reason: string): void {
    if (!this.closed) {
      this.closed = true;
      this.socket.destroy();
      this.onClose(this);
    }
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new StationError(Status.DISCONNECTED, reason));
    }
  }
}

export class StationClient {
  private readonly host: string;
  private readonly port: number;
  private readonly poolSize: number;
  private readonly maxInFlight: number;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly connectTimeoutMs: number;
  private readonly maxBody: number;
  private readonly random: () => number;
  private readonly conns: Connection[] = [];
  private readonly waiters: Array<{ resolve(c: Connection): void; reject(e: Error): void }> = [];
  private closed = false;

  constructor(opts: StationClientOptions) {
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535)
      throw invalid("port", opts.port, "an integer in 1..65535");
    const pos = (name: keyof StationClientOptions, def: number, min = 1): number => {
      const v = opts[name] ?? def;
      if (typeof v !== "number" || !Number.isInteger(v) || v < min)
        throw invalid(name, v, `an integer >= ${min}`);
      return v;
    };
    this.host = opts.host ?? "127.0.0.1";
    this.port = opts.port;
    this.poolSize = pos("poolSize", 2);
    this.maxInFlight = pos("maxInFlight", 256);
    this.timeoutMs = pos("timeoutMs", 10_000);
    this.retries = pos("retries", 2, 0);
    this.backoffMs = pos("backoffMs", 25, 0);
    this.connectTimeoutMs = pos("connectTimeoutMs", 5_000);
    this.maxBody = pos("maxBody", DEFAULT_MAX_BODY, 1024);
    this.random = opts.random ?? Math.random;
  }

  /** Requests currently in flight, over all connections. */
  get inFlight(): number {
    return this.conns.reduce((n, c) => n + c.slots, 0);
  }
  /** Callers waiting for capacity. */
  get waiting(): number {
    return this.waiters.length;
  }
  get connections(): number {
    return this.conns.length;
  }

  // ---------------------------------------------------------------- typed calls

  ping(opts?: CallOptions): Promise<FarmInfo> {
    return this.call(Op.PING, 0, {}, true, opts).then(parseFarmInfo);
  }
  stats(opts?: CallOptions): Promise<FarmStats> {
    return this.call(Op.STATS, 0, {}, true, opts).then(parseFarmStats);
  }
  /**
   * CONNECT (messages.ts): some enrolled devices connect to an MQTT hub and the farm answers with
   * a tally. Never resent: a repeat would connect every device again. Give `timeoutMs` room for
   * the whole set (core/station/connect.ts does).
   */
  async connect(req: ConnectRequest, opts?: CallOptions): Promise<ConnectResult> {
    const body = await this.call(Op.CONNECT, 0, connectRequestValue(req), false, opts);
    try {
      return parseConnectResult(body);
    } catch (e) {
      throw new StationError(Status.BAD_FRAME, `CONNECT result: ${(e as Error).message}`);
    }
  }
  identify(device: string, o: { chipCert?: boolean } & CallOptions = {}): Promise<IdentifyResult> {
    return this.device("IDENTIFY", { device, chipCert: o.chipCert || undefined }, o);
  }
  attest(device: string, nonce: Uint8Array, opts?: CallOptions) {
    return this.device("ATTEST", { device, nonce }, opts);
  }
  csr(device: string, subject: Subject, opts?: CallOptions) {
    return this.device("CSR", { device, subject }, opts);
  }
  // a closed device takes these only as signed commands (command.ts): `o.auth`
  setTrustAnchor(device: string, anchor: Uint8Array, o: CommandOptions = {}) {
    return this.device("SET_TRUST", { device, anchor, auth: o.auth }, o);
  }
  install(device: string, chain: Uint8Array[], o: CommandOptions = {}) {
    return this.device("INSTALL", { device, chain, auth: o.auth }, o);
  }
  rotate(device: string, subject: Subject, o: CommandOptions = {}) {
    return this.device("ROTATE", { device, subject, auth: o.auth }, o);
  }
  status(device: string, opts?: CallOptions): Promise<DeviceStatus> {
    return this.device("STATUS", { device }, opts);
  }
  decommission(device: string, o: CommandOptions = {}) {
    return this.device("DECOMMISSION", { device, confirm: device, auth: o.auth }, o);
  }
  inject(device: string, license: Uint8Array, payload: Uint8Array, opts?: CallOptions) {
    return this.device("INJECT", { device, license, payload }, opts);
  }

  identifyBatch(
    devices: string[],
    o: { chipCert?: boolean } & CallOptions & { deviceTimeoutMs?: number } = {},
  ) {
    return this.batch(
      "IDENTIFY",
      devices.map((device) => ({ device, chipCert: o.chipCert || undefined })),
      o,
    );
  }
  attestBatch(items: Array<{ device: string; nonce: Uint8Array }>, opts?: BatchOptions) {
    return this.batch("ATTEST", items, opts);
  }
  csrBatch(items: Array<{ device: string; subject: Subject }>, opts?: BatchOptions) {
    return this.batch("CSR", items, opts);
  }
  setTrustAnchorBatch(
    items: Array<{ device: string; anchor: Uint8Array; auth?: CommandAuth }>,
    opts?: BatchOptions,
  ) {
    return this.batch("SET_TRUST", items, opts);
  }
  installBatch(
    items: Array<{ device: string; chain: Uint8Array[]; auth?: CommandAuth }>,
    opts?: BatchOptions,
  ) {
    return this.batch("INSTALL", items, opts);
  }
  rotateBatch(items: Array<{ device: string; subject: Subject; auth?: CommandAuth }>, opts?: BatchOptions) {
    return this.batch("ROTATE", items, opts);
  }
  statusBatch(devices: string[], opts?: BatchOptions) {
    return this.batch(
      "STATUS",
      devices.map((device) => ({ device })),
      opts,
    );
  }
  /** devices by ID, or with the signed command a closed device needs */
  decommissionBatch(devices: Array<string | { device: string; auth?: CommandAuth }>, opts?: BatchOptions) {
    return this.batch(
      "DECOMMISSION",
      devices.map((d) =>
        typeof d === "string"
          ? { device: d, confirm: d }
          : { device: d.device, confirm: d.device, auth: d.auth },
      ),
      opts,
    );
  }

  /** One device operation. */
  async device<K extends DeviceOpName>(op: K, req: RequestOf<K>, opts?: CallOptions): Promise<ResultOf<K>> {
    const spec = DEVICE_OPS[op];
    const body = await this.call(
      spec.code,
      0,
      { ...(req as unknown as CborMap), protocol: PROTOCOL },
      spec.idempotent,
      opts,
    );
    try {
      return spec.parseResult(body);
    } catch (e) {
      throw new StationError(Status.BAD_FRAME, `${op} result: ${(e as Error).message}`);
    }
  }

  /**
   * One request addressed to many devices (a gang programmer's view). Results come back in
   * request order, one per device; a device's failure does not fail the others.
   * `deviceTimeoutMs` asks the station to give up on a silent device after that long.
   */
  async batch<K extends DeviceOpName>(
    op: K,
    reqs: Array<RequestOf<K>>,
    opts: BatchOptions = {},
  ): Promise<Array<BatchItem<ResultOf<K>>>> {
    if (reqs.length === 0 || reqs.length > BATCH_MAX) throw invalid("batch", reqs, `1..${BATCH_MAX} items`);
    const spec = DEVICE_OPS[op];
    const req: CborMap = {
      items: reqs as unknown as Value[],
      deviceTimeoutMs: opts.deviceTimeoutMs,
      protocol: PROTOCOL,
    };
    const body = await this.call(spec.code, Flag.BATCH, req, spec.idempotent, opts);
    let results: Value[];
    try {
      results = list(body, "results", reqs.length, reqs.length);
    } catch (e) {
      throw new StationError(Status.BAD_FRAME, `${op} batch: ${(e as Error).message}`);
    }
    return results.map((r, i) => {
      try {
        const m = map(r, `results[${i}]`);
        const status = uint(m, "status", 255);
        if (status !== Status.OK) {
          const msg = typeof m.message === "string" ? m.message : "(no message)";
          return { ok: false as const, error: new StationError(status, msg) };
        }
        return { ok: true as const, value: spec.parseResult(map(m.result, `results[${i}].result`)) };
      } catch (e) {
        return { ok: false as const, error: new StationError(Status.BAD_FRAME, (e as Error).message) };
      }
    });
  }

  /** Send one request and return the response body; retries per `idempotent`. */
  async call(
    op: number,
    flags: number,
    req: CborMap,
    idempotent: boolean,
    opts: CallOptions = {},
  ): Promise<CborMap> {
    const body = encode(req);
    if (body.length > this.maxBody)
      throw invalid("request", `${body.length} bytes`, `at most ${this.maxBody}`);
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const attempts = 1 + (idempotent ? (opts.retries ?? this.retries) : 0);
    for (let attempt = 0; ; attempt++) {
      try {
        const conn = await this.acquireSlot();
        try {
          await conn.ready;
          return (await conn.send(op, flags, body, timeoutMs)).body;
        } finally {
          this.release(conn);
        }
      } catch (e) {
        if (!(e instanceof StationError) || !RETRYABLE.has(e.status) || this.closed) throw e;
        if (attempt + 1 >= attempts) throw this.unreachable(e, attempts);
        const cap = Math.min(2_000, this.backoffMs * 2 ** attempt);
        await new Promise((r) => setTimeout(r, Math.floor(this.random() * cap)));
      }
    }
  }

  /** The error a caller sees once the retries are spent: which station, why, and what to do. */
  private unreachable(e: StationError, attempts: number): StationError {
    if (e.status !== Status.DISCONNECTED) return e;
    const tries = attempts > 1 ? ` (${attempts} attempts)` : "";
    return new StationError(
      Status.DISCONNECTED,
      `station ${this.host}:${this.port} could not be reached: got ${e.detail}${tries}, want a running station; ` +
        "start it (progress is recorded in the registry; run again to converge)",
      "station",
    );
  }

  /** Close every connection; requests in flight fail with DISCONNECTED. */
  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.reject(new StationError(Status.DISCONNECTED, "client closed"));
    const conns = this.conns.splice(0);
    await Promise.all(
      conns.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.socket.destroyed) return resolve();
            c.socket.once("close", () => resolve());
            c.fail("client closed");
          }),
      ),
    );
  }

  // ---------------------------------------------------------------- capacity

  /** A connection with a slot taken for the caller; waits while every connection is full. */
  private async acquireSlot(): Promise<Connection> {
    if (this.closed) throw new StationError(Status.DISCONNECTED, "client closed");
    return (
      this.pick() ?? new Promise<Connection>((resolve, reject) => this.waiters.push({ resolve, reject }))
    );
  }

  /**
   * Take a slot on the least busy live connection, opening a new one while the pool has room
   * and every open one is at least half full. Undefined when all are full.
   */
  private pick(): Connection | undefined {
    let best: Connection | undefined;
    for (const c of this.conns) if (!c.closed && (!best || c.slots < best.slots)) best = c;
    if (this.conns.length < this.poolSize && (!best || best.slots * 2 >= this.maxInFlight)) {
      best = new Connection(this.host, this.port, this.connectTimeoutMs, this.maxBody, (dead) => {
        const i = this.conns.indexOf(dead);
        if (i >= 0) this.conns.splice(i, 1);
        this.release();
      });
      this.conns.push(best);
    }
    if (!best || best.slots >= this.maxInFlight) return undefined;
    best.slots++;
    return best;
  }

  private release(conn?: Connection): void {
    if (conn) conn.slots--;
    while (this.waiters.length) {
      const c = this.pick();
      if (!c) return;
      this.waiters.shift()!.resolve(c);
    }
  }
}

export interface BatchOptions extends CallOptions {
  deviceTimeoutMs?: number;
}

export interface CommandOptions extends CallOptions {
  /** the signed command a closed device needs (core/station/command.ts) */
  auth?: CommandAuth;
}
