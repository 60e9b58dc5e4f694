/**
 * A DeviceIdentityBatch whose registry is PostgreSQL (a real server on loopback), through the real
 * engine: every device enrolled and recorded there, and the URL's password never in the state.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openRegistry } from "../../core/registry";
import { type PostgresServer, startPostgres } from "../helpers/postgres";
import { batchStack, FarmProc, verifyLeaves } from "./batch-helpers";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "fg-batch-pg-"));
const farm = new FarmProc(path.join(work, "farm"), 100);
const stack = batchStack("it-batch-pg");
let pg: PostgresServer;
let url: string;

beforeAll(async () => {
  pg = await startPostgres();
  url = await pg.createDatabase("fleet_batch");
  await farm.start();
  await stack.init();
}, 180_000);

afterAll(async () => {
  await farm.stop();
  stack.cleanup();
  await pg?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe("DeviceIdentityBatch with a PostgreSQL registry", () => {
  it("enrolls into PostgreSQL; the registry URL (with its password) is a secret in the state", async () => {
    const password = new URL(url).password;
    expect(password.length).toBeGreaterThan(8);
    await stack.setConfig("fleetguard:batch", { count: 60 });
    await stack.setConfig("fleetguard:stationPort", String(farm.port));
    await stack.run(["config", "set", "--secret", "fleetguard:registry", url]);
    await stack.setConfig("fleetguard:crlDir", path.join(work, "crl"));
    await stack.run(["up", "--yes", "--skip-preview"]);
    const out = await stack.outputs();
    expect((out.summary as { counts: Record<string, number> }).counts.active).toBe(60);
    expect(stack.stateText()).not.toContain(password);
    const reg = await openRegistry(url);
    try {
      expect(reg.kind).toBe("postgres");
      expect(reg.location).not.toContain(password);
      expect((await reg.counts("lot")).active).toBe(60);
      const live = await reg.certificates({ batch: "lot", status: ["live"] });
      const cas = out.cas as Record<string, { certificatePem: string }>;
      expect(
        verifyLeaves(
          cas.root!.certificatePem,
          cas.line!.certificatePem,
          live.map((c) => c.der),
        ).ok,
      ).toBe(60);
    } finally {
      await reg.close();
    }
    const same = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(same.status, same.stdout).toBe(0);
  }, 300_000);
});
