/**
 * The registry's tamper evidence (issue 9, finding 2): the audit log's hash chain, its anchor,
 * and verify re-deriving every device from the log, on both backends. Every attack is made the
 * way an attacker with the database would: by SQL, behind fleetguard's back, triggers dropped.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import Database from "better-sqlite3";
import { Client } from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { openRegistry } from "../../../core/registry";
import {
  type ChainRow,
  formatAnchor,
  GENESIS,
  parseAnchor,
  rowHash,
  sha256Hex,
} from "../../../core/registry/chain";
import { toChainRow as pgChainRow } from "../../../core/registry/postgres";
import { LATEST_VERSION, MIGRATIONS, MIGRATIONS_TABLE } from "../../../core/registry/schema";
import { toChainRow as sqliteChainRow } from "../../../core/registry/sqlite";
import type { Anchor, Registry, Transition, VerifyFinding } from "../../../core/registry/types";
import { type PostgresServer, startPostgres } from "../../helpers/postgres";

const ISSUER = "a1".repeat(32);
let pg: PostgresServer | undefined;
let dbn = 0;
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-verify-"));

beforeAll(async () => {
  pg = await startPostgres();
}, 180_000);
// stopping the server under load (a shared 2-core machine) can take longer than the 10 s default
afterAll(async () => {
  await pg?.stop();
  fs.rmSync(tmpRoot, { recursive: true, force: true });
}, 60_000);

type Rows = Array<Record<string, unknown>>;

interface Backend {
  name: "sqlite" | "postgres";
  fresh(): Promise<string>;
  /** one or more SQL statements on the database itself (no parameters); the last one's rows */
  raw(location: string, sql: string): Promise<Rows>;
  /** SQL that switches the audit table's protecting triggers off / on, as a database owner can */
  triggersOff: string;
  triggersOn: string;
  chainRow(r: Record<string, unknown>): ChainRow;
}

const backends: Backend[] = [
  {
    name: "sqlite",
    fresh: async () => path.join(tmpRoot, `v${++dbn}`, "registry.db"),
    raw: async (location, sql) => {
      const db = new Database(location);
      try {
        const parts = sql.split(/;\s*\n/).filter((x) => x.trim());
        let out: Rows = [];
        for (const part of parts) {
          const s = db.prepare(part);
          if (s.reader) out = s.all() as Rows;
          else s.run();
        }
        return out;
      } finally {
        db.close();
      }
    },
    triggersOff: `DROP TRIGGER audit_no_update;
DROP TRIGGER audit_no_delete;
DROP TRIGGER audit_append_at_head;
DROP TRIGGER audit_hash_required`,
    triggersOn: "SELECT 1",
    chainRow: sqliteChainRow,
  },
  {
    name: "postgres",
    fresh: async () => {
      if (!pg) throw new Error("the PostgreSQL test server did not start (see beforeAll)");
      return pg.createDatabase(`v${++dbn}`);
    },
    raw: async (location, sql) => {
      const c = new Client({ connectionString: location });
      await c.connect();
      try {
        const res = await c.query(sql);
        const last = Array.isArray(res) ? res[res.length - 1] : res;
        return last.rows;
      } finally {
        await c.end();
      }
    },
    triggersOff: "ALTER TABLE audit DISABLE TRIGGER USER",
    triggersOn: "ALTER TABLE audit ENABLE TRIGGER USER",
    chainRow: pgChainRow,
  },
];

const pk = (id: string) => Buffer.concat([Buffer.from("3059301306072a8648ce3d0201", "hex"), Buffer.from(id)]);
let serialN = 0x1000;
function cert(deviceId: string, batch: string) {
  const at = new Date("2026-01-01T00:00:00Z");
  return {
    serial: (++serialN).toString(16),
    deviceId,
    batch,
    issuer: ISSUER,
    der: crypto.randomBytes(300),
    notBefore: at,
    notAfter: new Date("2027-01-01T00:00:00Z"),
    issuedAt: at,
  };
}

/** Devices through every kind of step: enroll, re-issue, quarantine, decommission, no-op, a move. */
async function seed(r: Registry): Promise<void> {
  await r.putBatch({ name: "lot-1", model: "fg100", source: "puf", spec: "{}" });
  await r.putBatch({ name: "lot-2", model: "fg100", source: "puf", spec: "{}" });
  const ids = Array.from({ length: 10 }, (_, i) => `d-${String(i).padStart(2, "0")}`);
  await r.addDevices("lot-1", ids);
  await r.addDevices("lot-2", ["e-0", "e-1"]);
  const step = (
    from: Transition["from"],
    to: Transition["to"],
    extra: (id: string) => Partial<Transition> = () => ({}),
  ) => ids.map((deviceId) => ({ deviceId, batch: "lot-1", from, to, ...extra(deviceId) }));
  await r.apply(step("pending", "attested", (id) => ({ publicKey: pk(id), epoch: 1 })));
  await r.apply(step("attested", "issued", (id) => ({ certificate: cert(id, "lot-1") })));
  await r.apply(step("issued", "installed", () => ({ epoch: 2 })));
  await r.apply(step("installed", "active"));
  // d-01 re-issued (its first certificate superseded), d-02 quarantined, d-03 decommissioned
  await r.apply([
    { deviceId: "d-01", batch: "lot-1", from: "active", to: "issued", certificate: cert("d-01", "lot-1") },
    { deviceId: "d-01", batch: "lot-1", from: "issued", to: "installed" },
    { deviceId: "d-01", batch: "lot-1", from: "installed", to: "active" },
    {
      deviceId: "d-02",
      batch: "lot-1",
      from: "active",
      to: "quarantined",
      reason: "duplicate-key: same identity key as d-09",
      revoke: { at: new Date("2026-03-01T00:00:00Z"), reason: "keyCompromise" },
    },
    {
      deviceId: "d-03",
      batch: "lot-1",
      from: "active",
      to: "decommissioned",
      reason: "removed",
      revoke: { at: new Date("2026-03-02T00:00:00Z"), reason: "cessationOfOperation" },
    },
    // a no-op with a detail whose keys PostgreSQL's jsonb reorders
    {
      deviceId: "d-04",
      batch: "lot-1",
      from: "active",
      to: "active",
      detail: { zeta: 1, alpha: { y: [1, "é"], b: null } },
    },
  ]);
  await r.apply([
    { deviceId: "e-0", batch: "lot-2", from: "pending", to: "attested", publicKey: pk("e-0") },
    { deviceId: "e-1", batch: "lot-2", from: "pending", to: "attested", publicKey: pk("e-1") },
    { deviceId: "e-0", batch: "lot-2", from: "attested", to: "quarantined", reason: "model-mismatch" },
  ]);
  // lot-2 deleted: e-0 moves into lot-1 (pending again, key forgotten)
  await r.markBatchDeleted("lot-2");
  await r.addDevices("lot-1", ["e-0"]);
}

const fields = (fs_: VerifyFinding[]) =>
  fs_.map((f) =>
    f.kind === "chain" || f.kind === "anchor"
      ? `${f.kind} ${f.seq} ${f.field}`
      : `${f.kind} ${f.deviceId}${f.kind === "certificate" ? ` ${f.serial}` : ""} ${f.field}`,
  );

async function expectInvalid(p: Promise<unknown>, re: RegExp) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FleetError);
  expect((err as FleetError).code).toBe("INVALID_INPUT");
  expect((err as FleetError).message).toMatch(re);
}

describe.each(backends)("tamper evidence on $name", (backend) => {
  async function seeded(): Promise<{ r: Registry; loc: string }> {
    const loc = await backend.fresh();
    const r = await openRegistry(loc);
    await seed(r);
    return { r, loc };
  }

  it("a clean registry verifies ok; every row is chained from the genesis hash to the head", async () => {
    const { r } = await seeded();
    const progress: Array<[number, number]> = [];
    const rep = await r.verify({ onProgress: (d, t) => progress.push([d, t]) });
    expect(fields(rep.findings)).toEqual([]);
    expect(rep).toMatchObject({ ok: true, count: 0, truncated: false, devices: 12 });
    const all = await r.audit({});
    expect(rep.rows).toBe(all.length);
    expect(all[0]!.prevHash).toBe(GENESIS);
    for (let i = 1; i < all.length; i++) expect(all[i]!.prevHash).toBe(all[i - 1]!.hash);
    const head = await r.auditHead();
    expect(head).toEqual({ seq: all.at(-1)!.seq, hash: all.at(-1)!.hash });
    expect(rep.head).toEqual(head);
    expect(progress.at(-1)).toEqual([2 * all.length, 2 * all.length]);
    // the anchor of now verifies, and so does any earlier head
    expect((await r.verify({ anchor: head })).ok).toBe(true);
    expect((await r.verify({ anchor: { seq: all[5]!.seq, hash: all[5]!.hash! } })).ok).toBe(true);
    expect((await r.verify({ anchor: { seq: 0, hash: GENESIS } })).ok).toBe(true);
    // an empty registry too
    const empty = await openRegistry(await backend.fresh());
    expect(await empty.auditHead()).toEqual({ seq: 0, hash: GENESIS });
    expect(await empty.verify()).toMatchObject({ ok: true, rows: 0, devices: 0 });
    await empty.close();
    await r.close();
  });

  it("an audit row changed by hand is found: the first broken link names its seq", async () => {
    const { r, loc } = await seeded();
    const row = (await r.audit({ deviceId: "d-05" })).find((a) => a.to === "attested")!;
    await backend.raw(
      loc,
      `${backend.triggersOff};\nUPDATE audit SET reason = 'nothing to see' WHERE seq = ${row.seq};\n${backend.triggersOn}`,
    );
    const rep = await r.verify();
    expect(rep.ok).toBe(false);
    expect(rep.findings[0]).toMatchObject({ kind: "chain", seq: row.seq, field: "hash", stored: row.hash });
    expect(rep.findings[0]!.message).toMatch(
      new RegExp(`audit row ${row.seq} \\(device d-05\\): hash: stored`),
    );
    // only the first broken link of the chain is reported
    expect(rep.findings.filter((f) => f.kind === "chain").length).toBe(1);
    await r.close();
  });

  it("a removed audit row breaks the link of the row after it", async () => {
    const { r, loc } = await seeded();
    const all = await r.audit({});
    const victim = all[7]!;
    await backend.raw(
      loc,
      `${backend.triggersOff};\nDELETE FROM audit WHERE seq = ${victim.seq};\n${backend.triggersOn}`,
    );
    const rep = await r.verify();
    expect(rep.findings[0]).toMatchObject({
      kind: "chain",
      seq: all[8]!.seq,
      field: "prev_hash",
      expected: all[6]!.hash,
    });
    await r.close();
  });

  if (backend.name === "sqlite")
    it("INSERT OR REPLACE on the audit table is refused; with the triggers dropped, verify finds it", async () => {
      const { r, loc } = await seeded();
      const row = (await r.audit({ deviceId: "d-03" })).at(-1)!;
      const replace = `INSERT OR REPLACE INTO audit (seq, at, batch, device_id, from_state, to_state, reason, prev_hash, hash)
        VALUES (${row.seq}, 0, 'lot-1', 'd-03', 'active', 'active', NULL, '${row.prevHash}', '${row.hash}')`;
      await expect(backend.raw(loc, replace)).rejects.toThrow(/append-only/);
      await expect(
        backend.raw(
          loc,
          "INSERT INTO audit (at, batch, device_id, to_state, prev_hash, hash) VALUES (0, 'x', 'y', 'pending', 'a', 'b')",
        ),
      ).rejects.toThrow(/append-only/);
      expect((await r.verify()).ok).toBe(true);
      await backend.raw(loc, `${backend.triggersOff};\n${replace}`);
      const rep = await r.verify();
      expect(fields(rep.findings)).toContain(`chain ${row.seq} hash`);
      // the device table says decommissioned; the rewritten log now says active
      expect(fields(rep.findings)).toContain("device d-03 state");
      await r.close();
    });

  if (backend.name === "postgres")
    it("an upsert on the audit table is refused, and so is a row without its hash", async () => {
      const { r, loc } = await seeded();
      const row = (await r.audit({})).at(-1)!;
      await expect(
        backend.raw(
          loc,
          `INSERT INTO audit (seq, at, batch, device_id, to_state, prev_hash, hash)
           VALUES (${row.seq}, now(), 'lot-1', 'd-03', 'active', 'a', 'b') ON CONFLICT (seq) DO UPDATE SET reason = 'x'`,
        ),
      ).rejects.toThrow(/append-only/);
      await expect(
        backend.raw(
          loc,
          `INSERT INTO audit (seq, at, batch, device_id, to_state) VALUES (${row.seq + 1}, now(), 'x', 'y', 'pending')`,
        ),
      ).rejects.toThrow(/null value in column "(prev_hash|hash)"/);
      expect((await r.verify()).ok).toBe(true);
      await r.close();
    });

  it("a public key copied from another device is found", async () => {
    const { r, loc } = await seeded();
    await backend.raw(
      loc,
      "UPDATE devices SET public_key = (SELECT public_key FROM devices WHERE device_id = 'd-05') WHERE device_id = 'd-06'",
    );
    const rep = await r.verify();
    expect(rep.count).toBe(1);
    expect(rep.findings[0]).toEqual({
      kind: "device",
      deviceId: "d-06",
      field: "publicKey.sha256",
      table: sha256Hex(pk("d-05")),
      audit: sha256Hex(pk("d-06")),
      message: `device d-06: publicKey.sha256: table ${sha256Hex(pk("d-05"))}, audit ${sha256Hex(pk("d-06"))}`,
    });
    await r.close();
  });

  it("a revoked certificate set back to live is found (superseded and compromised ones)", async () => {
    const { r, loc } = await seeded();
    const [old] = (await r.certificates({ deviceId: "d-01" })).filter((c) => c.status === "revoked");
    const [compromised] = await r.certificates({ deviceId: "d-02" });
    expect(old!.revocationReason).toBe("superseded");
    expect(compromised!.status).toBe("revoked");
    await backend.raw(
      loc,
      `UPDATE certificates SET status = 'live', revoked_at = NULL, revocation_reason = NULL
       WHERE serial IN ('${old!.serial}', '${compromised!.serial}')`,
    );
    const rep = await r.verify();
    expect(fields(rep.findings).sort()).toEqual(
      [
        `certificate d-01 ${old!.serial} status`,
        `certificate d-01 ${old!.serial} revokedAt`,
        `certificate d-01 ${old!.serial} revocationReason`,
        `certificate d-02 ${compromised!.serial} status`,
        `certificate d-02 ${compromised!.serial} revokedAt`,
        `certificate d-02 ${compromised!.serial} revocationReason`,
      ].sort(),
    );
    expect(
      rep.findings.find((f) => f.field === "status" && "serial" in f && f.serial === compromised!.serial),
    ).toMatchObject({
      table: "live",
      audit: "revoked",
    });
    await r.close();
  });

  it("devices, states and certificates changed, forged or removed in the tables are all reported", async () => {
    const { r, loc } = await seeded();
    const [live] = await r.certificates({ deviceId: "d-07", status: ["live"] });
    await backend.raw(
      loc,
      [
        "UPDATE devices SET state = 'active', reason = NULL WHERE device_id = 'e-1'",
        "UPDATE devices SET cert_serial = NULL WHERE device_id = 'd-08'",
        `UPDATE certificates SET device_id = 'd-09' WHERE serial = '${live!.serial}'`,
        backend.name === "sqlite"
          ? "INSERT INTO devices (device_id, batch, state, updated_at) VALUES ('x-1', 'lot-1', 'active', 0)"
          : "INSERT INTO devices (device_id, batch, state, updated_at) VALUES ('x-1', 'lot-1', 'active', now())",
      ].join(";\n"),
    );
    const rep = await r.verify();
    expect(fields(rep.findings).sort()).toEqual(
      [
        "device e-1 state",
        "device d-08 certSerial",
        `certificate d-07 ${live!.serial} certificate`,
        `certificate d-09 ${live!.serial} certificate`,
        "device x-1 device",
      ].sort(),
    );
    // per batch: only that batch's devices (the chain is still checked whole)
    const lot2 = await r.verify({ batch: "lot-2" });
    expect(fields(lot2.findings)).toEqual(["device e-1 state"]);
    expect(lot2).toMatchObject({ batch: "lot-2", devices: 1 });
    await r.close();
  });

  it("a log rewritten with recomputed hashes passes the chain but is caught by the anchor", async () => {
    const { r, loc } = await seeded();
    const anchor = await r.auditHead();
    // the attacker swaps d-06's key in the table and in the log, then hashes the log again
    const victim = (await r.audit({ deviceId: "d-06" })).find((a) => a.to === "attested")!;
    const forged = sha256Hex(pk("d-05"));
    await backend.raw(
      loc,
      `${backend.triggersOff};
UPDATE devices SET public_key = (SELECT public_key FROM devices WHERE device_id = 'd-05') WHERE device_id = 'd-06';
UPDATE audit SET public_key_sha256 = '${forged}' WHERE seq = ${victim.seq}`,
    );
    const rows = (await backend.raw(loc, "SELECT * FROM audit ORDER BY seq")).map(backend.chainRow);
    let prev = GENESIS;
    const updates: string[] = [];
    for (const row of rows) {
      const hash = rowHash({ ...row, prevHash: prev });
      updates.push(`UPDATE audit SET prev_hash = '${prev}', hash = '${hash}' WHERE seq = ${row.seq}`);
      prev = hash;
    }
    await backend.raw(loc, `${updates.join(";\n")};\n${backend.triggersOn}`);
    const unanchored = await r.verify();
    expect(fields(unanchored.findings)).toEqual([]);
    const rep = await r.verify({ anchor });
    expect(fields(rep.findings)).toEqual([`anchor ${anchor.seq} hash`]);
    expect(rep.findings[0]).toMatchObject({ stored: prev, anchor: anchor.hash });
    // an anchor beyond the head (rows removed at the end) is caught too
    const gone = await r.verify({ anchor: { seq: anchor.seq + 5, hash: anchor.hash } });
    expect(fields(gone.findings)).toEqual([`anchor ${anchor.seq + 5} seq`]);
    await r.close();
  });

  it("two writers appending at once keep one unbroken chain", async () => {
    const loc = await backend.fresh();
    const a = await openRegistry(loc);
    const b = await openRegistry(loc);
    await a.putBatch({ name: "lot-1", model: "fg100", source: "puf", spec: "{}" });
    const ids = (p: string) => Array.from({ length: 300 }, (_, i) => `${p}-${String(i).padStart(4, "0")}`);
    await a.addDevices("lot-1", [...ids("a"), ...ids("b")]);
    const run = async (reg: Registry, p: string) => {
      for (let i = 0; i < 300; i += 30) {
        const part = ids(p).slice(i, i + 30);
        await reg.apply(
          part.map((deviceId) => ({
            deviceId,
            batch: "lot-1",
            from: "pending",
            to: "attested",
            publicKey: pk(deviceId),
          })),
        );
        await reg.apply(
          part.map((deviceId) => ({
            deviceId,
            batch: "lot-1",
            from: "attested",
            to: "issued",
            certificate: cert(deviceId, "lot-1"),
          })),
        );
      }
    };
    await Promise.all([run(a, "a"), run(b, "b")]);
    const rep = await a.verify();
    expect(fields(rep.findings)).toEqual([]);
    expect(rep.rows).toBe(600 * 3);
    await a.close();
    await b.close();
  }, 60_000);

  it("migration 2 chains the rows of a version-1 registry and records a baseline per device", async () => {
    const loc = await backend.fresh();
    const s = backend.name === "sqlite";
    const t = (iso: string) => (s ? String(Date.parse(iso)) : `'${iso}'`);
    const bytes = (hex: string) => (s ? `X'${hex}'` : `'\\x${hex}'`);
    if (s) fs.mkdirSync(path.dirname(loc), { recursive: true });
    const v1 = MIGRATIONS.find((m) => m.version === 1)!;
    await backend.raw(
      loc,
      [
        s ? MIGRATIONS_TABLE.sqlite : MIGRATIONS_TABLE.postgres,
        ...(s ? v1.sqlite : v1.postgres).split(/;\s*\n(?=CREATE|$)/).filter((x) => x.trim()),
        `INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, 'v1', ${t("2026-01-01T00:00:00Z")})`,
        `INSERT INTO batches (name, model, source, spec, created_at, updated_at) VALUES ('lot-1', 'fg100', 'puf', '{}', ${t("2026-01-01T00:00:00Z")}, ${t("2026-01-01T00:00:00Z")})`,
        `INSERT INTO devices (device_id, batch, state, reason, public_key, epoch, cert_serial, updated_at) VALUES
          ('a', 'lot-1', 'active', NULL, ${bytes("0a0a")}, 2, 'a2', ${t("2026-01-02T00:00:00Z")}),
          ('b', 'lot-1', 'pending', NULL, NULL, NULL, NULL, ${t("2026-01-02T00:00:00Z")}),
          ('c', 'lot-1', 'quarantined', 'clone', ${bytes("0c0c")}, 1, NULL, ${t("2026-01-02T00:00:00Z")})`,
        `INSERT INTO certificates (serial, device_id, batch, issuer, der, not_before, not_after, issued_at, status, revoked_at, revocation_reason) VALUES
          ('a1', 'a', 'lot-1', '${ISSUER}', ${bytes("3001")}, ${t("2026-01-01T00:00:00Z")}, ${t("2027-01-01T00:00:00Z")}, ${t("2026-01-01T00:00:00Z")}, 'revoked', ${t("2026-01-03T00:00:00Z")}, 'superseded'),
          ('a2', 'a', 'lot-1', '${ISSUER}', ${bytes("3002")}, ${t("2026-01-01T00:00:00Z")}, ${t("2027-01-01T00:00:00Z")}, ${t("2026-01-01T00:00:00Z")}, 'live', NULL, NULL)`,
        `INSERT INTO audit (at, batch, device_id, from_state, to_state, reason, detail) VALUES
          (${t("2026-01-01T00:00:00Z")}, 'lot-1', 'a', NULL, 'pending', NULL, NULL),
          (${t("2026-01-01T00:00:00Z")}, 'lot-1', 'b', NULL, 'pending', NULL, NULL),
          (${t("2026-01-01T00:00:00Z")}, 'lot-1', 'c', NULL, 'pending', NULL, NULL),
          (${t("2026-01-02T00:00:00Z")}, 'lot-1', 'a', 'pending', 'attested', NULL, '{"z":1,"a":2}'),
          (${t("2026-01-02T00:00:00Z")}, 'lot-1', 'c', 'pending', 'quarantined', 'clone', NULL)`,
      ].join(";\n"),
    );
    const r = await openRegistry(loc);
    expect(await r.schemaVersion()).toBe(LATEST_VERSION);
    const all = await r.audit({});
    expect(all.length).toBe(5 + 3);
    expect(all[0]!.prevHash).toBe(GENESIS);
    for (let i = 1; i < all.length; i++) expect(all[i]!.prevHash).toBe(all[i - 1]!.hash);
    expect(all.slice(5).map((a) => [a.deviceId, a.from, a.to])).toEqual([
      ["a", "active", "active"],
      ["b", "pending", "pending"],
      ["c", "quarantined", "quarantined"],
    ]);
    expect(fields((await r.verify()).findings)).toEqual([]);
    // the facts come from the baseline: a device and a certificate changed after it are found
    await r.apply([{ deviceId: "b", batch: "lot-1", from: "pending", to: "attested", publicKey: pk("b") }]);
    await backend.raw(
      loc,
      "UPDATE certificates SET status = 'live', revoked_at = NULL, revocation_reason = NULL WHERE serial = 'a1';\nUPDATE devices SET state = 'active' WHERE device_id = 'c'",
    );
    const rep = await r.verify();
    expect(fields(rep.findings).sort()).toEqual(
      [
        "certificate a a1 revocationReason",
        "certificate a a1 revokedAt",
        "certificate a a1 status",
        "device c state",
      ].sort(),
    );
    // and a row written before the migration is covered by the chain
    await backend.raw(
      loc,
      `${backend.triggersOff};\nUPDATE audit SET reason = 'rewritten' WHERE seq = ${all[4]!.seq}`,
    );
    expect((await r.verify()).findings[0]).toMatchObject({ kind: "chain", seq: all[4]!.seq, field: "hash" });
    await r.close();
  });

  it("verify refuses bad options, naming the field", async () => {
    const { r } = await seeded();
    await expectInvalid(
      r.verify({ anchor: { seq: 3, hash: "xyz" } }),
      /^opts\.anchor\.hash: got "xyz", want a SHA-256/,
    );
    await expectInvalid(r.verify({ anchor: { seq: -1, hash: GENESIS } }), /^opts\.anchor\.seq: got -1/);
    await expectInvalid(r.verify({ batch: "" }), /^opts\.batch: got ""/);
    await expectInvalid(r.verify({ maxFindings: 1.5 }), /^opts\.maxFindings: got 1\.5/);
    await r.close();
  });

  it("findings beyond maxFindings are counted, not kept", async () => {
    const { r, loc } = await seeded();
    await backend.raw(loc, "UPDATE devices SET epoch = 99 WHERE batch = 'lot-1'");
    const rep = await r.verify({ maxFindings: 3 });
    expect(rep.findings.length).toBe(3);
    expect(rep).toMatchObject({ ok: false, truncated: true });
    expect(rep.count).toBe((await r.listDevices("lot-1")).length);
    await r.close();
  });
});

/**
 * The verified checkpoint (issue 13): an anchor with `tables` lets verify skip the replay while the
 * log ends at the anchor's row and the tables are unchanged; every attack above must still be
 * found, with the same findings as without it, and nothing stored in the database is trusted.
 */
describe.each(backends)("verified checkpoint on $name", (backend) => {
  /** the seeded registry with a hub record, and the checkpoint of a clean verify of lot-1 */
  async function checkpointed(): Promise<{ r: Registry; loc: string; anchor: Required<Anchor> }> {
    const loc = await backend.fresh();
    const r = await openRegistry(loc);
    await seed(r);
    const [c] = await r.certificates({ deviceId: "d-05", status: ["live"] });
    await r.applyHub([
      { hub: "local", deviceId: "d-05", batch: "lot-1", serial: c!.serial, from: null, to: "registering" },
    ]);
    await r.applyHub([
      {
        hub: "local",
        deviceId: "d-05",
        batch: "lot-1",
        serial: c!.serial,
        from: "registering",
        to: "active",
        remoteId: "r-05",
      },
    ]);
    const rep = await r.verify({ batch: "lot-1" });
    expect(rep).toMatchObject({ ok: true, mode: "replayed" });
    expect(rep.checkpoint).toMatch(/^[0-9a-f]{64}$/);
    return { r, loc, anchor: { ...rep.head, tables: rep.checkpoint! } };
  }

  /** the report without the checkpoint and with it: the same findings, the second replayed too */
  async function both(r: Registry, anchor: Anchor) {
    const plain = await r.verify({ batch: "lot-1", anchor: { seq: anchor.seq, hash: anchor.hash } });
    const fast = await r.verify({ batch: "lot-1", anchor });
    expect(fields(fast.findings)).toEqual(fields(plain.findings));
    expect(fast.mode).toBe("replayed");
    expect(fast.ok).toBe(false);
    expect(fast.checkpoint).toBeUndefined();
    return fields(fast.findings);
  }

  it("an unchanged registry verifies from its checkpoint: the same report, no replay", async () => {
    const { r, anchor } = await checkpointed();
    const full = await r.verify({ batch: "lot-1", anchor: { seq: anchor.seq, hash: anchor.hash } });
    const progress: Array<[number, number]> = [];
    const fast = await r.verify({ batch: "lot-1", anchor, onProgress: (d, t) => progress.push([d, t]) });
    expect(fast).toMatchObject({ ok: true, mode: "checkpoint", checkpoint: anchor.tables });
    expect({ ...fast, mode: "replayed" }).toEqual(full);
    expect(progress.at(-1)).toEqual([2 * full.rows, 2 * full.rows]);
    // the checkpoint is of one batch and one head: another batch's verify or the whole registry's replays
    expect((await r.verify({ anchor })).mode).toBe("replayed");
    expect((await r.verify({ batch: "lot-2", anchor })).mode).toBe("replayed");
    // the text form in a batch's outputs carries it; the two-part form still parses
    expect(parseAnchor(formatAnchor(anchor))).toEqual(anchor);
    expect(parseAnchor(`${anchor.seq}:${anchor.hash}`)).toEqual({ seq: anchor.seq, hash: anchor.hash });
    expect(() => parseAnchor(`${anchor.seq}:${anchor.hash}:xyz`, "auditHead")).toThrow(
      /^auditHead: got .*, want SEQ:HASH/,
    );
    await r.close();
  });

  it("a row written by fleetguard after the checkpoint makes verify replay, and gives the next checkpoint", async () => {
    const { r, anchor } = await checkpointed();
    await r.apply([{ deviceId: "d-06", batch: "lot-1", from: "active", to: "active", reason: "seen" }]);
    const rep = await r.verify({ batch: "lot-1", anchor });
    expect(rep).toMatchObject({ ok: true, mode: "replayed" });
    expect(rep.checkpoint).not.toBe(anchor.tables);
    const next = { ...rep.head, tables: rep.checkpoint! };
    expect(await r.verify({ batch: "lot-1", anchor: next })).toMatchObject({ ok: true, mode: "checkpoint" });
    await r.close();
  });

  it("a device, certificate or hub row changed, added or removed after the checkpoint is found", async () => {
    // each attack on a registry of its own, seeded and checkpointed the same way (d-07's live certificate is the second one issued)
    const serial = (c: Registry) =>
      c.certificates({ deviceId: "d-07", status: ["live"] }).then((x) => x[0]!.serial);
    const attacks: Array<[(s: string) => string, (s: string) => string[]]> = [
      [
        () =>
          "UPDATE devices SET public_key = (SELECT public_key FROM devices WHERE device_id = 'd-05') WHERE device_id = 'd-06'",
        () => ["device d-06 publicKey.sha256"],
      ],
      [
        (s) =>
          `UPDATE certificates SET status = 'revoked', revocation_reason = 'keyCompromise', revoked_at = ${backend.name === "sqlite" ? "0" : "now()"} WHERE serial = '${s}'`,
        (s) => [
          `certificate d-07 ${s} status`,
          `certificate d-07 ${s} revokedAt`,
          `certificate d-07 ${s} revocationReason`,
        ],
      ],
      [
        (s) =>
          `UPDATE certificates SET der = ${backend.name === "sqlite" ? "X'00'" : "'\\x00'::bytea"} WHERE serial = '${s}'`,
        (s) => [`certificate d-07 ${s} sha256`],
      ],
      [() => "UPDATE hub_registrations SET status = 'disabled'", () => ["hub d-05 status"]],
      [() => "DELETE FROM hub_registrations", () => ["hub d-05 registration"]],
      [
        () =>
          backend.name === "sqlite"
            ? "INSERT INTO devices (device_id, batch, state, updated_at) VALUES ('x-1', 'lot-1', 'active', 0)"
            : "INSERT INTO devices (device_id, batch, state, updated_at) VALUES ('x-1', 'lot-1', 'active', now())",
        () => ["device x-1 device"],
      ],
      [() => "DELETE FROM devices WHERE device_id = 'e-1'", () => []],
    ];
    for (const [sql, want] of attacks) {
      const { r, loc, anchor } = await checkpointed();
      const s = await serial(r);
      expect(await r.verify({ batch: "lot-1", anchor })).toMatchObject({ ok: true, mode: "checkpoint" });
      await backend.raw(loc, sql(s));
      if (want(s).length) expect((await both(r, anchor)).sort(), sql(s)).toEqual(want(s).sort());
      else {
        // e-1 is lot-2's: a lot-1 verify does not report it, but it no longer verifies from the checkpoint
        const rep = await r.verify({ batch: "lot-1", anchor });
        expect(rep).toMatchObject({ ok: true, mode: "replayed" });
        expect(fields((await r.verify({ anchor: { seq: anchor.seq, hash: anchor.hash } })).findings)).toEqual(
          ["device e-1 device"],
        );
      }
      await r.close();
    }
  });

  it("an old log row edited, removed or swapped after the checkpoint is found by the chain", async () => {
    const edits = (all: Array<{ seq: number }>) => [
      `UPDATE audit SET reason = 'nothing to see' WHERE seq = ${all[3]!.seq}`,
      `DELETE FROM audit WHERE seq = ${all[3]!.seq}`,
      // two rows' contents exchanged, hashes and all: each link then points at the wrong row
      `UPDATE audit SET seq = -1 WHERE seq = ${all[3]!.seq};
UPDATE audit SET seq = ${all[3]!.seq} WHERE seq = ${all[4]!.seq};
UPDATE audit SET seq = ${all[4]!.seq} WHERE seq = -1`,
    ];
    for (let i = 0; i < 3; i++) {
      const { r, loc, anchor } = await checkpointed();
      const sql = edits(await r.audit({}))[i]!;
      await backend.raw(loc, `${backend.triggersOff};\n${sql};\n${backend.triggersOn}`);
      const f = await both(r, anchor);
      expect(f[0], sql).toMatch(/^chain /);
      await r.close();
    }
  });

  it("a detail stored in another spelling of the same JSON is not a finding (the chain hashes its canonical form)", async () => {
    const { r, loc, anchor } = await checkpointed();
    const row = (await r.audit({ deviceId: "d-04" })).find((a) => a.detail !== null)!;
    // SQLite's own rendering of this row (its chainText shortcut) no longer hashes to the row's hash
    await backend.raw(
      loc,
      `${backend.triggersOff};\nUPDATE audit SET detail = '{ "zeta": 1, "alpha": {"y": [1, "é"], "b": null} }' WHERE seq = ${row.seq};\n${backend.triggersOn}`,
    );
    expect(await r.verify({ batch: "lot-1", anchor })).toMatchObject({ ok: true, mode: "checkpoint" });
    expect((await r.verify()).ok).toBe(true);
    await r.close();
  });

  it("a checkpoint the attacker makes for their own tables is not the anchor's: it cannot be forged in the database", async () => {
    const { r, loc, anchor } = await checkpointed();
    // the attacker edits a device and computes the digest a clean verify of the edited tables gives
    await backend.raw(loc, "UPDATE devices SET epoch = 7 WHERE device_id = 'd-06'");
    const theirs = (await r.verify({ batch: "lot-1" })).checkpoint;
    expect(theirs).toBeUndefined(); // the verify that would give it finds the edit
    // a digest of their choosing in the anchor: the verify replays and finds the edit
    const forged = { ...anchor, tables: sha256Hex("forged") };
    expect(fields((await r.verify({ batch: "lot-1", anchor: forged })).findings)).toEqual([
      "device d-06 epoch",
    ]);
    expect(await both(r, anchor)).toEqual(["device d-06 epoch"]);
    // a checkpoint that is not a digest is refused, naming the field
    await expectInvalid(
      r.verify({ anchor: { ...anchor, tables: "xyz" } }),
      /^opts\.anchor\.tables: got "xyz", want a SHA-256/,
    );
    await r.close();
  });
});
