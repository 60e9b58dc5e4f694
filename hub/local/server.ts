/**
 * The embedded local hub: an MQTT 3.1.1 broker (aedes) behind mutual TLS (node:tls), trusting
 * exactly what the registrations in its state folder (core/hubs/local-state.ts) give it.
 *
 * - TLS: a device must present a certificate chaining to a CA of some registration, and
 *   OpenSSL checks the CRL of every CA of the chain (Node's `crl` option sets CRL_CHECK and
 *   CRL_CHECK_ALL; a CA without a CRL refuses its devices). The hub's own identity is
 *   <state>/server/, verified by devices with <state>/hub-ca.pem.
 * - MQTT CONNECT: the certificate (SHA-256 of the peer's DER) must be listed as allowed by a
 *   registration (as AWS IoT admits only registered ACTIVE certificates), the client ID must be
 *   the device ID that registration binds to it, and the certificate must name that device (its
 *   CN, a DNS SAN `<id>.<domain>` or a URI SAN ending in `:<id>`). Refusals are CONNACK 5 (not
 *   authorized) or 2 (identifier rejected).
 * - ACL: PUBLISH and SUBSCRIBE only under the device's own prefix (`devices/{deviceId}/` by
 *   default). A PUBLISH elsewhere closes the session (MQTT 3.1.1 has no negative PUBACK); a
 *   SUBSCRIBE elsewhere is answered with the failure return code 0x80.
 * - Hot reload: the registrations folder is watched (fs.watch, and a poll every `reloadMs` as a
 *   fallback: some file systems deliver no events); on a change the bundles are rebuilt, the TLS
 *   context is swapped with server.setSecureContext() (new handshakes see the new CAs and CRLs)
 *   and every live session whose certificate is now revoked, disabled, unregistered or under a
 *   CA no longer trusted is closed: TLS verifies a certificate once, at the handshake, so the
 *   hub must drop those sessions itself.
 */
import type * as crypto from "node:crypto";
import * as fs from "node:fs";
import type * as net from "node:net";
import * as tls from "node:tls";
import { Aedes, type AuthenticateError, type Client } from "aedes";
import { FleetError, invalid } from "../../core/errors";
import {
  caKey,
  ensureServerIdentity,
  hasCrl,
  makeDirs,
  rebuildBundles,
  registrationsSignature,
  revocationKey,
  statePaths,
  type Trust,
  writeEndpoint,
} from "../../core/hubs/local-state";
import { authorityKeyIdOf, parseCertificate } from "../../core/x509/parse";

export interface LocalHubOptions {
  stateDir: string;
  /** 0: any free port */
  port: number;
  /** default 127.0.0.1 */
  host?: string;
  /** default "devices/{deviceId}/" */
  topicPrefix?: string;
  /** poll interval of the state folder (the fallback of fs.watch), default 1000 ms */
  reloadMs?: number;
  /** names the server certificate must carry besides localhost, 127.0.0.1 and ::1 */
  hosts?: readonly string[];
  /** one line per event (reloads, refusals, closed sessions); default: none */
  log?: (line: string) => void;
  /** watch the folder with fs.watch (default true); false leaves the poll alone (tests use it) */
  watch?: boolean;
}

export interface LocalHubStats {
  /** TLS connections open now (handshaking or in session) */
  connections: number;
  /** MQTT sessions admitted and open now */
  sessions: number;
  /** sessions admitted since start */
  admitted: number;
  refused: {
    /** TLS handshakes that failed (foreign CA, revoked on a CRL, no certificate, ...) */
    tls: number;
    /** certificate not listed by any registration (or disabled) */
    unregistered: number;
    /** client ID is not the certificate's device */
    clientId: number;
    /** the certificate does not name its device, or is revoked, or its CA has no CRL */
    certificate: number;
    /** publish or subscribe outside the device's prefix */
    acl: number;
  };
  /** live sessions closed by a reload */
  closedOnReload: number;
  reloads: number;
  cas: number;
  devices: number;
}

export interface LocalHub {
  port: number;
  host: string;
  /** what devices must trust to verify the hub */
  hubCaFile: string;
  close(): Promise<void>;
  stats(): LocalHubStats;
  /** re-read the state folder now (a watch or the poll calls it on their own) */
  reload(): Promise<void>;
}

/** What the hub keeps per session: small, a 10,000-device storm keeps 10,000 of them. */
interface Session {
  sha: string;
  deviceId: string;
  prefix: string;
  revKey: string;
  issuerKey: string;
  /** the certificate's issuer name and authorityKeyIdentifier (which CA of that name) */
  issuer: Buffer;
  aki?: Buffer;
}

/** Does the certificate name the device: CN, a DNS SAN whose first label is it, or a URI SAN ending in `:id`/`/id`? */
export function certificateNamesDevice(x: crypto.X509Certificate, deviceId: string): boolean {
  for (const line of x.subject.split("\n")) if (line === `CN=${deviceId}`) return true;
  for (const entry of (x.subjectAltName ?? "").split(", ")) {
    const i = entry.indexOf(":");
    const kind = entry.slice(0, i);
    const v = entry.slice(i + 1);
    if (kind === "DNS" && v.toLowerCase().startsWith(`${deviceId.toLowerCase()}.`)) return true;
    if (kind === "URI" && (v.endsWith(`:${deviceId}`) || v.endsWith(`/${deviceId}`))) return true;
  }
  return false;
}

/** A client ID or topic as the log shows it: the device chose it, so no control characters, at most 200. */
const shown = (v: string): string => {
  const t = v.replace(/[^\x20-\x7e]/g, "?");
  return t.length > 200 ? `${t.slice(0, 197)}...` : t;
};

function authError(returnCode: 2 | 5, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

function checkOptions(o: LocalHubOptions): Required<Omit<LocalHubOptions, "log" | "hosts" | "watch">> {
  if (!o || typeof o.stateDir !== "string" || !o.stateDir)
    throw invalid("stateDir", o?.stateDir, "the hub's state folder");
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535)
    throw invalid("port", o.port, "an integer in 0..65535");
  const topicPrefix = o.topicPrefix ?? "devices/{deviceId}/";
  if (
    typeof topicPrefix !== "string" ||
    !topicPrefix.includes("{deviceId}") ||
    /[+#]/.test(topicPrefix) ||
    !topicPrefix.endsWith("/")
  )
    throw invalid(
      "topicPrefix",
      topicPrefix,
      "a topic prefix with {deviceId}, ending in '/', without wildcards",
    );
  const reloadMs = o.reloadMs ?? 1000;
  if (!Number.isFinite(reloadMs) || reloadMs < 50) throw invalid("reloadMs", reloadMs, "at least 50 ms");
  return { stateDir: o.stateDir, port: o.port, host: o.host ?? "127.0.0.1", topicPrefix, reloadMs };
}

/** Check the state folder: a folder (made if missing) this process can read and write. */
function checkStateDir(dir: string): void {
  const st = fs.statSync(dir, { throwIfNoEntry: false });
  if (st && !st.isDirectory()) throw invalid("stateDir", dir, "a folder (a file is in the way)");
  try {
    makeDirs(statePaths(dir).registrations);
    fs.accessSync(dir, fs.constants.R_OK | fs.constants.W_OK | fs.constants.X_OK);
    fs.accessSync(statePaths(dir).registrations, fs.constants.R_OK | fs.constants.W_OK | fs.constants.X_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "an error";
    throw invalid("stateDir", dir, `a folder the hub can create, read and write (${code})`);
  }
}

export async function startLocalHub(options: LocalHubOptions): Promise<LocalHub> {
  const o = checkOptions(options);
  const log = options.log ?? (() => {});
  checkStateDir(o.stateDir);
  const paths = statePaths(o.stateDir);
  const loopback = ["127.0.0.1", "::1", "localhost", "0.0.0.0", "::"];
  const identity = ensureServerIdentity(o.stateDir, [
    ...(options.hosts ?? []),
    ...(loopback.includes(o.host) ? [] : [o.host]),
  ]);

  let trust: Trust = rebuildBundles(o.stateDir);
  // live sessions (for closing on reload), and every admitted client's record for the ACL: a
  // WeakMap, so the will a client leaves on close is still checked against its own prefix
  const sessions = new Map<Client, Session>();
  const admitted = new WeakMap<Client, Session>();
  const sockets = new Set<net.Socket>();
  const stats: LocalHubStats = {
    connections: 0,
    sessions: 0,
    admitted: 0,
    refused: { tls: 0, unregistered: 0, clientId: 0, certificate: 0, acl: 0 },
    closedOnReload: 0,
    reloads: 0,
    cas: 0,
    devices: 0,
  };

  const reportErrors = (t: Trust) => {
    for (const e of t.errors) log(`hub: ignoring ${e.message} (its CAs and devices are not trusted)`);
    for (const s of t.casWithoutCrl)
      log(`hub: CA '${s}' has no CRL: its devices are refused (every CA needs a current CRL)`);
  };
  const contextOptions = (t: Trust): tls.SecureContextOptions => ({
    key: identity.keyPem,
    cert: identity.certPem,
    ca: t.caPems,
    ...(t.crlPems.length ? { crl: t.crlPems } : {}),
    minVersion: "TLSv1.2",
  });
  reportErrors(trust);
  stats.cas = trust.caPems.length;
  stats.devices = trust.devices.size;

  const refuse = (
    done: (e: AuthenticateError | null, ok: boolean | null) => void,
    who: string,
    kind: keyof LocalHubStats["refused"],
    code: 2 | 5,
    reason: string,
  ) => {
    stats.refused[kind]++;
    log(`hub: refused '${shown(who)}': ${reason}`);
    done(authError(code, reason), false);
  };

  const broker = await Aedes.createBroker({
    // $SYS heartbeats are of no use to devices (they cannot subscribe to $SYS)
    heartbeatInterval: 3_600_000,
    authenticate(client, _username, _password, done) {
      const sock = client.conn as tls.TLSSocket;
      const clientId = String(client.id);
      const x = typeof sock.getPeerX509Certificate === "function" ? sock.getPeerX509Certificate() : undefined;
      if (!x) return refuse(done, clientId, "certificate", 5, "no client certificate");
      const sha = x.fingerprint256.replace(/:/g, "").toLowerCase();
      const dev = trust.devices.get(sha);
      if (!dev) {
        const why = trust.disabled.has(sha)
          ? "certificate disabled at this hub"
          : "certificate not registered";
        return refuse(done, clientId, "unregistered", 5, why);
      }
      if (clientId !== dev.deviceId)
        return refuse(
          done,
          clientId,
          "clientId",
          2,
          `client ID is not the certificate's device '${dev.deviceId}'`,
        );
      if (!certificateNamesDevice(x, dev.deviceId))
        return refuse(
          done,
          clientId,
          "certificate",
          5,
          "the certificate does not name the device (CN or SAN)",
        );
      const pc = parseCertificate(x.raw, "peer certificate");
      const aki = authorityKeyIdOf(pc);
      const issuerKey = caKey(pc.issuer, aki);
      const revKey = revocationKey(pc.issuer, pc.serial.toString(16));
      if (trust.revoked.has(revKey)) return refuse(done, clientId, "certificate", 5, "certificate revoked");
      if (!hasCrl(trust, pc.issuer, aki))
        return refuse(done, clientId, "certificate", 5, "no current CRL for its CA");
      const session: Session = {
        sha,
        deviceId: dev.deviceId,
        prefix: o.topicPrefix.replace("{deviceId}", dev.deviceId),
        revKey,
        issuerKey,
        issuer: Buffer.from(pc.issuer),
        ...(aki ? { aki } : {}),
      };
      sessions.set(client, session);
      admitted.set(client, session);
      stats.admitted++;
      sock.once("close", () => sessions.delete(client));
      done(null, true);
    },
    authorizePublish(client, packet, done) {
      // the broker's own messages ($SYS) come without a client
      if (!client) return done(null);
      const s = admitted.get(client);
      // a session the hub closed (revoked, disabled) leaves no will behind
      if (!s) return done(new Error("session closed by the hub"));
      if (packet.topic.startsWith(s.prefix)) return done(null);
      stats.refused.acl++;
      log(
        `hub: refused '${s.deviceId}': publish to '${shown(packet.topic)}' outside its prefix (session closed)`,
      );
      done(new Error("publish outside the device's topic prefix"));
    },
    authorizeSubscribe(client, sub, done) {
      const s = admitted.get(client);
      if (s && sub.topic.startsWith(s.prefix)) return done(null, sub);
      stats.refused.acl++;
      log(
        `hub: refused '${shown(s?.deviceId ?? client.id)}': subscribe to '${shown(sub.topic)}' outside its prefix (SUBACK 0x80)`,
      );
      done(null, null);
    },
  });
  // a client error (a refused publish, a broken packet) is logged by the refusal itself
  broker.on("clientError", () => {});
  broker.on("connectionError", () => {});

  const server = tls.createServer({
    ...contextOptions(trust),
    requestCert: true,
    rejectUnauthorized: true,
    handshakeTimeout: 10_000,
  });
  server.on("connection", (sock: net.Socket) => {
    sockets.add(sock);
    stats.connections++;
    sock.once("close", () => {
      sockets.delete(sock);
      stats.connections--;
    });
  });
  server.on("secureConnection", (sock: tls.TLSSocket) => {
    broker.handle(sock);
  });
  server.on("tlsClientError", (err: Error & { code?: string }, sock: tls.TLSSocket) => {
    stats.refused.tls++;
    // Node verifies the client's chain in OpenSSL but rejects it in JavaScript (authorizationError,
    // then destroy): the error then says only "socket hang up", the reason is on the socket
    const reason = sock.authorizationError
      ? `certificate refused (${sock.authorizationError})`
      : (err.code ?? err.message ?? "handshake failed").slice(0, 200);
    log(`hub: refused TLS${sock.remoteAddress ? ` from ${sock.remoteAddress}` : ""}: ${reason}`);
    sock.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      server.off("listening", onListening);
      broker.close();
      if (e.code === "EADDRINUSE")
        reject(
          new FleetError("UNAVAILABLE", `port: got ${o.port} in use on ${o.host}, want a free port`, "port"),
        );
      else if (e.code === "EADDRNOTAVAIL" || e.code === "ENOTFOUND")
        reject(invalid("host", o.host, "an address of this machine"));
      else if (e.code === "EACCES")
        reject(
          new FleetError(
            "UNAVAILABLE",
            `port: got ${o.port} (permission denied), want a port above 1023 or the right to bind it`,
            "port",
          ),
        );
      else reject(e);
    };
    const onListening = () => {
      server.off("error", onError);
      resolve();
    };
    server.once("error", onError);
    server.once("listening", onListening);
    // a connect storm queues many connections at once: a deeper backlog than Node's 511 (the
    // kernel caps it at net.core.somaxconn)
    server.listen({ port: o.port, host: o.host, backlog: 4096 });
  });
  const port = (server.address() as net.AddressInfo).port;
  writeEndpoint(o.stateDir, { host: o.host, port });

  // ------------------------------------------------------------ reload
  let lastSignature = registrationsSignature(o.stateDir);
  let running: Promise<void> | undefined;
  let again = false;
  let closed = false;

  const doReload = async (): Promise<void> => {
    const sig = registrationsSignature(o.stateDir);
    let next: Trust;
    try {
      next = rebuildBundles(o.stateDir);
    } catch (e) {
      log(`hub: reload failed, keeping the previous trust: ${(e as Error).message}`);
      return;
    }
    lastSignature = sig;
    try {
      server.setSecureContext(contextOptions(next));
    } catch (e) {
      log(`hub: reload failed, keeping the previous trust: ${(e as Error).message}`);
      return;
    }
    trust = next;
    stats.reloads++;
    stats.cas = next.caPems.length;
    stats.devices = next.devices.size;
    reportErrors(next);
    let closedNow = 0;
    for (const [client, s] of sessions) {
      let why: string | undefined;
      if (!next.devices.has(s.sha)) why = next.disabled.has(s.sha) ? "disabled" : "no longer registered";
      else if (next.revoked.has(s.revKey)) why = "revoked";
      else if (!next.issuers.has(s.issuerKey)) why = "its CA is no longer trusted";
      else if (!hasCrl(next, s.issuer, s.aki)) why = "no current CRL for its CA";
      if (!why) continue;
      sessions.delete(client);
      admitted.delete(client);
      closedNow++;
      stats.closedOnReload++;
      log(`hub: closed the session of '${s.deviceId}': certificate ${why}`);
      client.close();
    }
    log(
      `hub: reloaded: trusting ${next.caPems.length} CAs, ${next.devices.size} devices${closedNow ? `; closed ${closedNow} sessions` : ""}`,
    );
  };

  const reload = (): Promise<void> => {
    if (closed) return Promise.resolve();
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await doReload();
        } while (again && !closed);
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  const check = () => {
    if (!closed && registrationsSignature(o.stateDir) !== lastSignature) void reload();
  };
  let debounce: NodeJS.Timeout | undefined;
  let watcher: fs.FSWatcher | undefined;
  try {
    if (options.watch === false) throw new Error("no watch");
    watcher = fs.watch(paths.registrations, () => {
      clearTimeout(debounce);
      debounce = setTimeout(check, 50);
    });
    watcher.on("error", () => watcher?.close());
  } catch {
    watcher = undefined; // the poll below covers it
  }
  const poll = setInterval(check, o.reloadMs);
  poll.unref();

  return {
    port,
    host: o.host,
    hubCaFile: paths.hubCa,
    stats: () => ({ ...stats, sessions: sessions.size, refused: { ...stats.refused } }),
    reload,
    close: async () => {
      if (closed) return;
      closed = true;
      clearInterval(poll);
      clearTimeout(debounce);
      watcher?.close();
      await running?.catch(() => {});
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await done;
    },
  };
}
