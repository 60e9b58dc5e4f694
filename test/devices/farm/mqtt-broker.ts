// A small MQTT broker with mutual TLS for the CONNECT tests: aedes over Node's tls, trusting
// the device CAs it is given, its server certificate issued by a hub CA made with OpenSSL. It
// refuses (CONNACK 2) a client ID that is not the CN of the certificate the device presented,
// or one in `refuseIds`, and records every PUBLISH it acknowledges.
import type { X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import * as tls from "node:tls";
import { Aedes, type AuthenticateError } from "aedes";
import { openssl } from "../../helpers/openssl";

export interface HubPki {
  caPem: string;
  keyPem: string;
  certPem: string;
}

/** A P-256 hub CA and a server certificate for 127.0.0.1 / localhost, signed by it. */
export function hubPki(dir: string, name = "Hub"): HubPki {
  const f = (n: string) => join(dir, `${name}-${n}`);
  const run = (args: string[]) => {
    const r = openssl(args);
    if (r.status !== 0) throw new Error(`openssl ${args[0]}: ${r.out}`);
  };
  run(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f("ca.key")]);
  run([
    "req",
    "-x509",
    "-new",
    "-key",
    f("ca.key"),
    "-subj",
    `/CN=${name} Test CA`,
    "-days",
    "30",
    "-out",
    f("ca.pem"),
  ]);
  run(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f("server.key")]);
  run(["req", "-new", "-key", f("server.key"), "-subj", "/CN=localhost", "-out", f("server.csr")]);
  const ext = f("ext.cnf");
  writeFileSync(ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  run([
    "x509",
    "-req",
    "-in",
    f("server.csr"),
    "-CA",
    f("ca.pem"),
    "-CAkey",
    f("ca.key"),
    "-CAcreateserial",
    "-days",
    "30",
    "-extfile",
    ext,
    "-out",
    f("server.pem"),
  ]);
  return {
    caPem: readFileSync(f("ca.pem"), "utf8"),
    keyPem: readFileSync(f("server.key"), "utf8"),
    certPem: readFileSync(f("server.pem"), "utf8"),
  };
}

export interface TestBroker {
  port: number;
  /** client ID -> topics it published (acknowledged) */
  published: Map<string, string[]>;
  close(): Promise<void>;
}

export async function startTestBroker(o: {
  pki: HubPki;
  /** PEM of the device CAs the broker trusts */
  trustPem: string;
  refuseIds?: Set<string>;
}): Promise<TestBroker> {
  const published = new Map<string, string[]>();
  const broker = await Aedes.createBroker({
    authenticate: (client, _u, _p, done) => {
      const sock = client.conn as tls.TLSSocket;
      const cert = sock.getPeerX509Certificate?.() as X509Certificate | undefined;
      const cn = cert ? /CN=([^\n]+)/.exec(cert.subject)?.[1] : undefined;
      if (cn !== client.id || o.refuseIds?.has(client.id)) {
        const e = new Error("identifier rejected") as AuthenticateError;
        e.returnCode = 2;
        return done(e, false);
      }
      done(null, true);
    },
    authorizePublish: (client, packet, cb) => {
      if (client) {
        const l = published.get(client.id) ?? [];
        l.push(packet.topic);
        published.set(client.id, l);
      }
      cb(null);
    },
  });
  const server = tls.createServer(
    { key: o.pki.keyPem, cert: o.pki.certPem, ca: o.trustPem, requestCert: true, rejectUnauthorized: true },
    (s) => broker.handle(s),
  );
  server.on("tlsClientError", () => {});
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const sockets = new Set<tls.TLSSocket>();
  server.on("secureConnection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  return {
    port: (server.address() as AddressInfo).port,
    published,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await new Promise<void>((r) => broker.close(() => r()));
    },
  };
}
