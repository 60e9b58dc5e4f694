/**
 * Hub registration records (issue 11): applyHub's compare-and-set, all-or-none calls, listing,
 * counts, the audit rows it appends and verify re-deriving every record from them, on both
 * backends. Tampering is done by SQL, behind fleetguard's back, as an attacker with the database.
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
import { LATEST_VERSION } from "../../../core/registry/schema";
import {
  HUB_TRANSITIONS,
  type HubChange,
  type HubStatus,
  type Registry,
  type Transition,
  type VerifyFinding,
} from "../../../core/registry/types";
import { type PostgresServer, startPostgres } from "../../helpers/postgres";

const ISSUER = "a1".repeat(32);
let pg: PostgresServer | undefined;
let dbn = 0;
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-hub-"));

beforeAll(async () => {
  pg = await startPostgres();
}, 180_000);
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
}

const backends: Backend[] = [
  {
    name: "sqlite",
    fresh: async () => path.join(tmpRoot, `h${++dbn}`, "registry.db"),
    raw: async (location, sql) => {
      const db = new Database(location);
      try {
        let out: Rows = [];
        for (const part of sql.split(/;\s*\n/).filter((x) => x.trim())) {
          const s = db.prepare(part);
          if (s.reader) out = s.all() as Rows;
          else s.run();
        }
        return out;
      } finally {
        db.close();
      }
    },
  },
  {
    name: "postgres",
    fresh: async () => {
      if (!pg) throw new Error("the PostgreSQL test server did not start (see beforeAll)");
      return pg.createDatabase(`h${++dbn}`);
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

/** `n` active devices in `batch`, each with one live certificate; returns id -> serial. */
async function enroll(r: Registry, batch: string, ids: string[]): Promise<Map<string, string>> {
  await r.putBatch({ name: batch, model: "fg100", source: "puf", spec: "{}" });
  await r.addDevices(batch, ids);
  const serials = new Map<string, string>();
  const step = (from: Transition["from"], to: Transition["to"], extra: (id: string) => Partial<Transition>) =>
    ids.map((deviceId) => ({ deviceId, batch, from, to, ...extra(deviceId) }));
  await r.apply(step("pending", "attested", (id) => ({ publicKey: pk(id), epoch: 1 })));
  await r.apply(
    step("attested", "issued", (id) => {
      const c = cert(id, batch);
      serials.set(id, c.serial);
      return { certificate: c };
    }),
  );
  await r.apply(step("issued", "installed", () => ({})));
  await r.apply(step("installed", "active", () => ({})));
  return serials;
}

async function expectFleetError(p: Promise<unknown>, code: string, ...parts: Array<string | RegExp>) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected a FleetError").toBeInstanceOf(FleetError);
  expect((err as FleetError).code).toBe(code);
  for (const part of parts) expect((err as FleetError).message).toMatch(part);
  return err as FleetError;
}

const hubFields = (fs_: VerifyFinding[]) =>
  fs_.map((f) =>
    f.kind === "hub" ? `hub ${f.hub} ${f.deviceId} ${f.serial} ${f.field}` : `${f.kind} ${f.message}`,
  );

describe.each(backends)("hub registrations on $name", (backend) => {
  async function fresh(): Promise<{ r: Registry; loc: string; serials: Map<string, string> }> {
    const loc = await backend.fresh();
    const r = await openRegistry(loc);
    const serials = await enroll(r, "lot-1", ["d-01", "d-02", "d-03", "d-04"]);
    return { r, loc, serials };
  }
  const change = (
    deviceId: string,
    serial: string,
    from: HubStatus | null,
    to: HubStatus,
    extra: Partial<HubChange> = {},
  ): HubChange => ({ hub: "local", deviceId, batch: "lot-1", serial, from, to, ...extra });

  it("a record goes registering -> active -> disabling -> disabled -> removed; each change is an audit row of its device", async () => {
    const { r, serials } = await fresh();
    const s1 = serials.get("d-01")!;
    const before = await r.getDevice("d-01");
    const t0 = new Date("2026-05-01T00:00:00Z");
    await r.applyHub([change("d-01", s1, null, "registering")], t0);
    expect(await r.hubRegistrations("local")).toEqual([
      {
        hub: "local",
        deviceId: "d-01",
        batch: "lot-1",
        serial: s1,
        remoteId: null,
        status: "registering",
        reason: null,
        updatedAt: t0,
      },
    ]);
    await r.applyHub([
      change("d-01", s1, "registering", "active", { remoteId: "cert-abc", detail: { wave: 1 } }),
    ]);
    await r.applyHub([change("d-01", s1, "active", "disabling", { reason: "decommissioned" })]);
    await r.applyHub([change("d-01", s1, "disabling", "disabled")]);
    let [rec] = await r.hubRegistrations("local");
    // remoteId is kept when a change gives none; a change of status without a reason clears it
    expect(rec).toMatchObject({ status: "disabled", remoteId: "cert-abc", reason: null });
    // a no-op (same status) may carry a reason and a remote id; one without keeps them
    await r.applyHub([
      change("d-01", s1, "disabled", "disabled", { reason: "by hand", remoteId: "cert-abd" }),
    ]);
    await r.applyHub([change("d-01", s1, "disabled", "disabled")]);
    [rec] = await r.hubRegistrations("local");
    expect(rec).toMatchObject({ status: "disabled", remoteId: "cert-abd", reason: "by hand" });
    const t1 = new Date("2026-05-02T00:00:00Z");
    await r.applyHub([change("d-01", s1, "disabled", "removed")], t1);
    [rec] = await r.hubRegistrations("local");
    expect(rec).toMatchObject({ status: "removed", updatedAt: t1 });
    // registering again starts over
    await r.applyHub([change("d-01", s1, "removed", "registering")]);

    // the device itself is untouched: state, reason, certificate
    expect(await r.getDevice("d-01")).toMatchObject({
      state: before!.state,
      reason: before!.reason,
      certSerial: before!.certSerial,
    });
    const rows = (await r.audit({ deviceId: "d-01" })).filter((a) => a.detail && "hub" in a.detail);
    expect(rows.map((a) => [a.from, a.to, a.reason, a.detail!.hub])).toEqual([
      [
        "active",
        "active",
        null,
        { name: "local", serial: s1, from: null, to: "registering", remoteId: null },
      ],
      [
        "active",
        "active",
        null,
        { name: "local", serial: s1, from: "registering", to: "active", remoteId: "cert-abc" },
      ],
      [
        "active",
        "active",
        "decommissioned",
        { name: "local", serial: s1, from: "active", to: "disabling", remoteId: "cert-abc" },
      ],
      [
        "active",
        "active",
        null,
        { name: "local", serial: s1, from: "disabling", to: "disabled", remoteId: "cert-abc" },
      ],
      [
        "active",
        "active",
        "by hand",
        { name: "local", serial: s1, from: "disabled", to: "disabled", remoteId: "cert-abd" },
      ],
      [
        "active",
        "active",
        null,
        { name: "local", serial: s1, from: "disabled", to: "disabled", remoteId: "cert-abd" },
      ],
      [
        "active",
        "active",
        null,
        { name: "local", serial: s1, from: "disabled", to: "removed", remoteId: "cert-abd" },
      ],
      [
        "active",
        "active",
        null,
        { name: "local", serial: s1, from: "removed", to: "registering", remoteId: "cert-abd" },
      ],
    ]);
    expect(rows[1]!.detail).toEqual({
      wave: 1,
      hub: { name: "local", serial: s1, from: "registering", to: "active", remoteId: "cert-abc" },
    });
    const all = await r.audit({});
    for (let i = 1; i < all.length; i++) expect(all[i]!.prevHash).toBe(all[i - 1]!.hash);
    const rep = await r.verify();
    expect(hubFields(rep.findings)).toEqual([]);
    expect(rep.ok).toBe(true);
    await r.close();
  });

  it("a call is one transaction: a stale change anywhere in it writes nothing, no audit row", async () => {
    const { r, serials } = await fresh();
    await r.applyHub([change("d-02", serials.get("d-02")!, null, "active", { remoteId: "x2" })]);
    const head = await r.auditHead();
    const err = await expectFleetError(
      r.applyHub([
        change("d-01", serials.get("d-01")!, null, "registering"),
        change("d-03", serials.get("d-03")!, null, "registering"),
        change("d-02", serials.get("d-02")!, "registering", "active"),
      ]),
      "CONFLICT",
      `hub local, device d-02, certificate ${serials.get("d-02")}: status: got active, want registering`,
      /nothing was written/,
    );
    expect(err.field).toBe("from");
    expect(await r.auditHead()).toEqual(head);
    expect((await r.hubRegistrations("local")).map((h) => h.deviceId)).toEqual(["d-02"]);
    // a record that exists is not created again: from null is stale
    await expectFleetError(
      r.applyHub([change("d-02", serials.get("d-02")!, null, "registering")]),
      "CONFLICT",
      /status: got active, want none \(no record\)/,
    );
    // changes of one record follow each other within a call
    await r.applyHub([
      change("d-01", serials.get("d-01")!, null, "registering"),
      change("d-01", serials.get("d-01")!, "registering", "active", { remoteId: "x1" }),
      change("d-01", serials.get("d-01")!, "active", "disabling"),
    ]);
    expect((await r.hubRegistrations("local", { deviceId: "d-01" }))[0]).toMatchObject({
      status: "disabling",
      remoteId: "x1",
    });
    // the same change twice in a call (a no-op) is applied twice: two audit rows
    const noop = change("d-01", serials.get("d-01")!, "disabling", "disabling", { reason: "waiting" });
    const before = (await r.auditHead()).seq;
    await r.applyHub([noop, noop]);
    expect((await r.auditHead()).seq).toBe(before + 2);
    expect((await r.hubRegistrations("local", { deviceId: "d-01" }))[0]).toMatchObject({ reason: "waiting" });
    expect((await r.verify()).ok).toBe(true);
    await r.close();
  });

  it("unknown devices and certificates, the wrong batch, illegal changes and a detail.hub are refused, naming them", async () => {
    const { r, serials } = await fresh();
    await enroll(r, "lot-2", ["e-01"]);
    const head = await r.auditHead();
    const s1 = serials.get("d-01")!;
    await expectFleetError(
      r.applyHub([change("d-01", s1, null, "registering"), change("nope", s1, null, "registering")]),
      "NOT_FOUND",
      `hub local, device nope, certificate ${s1}: device: got no such device, want a device of batch "lot-1"`,
    );
    await expectFleetError(
      r.applyHub([change("d-01", "abcdef", null, "registering")]),
      "NOT_FOUND",
      /certificate abcdef: serial: got no such certificate, want a certificate of device d-01/,
    );
    await expectFleetError(
      r.applyHub([change("d-01", serials.get("d-02")!, null, "registering")]),
      "NOT_FOUND",
      /serial: got a certificate of device d-02, want a certificate of device d-01/,
    );
    await expectFleetError(
      r.applyHub([{ ...change("e-01", s1, null, "registering") }]),
      "CONFLICT",
      /device e-01, .*batch: got "lot-2", want "lot-1"/,
    );
    await expectFleetError(
      r.applyHub([change("d-01", s1, null, "disabled")]),
      "INVALID_INPUT",
      /^changes\[0\] \(hub local, device d-01\): got none -> disabled, want none -> one of registering, active, failed$/,
    );
    await expectFleetError(
      r.applyHub([change("d-01", s1, "active", "registering")]),
      "INVALID_INPUT",
      `got active -> registering, want active -> one of ${HUB_TRANSITIONS.active.join(", ")} (or active, a no-op)`,
    );
    await expectFleetError(
      r.applyHub([change("d-01", s1, null, "active", { detail: { hub: "mine" } })]),
      "INVALID_INPUT",
      /^changes\[0\] \(hub local, device d-01\)\.detail\.hub: got "mine", want no such key/,
    );
    await expectFleetError(
      r.applyHub([change("d-01", "XYZ", null, "active")]),
      "INVALID_INPUT",
      /\.serial: got "XYZ", want lowercase hex/,
    );
    await expectFleetError(
      r.applyHub([change("d-01", s1, null, "bogus" as HubStatus)]),
      "INVALID_INPUT",
      /\.to: got "bogus", want one of registering, active/,
    );
    await expectFleetError(
      r.apply([{ deviceId: "d-01", batch: "lot-1", from: "active", to: "active", detail: { hub: {} } }]),
      "INVALID_INPUT",
      /detail\.hub: got object, want no such key/,
    );
    await expectFleetError(
      r.hubRegistrations("local", { statuses: ["nope" as HubStatus] }),
      "INVALID_INPUT",
      /q\.statuses/,
    );
    expect(await r.auditHead()).toEqual(head);
    expect(await r.hubs()).toEqual([]);
    await r.close();
  });

  it("lists in (deviceId, serial) order with keyset pages and filters; counts have every status; hubs() is sorted", async () => {
    const { r, serials } = await fresh();
    await enroll(r, "lot-2", ["a-01", "z-01"]);
    // d-02 rotates: two certificates registered at once
    const c2 = cert("d-02", "lot-1");
    await r.apply([
      { deviceId: "d-02", batch: "lot-1", from: "active", to: "issued", certificate: c2 },
      { deviceId: "d-02", batch: "lot-1", from: "issued", to: "installed" },
    ]);
    const all = [
      ["d-01", serials.get("d-01")!],
      ["d-02", serials.get("d-02")!],
      ["d-02", c2.serial],
      ["d-03", serials.get("d-03")!],
      ["d-04", serials.get("d-04")!],
    ] as const;
    await r.applyHub(all.map(([d, s], i) => change(d, s, null, i % 2 ? "active" : "registering")));
    const [a1] = await r.certificates({ deviceId: "a-01" });
    await r.applyHub([
      {
        hub: "aws-prod",
        deviceId: "a-01",
        batch: "lot-2",
        serial: a1!.serial,
        from: null,
        to: "failed",
        reason: "refused",
      },
    ]);
    await r.applyHub(
      [change("d-04", serials.get("d-04")!, null, "active")].map((c) => ({ ...c, hub: "aws-prod" })),
    );

    const pages: string[][] = [];
    let after: { deviceId: string; serial: string } | undefined;
    for (;;) {
      const page = await r.hubRegistrations("local", { limit: 2, ...(after ? { after } : {}) });
      if (page.length === 0) break;
      pages.push(page.map((h) => `${h.deviceId}/${h.serial}`));
      after = { deviceId: page.at(-1)!.deviceId, serial: page.at(-1)!.serial };
    }
    const sorted = [...all].sort((x, y) => (x[0] === y[0] ? (x[1] < y[1] ? -1 : 1) : x[0] < y[0] ? -1 : 1));
    expect(pages.flat()).toEqual(sorted.map(([d, s]) => `${d}/${s}`));
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect((await r.hubRegistrations("local", { deviceId: "d-02" })).map((h) => h.serial)).toEqual(
      [serials.get("d-02")!, c2.serial].sort(),
    );
    expect((await r.hubRegistrations("local", { statuses: ["active"] })).map((h) => h.status)).toEqual([
      "active",
      "active",
    ]);
    expect(await r.hubRegistrations("local", { batch: "lot-2" })).toEqual([]);
    expect(
      (await r.hubRegistrations("aws-prod", { batch: "lot-2" })).map((h) => [h.deviceId, h.status, h.reason]),
    ).toEqual([["a-01", "failed", "refused"]]);

    expect(await r.hubCounts("local")).toEqual({
      registering: 3,
      active: 2,
      disabling: 0,
      disabled: 0,
      failed: 0,
      removed: 0,
    });
    expect(await r.hubCounts("aws-prod", "lot-1")).toEqual({
      registering: 0,
      active: 1,
      disabling: 0,
      disabled: 0,
      failed: 0,
      removed: 0,
    });
    expect(Object.values(await r.hubCounts("nowhere")).every((n) => n === 0)).toBe(true);
    expect(await r.hubs()).toEqual(["aws-prod", "local"]);
    const rep = await r.verify();
    expect(hubFields(rep.findings)).toEqual([]);
    await r.close();
  });

  it("verify reports a hub record changed, deleted or forged behind fleetguard's back", async () => {
    const { r, loc, serials } = await fresh();
    await r.applyHub(
      ["d-01", "d-02", "d-03"].map((d) =>
        change(d, serials.get(d)!, null, "active", { remoteId: `rid-${d}` }),
      ),
    );
    await r.applyHub([change("d-03", serials.get("d-03")!, "active", "disabled", { reason: "revoked" })]);
    expect((await r.verify()).ok).toBe(true);
    const [s1, s2, s3, s4] = ["d-01", "d-02", "d-03", "d-04"].map((d) => serials.get(d)!);
    const now = backend.name === "sqlite" ? String(Date.now()) : "now()";
    await backend.raw(
      loc,
      [
        `UPDATE hub_registrations SET status = 'active' WHERE serial = '${s3}'`,
        `UPDATE hub_registrations SET remote_id = 'forged' WHERE serial = '${s1}'`,
        `DELETE FROM hub_registrations WHERE serial = '${s2}'`,
        `INSERT INTO hub_registrations (hub, device_id, batch, serial, remote_id, status, reason, updated_at)
         VALUES ('local', 'd-04', 'lot-1', '${s4}', 'rogue', 'active', NULL, ${now})`,
      ].join(";\n"),
    );
    const rep = await r.verify();
    expect(rep.ok).toBe(false);
    expect(hubFields(rep.findings).sort()).toEqual(
      [
        `hub local d-01 ${s1} remoteId`,
        `hub local d-02 ${s2} registration`,
        `hub local d-03 ${s3} status`,
        `hub local d-04 ${s4} registration`,
      ].sort(),
    );
    const byField = (d: string, f: string) =>
      rep.findings.find((x) => x.kind === "hub" && x.deviceId === d && x.field === f);
    expect(byField("d-03", "status")).toMatchObject({ table: "active", audit: "disabled" });
    expect(byField("d-02", "registration")).toMatchObject({ table: null, audit: "active" });
    expect(byField("d-04", "registration")).toMatchObject({ table: "active", audit: null });
    expect(byField("d-04", "registration")!.message).toBe(
      `hub local, certificate ${s4} of device d-04: registration: table active, audit none (a hub registration the audit log never recorded for this device)`,
    );
    // the chain itself is intact: only the table was changed
    expect(rep.findings.some((f) => f.kind === "chain")).toBe(false);
    // a verify of one batch sees them too, another batch's does not
    expect((await r.verify({ batch: "lot-1" })).count).toBe(4);
    expect((await r.verify({ batch: "other" })).count).toBe(0);
    await r.close();
  });

  it("two writers racing on one record: one wins, the other is CONFLICT and writes nothing", async () => {
    const { r, loc, serials } = await fresh();
    const other = await openRegistry(loc);
    const s1 = serials.get("d-01")!;
    const many = (reg: Registry, rid: string) =>
      reg.applyHub([
        ...["d-02", "d-03", "d-04"].map((d) =>
          change(d, serials.get(d)!, null, "registering", { hub: `h-${rid}` }),
        ),
        change("d-01", s1, null, "active", { remoteId: rid }),
      ]);
    const out = await Promise.allSettled([many(r, "a"), many(other, "b")]);
    expect(out.map((o) => o.status).sort()).toEqual(["fulfilled", "rejected"]);
    const lost = out.find((o) => o.status === "rejected") as PromiseRejectedResult;
    expect(lost.reason).toBeInstanceOf(FleetError);
    expect((lost.reason as FleetError).code).toBe("CONFLICT");
    expect((lost.reason as FleetError).message).toMatch(`certificate ${s1}: status: got active, want none`);
    const won = out[0]!.status === "fulfilled" ? "a" : "b";
    expect(await r.hubs()).toEqual([`h-${won}`, "local"]);
    expect((await r.hubRegistrations("local")).map((h) => h.remoteId)).toEqual([won]);
    expect((await r.verify()).ok).toBe(true);
    await other.close();
    await r.close();
  });

  it("a registry of schema 2 migrates to 3 with its chain intact and takes hub records", async () => {
    const { r, loc, serials } = await fresh();
    await r.close();
    // back to what migrations 1-2 alone create: migration 3 only adds the table and its indexes
    await backend.raw(loc, "DROP TABLE hub_registrations;\nDELETE FROM schema_migrations WHERE version = 3");
    const tables =
      backend.name === "sqlite"
        ? "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'hub_registrations'"
        : "SELECT tablename AS name FROM pg_tables WHERE tablename = 'hub_registrations'";
    expect(await backend.raw(loc, tables)).toEqual([]);
    const r2 = await openRegistry(loc);
    expect(await r2.schemaVersion()).toBe(LATEST_VERSION);
    expect(LATEST_VERSION).toBe(3);
    expect((await r2.verify()).ok).toBe(true);
    await r2.applyHub([change("d-01", serials.get("d-01")!, null, "active", { remoteId: "r1" })]);
    const rep = await r2.verify();
    expect(hubFields(rep.findings)).toEqual([]);
    expect(rep.ok).toBe(true);
    await r2.close();
  });

  it("10,000 changes in one call are written, listed, counted and verified", async () => {
    const loc = await backend.fresh();
    const r = await openRegistry(loc);
    const ids = Array.from({ length: 5000 }, (_, i) => `m-${String(i).padStart(5, "0")}`);
    const serials = await enroll(r, "lot-1", ids);
    const cs: HubChange[] = [];
    for (const d of ids) cs.push(change(d, serials.get(d)!, null, "registering"));
    for (const d of ids) cs.push(change(d, serials.get(d)!, "registering", "active", { remoteId: `r-${d}` }));
    await r.applyHub(cs);
    expect(await r.hubCounts("local", "lot-1")).toMatchObject({ registering: 0, active: 5000 });
    const page = await r.hubRegistrations("local", { after: { deviceId: "m-04998", serial: "" }, limit: 5 });
    expect(page.map((h) => [h.deviceId, h.remoteId])).toEqual([
      ["m-04998", "r-m-04998"],
      ["m-04999", "r-m-04999"],
    ]);
    const rep = await r.verify();
    expect(hubFields(rep.findings)).toEqual([]);
    expect(rep.devices).toBe(5000);
    await r.close();
  }, 120_000);
});
