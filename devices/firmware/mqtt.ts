/**
 * The device's MQTT client: one session of MQTT 3.1.1 (OASIS standard, 2014) over mutual TLS, the
 * way a device reports in. It opens a TLS connection with the device's own key and installed
 * chain, verifies the hub's certificate against the trust anchor it was given (and the host name
 * or `servername` against the certificate), sends CONNECT (client ID = the device ID, clean
 * session), PUBLISHes one telemetry message at QoS 1, waits for its PUBACK, and sends DISCONNECT.
 *
 * Hand-written rather than the mqtt npm package: the five packets a device needs (CONNECT,
 * CONNACK, PUBLISH, PUBACK, DISCONNECT; MQTT 3.1.1 sections 3.1-3.4 and 3.14) are ~100 lines,
 * and a storm of 10,000 sessions in one farm process should cost a TLS socket and a few closures
 * per device, not a client object with its own stores, timers and reconnect logic. It also lets
 * the outcome name the stage a session stopped at, which is what a connect test wants to know.
 *
 * The private key is used here, inside the device emulation (the farm process or the worker that
 * holds the device), and nowhere else: it is handed to Node's TLS as PEM for this one connection
 * and never serialized into a message.
 */
import type { KeyObject } from "node:crypto";
import * as tls from "node:tls";

/** Where a session stopped (or "connected": it went through to the PUBACK). */
export type SessionStage = "tcp" | "tls" | "connack" | "closed" | "puback" | "timeout";

export interface SessionOutcome {
  ok: boolean;
  /** with holdMs: the hub closed the session while the device held it open (a revocation, a reload) */
  closedByHub?: boolean;
  /** the stage that failed (absent when ok) */
  stage?: SessionStage;
  /** short, stable, free of key material and device-specific values (outcomes are grouped by it) */
  reason?: string;
}

export interface HubTarget {
  host: string;
  port: number;
  servername?: string;
  /** PEM of the hub's server trust anchor(s) */
  caPem: string;
}

export interface SessionParams {
  hub: HubTarget;
  clientId: string;
  key: KeyObject;
  /** PEM: the device certificate, then its issuers (the root may be left out) */
  certPem: string;
  topic: string;
  payload: Buffer;
  timeoutMs: number;
  keepAliveS?: number;
  /**
   * after the PUBACK, keep the session open this long (ms) before DISCONNECT, as a device that
   * stays online does; the outcome says whether the hub closed it first
   */
  holdMs?: number;
}

/** CONNACK return codes (MQTT 3.1.1 table 3.1). */
const CONNACK: Record<number, string> = {
  1: "unacceptable protocol version",
  2: "identifier rejected",
  3: "server unavailable",
  4: "bad user name or password",
  5: "not authorized",
};

const PACKET_ID = 1;

/** MQTT's variable-length "remaining length" (section 2.2.3). */
function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

const utf8 = (s: string): Buffer => {
  const b = Buffer.from(s, "utf8");
  const out = Buffer.allocUnsafe(2 + b.length);
  out.writeUInt16BE(b.length, 0);
  b.copy(out, 2);
  return out;
};

const packet = (first: number, body: Buffer): Buffer =>
  Buffer.concat([Buffer.from([first]), remainingLength(body.length), body]);

export function connectPacket(clientId: string, keepAliveS = 60): Buffer {
  const ka = Buffer.from([keepAliveS >> 8, keepAliveS & 0xff]);
  // protocol name "MQTT", level 4 (3.1.1), flags: clean session only
  const vh = Buffer.concat([utf8("MQTT"), Buffer.from([4, 0x02]), ka]);
  return packet(0x10, Buffer.concat([vh, utf8(clientId)]));
}

export function publishPacket(topic: string, payload: Buffer, packetId = PACKET_ID): Buffer {
  const id = Buffer.from([packetId >> 8, packetId & 0xff]);
  // PUBLISH, QoS 1 (bits 2-1 = 01), no DUP, no RETAIN
  return packet(0x32, Buffer.concat([utf8(topic), id, payload]));
}

export const DISCONNECT = Buffer.from([0xe0, 0x00]);

/** Split complete MQTT packets off a buffer: [type nibble, flags, body] each, and what remains. */
export function readPackets(buf: Buffer): {
  packets: Array<{ type: number; body: Buffer }>;
  rest: Buffer;
  bad?: string;
} {
  const packets: Array<{ type: number; body: Buffer }> = [];
  let p = 0;
  for (;;) {
    if (buf.length - p < 2) break;
    let len = 0;
    let mult = 1;
    let i = p + 1;
    let complete = false;
    for (let k = 0; k < 4; k++, i++) {
      if (i >= buf.length) break;
      const b = buf[i]!;
      len += (b & 0x7f) * mult;
      mult *= 128;
      if ((b & 0x80) === 0) {
        complete = true;
        i++;
        break;
      }
      if (k === 3) return { packets, rest: buf.subarray(p), bad: "malformed remaining length" };
    }
    if (!complete || buf.length - i < len) break;
    packets.push({ type: buf[p]! >> 4, body: buf.subarray(i, i + len) });
    p = i + len;
  }
  return { packets, rest: buf.subarray(p) };
}

/** A TLS error in words: which side refused and why, without addresses or names. */
export function tlsReason(e: NodeJS.ErrnoException): string {
  const code = e.code ?? "";
  switch (code) {
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "CERT_SIGNATURE_FAILURE":
      return "hub certificate does not chain to the hub CA (device refused the hub)";
    case "CERT_HAS_EXPIRED":
      return "hub certificate expired (device refused the hub)";
    case "CERT_NOT_YET_VALID":
      return "hub certificate not yet valid (device refused the hub)";
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return "hub certificate does not name the hub (device refused the hub)";
  }
  const alert = /alert ([a-z ]+)/i.exec(e.message);
  if (alert) return `hub sent TLS alert: ${alert[1]!.trim().toLowerCase()}`;
  if (code.startsWith("ERR_SSL_")) return code.slice(8).toLowerCase().replaceAll("_", " ");
  return code ? code.toLowerCase() : "handshake failed";
}

const TCP_ERRORS: Record<string, string> = {
  ECONNREFUSED: "connection refused (nothing listens on the hub port)",
  ECONNRESET: "connection reset",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ENOTFOUND: "host name not found",
  EAI_AGAIN: "host name lookup failed",
  EADDRNOTAVAIL: "address not available (out of local ports?)",
  EMFILE: "too many open files in the farm",
  ETIMEDOUT: "connect timed out",
};

/** One MQTT session of one device. Never rejects: the outcome says how far it got. */
export function runSession(p: SessionParams): Promise<SessionOutcome> {
  return new Promise((resolve) => {
    let stage: "tcp" | "tls" | "connack" | "puback" | "held" | "done" = "tcp";
    let hold: NodeJS.Timeout | undefined;
    let settled = false;
    let secure = false;
    let buf: Buffer = Buffer.alloc(0);
    let received = 0;
    let socket: tls.TLSSocket;
    const finish = (o: SessionOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(hold);
      if (o.ok && !o.closedByHub) socket.end(DISCONNECT);
      else socket.destroy();
      resolve(o);
    };
    const timer = setTimeout(() => {
      const waiting = {
        tcp: "TCP connect",
        tls: "TLS handshake",
        connack: "CONNACK",
        puback: "PUBACK",
        held: "close",
        done: "close",
      };
      finish({ ok: false, stage: "timeout", reason: `no ${waiting[stage]} within ${p.timeoutMs} ms` });
    }, p.timeoutMs);
    try {
      socket = tls.connect({
        host: p.hub.host,
        port: p.hub.port,
        servername: p.hub.servername,
        ca: p.hub.caPem,
        // SEC1 rather than PKCS#8: OpenSSL 3 imports it in a fraction of the time (its PKCS#8
        // path goes through the generic decoder lookup), and a storm pays this once per device
        key: p.key.export({ type: "sec1", format: "pem" }),
        cert: p.certPem,
        rejectUnauthorized: true,
        minVersion: "TLSv1.2",
      });
    } catch (e) {
      clearTimeout(timer);
      settled = true;
      resolve({ ok: false, stage: "tls", reason: tlsReason(e as NodeJS.ErrnoException) });
      return;
    }
    socket.setNoDelay(true);
    socket.once("connect", () => {
      if (stage === "tcp") stage = "tls";
    });
    socket.once("secureConnect", () => {
      secure = true;
      stage = "connack";
      // a held session sends no PINGREQ: keep-alive off, so the hub keeps it for as long as it is held
      socket.write(connectPacket(p.clientId, p.holdMs ? 0 : p.keepAliveS));
    });
    socket.on("data", (chunk: Buffer) => {
      received += chunk.length;
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      const r = readPackets(buf);
      buf = r.rest;
      if (r.bad)
        return finish({ ok: false, stage: stage === "puback" ? "puback" : "connack", reason: r.bad });
      for (const pk of r.packets) {
        if (stage === "connack") {
          if (pk.type !== 2 || pk.body.length !== 2)
            return finish({
              ok: false,
              stage: "connack",
              reason: `got packet type ${pk.type}, want CONNACK`,
            });
          const rc = pk.body[1]!;
          if (rc !== 0)
            return finish({
              ok: false,
              stage: "connack",
              reason: `return code ${rc} (${CONNACK[rc] ?? "reserved"})`,
            });
          stage = "puback";
          socket.write(publishPacket(p.topic, p.payload));
        } else if (stage === "puback" && pk.type === 4) {
          if (pk.body.length !== 2 || pk.body.readUInt16BE(0) !== PACKET_ID)
            return finish({ ok: false, stage: "puback", reason: "PUBACK for another packet ID" });
          if (p.holdMs) {
            stage = "held";
            clearTimeout(timer);
            hold = setTimeout(() => finish({ ok: true }), p.holdMs);
            return;
          }
          stage = "done";
          return finish({ ok: true });
        }
        // anything else (a PUBLISH the broker routes to us, PINGRESP) is not what we wait for
      }
    });
    socket.on("error", (e: NodeJS.ErrnoException) => {
      if (stage === "held") return finish({ ok: true, closedByHub: true });
      if (stage === "tcp" && !(e.code ?? "").startsWith("ERR_SSL") && TCP_ERRORS[e.code ?? ""])
        return finish({ ok: false, stage: "tcp", reason: TCP_ERRORS[e.code!]! });
      // with TLS 1.3 the hub's verdict on the device certificate arrives after secureConnect
      const tlsError = !secure || /alert|ssl|certificate/i.test(`${e.code} ${e.message}`);
      if (tlsError && stage !== "puback") return finish({ ok: false, stage: "tls", reason: tlsReason(e) });
      const code = (e.code ?? "unknown").toLowerCase();
      if (stage === "puback")
        return finish({ ok: false, stage: "puback", reason: `connection error (${code}) before the PUBACK` });
      finish({ ok: false, stage: "closed", reason: `connection error (${code}) before the CONNACK` });
    });
    socket.on("close", () => {
      if (settled) return;
      if (stage === "held") return finish({ ok: true, closedByHub: true });
      if (stage === "tcp" || stage === "tls")
        return finish({ ok: false, stage: "tls", reason: "connection closed during the TLS handshake" });
      if (stage === "puback")
        return finish({ ok: false, stage: "puback", reason: "connection closed before the PUBACK" });
      // A hub on Node's tls (aedes, fleetguard's local hub) that does not accept the device's
      // certificate sends no TLS alert: with TLS 1.3 the device's side of the handshake is done
      // before the hub checks the certificate, and the hub just closes. An MQTT 3.1.1 server that
      // read CONNECT answers it (a refusal is a CONNACK code, section 3.2.2.3), so a close before
      // any byte of MQTT is the hub refusing the TLS session.
      if (received === 0)
        return finish({
          ok: false,
          stage: "tls",
          reason:
            "hub closed the connection after the handshake without a CONNACK (device certificate not accepted)",
        });
      finish({ ok: false, stage: "closed", reason: "hub closed the connection before the CONNACK" });
    });
  });
}
