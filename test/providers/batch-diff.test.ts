/**
 * The batch provider's diff (what a preview runs): the registry verified on a thread while the
 * plan is made (issue 13), and a registry changed behind fleetguard's back refused with the
 * verify's INTEGRITY error, whatever the plan made of it. With the real engine:
 * test/integration/trust-hardening.test.ts.
 */
import * as path from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { issueCa } from "../../core/ca";
import { FleetError } from "../../core/errors";
import { formatAnchor, openRegistry } from "../../core/registry";
import { deviceId } from "../../core/station/ids";
import { diff } from "../../providers/runtime/batch";
import { tmpdir } from "../helpers/openssl";

const root = issueCa({
  name: "root",
  role: "root",
  algorithm: "ecdsa-p256",
  subject: { commonName: "Root" },
  validityDays: 3650,
});
const line = issueCa(
  {
    name: "line",
    role: "issuing",
    algorithm: "ecdsa-p256",
    subject: { commonName: "Line" },
    validityDays: 700,
  },
  { name: "root", ...root },
);

let n = 0;
/** A declaration of 6 devices, and a registry where 4 of them are known (attested) and verified. */
async function declared() {
  const dir = tmpdir();
  const news = {
    kind: "fleetguard:batch" as const,
    name: "lot",
    model: "fg100",
    source: "puf" as const,
    firstSerial: 0,
    count: 6,
    profile: { subject: { organization: "Acme" }, validityDays: 365 },
    issuer: { name: "line", certificatePem: line.certificatePem, chainPem: line.chainPem },
    station: { host: "127.0.0.1", port: 7300 },
    registry: path.join(dir, `registry-${++n}.db`),
    crlDir: path.join(dir, "crl"),
    policy: { name: "p", digest: "d", maxQuarantinedFraction: 0.01, maxWaveFraction: 1 },
  };
  const r = await openRegistry(news.registry);
  await r.putBatch({ name: "lot", model: "fg100", source: "puf", spec: "{}" });
  const ids = [0, 1, 2, 3].map((i) => deviceId("fg100", i));
  await r.addDevices("lot", ids);
  await r.apply(
    ids.map((id) => ({
      deviceId: id,
      batch: "lot",
      from: "pending" as const,
      to: "attested" as const,
      publicKey: Buffer.from(`key of ${id}`),
    })),
  );
  const rep = await r.verify({ batch: "lot" });
  await r.close();
  expect(rep.ok).toBe(true);
  const olds = { ...news, auditHead: formatAnchor({ ...rep.head, tables: rep.checkpoint! }) };
  return { news, olds, ids };
}

function sql(file: string, statements: string[]) {
  const db = new Database(file);
  try {
    for (const s of statements) db.prepare(s).run();
  } finally {
    db.close();
  }
}

const refused = async (p: Promise<unknown>) => {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(FleetError);
  expect((e as FleetError).code).toBe("INTEGRITY");
  return (e as FleetError).message;
};

describe("batch provider diff", () => {
  it("an intact registry: the plan's outstanding work is a change", async () => {
    const { news, olds } = await declared();
    expect(await diff("lot", olds, news)).toMatchObject({ changes: true, replaces: [] });
  });

  it("a device row changed behind fleetguard's back stops the diff with the verify's error", async () => {
    const { news, olds, ids } = await declared();
    sql(news.registry, [
      `UPDATE devices SET public_key = (SELECT public_key FROM devices WHERE device_id = '${ids[0]}') WHERE device_id = '${ids[1]}'`,
    ]);
    const m = await refused(diff("lot", olds, news));
    expect(m).toMatch(
      new RegExp(
        `^registry: got 1 difference from its audit log \\(device ${ids[1]}: publicKey.*want none: it was changed outside fleetguard; \`fleet registry verify --registry `,
      ),
    );
  });

  it("rows that would change the plan (a device added, one set active) are refused, not planned from", async () => {
    const { news, olds } = await declared();
    sql(news.registry, [
      `INSERT INTO devices (device_id, batch, state, updated_at) VALUES ('${deviceId("fg100", 4)}', 'lot', 'active', 0)`,
      `UPDATE devices SET state = 'active' WHERE device_id = '${deviceId("fg100", 2)}'`,
    ]);
    expect(await refused(diff("lot", olds, news))).toMatch(/^registry: got 2 differences from its audit log/);
  });

  it("an audit row rewritten (its triggers dropped) is refused by the chain", async () => {
    const { news, olds } = await declared();
    sql(news.registry, [
      "DROP TRIGGER audit_no_update",
      "UPDATE audit SET reason = 'nothing to see' WHERE seq = (SELECT MAX(seq) FROM audit)",
    ]);
    expect(await refused(diff("lot", olds, news))).toMatch(/audit row \d+ .*hash: stored/);
  });
});
