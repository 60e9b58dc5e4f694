/**
 * The CRL server (hub/crl/server.ts) and `fleet crl serve`: the CRLs of a CRL folder over HTTP,
 * nothing else (no listing, no sidecar, no traversal by `..`, encoded slashes or a symbolic link
 * out of the folder), conditional requests; and OpenSSL's verdict on device chains with every CRL
 * fetched over HTTP from the URL path the certificate's CRL distribution point names.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crlFilesOf, publishCrl } from "../../core/enroll/crl";
import { type CrlServer, fileFor, startCrlServer } from "../../hub/crl/server";
import { update } from "../../providers/runtime/ca";
import { BASE, type CrlPki, makeCrlPki } from "../core/enroll/crl-pki";
import { openssl, tmpdir } from "../helpers/openssl";

const LINE_A = `${BASE}/line-a.crl`;

/** One raw request (the path is sent as given: no client-side normalisation). */
function get(
  port: number,
  rawPath: string,
  opts: { method?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, path: rawPath, method: opts.method ?? "GET", headers: opts.headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
        );
      },
    );
    req.on("error", reject);
    req.end();
  });
}

let work: string;
let pki: CrlPki;
let server: CrlServer;
const devices: Record<string, { id: string; certPem: string; serial: string }> = {};

beforeAll(async () => {
  work = tmpdir("fg-crl-server-");
  pki = await makeCrlPki(path.join(work, "crl"), path.join(work, "registry.db"));
  devices.live = await pki.device("dev-live");
  devices.revoked = await pki.device("dev-revoked");
  await pki.revoke("dev-revoked");
  await publishCrl(pki.registry, pki.issuer(), pki.dir, 168, [LINE_A]);
  server = await startCrlServer({ dir: pki.dir, port: 0 });
});
afterAll(async () => {
  await server?.close();
  await pki?.registry.close();
  fs.rmSync(work, { recursive: true, force: true });
});

describe("CRL server", () => {
  it("serves DER as application/pkix-crl and PEM, at /<name> and at the distribution points' URL paths", async () => {
    const der = fs.readFileSync(path.join(pki.dir, "root.crl"));
    for (const p of ["/root.crl", "/crl/root.crl"]) {
      const r = await get(server.port, p);
      expect(r.status).toBe(200);
      expect(r.headers["content-type"]).toBe("application/pkix-crl");
      expect(r.body).toEqual(der);
      expect(r.headers.etag).toMatch(/^"[0-9a-f]{32}"$/);
      expect(Date.parse(String(r.headers["last-modified"]))).toBeGreaterThan(0);
    }
    const pem = await get(server.port, "/crl/root.crl.pem");
    expect(pem.status).toBe(200);
    expect(pem.headers["content-type"]).toBe("application/x-pem-file");
    expect(pem.body.toString()).toMatch(/^-----BEGIN X509 CRL-----/);
    const byFp = await get(server.port, `/${pki.root.fingerprint}.crl`);
    expect(byFp.body).toEqual(der);
    const head = await get(server.port, "/line-a.crl", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
    expect(Number(head.headers["content-length"])).toBe(fs.statSync(path.join(pki.dir, "line-a.crl")).size);
  });

  it("answers conditional requests with 304 and serves a re-signed CRL at once with a new ETag", async () => {
    const first = await get(server.port, "/crl/line-a.crl");
    const etag = String(first.headers.etag);
    expect((await get(server.port, "/crl/line-a.crl", { headers: { "If-None-Match": etag } })).status).toBe(
      304,
    );
    const ims = String(first.headers["last-modified"]);
    expect(
      (await get(server.port, "/crl/line-a.crl", { headers: { "If-Modified-Since": ims } })).status,
    ).toBe(304);
    // the issuing CA re-signs (its provider's run): a new file, a new ETag, no restart
    const stale = { ...pki.issuing.outs, crlNextUpdate: new Date(Date.now() + 60_000).toISOString() };
    pki.issuing.outs = update("id", stale, pki.issuing.inputs).outs as typeof pki.issuing.outs;
    const again = await get(server.port, "/crl/line-a.crl", { headers: { "If-None-Match": etag } });
    expect(again.status).toBe(200);
    expect(again.headers.etag).not.toBe(etag);
    expect(again.body).toEqual(fs.readFileSync(path.join(pki.dir, "line-a.crl")));
  });

  it("serves nothing else: no listing, no sidecar or lock, no traversal, no symlink out of the folder", async () => {
    const outside = path.join(work, "secret.crl");
    fs.writeFileSync(outside, "not for the web");
    fs.symlinkSync(outside, path.join(pki.dir, "evil.crl"));
    fs.symlinkSync("/etc/passwd", path.join(pki.dir, "passwd.crl"));
    fs.symlinkSync(path.join(pki.dir, "root.crl"), path.join(pki.dir, "alias.crl"));
    fs.mkdirSync(path.join(pki.dir, "sub.crl"));
    const refused = [
      "/",
      "/crl/",
      `/${pki.root.fingerprint}.json`,
      `/${pki.root.fingerprint}.lock`,
      "/nothing.crl",
      "/other/root.crl", // not a distribution point's path
      "/../secret.crl",
      "/crl/../../secret.crl",
      "/..%2fsecret.crl",
      "/%2e%2e/secret.crl",
      "/crl%2froot.crl",
      "/crl%2Froot.crl",
      "/..\\secret.crl",
      "/%2E%2E%5Csecret.crl",
      "/root.crl%00.pem",
      "//etc/passwd",
      "/evil.crl",
      "/passwd.crl",
      "/sub.crl",
    ];
    for (const p of refused) {
      const r = await get(server.port, p);
      expect([p, r.status]).toEqual([p, 404]);
      expect(r.body.toString()).toBe("not found\n");
    }
    expect((await get(server.port, "/alias.crl")).body).toEqual(
      fs.readFileSync(path.join(pki.dir, "root.crl")),
    );
    expect((await get(server.port, "/root.crl", { method: "POST" })).status).toBe(405);
    // the pure mapping, for the record
    const real = fs.realpathSync(pki.dir);
    expect(fileFor(real, "/root.crl?x=1")).toBe(path.join(real, "root.crl"));
    expect(fileFor(real, "/crl/.crl")).toBeUndefined();
  });
});

/** `fleet crl serve` as a user runs it; resolves with its port once the ready line is out. */
function fleetCrlServe(dir: string): Promise<{ child: ChildProcess; port: number; line: string }> {
  const tsx = path.resolve("node_modules/.bin/tsx");
  const child = spawn(tsx, ["cli/fleet.ts", "crl", "serve", "--dir", dir, "--port", "0"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    child.stderr!.on("data", (d) => (err += d));
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /^crl: serving .* on http:\/\/127\.0\.0\.1:(\d+)\/ \(port \d+\)/m.exec(out);
      if (m) resolve({ child, port: Number(m[1]), line: out.split("\n")[0]! });
    });
    child.on("exit", (code) => reject(new Error(`fleet crl serve exited ${code}: ${err}`)));
  });
}

/** The CRL distribution point URL of a certificate, as OpenSSL reads it. */
function cdpOf(certPem: string): string {
  const r = openssl(["x509", "-noout", "-ext", "crlDistributionPoints"], certPem);
  return /URI:(\S+)/.exec(r.out)![1]!;
}

describe("OpenSSL with CRLs fetched over HTTP from the distribution points", () => {
  let cli: Awaited<ReturnType<typeof fleetCrlServe>>;
  beforeAll(async () => {
    cli = await fleetCrlServe(pki.dir);
  });
  afterAll(() => {
    cli?.child.kill("SIGTERM");
  });

  /** openssl verify -crl_check_all with every CRL the chain's distribution points name, fetched now */
  async function verify(leafPem: string): Promise<{ ok: boolean; out: string; urls: string[] }> {
    const d = tmpdir("fg-crl-verify-");
    const chain = [pki.issuing.outs.certificatePem, pki.intermediate.outs.certificatePem];
    const urls = [leafPem, ...chain].map(cdpOf);
    const crlArgs: string[] = [];
    for (const [i, u] of urls.entries()) {
      const r = await get(cli.port, new URL(u).pathname);
      expect([u, r.status, r.headers["content-type"]]).toEqual([u, 200, "application/pkix-crl"]);
      const f = path.join(d, `crl-${i}.der`);
      fs.writeFileSync(f, r.body);
      // OpenSSL's -CRLfile reads PEM: convert the DER as fetched (and check it parses)
      const pem = path.join(d, `crl-${i}.pem`);
      const c = openssl(["crl", "-inform", "DER", "-in", f, "-out", pem]);
      expect(c.status).toBe(0);
      crlArgs.push("-CRLfile", pem);
    }
    fs.writeFileSync(path.join(d, "root.pem"), pki.root.outs.certificatePem);
    fs.writeFileSync(path.join(d, "chain.pem"), chain.join(""));
    fs.writeFileSync(path.join(d, "leaf.pem"), leafPem);
    const r = openssl([
      "verify",
      "-crl_check_all",
      "-CAfile",
      path.join(d, "root.pem"),
      "-untrusted",
      path.join(d, "chain.pem"),
      ...crlArgs,
      path.join(d, "leaf.pem"),
    ]);
    fs.rmSync(d, { recursive: true, force: true });
    return { ok: r.status === 0 && /: OK/.test(r.out), out: r.out, urls };
  }

  it("accepts a live device and refuses a revoked one; a revoked intermediate refuses every device", async () => {
    expect(cli.line).toMatch(/ \d+ CRLs: .*line-a\.crl/);
    const live = await verify(devices.live!.certPem);
    expect(live.urls).toEqual([LINE_A, `${BASE}/manufacturing.crl`, `${BASE}/root.crl`]);
    expect(live).toMatchObject({ ok: true });
    const revoked = await verify(devices.revoked!.certPem);
    expect(revoked.ok).toBe(false);
    expect(revoked.out).toMatch(/certificate revoked/);
    // the root revokes the intermediate (a CA-level revocation, the CA provider's update)
    const inputs = {
      ...pki.root.inputs,
      revoked: [
        {
          serial: String(pki.intermediate.outs.serialNumber),
          revokedAt: new Date(Date.now() - 5_000).toISOString(),
          reason: "cACompromise" as const,
        },
      ],
    };
    update("id", pki.root.outs, inputs);
    const after = await verify(devices.live!.certPem);
    expect(after.ok).toBe(false);
    expect(after.out).toMatch(/certificate revoked/);
    expect(fs.existsSync(crlFilesOf(pki.dir, pki.root.fingerprint).der)).toBe(true);
  });

  it("refuses a bad folder (exit 2) and a port in use (exit 3), naming the flag", async () => {
    const tsx = path.resolve("node_modules/.bin/tsx");
    const run = (args: string[]) =>
      new Promise<{ code: number | null; err: string }>((resolve) => {
        const c = spawn(tsx, ["cli/fleet.ts", "crl", "serve", ...args], {
          stdio: ["ignore", "pipe", "pipe"],
        });
        let err = "";
        c.stderr.on("data", (d) => (err += d));
        c.on("exit", (code) => resolve({ code, err }));
      });
    const missing = await run(["--dir", path.join(work, "none"), "--port", "0"]);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(
      /fleet crl: --dir: got ".*none", want a CRL folder this user can read \(ENOENT\)/,
    );
    const busy = await run(["--dir", pki.dir, "--port", String(cli.port)]);
    expect(busy.code).toBe(3);
    expect(busy.err).toMatch(/--port: got \d+ in use on 127\.0\.0\.1, want a free port/);
  });
});
