/**
 * The CRL server: HTTP GET of the CRLs in one CRL folder (core/enroll/crl), at the URL paths the
 * certificates' CRL distribution points name (RFC 5280 4.2.1.13: an HTTP URI gives a DER CRL,
 * served as application/pkix-crl, RFC 2585 section 4.2). `/<name>.crl` is the DER file,
 * `/<name>.crl.pem` its PEM twin; the same files answer at the URL path of every distribution
 * point that the folder's sidecars list (`/crl/root.crl` for `http://pki.example.com/crl/root.crl`),
 * so one DNS name pointed at this server serves the URLs in the certificates. Nothing else is served: no listing, no sidecars or locks, no
 * name with a slash (plain or encoded) or a dot-dot, no symbolic link that leads out of the folder.
 * Responses carry ETag and Last-Modified and answer conditional requests with 304, so a relying
 * party that polls pays for a CRL only when it changed. Files are read at each request: a CRL
 * re-signed by a `pulumi up` is served at once, without a restart.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { FleetError, invalid } from "../../core/errors";

export interface CrlServerOptions {
  /** the CRL folder */
  dir: string;
  /** TCP port (0: any free port) */
  port: number;
  /** address to bind (default 127.0.0.1) */
  host?: string;
  /** one line per refused or failed request (never file contents) */
  log?: (line: string) => void;
}

export interface CrlServer {
  host: string;
  port: number;
  /** `http://host:port` */
  url: string;
  close(): Promise<void>;
}

/** The names served: a plain file name ending in .crl or .crl.pem. */
export const SERVED_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\.crl(?:\.pem)?$/;

/** The URL paths the sidecars of the folder list (core/enroll/crl), as `path -> file name`. */
function publishedPaths(realDir: string): Map<string, string> {
  const out = new Map<string, string>();
  let files: string[] = [];
  try {
    files = fs.readdirSync(realDir);
  } catch {
    return out;
  }
  for (const f of files) {
    if (!/^[0-9a-f]{64}\.json$/.test(f)) continue;
    try {
      const m = JSON.parse(fs.readFileSync(path.join(realDir, f), "utf8")) as {
        names?: unknown;
        paths?: unknown;
      };
      const names = Array.isArray(m.names) ? m.names.map(String) : [];
      for (const p of Array.isArray(m.paths) ? m.paths.map(String) : []) {
        const name = p.split("/").pop() ?? "";
        if (names.includes(name)) out.set(p, name);
      }
    } catch {}
  }
  return out;
}

/**
 * The file of the folder a request path names, or undefined (then 404): `/<name>` for a CRL file
 * in the folder, or a distribution point's URL path (`/crl/root.crl`) that a sidecar lists, each
 * with `.pem` for the PEM twin.
 */
export function fileFor(realDir: string, rawUrl: string): string | undefined {
  const q = rawUrl.indexOf("?");
  const rawPath = q < 0 ? rawUrl : rawUrl.slice(0, q);
  // an encoded slash, backslash, dot or NUL is never part of a name we publish
  if (/%(2f|5c|2e|00)/i.test(rawPath) || rawPath.includes("\\")) return undefined;
  let p: string;
  try {
    p = decodeURIComponent(rawPath);
  } catch {
    return undefined;
  }
  if (!p.startsWith("/")) return undefined;
  const segments = p.slice(1).split("/");
  if (segments.some((s) => !/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(s) || s.includes(".."))) return undefined;
  const name = segments.at(-1)!;
  if (!SERVED_NAME.test(name)) return undefined;
  if (segments.length > 1) {
    const der = name.endsWith(".pem") ? p.slice(0, -4) : p;
    const listed = publishedPaths(realDir).get(der);
    if (!listed || (listed !== name && `${listed}.pem` !== name)) return undefined;
  }
  const file = path.join(realDir, name);
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch {
    return undefined;
  }
  // a symbolic link may point inside the folder (an alias), never out of it
  if (!real.startsWith(realDir + path.sep)) return undefined;
  try {
    if (!fs.statSync(real).isFile()) return undefined;
  } catch {
    return undefined;
  }
  return real;
}

const httpDate = (ms: number) => new Date(Math.floor(ms / 1000) * 1000).toUTCString();

/** Start serving `o.dir`; resolves once it listens. */
export async function startCrlServer(o: CrlServerOptions): Promise<CrlServer> {
  const host = o.host ?? "127.0.0.1";
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535)
    throw invalid("port", o.port, "an integer in 0..65535");
  let realDir: string;
  try {
    realDir = fs.realpathSync(o.dir);
    if (!fs.statSync(realDir).isDirectory())
      throw Object.assign(new Error("not a folder"), { code: "ENOTDIR" });
    fs.accessSync(realDir, fs.constants.R_OK | fs.constants.X_OK);
  } catch (e) {
    throw invalid(
      "dir",
      o.dir,
      `a CRL folder this user can read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  const log = o.log ?? (() => {});
  const server = http.createServer((req, res) => {
    res.setHeader("X-Content-Type-Options", "nosniff");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { Allow: "GET, HEAD", "Content-Type": "text/plain" });
      res.end("method not allowed\n");
      return;
    }
    const file = fileFor(realDir, req.url ?? "/");
    let body: Buffer | undefined;
    let mtime = 0;
    if (file) {
      try {
        body = fs.readFileSync(file);
        mtime = fs.statSync(file).mtimeMs;
      } catch {
        body = undefined;
      }
    }
    if (!body) {
      log(`crl: ${req.method} ${JSON.stringify(req.url ?? "")}: 404`);
      res.writeHead(404, { "Content-Type": "text/plain" });
      res.end("not found\n");
      return;
    }
    const etag = `"${crypto.createHash("sha256").update(body).digest("hex").slice(0, 32)}"`;
    const lastModified = httpDate(mtime);
    const headers = {
      "Content-Type": file!.endsWith(".pem") ? "application/x-pem-file" : "application/pkix-crl",
      ETag: etag,
      "Last-Modified": lastModified,
      // revalidate every time: a CRL is re-signed in place, and the 304 costs a few bytes
      "Cache-Control": "no-cache",
    };
    const inm = req.headers["if-none-match"];
    const ims = req.headers["if-modified-since"];
    const notModified =
      inm !== undefined
        ? inm.split(",").some((t) => t.trim() === etag || t.trim() === "*")
        : ims !== undefined && Date.parse(ims) >= Date.parse(lastModified);
    if (notModified) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    res.writeHead(200, { ...headers, "Content-Length": body.length });
    res.end(req.method === "HEAD" ? undefined : body);
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      server.off("listening", onListening);
      if (e.code === "EADDRINUSE")
        reject(
          new FleetError("UNAVAILABLE", `port: got ${o.port} in use on ${host}, want a free port`, "port"),
        );
      else if (e.code === "EADDRNOTAVAIL" || e.code === "ENOTFOUND")
        reject(invalid("host", host, "an address of this machine"));
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
    server.listen(o.port, host);
  });
  const port = (server.address() as { port: number }).port;
  const shown = host.includes(":") ? `[${host}]` : host;
  return {
    host,
    port,
    url: `http://${shown}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The CRL files a folder serves now (names, sorted): for the ready line. */
export function servedNames(dir: string): string[] {
  try {
    return fs
      .readdirSync(dir)
      .filter((n) => SERVED_NAME.test(n))
      .sort();
  } catch {
    return [];
  }
}
