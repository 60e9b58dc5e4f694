import { spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import Database from "better-sqlite3";
import { Client } from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registryCommand } from "../../cli/registry";
import { FleetError } from "../../core/errors";
import { openRegistry } from "../../core/registry";
import { formatAnchor, integrityError, parseAnchor, sha256Hex } from "../../core/registry/chain";
import { LATEST_VERSION } from "../../core/registry/schema";
import type { AuditHead } from "../../core/registry/types";
import { type PostgresServer, startPostgres } from "../helpers/postgres";

const ROOT = path.join(__dirname, "..", "..");
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-cli-registry-"));
let pg: PostgresServer | undefined;
beforeAll(async () => {
  pg = await startPostgres();
}, 180_000);
// stopping the server under load (a shared 2-core machine) can take longer than the 10 s default
afterAll(async () => {
  await pg?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
}, 60_000);

const pk = (id: string) => Buffer.from(`spki-${id}`);
let n = 0;

/** Two active devices with certificates; returns the location and the audit head. */
async function seeded(location?: string): Promise<{ loc: string; head: AuditHead }> {
  const loc = location ?? path.join(dir, `r${++n}.db`);
  const r = await openRegistry(loc);
  await r.putBatch({ name: "lot-a", model: "fg100", source: "puf", spec: "{}" });
  await r.addDevices("lot-a", ["a-0", "a-1"]);
  const at = new Date("2026-01-01T00:00:00Z");
  for (const [i, deviceId] of ["a-0", "a-1"].entries())
    await r.apply([
      { deviceId, batch: "lot-a", from: "pending", to: "attested", publicKey: pk(deviceId) },
      {
        deviceId,
        batch: "lot-a",
        from: "attested",
        to: "issued",
        certificate: {
          serial: `${n}0${i + 1}`,
          deviceId,
          batch: "lot-a",
          issuer: "ab".repeat(32),
          der: crypto.randomBytes(100),
          notBefore: at,
          notAfter: at,
          issuedAt: at,
        },
      },
      { deviceId, batch: "lot-a", from: "issued", to: "installed" },
      { deviceId, batch: "lot-a", from: "installed", to: "active" },
    ]);
  const head = await r.auditHead();
  await r.close();
  return { loc, head };
}

function sqlite(loc: string, sql: string): void {
  const db = new Database(loc);
  try {
    db.exec(sql);
  } finally {
    db.close();
  }
}

const COPY_KEY =
  "UPDATE devices SET public_key = (SELECT public_key FROM devices WHERE device_id = 'a-0') WHERE device_id = 'a-1'";

function capture(step = 0) {
  const lines: string[] = [];
  const progress: string[] = [];
  let clock = 0;
  const io = {
    out: (l: string) => lines.push(l),
    progress: (l: string) => progress.push(l),
    now: () => (clock += step),
  };
  return { lines, progress, io };
}

async function refused(p: Promise<unknown>, code: string, re: RegExp) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FleetError);
  expect((err as FleetError).code).toBe(code);
  expect((err as FleetError).message).toMatch(re);
}

/** the real command, as a user runs it */
function fleet(args: string[]) {
  const r = spawnSync(
    process.execPath,
    [path.join(ROOT, "node_modules/tsx/dist/cli.mjs"), "cli/fleet.ts", ...args],
    {
      cwd: ROOT,
      encoding: "utf8",
      timeout: 60_000,
    },
  );
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("fleet registry verify", () => {
  it("a clean registry: exit 0 and a summary with the audit head", async () => {
    const { loc, head } = await seeded();
    const { lines, io } = capture();
    expect(await registryCommand(["verify", "--registry", loc], io)).toBe(0);
    expect(lines[0]).toBe(
      `registry ${loc} (sqlite, schema ${LATEST_VERSION}): audit head ${head.seq}:${head.hash}`,
    );
    expect(lines.at(-1)).toBe(`verify: ok (${head.seq} audit rows, 2 devices)`);
    expect(
      await registryCommand(["verify", "--registry", loc, "--anchor", `${head.seq}:${head.hash}`], io),
    ).toBe(0);
  });

  it("a key copied between devices: exit 1 and the difference named (device, field, table, audit)", async () => {
    const { loc } = await seeded();
    sqlite(loc, COPY_KEY);
    const { lines, io } = capture();
    expect(await registryCommand(["verify", "--registry", loc], io)).toBe(1);
    expect(lines).toContain(
      `  device: device a-1: publicKey.sha256: table ${sha256Hex(pk("a-0"))}, audit ${sha256Hex(pk("a-1"))}`,
    );
    expect(lines.at(-1)).toMatch(
      /^verify: 1 difference \(.*\); the registry was changed outside fleetguard$/,
    );
    // --json: the typed report
    const j = capture();
    expect(await registryCommand(["verify", "--registry", loc, "--json"], j.io)).toBe(1);
    const report = JSON.parse(j.lines.join("\n"));
    expect(report).toMatchObject({ registry: loc, ok: false, count: 1 });
    expect(report.findings[0]).toMatchObject({ kind: "device", deviceId: "a-1", field: "publicKey.sha256" });
    // what a caller that must stop (a preview) throws
    const e = integrityError(report, loc);
    expect(e.code).toBe("INTEGRITY");
    expect(e.message).toBe(
      `registry: got 1 difference from its audit log (${report.findings[0].message}), want none: it was changed outside fleetguard; \`fleet registry verify --registry ${loc}\` lists them all`,
    );
  });

  it("a revoked certificate set back to live, and a hand-edited audit row, through the real command", async () => {
    const { loc } = await seeded();
    const r = await openRegistry(loc);
    await r.apply([
      {
        deviceId: "a-0",
        batch: "lot-a",
        from: "active",
        to: "decommissioned",
        revoke: { at: new Date(), reason: "cessationOfOperation" },
      },
    ]);
    const [c] = await r.certificates({ deviceId: "a-0" });
    await r.close();
    sqlite(
      loc,
      `UPDATE certificates SET status = 'live', revoked_at = NULL, revocation_reason = NULL WHERE serial = '${c!.serial}';
       DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'quiet' WHERE seq = 3`,
    );
    const res = fleet(["registry", "verify", "--registry", loc]);
    expect(res.status, res.stderr).toBe(1);
    expect(res.stdout).toMatch(
      /chain: audit row 3 \(device a-0\): hash: stored [0-9a-f]{64}, its content hashes to/,
    );
    expect(res.stdout).toContain(
      `certificate: certificate ${c!.serial} of device a-0: status: table live, audit revoked`,
    );
  }, 60_000);

  it("a log rewritten and hashed again is caught by --anchor", async () => {
    const { loc, head } = await seeded();
    // the rows after the anchor are gone and others written in their place: same seq, other hash
    sqlite(loc, `DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = ${head.seq}`);
    const r = await openRegistry(loc);
    await r.apply([{ deviceId: "a-1", batch: "lot-a", from: "active", to: "active" }]);
    await r.close();
    const { lines, io } = capture();
    expect(
      await registryCommand(["verify", "--registry", loc, "--anchor", `${head.seq}:${head.hash}`], io),
    ).toBe(1);
    expect(lines.join("\n")).toMatch(
      new RegExp(
        `anchor: anchor ${head.seq}: hash: the log holds [0-9a-f]{64}, the anchor says ${head.hash}`,
      ),
    );
  });

  it("PostgreSQL: exit 1 on a difference, and the password is never printed", async () => {
    const url = await pg!.createDatabase("cli_verify");
    const { head } = await seeded(url);
    const c = new Client({ connectionString: url });
    await c.connect();
    await c.query(COPY_KEY);
    await c.end();
    const password = new URL(url).password;
    const res = fleet(["registry", "verify", "--registry", url, "--batch", "lot-a"]);
    expect(res.status, res.stderr).toBe(1);
    expect(res.stdout).toContain("registry postgres://fleet:***@127.0.0.1:");
    expect(res.stdout).toContain(`audit head ${head.seq}:${head.hash}`);
    expect(res.stdout).toContain("device a-1: publicKey.sha256");
    expect(res.stdout + res.stderr).not.toContain(password);
    // an unreachable server: exit 3, still no password
    const down = url.replace(/:(\d+)\//, ":1/");
    const res3 = fleet(["registry", "verify", "--registry", down]);
    expect(res3.status).toBe(3);
    expect(res3.stdout + res3.stderr).not.toContain(password);
  }, 60_000);

  it("bad input is exit 2 and creates nothing", async () => {
    const missing = path.join(dir, "nope", "registry.db");
    const res = fleet(["registry", "verify", "--registry", missing]);
    expect(res.status).toBe(2);
    expect(res.stderr).toContain("--registry: got");
    expect(fs.existsSync(path.dirname(missing))).toBe(false);
    expect(fleet(["registry", "verify", "--registry", dir]).status).toBe(2);
    const { loc } = await seeded();
    const { io } = capture();
    await refused(
      registryCommand(["verify", "--registry", loc, "--anchor", "12:xyz"], io),
      "INVALID_INPUT",
      /^--anchor: got "12:xyz", want SEQ:HASH/,
    );
    await refused(
      registryCommand(["verify", "--registry", loc, "--batch", "lot-z"], io),
      "INVALID_INPUT",
      /^--batch: got "lot-z", want one of lot-a/,
    );
    await refused(
      registryCommand(["verify", "--registry", loc, "--json=yes"], io),
      "INVALID_INPUT",
      /^--json: got "yes"/,
    );
    await refused(
      registryCommand(["verify", "--registry", loc, "--frob", "1"], io),
      "INVALID_INPUT",
      /^option: got "--frob"/,
    );
    await refused(registryCommand(["check"], io), "INVALID_INPUT", /^command: got "check", want verify/);
    expect(parseAnchor(`7:${"0".repeat(64)}`)).toEqual({ seq: 7, hash: "0".repeat(64) });
    expect(formatAnchor({ seq: 7, hash: "ab".repeat(32) })).toBe(`7:${"ab".repeat(32)}`);
    expect(() => parseAnchor(7, "outputs.auditHead")).toThrow(/^outputs\.auditHead: got 7, want SEQ:HASH/);
  }, 60_000);

  it("a long run shows a progress line on stderr", async () => {
    const { loc } = await seeded();
    const { progress, io } = capture(700);
    expect(await registryCommand(["verify", "--registry", loc], io)).toBe(0);
    expect(progress.length).toBeGreaterThan(1);
    expect(progress[0]).toMatch(/^verify: \d+\.\d% \(\d+\/\d+ audit rows hashed and replayed\)$/);
    expect(progress.at(-1)).toMatch(/^verify: done in \d+\.\d s$/);
    // a short run stays quiet
    const quiet = capture();
    await registryCommand(["verify", "--registry", loc], quiet.io);
    expect(quiet.progress).toEqual([]);
  });
});
