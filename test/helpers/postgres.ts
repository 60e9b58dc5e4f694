/**
 * A throwaway PostgreSQL server for tests (brief rule 5: real components): initdb into a temp
 * directory, start it on 127.0.0.1 and a free port with password authentication, create a
 * database, and hand back its `postgres://` URL and a stop function that stops the server and
 * deletes the directory. initdb refuses to run as root, so as root the server runs as the
 * unprivileged `postgres` user (created by the Debian package); otherwise as the current user.
 * Durability settings are off (fsync, synchronous_commit): a test server need not survive a power
 * loss, and a killed client still sees its transaction rolled back.
 * Missing binaries fail loudly: run scripts/ensure-postgres.
 */
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { Client } from "pg";
import { runCommand } from "./proc";

export interface PostgresServer {
  /** postgres://fleet:<password>@127.0.0.1:<port>/<database> */
  url: string;
  port: number;
  dir: string;
  /** connect to another database of the same server */
  urlFor(database: string): string;
  createDatabase(name: string): Promise<string>;
  stop(): Promise<void>;
}

/** The newest PostgreSQL server bin directory: $PG_BIN, /usr/lib/postgresql/<v>/bin, or initdb on PATH. */
export function findPostgresBin(): string {
  const ok = (dir: string) =>
    fs.existsSync(path.join(dir, "initdb")) && fs.existsSync(path.join(dir, "pg_ctl"));
  if (process.env.PG_BIN && ok(process.env.PG_BIN)) return process.env.PG_BIN;
  const root = "/usr/lib/postgresql";
  if (fs.existsSync(root)) {
    const versions = fs
      .readdirSync(root)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) if (ok(path.join(root, v, "bin"))) return path.join(root, v, "bin");
  }
  for (const d of (process.env.PATH ?? "").split(":")) {
    const p = path.join(d, "initdb");
    if (d && fs.existsSync(p)) {
      const real = path.dirname(fs.realpathSync(p));
      if (ok(real)) return real;
    }
  }
  throw new Error(
    "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin, $PG_BIN or PATH: " +
      "run `bash scripts/ensure-postgres` (installs the postgresql package when root)",
  );
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function runAs(): {
  uid: number;
  gid: number;
  wrap: (cmd: string, args: string[]) => [string, string[]];
} | null {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return null;
  let uid: number;
  let gid: number;
  try {
    uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
    gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
  } catch {
    throw new Error(
      "running as root, and PostgreSQL refuses to run as root: the unprivileged `postgres` user is missing " +
        "(run `bash scripts/ensure-postgres`, which installs the postgresql package that creates it)",
    );
  }
  return { uid, gid, wrap: (cmd, args) => ["runuser", ["-u", "postgres", "--", cmd, ...args]] };
}

/**
 * Start a server. `durable: true` keeps PostgreSQL's default fsync and synchronous_commit (for
 * benchmarks that must compare like with like); tests use the faster non-durable settings.
 */
export async function startPostgres(
  opts: { database?: string; durable?: boolean } = {},
): Promise<PostgresServer> {
  const bin = findPostgresBin();
  const as = runAs();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-pg-"));
  const data = path.join(dir, "data");
  const password = crypto.randomBytes(12).toString("hex");
  const pwfile = path.join(dir, "pw");
  fs.writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  if (as) {
    fs.chownSync(dir, as.uid, as.gid);
    fs.chownSync(pwfile, as.uid, as.gid);
  }
  fs.chmodSync(dir, 0o700);
  const run = async (cmd: string, args: string[], what: string) => {
    const [c, a] = as ? as.wrap(path.join(bin, cmd), args) : [path.join(bin, cmd), args];
    const r = await runCommand(c, a, { cwd: dir, timeoutMs: 120_000 });
    if (r.status !== 0) {
      const log = fs.existsSync(path.join(dir, "log")) ? fs.readFileSync(path.join(dir, "log"), "utf8") : "";
      throw new Error(
        `postgres test server: ${what} failed (exit ${r.status}): ${r.stderr}${r.stdout}\n${log}`,
      );
    }
  };
  const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
  try {
    await run(
      "initdb",
      [
        "-D",
        data,
        "-U",
        "fleet",
        `--pwfile=${pwfile}`,
        "-A",
        "scram-sha-256",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
      ],
      "initdb",
    );
    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      try {
        await run(
          "pg_ctl",
          [
            "-D",
            data,
            "-l",
            path.join(dir, "log"),
            "-w",
            "-t",
            "60",
            "-o",
            `-c listen_addresses=127.0.0.1 -p ${port} -c unix_socket_directories=${dir} -c max_connections=40` +
              (opts.durable ? "" : " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"),
            "start",
          ],
          `pg_ctl start on port ${port}`,
        );
        break;
      } catch (err) {
        if (attempt >= 3) throw err;
      }
    }
    const urlFor = (db: string) => `postgres://fleet:${password}@127.0.0.1:${port}/${db}`;
    const createDatabase = async (name: string) => {
      const c = new Client({ connectionString: urlFor("postgres") });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
      } finally {
        await c.end();
      }
      return urlFor(name);
    };
    const database = opts.database ?? "fleet_test";
    let stopped = false;
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      try {
        await run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"], "pg_ctl stop");
      } finally {
        cleanup();
      }
    };
    try {
      await createDatabase(database);
    } catch (err) {
      await stop();
      throw err;
    }
    return { url: urlFor(database), port, dir, urlFor, createDatabase, stop };
  } catch (err) {
    cleanup();
    throw err;
  }
}
