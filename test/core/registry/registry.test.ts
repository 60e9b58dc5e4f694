import { type ChildProcess, spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import Database from "better-sqlite3";
import { Client } from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { openRegistry, parseLocation } from "../../../core/registry";
import { APPLY_SESSION_SQL, CAS_SQL } from "../../../core/registry/postgres";
import { LATEST_VERSION, MIGRATIONS } from "../../../core/registry/schema";
import {
  DEVICE_STATES,
  type DeviceState,
  type Registry,
  TRANSITIONS,
  type Transition,
} from "../../../core/registry/types";
import { type PostgresServer, startPostgres } from "../../helpers/postgres";
import { churnStep } from "./child";

const ROOT = path.join(__dirname, "..", "..", "..");
const CHILD = path.join(__dirname, "child.ts");
const ISSUER = "a1".repeat(32);
const OTHER_ISSUER = "b2".repeat(32);

let pg: PostgresServer | undefined;
let dbn = 0;
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-reg-"));

beforeAll(async () => {
  pg = await startPostgres();
}, 180_000);
// stopping the server under load (a shared 2-core machine) can take longer than the 10 s default
afterAll(async () => {
  await pg?.stop();
  fs.rmSync(tmpRoot, { recursive: true, force: true });
}, 60_000);

interface Backend {
  name: string;
  /** a location for a new, empty registry */
  fresh(): Promise<string>;
  /** run SQL on the database directly, behind the registry's back */
  raw(location: string, sql: string): Promise<Array<Record<string, unknown>>>;
}

const backends: Backend[] = [
  {
    name: "sqlite",
    fresh: async () => path.join(tmpRoot, `r${++dbn}`, "sub", "registry.db"),
    raw: async (location, sql) => {
      const db = new Database(location);
      try {
        const s = db.prepare(sql);
        if (s.reader) return s.all() as Array<Record<string, unknown>>;
        s.run();
        return [];
      } finally {
        db.close();
      }
    },
  },
  {
    name: "postgres",
    fresh: async () => {
      if (!pg) throw new Error("the PostgreSQL test server did not start (see beforeAll)");
      return pg.createDatabase(`reg${++dbn}`);
    },
    raw: async (location, sql) => {
      const c = new Client({ connectionString: location });
      await c.connect();
      try {
        return (await c.query(sql)).rows;
      } finally {
        await c.end();
      }
    },
  },
];

function cert(deviceId: string, batch: string, serial: string, issuer = ISSUER, size = 600) {
  const now = new Date("2026-01-01T00:00:00Z");
  return {
    serial,
    deviceId,
    batch,
    issuer,
    der: crypto.randomBytes(size),
    notBefore: now,
    notAfter: new Date("2027-01-01T00:00:00Z"),
    issuedAt: now,
  };
}

/** shortest path of legal transitions from pending to each state */
function pathsFromPending(): Record<DeviceState, DeviceState[]> {
  const paths = { pending: ["pending"] } as unknown as Record<DeviceState, DeviceState[]>;
  const queue: DeviceState[] = ["pending"];
  while (queue.length) {
    const s = queue.shift()!;
    for (const n of TRANSITIONS[s])
      if (!paths[n]) {
        paths[n] = [...paths[s], n];
        queue.push(n);
      }
  }
  return paths;
}

/** the transitions walking a device along a path, with what each step needs */
function walk(deviceId: string, batch: string, states: DeviceState[], tag: string): Transition[] {
  const out: Transition[] = [];
  for (let i = 1; i < states.length; i++) {
    const t: Transition = { deviceId, batch, from: states[i - 1]!, to: states[i]! };
    if (t.to === "attested" || (t.from === "pending" && t.to === "issued"))
      t.publicKey = Buffer.from(`pk-${deviceId}`);
    if (t.from === "issued" && t.to === "active") t.epoch = 1;
    if (t.to === "issued")
      t.certificate = cert(deviceId, batch, `${tag}${i}`.replace(/[^0-9a-f]/g, "") || "1");
    out.push(t);
  }
  return out;
}

async function snapshot(r: Registry, batch: string) {
  return {
    counts: await r.counts(batch),
    devices: await r.listDevices(batch),
    certificates: await r.certificates({ batch }),
    audit: await r.audit({ batch }),
  };
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

function spawnChild(args: string[], location: string): ChildProcess {
  return spawn("npx", ["--no-install", "tsx", CHILD, ...args], {
    cwd: ROOT,
    env: { ...process.env, REGISTRY_LOCATION: location },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true, // its own process group: kill -9 reaches npx, tsx and node at once
  });
}

function exitOf(
  child: ChildProcess,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; err: string }> {
  let err = "";
  child.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
  });
  return new Promise((resolve) => child.on("close", (code, signal) => resolve({ code, signal, err })));
}

describe("registry locations", () => {
  it("parses file paths, sqlite: and postgres URLs; bad ones name the field registry", () => {
    expect(parseLocation("x/reg.db")).toEqual({ kind: "sqlite", file: path.resolve("x/reg.db") });
    expect(parseLocation("sqlite:/tmp/a.db")).toEqual({ kind: "sqlite", file: "/tmp/a.db" });
    expect(parseLocation("postgresql://u:p@h:5/db").kind).toBe("postgres");
    for (const bad of [
      "",
      "mysql://u:secret@h/db",
      "postgres://u:secret@/db",
      "postgres://u:secret@h",
      "sqlite:",
    ]) {
      let err: unknown;
      try {
        parseLocation(bad);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FleetError);
      expect((err as FleetError).code).toBe("INVALID_INPUT");
      expect((err as FleetError).message).toMatch(/^registry: got .*, want /);
      expect((err as FleetError).message).not.toContain("secret");
    }
  });

  it("an unreachable PostgreSQL is UNAVAILABLE and the error has no password", async () => {
    const err = await expectFleetError(
      openRegistry("postgres://fleet:hunter2secret@127.0.0.1:1/nodb", { connectTimeoutMs: 2000 }),
      "UNAVAILABLE",
      /^registry: got postgres:\/\/fleet:\*\*\*@127\.0\.0\.1:1\/nodb/,
    );
    expect(err.message).not.toContain("hunter2secret");
  });
});

describe.each(backends)("registry on $name", (backend) => {
  async function fresh(): Promise<{ r: Registry; loc: string }> {
    const loc = await backend.fresh();
    const r = await openRegistry(loc);
    await r.putBatch({ name: "lot-1", model: "fg100", source: "puf", spec: '{"n":1}' });
    return { r, loc };
  }

  it("applies migrations once: every version, idempotent on reopen, safe for concurrent openers", async () => {
    const loc = await backend.fresh();
    // three processes race to create the schema on a new database
    const children = [0, 1, 2].map(() => spawnChild(["open"], loc));
    const results = await Promise.all(children.map(exitOf));
    for (const res of results) expect(res, res.err).toMatchObject({ code: 0 });
    const r = await openRegistry(loc);
    expect(r.kind).toBe(backend.name);
    expect(await r.schemaVersion()).toBe(LATEST_VERSION);
    await r.close();
    const r2 = await openRegistry(loc);
    expect(await r2.schemaVersion()).toBe(LATEST_VERSION);
    await r2.close();
    const rows = await backend.raw(loc, "SELECT version, name FROM schema_migrations");
    expect(rows.map((x) => Number(x.version)).sort()).toEqual(MIGRATIONS.map((m) => m.version));
  }, 60_000);

  it("never shows a password in its location", async () => {
    const { r, loc } = await fresh();
    if (backend.name === "postgres") {
      const password = new URL(loc).password;
      expect(password.length).toBeGreaterThan(8);
      expect(r.location).not.toContain(password);
      expect(r.location).toContain("***");
    } else {
      expect(r.location).toBe(path.resolve(loc));
      expect(fs.existsSync(path.dirname(loc))).toBe(true);
    }
    await r.close();
    await expectFleetError(r.counts("lot-1"), "UNAVAILABLE", /closed registry/);
  });

  it("batches: upsert keeps createdAt, delete keeps the first time, list is ordered", async () => {
    const { r } = await fresh();
    const t0 = new Date("2026-02-01T00:00:00Z");
    const t1 = new Date("2026-02-02T00:00:00Z");
    await r.putBatch({ name: "lot-0", model: "m", source: "injected", spec: "{}" }, t0);
    await r.putBatch({ name: "lot-0", model: "m2", source: "injected", spec: '{"v":2}' }, t1);
    const b = (await r.getBatch("lot-0"))!;
    expect(b).toMatchObject({ model: "m2", spec: '{"v":2}', createdAt: t0, updatedAt: t1, deletedAt: null });
    await r.markBatchDeleted("lot-0", t1);
    await r.markBatchDeleted("lot-0", new Date("2026-03-01T00:00:00Z"));
    expect((await r.getBatch("lot-0"))!.deletedAt).toEqual(t1);
    expect((await r.listBatches()).map((x) => x.name)).toEqual(["lot-0", "lot-1"]);
    expect(await r.getBatch("nope")).toBeUndefined();
    await expectFleetError(r.markBatchDeleted("nope"), "NOT_FOUND", /batch: got "nope"/);
    await expectFleetError(
      r.putBatch({ name: "x", model: "m", source: "otp" as "puf", spec: "{}" }),
      "INVALID_INPUT",
      /batch.source: got "otp", want/,
    );
    await r.close();
  });

  it("addDevices is idempotent and refuses a device of another live batch", async () => {
    const { r } = await fresh();
    expect(await r.addDevices("lot-1", ["d-01", "d-02", "d-03", "d-02"])).toBe(3);
    expect(await r.addDevices("lot-1", ["d-01", "d-02", "d-03", "d-04"])).toBe(1);
    expect((await r.counts("lot-1")).pending).toBe(4);
    const audit = await r.audit({ batch: "lot-1" });
    expect(audit.map((a) => [a.deviceId, a.from, a.to])).toEqual([
      ["d-01", null, "pending"],
      ["d-02", null, "pending"],
      ["d-03", null, "pending"],
      ["d-04", null, "pending"],
    ]);
    await r.putBatch({ name: "lot-2", model: "fg100", source: "puf", spec: "{}" });
    await expectFleetError(r.addDevices("lot-2", ["e-01", "d-03"]), "CONFLICT", /device d-03/, /"lot-1"/);
    // nothing of the refused call was written
    expect(await r.getDevice("e-01")).toBeUndefined();
    expect((await r.getDevice("d-03"))!.batch).toBe("lot-1");
    await expectFleetError(r.addDevices("nope", ["x"]), "NOT_FOUND", /batch: got "nope"/);
    // once lot-1 is deleted its devices may join another batch, pending again
    await r.apply([
      { deviceId: "d-03", batch: "lot-1", from: "pending", to: "decommissioned", reason: "lot deleted" },
    ]);
    await r.markBatchDeleted("lot-1");
    await expectFleetError(r.addDevices("lot-1", ["z"]), "CONFLICT", /deleted/);
    expect(await r.addDevices("lot-2", ["e-01", "d-03"])).toBe(2);
    expect(await r.getDevice("d-03")).toMatchObject({ batch: "lot-2", state: "pending", reason: null });
    const moved = (await r.audit({ deviceId: "d-03" })).at(-1)!;
    expect(moved).toMatchObject({ from: "decommissioned", to: "pending", detail: { fromBatch: "lot-1" } });
    await expectFleetError(r.addDevices("lot-2", [""]), "INVALID_INPUT", /deviceIds\[0\]: got ""/);
    await r.close();
  });

  it("every legal transition applies (and its no-op), with one audit row each", async () => {
    const { r } = await fresh();
    const paths = pathsFromPending();
    const cases: Array<[DeviceState, DeviceState]> = [];
    for (const from of DEVICE_STATES) for (const to of [...TRANSITIONS[from], from]) cases.push([from, to]);
    expect(cases.length).toBe(36);
    const ids = cases.map((_, i) => `dev-${String(i).padStart(2, "0")}`);
    await r.addDevices("lot-1", ids);
    // walk every device to its `from` and then take the transition, all in one call (several
    // transitions per device in one apply)
    const ts: Transition[] = [];
    cases.forEach(([from, to], i) => {
      const id = ids[i]!;
      ts.push(...walk(id, "lot-1", paths[from], `${(i + 1).toString(16)}0`));
      const t: Transition = { deviceId: id, batch: "lot-1", from, to, reason: `case ${i}` };
      if (to === "issued") t.certificate = cert(id, "lot-1", `${(i + 1).toString(16)}f`);
      // the one-step transitions carry what the skipped state records
      if (from === "pending" && to === "issued") t.publicKey = Buffer.from(`key of ${id}`);
      if (from === "issued" && to === "active") t.epoch = 3;
      ts.push(t);
    });
    await r.apply(ts);
    const counts = await r.counts("lot-1");
    for (const s of DEVICE_STATES) expect(counts[s]).toBe(cases.filter(([, to]) => to === s).length);
    for (const [i, [from, to]] of cases.entries()) {
      const d = (await r.getDevice(ids[i]!))!;
      expect(d.state).toBe(to);
      expect(d.reason).toBe(`case ${i}`);
      const a = await r.audit({ deviceId: ids[i]! });
      expect(a.length).toBe(1 + paths[from].length); // declared + walk + the transition
      expect(a.at(-1)).toMatchObject({ from, to, reason: `case ${i}` });
    }
    expect((await r.audit({ batch: "lot-1" })).length).toBe(ids.length + ts.length);
    await r.close();
  });

  it("illegal transitions are refused before anything is written, naming device, got and want", async () => {
    const { r } = await fresh();
    await r.addDevices("lot-1", ["d-1", "d-2"]);
    const before = await snapshot(r, "lot-1");
    const illegal: Array<[DeviceState, DeviceState, RegExp]> = [
      ["pending", "active", /want pending -> one of attested, issued, quarantined, decommissioned/],
      // the one-step transitions without the facts of the state they skip
      [
        "pending",
        "issued",
        /got pending -> issued without publicKey, want pending -> issued carrying the attested publicKey and the certificate/,
      ],
      ["issued", "active", /got issued -> active without epoch, want issued -> active carrying the epoch/],
      ["attested", "active", /got attested -> active/],
      ["quarantined", "active", /got quarantined -> active/],
      ["revoked", "active", /got revoked -> active/],
      ["decommissioned", "pending", /want nothing: decommissioned is terminal/],
    ];
    for (const [from, to, re] of illegal) {
      await expectFleetError(
        r.apply([
          { deviceId: "d-1", batch: "lot-1", from: "pending", to: "attested" },
          { deviceId: "d-2", batch: "lot-1", from, to },
        ]),
        "INVALID_INPUT",
        /^transitions\[1\] \(device d-2\): got /,
        re,
      );
    }
    // a key without the certificate is no issue either
    await expectFleetError(
      r.apply([
        { deviceId: "d-2", batch: "lot-1", from: "pending", to: "issued", publicKey: Buffer.from("pk-d-2") },
      ]),
      "INVALID_INPUT",
      /^transitions\[0\] \(device d-2\): got pending -> issued without certificate, want /,
    );
    await expectFleetError(
      r.apply([{ deviceId: "d-1", batch: "lot-1", from: "pending", to: "zapped" as DeviceState }]),
      "INVALID_INPUT",
      /device d-1\)\.to: got "zapped"/,
    );
    await expectFleetError(
      r.apply([
        {
          deviceId: "d-1",
          batch: "lot-1",
          from: "pending",
          to: "attested",
          detail: { key: Buffer.from("secret") },
        },
      ]),
      "INVALID_INPUT",
      /detail.key: got binary data/,
    );
    await expectFleetError(
      r.apply([
        {
          deviceId: "d-1",
          batch: "lot-1",
          from: "pending",
          to: "quarantined",
          revoke: { at: new Date(), reason: "oops" },
        },
      ]),
      "INVALID_INPUT",
      /revoke.reason: got "oops", want one of unspecified, keyCompromise/,
    );
    expect(await snapshot(r, "lot-1")).toEqual(before);
    await r.close();
  });

  it("a stale transition (compare-and-set) rolls back the whole apply", async () => {
    const { r } = await fresh();
    const ids = Array.from({ length: 60 }, (_, i) => `d-${String(i).padStart(3, "0")}`);
    await r.addDevices("lot-1", ids);
    await r.apply(
      ids.slice(0, 30).map((id) => ({ deviceId: id, batch: "lot-1", from: "pending", to: "attested" })),
    );
    await r.apply(
      ids.slice(0, 10).map((id, i) => ({
        deviceId: id,
        batch: "lot-1",
        from: "attested",
        to: "issued",
        certificate: cert(id, "lot-1", `a${i}`),
      })),
    );
    const before = await snapshot(r, "lot-1");
    // a big valid prefix (state changes, certificates, revocations, supersedes), then one stale
    const good: Transition[] = [
      ...ids.slice(0, 10).map((id) => ({
        deviceId: id,
        batch: "lot-1",
        from: "issued" as const,
        to: "installed" as const,
      })),
      ...ids
        .slice(0, 5)
        .map((id) => ({ deviceId: id, batch: "lot-1", from: "installed" as const, to: "active" as const })),
      ...ids.slice(5, 10).map((id) => ({
        deviceId: id,
        batch: "lot-1",
        from: "installed" as const,
        to: "revoked" as const,
        revoke: { at: new Date(), reason: "keyCompromise" },
      })),
      ...ids.slice(10, 30).map((id, i) => ({
        deviceId: id,
        batch: "lot-1",
        from: "attested" as const,
        to: "issued" as const,
        certificate: cert(id, "lot-1", `b${i}`),
      })),
      ...ids
        .slice(30)
        .map((id) => ({ deviceId: id, batch: "lot-1", from: "pending" as const, to: "attested" as const })),
    ];
    const stale: Transition = { deviceId: "d-045", batch: "lot-1", from: "pending", to: "attested" };
    const err = await expectFleetError(
      r.apply([...good, stale]),
      "CONFLICT",
      /device d-045: got state attested, want pending/,
    );
    expect(err.field).toBe("from");
    expect(await snapshot(r, "lot-1")).toEqual(before);
    // stale in the middle, and wrong batch, and unknown device, and a serial already used
    await expectFleetError(
      r.apply([
        ...good.slice(0, 3),
        { deviceId: "d-000", batch: "lot-1", from: "attested", to: "issued" },
        ...good.slice(3),
      ]),
      "CONFLICT",
      /device d-000: got state installed, want attested/,
    );
    await expectFleetError(
      r.apply([...good, { deviceId: "d-050", batch: "lot-9", from: "pending", to: "attested" }]),
      "CONFLICT",
      /device d-050: got batch "lot-1", want "lot-9"/,
    );
    await expectFleetError(
      r.apply([...good, { deviceId: "ghost", batch: "lot-1", from: "pending", to: "attested" }]),
      "NOT_FOUND",
      /device ghost: got no such device/,
    );
    await expectFleetError(
      r.apply([
        ...good,
        {
          deviceId: "d-031",
          batch: "lot-1",
          from: "attested",
          to: "issued",
          certificate: cert("d-031", "lot-1", "a3"),
        },
      ]),
      "CONFLICT",
      /certificate.serial: got a3, already recorded/,
    );
    expect(await snapshot(r, "lot-1")).toEqual(before);
    // and the same prefix alone applies
    await r.apply(good);
    const after = await r.counts("lot-1");
    expect(after).toMatchObject({ active: 5, revoked: 5, issued: 20, attested: 30, pending: 0 });
    await r.close();
  });

  it("certificates: issued live, superseded on active, revoke-all, revokedBy per issuer", async () => {
    const { r } = await fresh();
    await r.addDevices("lot-1", ["d-1", "d-2"]);
    const at = (s: string) => new Date(`2026-04-0${s}T00:00:00Z`);
    const pk = Buffer.from("spki-1");
    await r.apply(
      [
        { deviceId: "d-1", batch: "lot-1", from: "pending", to: "attested", publicKey: pk, epoch: 3 },
        {
          deviceId: "d-1",
          batch: "lot-1",
          from: "attested",
          to: "issued",
          certificate: cert("d-1", "lot-1", "01"),
        },
        { deviceId: "d-1", batch: "lot-1", from: "issued", to: "installed" },
        { deviceId: "d-1", batch: "lot-1", from: "installed", to: "active" },
        { deviceId: "d-2", batch: "lot-1", from: "pending", to: "attested", publicKey: pk },
        {
          deviceId: "d-2",
          batch: "lot-1",
          from: "attested",
          to: "issued",
          certificate: cert("d-2", "lot-1", "99", OTHER_ISSUER),
        },
      ],
      at("1"),
    );
    expect(await r.getDevice("d-1")).toMatchObject({
      state: "active",
      certSerial: "01",
      epoch: 3,
      publicKey: pk,
    });
    expect((await r.certificates({ deviceId: "d-1" })).map((c) => [c.serial, c.status])).toEqual([
      ["01", "live"],
    ]);
    // re-issue: both live until the device confirms the new one
    await r.apply(
      [
        {
          deviceId: "d-1",
          batch: "lot-1",
          from: "active",
          to: "issued",
          certificate: cert("d-1", "lot-1", "02"),
        },
      ],
      at("2"),
    );
    expect((await r.getDevice("d-1"))!.certSerial).toBe("02");
    expect((await r.certificates({ deviceId: "d-1", status: ["live"] })).map((c) => c.serial)).toEqual([
      "01",
      "02",
    ]);
    await r.apply(
      [
        { deviceId: "d-1", batch: "lot-1", from: "issued", to: "installed" },
        { deviceId: "d-1", batch: "lot-1", from: "installed", to: "active" },
      ],
      at("3"),
    );
    const [c1, c2] = await r.certificates({ deviceId: "d-1" });
    expect(c1).toMatchObject({
      serial: "01",
      status: "revoked",
      revokedAt: at("3"),
      revocationReason: "superseded",
    });
    expect(c2).toMatchObject({ serial: "02", status: "live" });
    expect(c2!.revokedAt).toBeUndefined();
    expect(await r.revokedBy(ISSUER)).toEqual([{ serial: "01", revokedAt: at("3"), reason: "superseded" }]);
    // a same-state no-op still carries its fields and is audited
    const pk2 = Buffer.from("spki-2");
    await r.apply(
      [{ deviceId: "d-2", batch: "lot-1", from: "issued", to: "issued", publicKey: pk2 }],
      at("4"),
    );
    expect((await r.getDevice("d-2"))!.publicKey).toEqual(pk2);
    expect((await r.audit({ deviceId: "d-2" })).at(-1)).toMatchObject({ from: "issued", to: "issued" });
    // revoke: every live certificate of the device, and no current one any more
    await r.apply(
      [
        {
          deviceId: "d-1",
          batch: "lot-1",
          from: "active",
          to: "revoked",
          reason: "compromised",
          revoke: { at: at("5"), reason: "keyCompromise" },
          detail: { ticket: "SEC-1" },
        },
      ],
      at("5"),
    );
    expect(await r.getDevice("d-1")).toMatchObject({
      state: "revoked",
      certSerial: null,
      reason: "compromised",
    });
    expect(await r.revokedBy(ISSUER)).toEqual([
      { serial: "01", revokedAt: at("3"), reason: "superseded" },
      { serial: "02", revokedAt: at("5"), reason: "keyCompromise" },
    ]);
    expect(await r.revokedBy(OTHER_ISSUER)).toEqual([]);
    expect((await r.certificates({ status: ["live"] })).map((c) => c.serial)).toEqual(["99"]);
    expect((await r.certificates({ issuer: OTHER_ISSUER }))[0]!.der.length).toBe(600);
    expect((await r.audit({ deviceId: "d-1" })).at(-1)).toMatchObject({
      from: "active",
      to: "revoked",
      reason: "compromised",
      detail: { ticket: "SEC-1" },
      at: at("5"),
    });
    // a reason is set by a change of state and cleared by one without
    await r.apply([{ deviceId: "d-1", batch: "lot-1", from: "revoked", to: "pending" }]);
    expect((await r.getDevice("d-1"))!.reason).toBeNull();
    await r.close();
  });

  it("keyset pagination over devices, certificates and audit", async () => {
    const { r } = await fresh();
    const ids = Array.from({ length: 25 }, (_, i) => `p-${String(24 - i).padStart(2, "0")}`);
    await r.addDevices("lot-1", ids);
    await r.apply(
      ids.slice(0, 12).flatMap((id, i) => [
        { deviceId: id, batch: "lot-1", from: "pending" as const, to: "attested" as const },
        {
          deviceId: id,
          batch: "lot-1",
          from: "attested" as const,
          to: "issued" as const,
          certificate: cert(id, "lot-1", (0x100 + i).toString(16)),
        },
      ]),
    );
    const all = (await r.listDevices("lot-1")).map((d) => d.deviceId);
    expect(all).toEqual([...ids].sort());
    const pages: string[][] = [];
    let after: string | undefined;
    for (;;) {
      const page = await r.listDevices("lot-1", { limit: 10, ...(after ? { after } : {}) });
      if (page.length === 0) break;
      pages.push(page.map((d) => d.deviceId));
      after = page.at(-1)!.deviceId;
    }
    expect(pages.map((p) => p.length)).toEqual([10, 10, 5]);
    expect(pages.flat()).toEqual(all);
    const issued = await r.listDevices("lot-1", { states: ["issued"], after: "p-15", limit: 100 });
    expect(issued.map((d) => d.deviceId)).toEqual([
      "p-16",
      "p-17",
      "p-18",
      "p-19",
      "p-20",
      "p-21",
      "p-22",
      "p-23",
      "p-24",
    ]);
    const c1 = await r.certificates({ batch: "lot-1", limit: 5 });
    const c2 = await r.certificates({ batch: "lot-1", limit: 100, after: c1.at(-1)!.serial });
    expect([...c1, ...c2].map((c) => c.serial)).toEqual(
      Array.from({ length: 12 }, (_, i) => (0x100 + i).toString(16)),
    );
    const a1 = await r.audit({ batch: "lot-1", limit: 30 });
    const a2 = await r.audit({ batch: "lot-1", afterSeq: a1.at(-1)!.seq });
    expect(a1.length + a2.length).toBe(25 + 24);
    expect(a2[0]!.seq).toBeGreaterThan(a1.at(-1)!.seq);
    await expectFleetError(r.listDevices("lot-1", { limit: -1 }), "INVALID_INPUT", /q.limit: got -1/);
    await r.close();
  });

  it("counts has all eight states, zeros included", async () => {
    const { r } = await fresh();
    const zero = Object.fromEntries(DEVICE_STATES.map((s) => [s, 0]));
    expect(await r.counts("lot-1")).toEqual(zero);
    expect(await r.counts("no-such-batch")).toEqual(zero);
    await r.addDevices("lot-1", ["a", "b", "c"]);
    await r.apply([{ deviceId: "a", batch: "lot-1", from: "pending", to: "quarantined", reason: "clone" }]);
    expect(await r.counts("lot-1")).toEqual({ ...zero, pending: 2, quarantined: 1 });
    await r.close();
  });

  it("the audit table is append-only, enforced by the database", async () => {
    const { r, loc } = await fresh();
    await r.addDevices("lot-1", ["a", "b"]);
    await r.close();
    await expect(backend.raw(loc, "UPDATE audit SET reason = 'rewritten'")).rejects.toThrow(/append-only/);
    await expect(backend.raw(loc, "DELETE FROM audit")).rejects.toThrow(/append-only/);
    if (backend.name === "postgres")
      await expect(backend.raw(loc, "TRUNCATE audit")).rejects.toThrow(/append-only/);
    // appending is what it is for, but only with the hash chain (verify.test.ts has the rest)
    await expect(
      backend.raw(
        loc,
        backend.name === "sqlite"
          ? "INSERT INTO audit (at, batch, device_id, to_state) VALUES (0, 'lot-1', 'a', 'pending')"
          : "INSERT INTO audit (seq, at, batch, device_id, to_state) VALUES (99, now(), 'lot-1', 'a', 'pending')",
      ),
    ).rejects.toThrow(backend.name === "sqlite" ? /append-only/ : /null value/);
    const r2 = await openRegistry(loc);
    await r2.addDevices("lot-1", ["c"]);
    const rows = await r2.audit({ batch: "lot-1" });
    expect(rows.length).toBe(3);
    expect(rows.every((a) => a.reason === null)).toBe(true);
    expect((await r2.verify()).ok).toBe(true);
    await r2.close();
  });

  it("20,000 devices through apply in chunks; data survives close and reopen", async () => {
    const { r, loc } = await fresh();
    const n = 20_000;
    const ids = Array.from({ length: n }, (_, i) => `fg100-${String(i).padStart(6, "0")}`);
    expect(await r.addDevices("lot-1", ids)).toBe(n);
    const chunk = 5_000;
    for (let i = 0; i < n; i += chunk)
      await r.apply(
        ids.slice(i, i + chunk).map((id) => ({
          deviceId: id,
          batch: "lot-1",
          from: "pending",
          to: "attested",
          publicKey: Buffer.from(id),
        })),
      );
    for (let i = 0; i < n; i += chunk)
      await r.apply(
        ids.slice(i, i + chunk).map((id, j) => ({
          deviceId: id,
          batch: "lot-1",
          from: "attested",
          to: "issued",
          certificate: cert(id, "lot-1", (i + j + 1).toString(16), ISSUER, 64),
        })),
      );
    expect(await r.counts("lot-1")).toMatchObject({ pending: 0, attested: 0, issued: n });
    await r.close();
    const again = await openRegistry(loc);
    expect(await again.schemaVersion()).toBe(LATEST_VERSION);
    expect((await again.counts("lot-1")).issued).toBe(n);
    expect((await again.certificates({ batch: "lot-1", status: ["live"] })).length).toBe(n);
    expect(await again.getDevice("fg100-012345")).toMatchObject({
      state: "issued",
      certSerial: (12346).toString(16),
    });
    expect((await again.audit({ batch: "lot-1" })).length).toBe(3 * n);
    expect(await again.verify()).toMatchObject({ ok: true, rows: 3 * n, devices: n });
    await again.close();
  }, 120_000);

  it("two writers racing on the same devices: one wins whole, the other is a CONFLICT with nothing written", async () => {
    const { r, loc } = await fresh();
    const ids = Array.from({ length: 2_000 }, (_, i) => `c-${String(i).padStart(5, "0")}`);
    await r.addDevices("lot-1", ids);
    const other = await openRegistry(loc);
    const wave = (to: DeviceState): Transition[] =>
      ids.map((deviceId) => ({ deviceId, batch: "lot-1", from: "pending", to }));
    const results = await Promise.allSettled([r.apply(wave("attested")), other.apply(wave("quarantined"))]);
    const won = results.filter((x) => x.status === "fulfilled");
    const lost = results.filter((x): x is PromiseRejectedResult => x.status === "rejected");
    expect(won.length).toBe(1);
    expect(lost.length).toBe(1);
    expect(lost[0]!.reason).toBeInstanceOf(FleetError);
    expect((lost[0]!.reason as FleetError).code).toBe("CONFLICT");
    const winner = results[0]!.status === "fulfilled" ? "attested" : "quarantined";
    expect(await r.counts("lot-1")).toMatchObject({ pending: 0, [winner]: ids.length });
    expect((await r.audit({ batch: "lot-1" })).length).toBe(2 * ids.length);
    expect((await r.verify()).ok).toBe(true);
    await other.close();
    await r.close();
  }, 60_000);

  it("a writer killed with SIGKILL mid-apply leaves all or none of its transaction", async () => {
    const { r, loc } = await fresh();
    const n = 3_000;
    const ids = Array.from({ length: n }, (_, i) => `k-${String(i).padStart(5, "0")}`);
    await r.addDevices("lot-1", ids);
    await r.close();
    const child = spawnChild(["churn", "lot-1", "400"], loc);
    const exited = exitOf(child);
    let lastBegin = 0;
    let lastDone = 0;
    let killedDuring = 0;
    const killAt = 4 + Math.floor(Math.random() * 3); // after a few committed waves
    await new Promise<void>((resolve) => {
      let buf = "";
      child.stdout!.on("data", (d: Buffer) => {
        buf += d.toString();
        for (const m of buf.matchAll(/(begin|done) (\d+)\n/g)) {
          if (m[1] === "begin") lastBegin = Number(m[2]);
          else lastDone = Number(m[2]);
        }
        buf = buf.slice(buf.lastIndexOf("\n") + 1);
        if (lastBegin >= killAt && !killedDuring) {
          killedDuring = -1;
          // land inside the transaction of the step just begun (it takes tens of milliseconds)
          setTimeout(
            () => {
              killedDuring = lastBegin;
              process.kill(-child.pid!, "SIGKILL");
              resolve();
            },
            Math.floor(Math.random() * 15),
          );
        }
      });
      child.on("close", () => resolve());
    });
    const res = await exited;
    expect(res.signal, `the child ended on its own: ${res.err}`).toBe("SIGKILL");
    expect(killedDuring).toBeGreaterThanOrEqual(killAt);
    expect(lastDone).toBeGreaterThanOrEqual(killedDuring - 1);

    const r2 = await openRegistry(loc);
    const devices = await r2.listDevices("lot-1");
    const states = new Set(devices.map((d) => d.state));
    expect(states.size, `devices in several states: ${[...states]}`).toBe(1);
    const state = [...states][0]!;
    const committed = (await r2.audit({ deviceId: ids[0]!, limit: 1000 })).length - 1;
    // all of the step in flight, or none of it
    expect([killedDuring - 1, killedDuring]).toContain(committed);
    expect(state).toBe(churnStep(committed)[1]);
    // every device saw exactly the same committed steps
    const audit = await r2.audit({ batch: "lot-1" });
    expect(audit.length).toBe(n * (1 + committed));
    // certificates: each device has as many as issued steps were committed; the current one is live
    const issuedSteps = Array.from({ length: committed }, (_, i) => churnStep(i + 1)[1]).filter(
      (s) => s === "issued",
    ).length;
    const certs = await r2.certificates({ batch: "lot-1" });
    expect(certs.length).toBe(n * issuedSteps);
    const live = certs.filter((c) => c.status === "live");
    for (const d of devices) expect(d.certSerial === null).toBe(issuedSteps === 0);
    const liveSerials = new Set(live.map((c) => c.serial));
    for (const d of devices) if (d.certSerial) expect(liveSerials.has(d.certSerial)).toBe(true);
    expect(live.length).toBe(state === "active" || issuedSteps === 1 ? n : 2 * n);
    // the killed writer left the chain whole: its transaction's rows are all there or none
    expect(await r2.verify()).toMatchObject({ ok: true, count: 0, devices: n });
    await r2.close();
    if (backend.name === "sqlite")
      expect(await backend.raw(loc, "PRAGMA integrity_check")).toEqual([{ integrity_check: "ok" }]);
  }, 120_000);

  if (backend.name === "postgres")
    it("the compare-and-set probes the primary key, even with statistics from another state", async () => {
      const { r, loc } = await fresh();
      const ids = Array.from({ length: 20_000 }, (_, i) => `s-${String(i).padStart(6, "0")}`);
      for (let i = 0; i < ids.length; i += 5_000) await r.addDevices("lot-1", ids.slice(i, i + 5_000));
      await backend.raw(loc, "ANALYZE devices"); // statistics say: every device is pending
      await r.apply(ids.map((deviceId) => ({ deviceId, batch: "lot-1", from: "pending", to: "attested" })));
      await r.close();
      const c = new Client({ connectionString: loc });
      await c.connect();
      try {
        await c.query("BEGIN");
        await c.query(APPLY_SESSION_SQL);
        const some = ids.slice(1_000, 6_000);
        const plan = JSON.stringify(
          (
            await c.query(`EXPLAIN (FORMAT JSON) ${CAS_SQL}`, [
              some,
              some.map(() => "lot-1"),
              some.map(() => "attested"),
              some.map(() => "issued"),
              some.map(() => null),
              some.map(() => null),
              some.map(() => null),
              some.map(() => null),
              some.map(() => false),
              new Date().toISOString(),
            ])
          ).rows[0]["QUERY PLAN"],
        );
        await c.query("ROLLBACK");
        expect(plan).toContain('"Index Name":"devices_pkey"');
        expect(plan).not.toMatch(/"Node Type":"(Seq Scan|Hash Join|Merge Join|Bitmap Heap Scan)"/);
      } finally {
        await c.end();
      }
    }, 60_000);
});
