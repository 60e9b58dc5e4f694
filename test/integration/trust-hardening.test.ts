/**
 * Issue 9 on the real engine: CA keys never cross Pulumi's RPC under the key-store custodies
 * (a `-v=9 --logflow` log of `pulumi up` holds no private key: embedded store and a SoftHSM2
 * token), while the explicit Pulumi-secret custody does send them (which is what the log check
 * catches); a key moves from the Pulumi secret into the store in place; bad registry locations,
 * a moved registry and bad declarations stop the preview naming the field, without a stack
 * trace; a CRL whose publish failed is published by the next run.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openRegistry } from "../../core/registry";
import { GENESIS, rowHash } from "../../core/registry/chain";
import { toChainRow as sqliteChainRow } from "../../core/registry/sqlite";
import { openssl } from "../helpers/openssl";
import { PulumiStack, REPO } from "../helpers/pulumi";
import { inspectPrivateKey, type SoftToken, softToken } from "../helpers/softhsm";
import { batchStack, configure, FarmProc, withRegistry } from "./batch-helpers";

const PRIVATE = /PRIVATE KEY/;
const work = fs.mkdtempSync(path.join(os.tmpdir(), "fg-trust-"));
const farm = new FarmProc(path.join(work, "farm"), 60);
const stacks: PulumiStack[] = [];
let token: SoftToken;

const hierarchy = (custody: unknown) => ({
  custody,
  root: {
    name: "root",
    algorithm: "ecdsa-p384",
    subject: { commonName: "Custody Root" },
    validityDays: 3650,
  },
  issuing: [
    { name: "line", algorithm: "ecdsa-p256", subject: { commonName: "Custody Line" }, validityDays: 730 },
  ],
});

const caStack = (name: string) => {
  const s = new PulumiStack(path.join(REPO, "test", "integration", "fixtures", "ca-program"), name);
  stacks.push(s);
  return s;
};
const verboseUp = (s: PulumiStack) =>
  s.run(["up", "--yes", "--skip-preview", "-v=9", "--logtostderr", "--logflow"]);

beforeAll(async () => {
  token = softToken("fg-it");
  await farm.start();
}, 120_000);

afterAll(async () => {
  await farm.stop();
  for (const s of stacks) s.cleanup();
  token?.cleanup();
  fs.rmSync(work, { recursive: true, force: true });
});

describe("CA key custody under the real engine (finding 1)", () => {
  it("the embedded key store: no private key in a -v=9 log of up, nor in the state; keys sealed 0600 beside the program", async () => {
    const s = caStack("it-custody-embedded");
    await s.init();
    const store = path.join(work, "keys-embedded");
    await s.setConfig("fleetguard:hierarchy", hierarchy({ kind: "embedded", store }));
    const up = await verboseUp(s);
    expect(up.stderr.length).toBeGreaterThan(100_000); // the engine did log its RPC payloads
    expect(`${up.stdout}${up.stderr}`).not.toMatch(PRIVATE);
    expect(s.stateText()).not.toMatch(PRIVATE);
    // not even encrypted: the state, decrypted, holds no key
    expect((await s.run(["stack", "export", "--show-secrets"])).stdout).not.toMatch(PRIVATE);
    const files = fs.readdirSync(store).filter((f) => f.endsWith(".key.json"));
    expect(files).toHaveLength(2);
    for (const f of files) expect(fs.statSync(path.join(store, f)).mode & 0o777).toBe(0o600);
    const r = await s.run(["preview", "--expect-no-changes", "--refresh"]);
    expect(r.status).toBe(0);
  });

  it("the explicit Pulumi-secret custody sends keys through the RPC (the log check sees them), and moves into the store in place", async () => {
    const s = caStack("it-custody-secret");
    await s.init();
    await s.setConfig("fleetguard:hierarchy", hierarchy({ kind: "pulumi-secret" }));
    const up = await verboseUp(s);
    expect(`${up.stdout}${up.stderr}`).toMatch(PRIVATE);
    expect(s.stateText()).toContain("ciphertext");
    const before = (await s.outputs()).cas as Record<string, { fingerprintSha256: string }>;
    // the same CAs, their keys now sealed in the store: an update, no replacement
    const store = path.join(work, "keys-moved");
    await s.setConfig("fleetguard:hierarchy", hierarchy({ kind: "embedded", store }));
    const steps = await s.previewSteps();
    expect(
      steps
        .filter((x) => x.op !== "same")
        .map((x) => `${x.op} ${x.urn.split("::").pop()}`)
        .sort(),
    ).toEqual(["update pki-line", "update pki-root"]);
    await s.run(["up", "--yes", "--skip-preview"]);
    const after = (await s.outputs()).cas as Record<string, { fingerprintSha256: string }>;
    expect(after.root!.fingerprintSha256).toBe(before.root!.fingerprintSha256);
    expect(after.line!.fingerprintSha256).toBe(before.line!.fingerprintSha256);
    const checkpoint = JSON.parse(fs.readFileSync(s.checkpointFile(), "utf8"));
    const cas = checkpoint.checkpoint.latest.resources.filter((r: { type: string }) =>
      r.type.startsWith("pulumi-nodejs:dynamic"),
    );
    for (const r of cas) expect(r.outputs.keyRef.custody).toBe("embedded");
    expect((await s.run(["stack", "export", "--show-secrets"])).stdout).not.toMatch(PRIVATE);
    expect(fs.readdirSync(store).filter((f) => f.endsWith(".key.json"))).toHaveLength(2);
    const again = await s.run(["preview", "--expect-no-changes"]);
    expect(again.status).toBe(0);
  });

  it("PKCS#11 (SoftHSM2): keys made in the token, never extractable; a batch enrolls through it and -v=9 shows no key", async () => {
    const s = batchStack("it-custody-pkcs11");
    stacks.push(s);
    s.env.SOFTHSM2_CONF = token.env.SOFTHSM2_CONF;
    await s.init();
    const dir = path.join(work, "pkcs11");
    fs.mkdirSync(dir);
    await configure(s, dir, farm.port, { count: 20 });
    await s.setConfig("fleetguard:custody", { kind: "pkcs11", uri: token.uri });
    const up = await verboseUp(s);
    expect(`${up.stdout}${up.stderr}`).not.toMatch(PRIVATE);
    expect(s.stateText()).not.toMatch(PRIVATE);
    const out = await s.outputs();
    expect((out.summary as { counts: Record<string, number> }).counts.active).toBe(20);
    // the keys are in the token, marked so that nothing can take them out
    const checkpoint = JSON.parse(fs.readFileSync(s.checkpointFile(), "utf8"));
    const refs = checkpoint.checkpoint.latest.resources
      .map((r: { outputs?: { keyRef?: { custody: string; id: string } } }) => r.outputs?.keyRef)
      .filter(Boolean);
    expect(refs).toHaveLength(2);
    for (const ref of refs) {
      expect(ref.custody).toBe("pkcs11");
      const k = inspectPrivateKey(token, ref.id);
      expect(k).toMatchObject({
        count: 1,
        CKA_EXTRACTABLE: false,
        CKA_SENSITIVE: true,
        CKA_NEVER_EXTRACTABLE: true,
      });
      expect(String(k.wrap)).not.toMatch(/WRAPPED/);
    }
    // device certificates chain to the HSM-held issuing CA (OpenSSL)
    const cas = out.cas as Record<string, { certificatePem: string }>;
    const leaf = await withRegistry(
      dir,
      async (r) => (await r.certificates({ status: ["live"], limit: 1 }))[0]!.der,
    );
    const f = (n: string, c: string | Buffer) => {
      const p = path.join(dir, n);
      fs.writeFileSync(p, c);
      return p;
    };
    const leafPem = `-----BEGIN CERTIFICATE-----\n${leaf.toString("base64").replace(/.{64}(?=.)/g, "$&\n")}\n-----END CERTIFICATE-----\n`;
    const v = openssl([
      "verify",
      "-CAfile",
      f("root.pem", cas.root!.certificatePem),
      "-untrusted",
      f("line.pem", cas.line!.certificatePem),
      f("leaf.pem", leafPem),
    ]);
    expect(v.status, v.out).toBe(0);
  });
});

describe("registry input, moves and declarations (findings 3, 9)", () => {
  let s: PulumiStack;
  const dir = path.join(work, "reg");
  beforeAll(async () => {
    fs.mkdirSync(dir);
    s = batchStack("it-registry-input");
    stacks.push(s);
    await s.init();
    await configure(s, dir, farm.port, { first: 30, count: 10 });
    await s.run(["up", "--yes", "--skip-preview"]);
  }, 300_000);

  const previewFails = async () => {
    const r = await s.run(["preview"], { allowFail: true });
    expect(r.status, `${r.stdout}${r.stderr}`).not.toBe(0);
    return `${r.stdout}${r.stderr}`;
  };

  it("a mysql:// URL is refused naming the field, no file is made of it and its password is not shown", async () => {
    const cwdFiles = () =>
      fs.readdirSync(path.join(REPO, "test", "integration", "fixtures", "batch-program"));
    const before = cwdFiles();
    await s.setConfig("fleetguard:registry", "mysql://fleet:hunter2pw@db.example/fleet");
    const text = await previewFails();
    expect(text).toMatch(/registry: got a mysql: location, want a SQLite file path or a postgres:\/\//);
    expect(text).not.toMatch(/^\s+at /m);
    expect(text).not.toContain("hunter2pw");
    expect(cwdFiles()).toEqual(before);
  });

  it("a folder, and a registry moved to an empty location, fail the preview saying what to do", async () => {
    await s.setConfig("fleetguard:registry", dir);
    expect(await previewFails()).toMatch(/registry: got the folder/);
    await s.setConfig("fleetguard:registry", path.join(dir, "elsewhere.db"));
    expect(await previewFails()).toMatch(/holds no batch 'lot'.*does not move by a change of location/s);
    // copied there first, the move is accepted: an update, no device enrolled again
    fs.copyFileSync(path.join(dir, "registry.db"), path.join(dir, "elsewhere.db"));
    const up = await s.run(["up", "--yes", "--skip-preview"]);
    expect(up.stdout).toMatch(/registry moved/);
    const out = (await s.outputs()).summary as { counts: Record<string, number> };
    expect(out.counts.active).toBe(10);
    await s.setConfig("fleetguard:registry", path.join(dir, "registry.db"));
  });

  it("a bad count stops the program with the field named: no stack trace, no terminal escapes", async () => {
    for (const bad of [-5, 1.5, "lots"]) {
      await s.setConfig("fleetguard:batch", { first: 30, count: bad });
      const text = await previewFails();
      expect(text).toMatch(/DeviceIdentityBatch 'lot': serials\.count: got .*, want an integer >= 0/);
      expect(text).not.toMatch(/^\s+at /m);
      expect(text).not.toContain("\x1b[");
    }
    await s.setConfig("fleetguard:batch", { first: 30, count: 10 });
  });
});

describe("a CRL publish that failed is published by the next run (finding 4)", () => {
  it("crlDir blocked by a file: the run fails naming crlDir; unblocked, the next run publishes the revocations", async () => {
    const dir = path.join(work, "crl-retry");
    fs.mkdirSync(dir);
    const s = batchStack("it-crl-retry");
    stacks.push(s);
    await s.init();
    await configure(s, dir, farm.port, { first: 45, count: 6 });
    await s.run(["up", "--yes", "--skip-preview"]);
    // a regular file where the CRL folder's parent should be
    const crlParent = path.join(dir, "blocked");
    fs.writeFileSync(crlParent, "not a folder");
    await s.setConfig("fleetguard:crlDir", path.join(crlParent, "crl"));
    await s.setConfig("fleetguard:batch", { first: 45, count: 4 }); // two devices decommissioned
    const failed = await s.run(["up", "--yes", "--skip-preview"], { allowFail: true });
    expect(failed.status).not.toBe(0);
    expect(`${failed.stdout}${failed.stderr}`).toMatch(/crlDir: got .* that cannot be a folder/);
    fs.rmSync(crlParent);
    // the preview still has work: the batch's CRL (the CAs publish in the same folder now, so the
    // batch's inputs are unknown in the preview and it shows as an update rather than in words)
    const steps = await s.previewSteps();
    expect(steps.find((x) => x.urn.endsWith("::lot-lot"))?.op).toBe("update");
    await s.run(["up", "--yes", "--skip-preview"]);
    // the issuing CA's one CRL lists the two decommissioned devices
    const { summary } = (await s.outputs()) as { summary: { issuerFingerprint: string } };
    const file = path.join(crlParent, "crl", `${summary.issuerFingerprint}.crl.pem`);
    const text = openssl(["crl", "-noout", "-text", "-in", file]).out;
    expect(text.match(/Serial Number:/g)).toHaveLength(2);
    const again = await s.run(["preview", "--expect-no-changes"]);
    expect(again.status).toBe(0);
  });
});

describe("the registry's audit chain, anchored in the state (finding 2)", () => {
  let s: PulumiStack;
  const dir = path.join(work, "audit");
  const db = () => new Database(path.join(dir, "registry.db"));
  const exec = (sql: string) => {
    const d = db();
    try {
      d.exec(sql);
    } finally {
      d.close();
    }
  };
  const fails = async (args: string[], re: RegExp) => {
    const r = await s.run(args, { allowFail: true });
    const text = `${r.stdout}${r.stderr}`;
    expect(r.status, text).not.toBe(0);
    expect(text).toMatch(re);
    expect(text).not.toMatch(/^\s+at /m);
    return text;
  };
  beforeAll(async () => {
    fs.mkdirSync(dir);
    s = batchStack("it-audit-anchor");
    stacks.push(s);
    await s.init();
    await configure(s, dir, farm.port, { first: 52, count: 6 });
    await s.run(["up", "--yes", "--skip-preview"]);
    expect(((await s.outputs()).summary as { counts: Record<string, number> }).counts.active).toBe(6);
  }, 300_000);

  it("a public key copied between devices behind fleetguard's back stops preview, refresh and up", async () => {
    const d = db();
    const original = (
      d.prepare("SELECT public_key FROM devices WHERE device_id = 'fg100-0000053'").get() as {
        public_key: Buffer;
      }
    ).public_key;
    d.close();
    exec(
      "UPDATE devices SET public_key = (SELECT public_key FROM devices WHERE device_id = 'fg100-0000052') WHERE device_id = 'fg100-0000053'",
    );
    await fails(["preview"], /fg100-0000053/);
    await fails(["refresh", "--yes"], /fg100-0000053/);
    await fails(["up", "--yes", "--skip-preview"], /fg100-0000053/);
    // put back as it was: the registry verifies again and nothing is left to do
    const w = db();
    w.prepare("UPDATE devices SET public_key = ? WHERE device_id = 'fg100-0000053'").run(original);
    w.close();
    expect((await s.run(["preview", "--expect-no-changes"])).status).toBe(0);
  });

  it("a revoked certificate set back to live is found, and so is a log rewritten with recomputed hashes (by the anchor)", async () => {
    // shrink: two certificates revoked
    await s.setConfig("fleetguard:batch", { first: 52, count: 4 });
    await s.run(["up", "--yes", "--skip-preview"]);
    const r0 = db();
    const revoked = r0
      .prepare("SELECT serial, revoked_at, revocation_reason FROM certificates WHERE status = 'revoked'")
      .all() as {
      serial: string;
      revoked_at: number;
      revocation_reason: string;
    }[];
    r0.close();
    expect(revoked.length).toBe(2);
    exec(
      "UPDATE certificates SET status = 'live', revoked_at = NULL, revocation_reason = NULL WHERE status = 'revoked'",
    );
    await fails(["preview"], /certificate|live/i);
    const r1 = db();
    for (const c of revoked)
      r1.prepare(
        "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ? WHERE serial = ?",
      ).run(c.revoked_at, c.revocation_reason, c.serial);
    r1.close();
    expect((await s.run(["preview", "--expect-no-changes"])).status).toBe(0);
    // the attacker changes a row of the log and hashes the whole chain again: only the anchor sees it
    const d = db();
    try {
      for (const t of ["audit_no_update", "audit_no_delete"]) d.exec(`DROP TRIGGER IF EXISTS ${t}`);
      const victim = d
        .prepare("SELECT seq FROM audit WHERE device_id = 'fg100-0000052' ORDER BY seq LIMIT 1")
        .get() as { seq: number };
      d.prepare("UPDATE audit SET reason = 'rewritten' WHERE seq = ?").run(victim.seq);
      let prev = GENESIS;
      for (const row of d.prepare("SELECT * FROM audit ORDER BY seq").all() as Record<string, unknown>[]) {
        const hash = rowHash({ ...sqliteChainRow(row), prevHash: prev });
        d.prepare("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?").run(prev, hash, row.seq);
        prev = hash;
      }
    } finally {
      d.close();
    }
    const r = await openRegistry(path.join(dir, "registry.db"));
    try {
      expect((await r.verify()).ok).toBe(true); // the chain alone is whole again
    } finally {
      await r.close();
    }
    await fails(["preview"], /anchor/);
    await fails(["refresh", "--yes"], /anchor/);
  });
});
