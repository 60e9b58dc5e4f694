/**
 * The SQLite verify on a worker thread (core/registry/verify-thread.ts, issue 13: a preview
 * verifies on the second core while it plans): the same report as on the calling thread, clean or
 * tampered, from the checkpoint or replayed; and a thread that cannot start, throws or exits is an
 * error that says so, never a hang.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { openRegistry } from "../../../core/registry";
import type { Anchor, Registry, Transition, VerifyReport } from "../../../core/registry/types";
import { verifyOnThread } from "../../../core/registry/verify-thread";

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-verify-thread-"));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let n = 0;

const ISSUER = "b2".repeat(32);
const pk = (id: string) => Buffer.concat([Buffer.from("3059301306072a8648ce3d0201", "hex"), Buffer.from(id)]);
let serialN = 0x2000;
const cert = (deviceId: string) => ({
  serial: (++serialN).toString(16),
  deviceId,
  batch: "lot-1",
  issuer: ISSUER,
  der: crypto.randomBytes(300),
  notBefore: new Date("2026-01-01T00:00:00Z"),
  notAfter: new Date("2027-01-01T00:00:00Z"),
  issuedAt: new Date("2026-01-01T00:00:00Z"),
});

/** Eight active devices of lot-1, one of them re-issued, and the checkpoint of a clean verify. */
async function checkpointed(): Promise<{ r: Registry; loc: string; anchor: Required<Anchor> }> {
  const loc = path.join(tmpRoot, `t${++n}`, "registry.db");
  const r = await openRegistry(loc);
  await r.putBatch({ name: "lot-1", model: "fg100", source: "puf", spec: "{}" });
  const ids = Array.from({ length: 8 }, (_, i) => `d-${i}`);
  await r.addDevices("lot-1", ids);
  const step = (from: Transition["from"], to: Transition["to"], x: (id: string) => Partial<Transition>) =>
    ids.map((deviceId) => ({ deviceId, batch: "lot-1", from, to, ...x(deviceId) }));
  await r.apply(step("pending", "attested", (id) => ({ publicKey: pk(id), epoch: 1 })));
  await r.apply(step("attested", "issued", (id) => ({ certificate: cert(id) })));
  await r.apply(step("issued", "installed", () => ({})));
  await r.apply(step("installed", "active", () => ({})));
  await r.apply([
    { deviceId: "d-1", batch: "lot-1", from: "active", to: "issued", certificate: cert("d-1") },
  ]);
  await r.apply([{ deviceId: "d-1", batch: "lot-1", from: "issued", to: "installed" }]);
  await r.apply([{ deviceId: "d-1", batch: "lot-1", from: "installed", to: "active" }]);
  const rep = await r.verify({ batch: "lot-1" });
  expect(rep).toMatchObject({ ok: true, mode: "replayed" });
  return { r, loc, anchor: { ...rep.head, tables: rep.checkpoint! } };
}

function sql(loc: string, statements: string[]) {
  const db = new Database(loc);
  try {
    for (const s of statements) db.prepare(s).run();
  } finally {
    db.close();
  }
}

const NO_TRIGGERS = [
  "DROP TRIGGER audit_no_update",
  "DROP TRIGGER audit_no_delete",
  "DROP TRIGGER audit_append_at_head",
  "DROP TRIGGER audit_hash_required",
];

const messages = (rep: VerifyReport) => rep.findings.map((f) => f.message);

describe("verify on a thread (SQLite)", () => {
  it("gives the report the calling thread gives: replayed, from the checkpoint, with progress", async () => {
    const { r, anchor } = await checkpointed();
    for (const opts of [
      {},
      { batch: "lot-1" },
      { batch: "lot-1", anchor },
      { anchor: { seq: 3, hash: anchor.hash } },
    ]) {
      const here = await r.verify(opts);
      const there = await r.verify({ ...opts, thread: true });
      expect(there, JSON.stringify(opts)).toEqual(here);
    }
    expect(await r.verify({ batch: "lot-1", anchor, thread: true })).toMatchObject({
      ok: true,
      mode: "checkpoint",
      checkpoint: anchor.tables,
    });
    const progress: Array<[number, number]> = [];
    const rep = await r.verify({
      batch: "lot-1",
      anchor,
      thread: true,
      onProgress: (d, t) => progress.push([d, t]),
    });
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)).toEqual([2 * rep.rows, 2 * rep.rows]);
    await r.close();
  });

  it("a row changed, inserted or removed behind fleetguard's back is refused, as on the calling thread", async () => {
    const attacks: Array<{ sql: string[]; finding: RegExp }> = [
      {
        sql: [
          "UPDATE devices SET public_key = (SELECT public_key FROM devices WHERE device_id = 'd-5') WHERE device_id = 'd-6'",
        ],
        finding: /device d-6.*publicKey/,
      },
      {
        sql: ["UPDATE certificates SET der = X'00' WHERE device_id = 'd-3'"],
        finding: /certificate .*d-3|d-3.*certificate/,
      },
      {
        sql: [
          "UPDATE certificates SET status = 'revoked', revoked_at = 0, revocation_reason = 'keyCompromise' WHERE device_id = 'd-4'",
        ],
        finding: /d-4.*status/,
      },
      {
        sql: [
          "INSERT INTO devices (device_id, batch, state, updated_at) VALUES ('x-1', 'lot-1', 'active', 0)",
        ],
        finding: /x-1/,
      },
      { sql: ["DELETE FROM certificates WHERE device_id = 'd-7'"], finding: /d-7/ },
      {
        sql: [
          "DELETE FROM certificates WHERE device_id = 'd-2'",
          "DELETE FROM devices WHERE device_id = 'd-2'",
        ],
        finding: /d-2/,
      },
      {
        sql: [...NO_TRIGGERS, "UPDATE audit SET reason = 'nothing to see' WHERE seq = 5"],
        finding: /^audit row 5/,
      },
      { sql: [...NO_TRIGGERS, "DELETE FROM audit WHERE seq = 7"], finding: /^audit row 8: prev_hash/ },
    ];
    for (const a of attacks) {
      const { r, loc, anchor } = await checkpointed();
      sql(loc, a.sql);
      const here = await r.verify({ batch: "lot-1", anchor });
      const there = await r.verify({ batch: "lot-1", anchor, thread: true });
      expect(there, a.sql.at(-1)).toEqual(here);
      expect(there.ok, a.sql.at(-1)).toBe(false);
      expect(there.mode).toBe("replayed");
      expect(there.checkpoint).toBeUndefined();
      expect(messages(there).join("\n"), a.sql.at(-1)).toMatch(a.finding);
      await r.close();
    }
  });

  it("an error inside the thread keeps its code; bad options are refused before any thread starts", async () => {
    const gone = path.join(tmpRoot, "no-such", "registry.db");
    const err = await verifyOnThread(gone, {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FleetError);
    expect((err as FleetError).code).toBe("UNAVAILABLE");
    expect((err as FleetError).message).toMatch(
      /^registry verify of .*no-such.*: got a verify thread that threw \w+: Cannot open database/,
    );
    const { r } = await checkpointed();
    const bad = await r.verify({ thread: "yes" as unknown as boolean }).catch((e: unknown) => e);
    expect((bad as FleetError).code).toBe("INVALID_INPUT");
    expect((bad as FleetError).message).toMatch(/^opts\.thread: got "yes", want a boolean/);
    await r.close();
  });

  it("a thread that cannot start, crashes, exits or never answers... answers: an error naming it, no hang", async () => {
    const { r, loc } = await checkpointed();
    const entry = (name: string, body: string) => {
      const f = path.join(tmpRoot, name);
      fs.writeFileSync(f, body);
      return f;
    };
    const cases: Array<[string, RegExp]> = [
      [
        path.join(tmpRoot, "missing-entry.js"),
        /got a verify thread that (could not start|failed) \(.*missing-entry/,
      ],
      [
        entry("throws.js", "throw new Error('boom at load');"),
        /got a verify thread that failed \(boom at load\)/,
      ],
      [
        entry("exits.js", "process.exit(3);"),
        /got a verify thread that exited with code 3 before it reported/,
      ],
      [
        entry("async-crash.js", "setTimeout(() => { throw new Error('boom later'); }, 10);"),
        /got a verify thread that failed \(boom later\)/,
      ],
      // the thread's work ends without an answer (no job taken): the exit is the error
      [entry("silent.js", ""), /got a verify thread that exited with code 0 before it reported/],
    ];
    for (const [file, re] of cases) {
      const e = await verifyOnThread(loc, {}, file).catch((x: unknown) => x);
      expect(e, file).toBeInstanceOf(FleetError);
      expect((e as FleetError).code).toBe("UNAVAILABLE");
      expect((e as FleetError).message, file).toMatch(re);
    }
    await r.close();
  });

  it("the thread is ended once it has answered: one that would run on is stopped", async () => {
    const f = path.join(tmpRoot, "lingers.js");
    const beat = path.join(tmpRoot, "heartbeat");
    // answers, then would keep its thread (and so the process) alive forever, beating into a file
    fs.writeFileSync(
      f,
      "const fs = require('node:fs');\n" +
        "const { parentPort } = require('node:worker_threads');\n" +
        "parentPort.postMessage({ type: 'report', report: { ok: true, count: 0, findings: [] } });\n" +
        `setInterval(() => fs.appendFileSync(${JSON.stringify(beat)}, '.'), 5);\n`,
    );
    const rep = await verifyOnThread(path.join(tmpRoot, "unused.db"), {}, f);
    expect(rep.ok).toBe(true);
    const size = () => (fs.existsSync(beat) ? fs.statSync(beat).size : 0);
    // terminate() is asynchronous: wait for the beat to stop (it never would if the thread lived on)
    let last = -1;
    for (let i = 0; i < 50 && size() !== last; i++) {
      last = size();
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(size()).toBe(last);
  });
});
