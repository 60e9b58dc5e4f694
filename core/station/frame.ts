/**
 * Framing of the fleetguard station protocol (version 1), shared by the station client in
 * core/station and the device farm in devices/. A frame is a fixed 16-byte big-endian header
 * followed by a body of `length` bytes (a CBOR map, see cbor.ts):
 *
 *   offset size field
 *   0      2    magic 0x46 0x47 ("FG")
 *   2      1    version (1)
 *   3      1    flags: bit0 RESPONSE, bit1 BATCH; other bits must be 0
 *   4      1    opcode
 *   5      1    status (0 in requests; a Status code in responses)
 *   6      2    reserved, 0
 *   8      4    request ID, chosen by the client, echoed in the response
 *   12     4    body length (at most the receiver's limit, 4 MiB by default)
 *
 * The header layout is frozen across versions, so a receiver can skip a frame of a version it
 * does not speak and answer UNSUPPORTED_VERSION without losing the stream. A bad magic or an
 * oversized length cannot be skipped safely: the receiver answers and closes the connection.
 * Error responses carry `{ message }`. Error messages never contain key material.
 */
import { FleetError, type FleetErrorCode } from "../errors";

export const MAGIC = 0x4647;
export const VERSION = 1;
export const HEADER_SIZE = 16;
export const DEFAULT_MAX_BODY = 4 * 1024 * 1024;

export const Flag = { RESPONSE: 1, BATCH: 2 } as const;
const KNOWN_FLAGS = Flag.RESPONSE | Flag.BATCH;

export const Op = {
  PING: 0x01,
  STATS: 0x02,
  IDENTIFY: 0x10,
  ATTEST: 0x11,
  CSR: 0x12,
  SET_TRUST: 0x13,
  INSTALL: 0x14,
  ROTATE: 0x15,
  STATUS: 0x16,
  DECOMMISSION: 0x17,
  INJECT: 0x18,
  /** a farm operation: some enrolled devices connect to an MQTT hub (messages.ts CONNECT) */
  CONNECT: 0x20,
} as const;
export type OpName = keyof typeof Op;
export type OpCode = (typeof Op)[OpName];
export const opName = (code: number): string =>
  (Object.keys(Op) as OpName[]).find((k) => Op[k] === code) ?? `0x${code.toString(16)}`;
/** Device operations address one device (or, with the BATCH flag, many). */
export const isDeviceOp = (code: number): boolean => code >= 0x10 && code <= 0x18;

export const Status = {
  OK: 0,
  BAD_FRAME: 1,
  UNSUPPORTED_VERSION: 2,
  TOO_LARGE: 3,
  UNKNOWN_OPCODE: 4,
  BAD_REQUEST: 5,
  UNKNOWN_DEVICE: 6,
  BAD_SIGNATURE: 7,
  BAD_CERTIFICATE: 8,
  INVALID_STATE: 9,
  KEY_FAILURE: 10,
  TIMEOUT: 11,
  BUSY: 12,
  INTERNAL: 13,
  /** a closed device refused a command not signed by a CA under its trust anchor (another owner) */
  UNAUTHORIZED: 14,
  /** client side only: the connection closed before the response arrived */
  DISCONNECTED: 64,
} as const;
export type StatusName = keyof typeof Status;
export type StatusCode = (typeof Status)[StatusName];
export const statusName = (code: number): string =>
  (Object.keys(Status) as StatusName[]).find((k) => Status[k] === code) ?? `STATUS_${code}`;

const FLEET_CODE: Record<number, FleetErrorCode> = {
  [Status.BAD_FRAME]: "INVALID_INPUT",
  [Status.UNSUPPORTED_VERSION]: "INVALID_INPUT",
  [Status.TOO_LARGE]: "INVALID_INPUT",
  [Status.UNKNOWN_OPCODE]: "INVALID_INPUT",
  [Status.BAD_REQUEST]: "INVALID_INPUT",
  [Status.UNKNOWN_DEVICE]: "NOT_FOUND",
  [Status.BAD_SIGNATURE]: "INTEGRITY",
  [Status.BAD_CERTIFICATE]: "INTEGRITY",
  [Status.INVALID_STATE]: "CONFLICT",
  [Status.KEY_FAILURE]: "INTEGRITY",
  [Status.TIMEOUT]: "UNAVAILABLE",
  [Status.BUSY]: "UNAVAILABLE",
  [Status.INTERNAL]: "INTERNAL",
  [Status.UNAUTHORIZED]: "POLICY_VIOLATION",
  [Status.DISCONNECTED]: "UNAVAILABLE",
};

/** A protocol-level failure: `status` is the wire code, `code` its FleetError class. */
export class StationError extends FleetError {
  readonly status: number;
  constructor(status: number, message: string, field?: string) {
    super(FLEET_CODE[status] ?? "INTERNAL", `${statusName(status)}: ${message}`, field);
    this.name = "StationError";
    this.status = status;
  }
  /** The message without the status prefix, as sent on the wire. */
  get detail(): string {
    const p = `${statusName(this.status)}: `;
    return this.message.startsWith(p) ? this.message.slice(p.length) : this.message;
  }
}

export interface Header {
  version: number;
  flags: number;
  op: number;
  status: number;
  requestId: number;
  length: number;
}

/** Encode one frame: header and body in a single buffer. */
export function encodeFrame(
  op: number,
  requestId: number,
  body: Uint8Array,
  flags = 0,
  status = 0,
  version = VERSION,
): Buffer {
  const out = Buffer.allocUnsafe(HEADER_SIZE + body.length);
  out.writeUInt16BE(MAGIC, 0);
  out[2] = version;
  out[3] = flags;
  out[4] = op;
  out[5] = status;
  out.writeUInt16BE(0, 6);
  out.writeUInt32BE(requestId >>> 0, 8);
  out.writeUInt32BE(body.length, 12);
  out.set(body, HEADER_SIZE);
  return out;
}

export type FrameEvent =
  | { kind: "frame"; header: Header; body: Buffer }
  /** `fatal`: the stream cannot be resynchronised; answer, then close. */
  | { kind: "error"; status: number; requestId: number; op: number; message: string; fatal: boolean };

/**
 * Incremental frame parser. Feed it chunks as they arrive; it returns complete frames and
 * framing errors in order. After a fatal error it ignores further input.
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  private dead = false;

  constructor(readonly maxBody = DEFAULT_MAX_BODY) {}

  /** Bytes received but not yet part of a complete frame. */
  get buffered(): number {
    return this.buf.length;
  }

  push(chunk: Buffer): FrameEvent[] {
    if (this.dead) return [];
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: FrameEvent[] = [];
    let p = 0;
    const b = this.buf;
    while (b.length - p >= HEADER_SIZE) {
      const requestId = b.readUInt32BE(p + 8);
      const op = b[p + 4]!;
      if (b.readUInt16BE(p) !== MAGIC) {
        out.push(
          this.fatal(Status.BAD_FRAME, 0, 0, `magic: got 0x${b.readUInt16BE(p).toString(16)}, want 0x4647`),
        );
        return out;
      }
      const length = b.readUInt32BE(p + 12);
      if (length > this.maxBody) {
        out.push(
          this.fatal(Status.TOO_LARGE, requestId, op, `body length: got ${length}, want <= ${this.maxBody}`),
        );
        return out;
      }
      if (b.length - p < HEADER_SIZE + length) break;
      const header: Header = {
        version: b[p + 2]!,
        flags: b[p + 3]!,
        op,
        status: b[p + 5]!,
        requestId,
        length,
      };
      const reserved = b.readUInt16BE(p + 6);
      const body = b.subarray(p + HEADER_SIZE, p + HEADER_SIZE + length);
      p += HEADER_SIZE + length;
      if (header.version !== VERSION) {
        const message = `version: got ${header.version}, want ${VERSION}`;
        out.push({ kind: "error", status: Status.UNSUPPORTED_VERSION, requestId, op, message, fatal: false });
      } else if (header.flags & ~KNOWN_FLAGS || reserved !== 0) {
        const message = `flags/reserved: got 0x${header.flags.toString(16)}, want only RESPONSE|BATCH bits and reserved 0`;
        out.push({ kind: "error", status: Status.BAD_FRAME, requestId, op, message, fatal: false });
      } else {
        out.push({ kind: "frame", header, body });
      }
    }
    this.buf = p === b.length ? Buffer.alloc(0) : b.subarray(p);
    return out;
  }

  /** The peer ended the stream: anything buffered is a truncated frame. */
  end(): FrameEvent | undefined {
    if (this.dead || this.buf.length === 0) return undefined;
    const b = this.buf;
    const hasHeader = b.length >= HEADER_SIZE;
    const want = hasHeader ? HEADER_SIZE + b.readUInt32BE(12) : HEADER_SIZE;
    return this.fatal(
      Status.BAD_FRAME,
      hasHeader ? b.readUInt32BE(8) : 0,
      hasHeader ? b[4]! : 0,
      `truncated frame: got ${b.length} bytes, want ${want}`,
    );
  }

  private fatal(status: number, requestId: number, op: number, message: string): FrameEvent {
    this.dead = true;
    this.buf = Buffer.alloc(0);
    return { kind: "error", status, requestId, op, message, fatal: true };
  }
}
