// Declared revocations (core/enroll/revoke.ts) over a real device farm and a SQLite registry: one
// device with an RFC 5280 reason, a whole batch, a batch revoked before it was enrolled, the plan
// in words, the reasons on the issuing CA's CRL as OpenSSL reads them, an idempotent rerun, a
// device that is not in the batch, and a kill -9 between the registry write and the CRL publish.
import { spawn } from "node:child_process";
import type * as crypto from "node:crypto";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crlCurrent, publishCrl } from "../../../core/enroll/crl";
import { describePlan } from "../../../core/enroll/engine";
import { loadRevocationFile } from "../../../core/enroll/revocations";
import { openRegistry } from "../../../core/registry";
import type { Registry } from "../../../core/registry/types";
import { StationClient } from "../../../core/station/client";
import { deviceId } from "../../../core/station/ids";
import { type RunningFarm, startFarm } from "../../../devices/farm/serve";
import { openssl, tmpdir } from "../../helpers/openssl";
import { batchSpec, engineOf, hierarchy } from "./helpers";

const id = (i: number) => deviceId("fg100", i);
const CA = hierarchy("Revoke");
const issuerPem = CA.issuingPem;
const issuer = { certificatePem: issuerPem, key: CA.material.key!, fingerprint: CA.material.fingerprint };

let dir: string;
let farm: RunningFarm;
let registry: Registry;
let station: StationClient;

beforeAll(async () => {
  dir = tmpdir("fg-revoke-");
  farm = await startFarm({ stateDir: path.join(dir, "farm"), count: 24, port: 0, log: () => {} });
  station = new StationClient({ port: farm.port, timeoutMs: 5_000, retries: 1, backoffMs: 1 });
  registry = await openRegistry(path.join(dir, "registry.db"));
}, 60_000);

afterAll(async () => {
  await station?.close();
  await farm?.close();
  await registry?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const crlDir = () => path.join(dir, "crl");
/** `openssl crl -text` of the published CRL, verified against the issuing CA. */
function crlText(): string {
  const f = path.join(crlDir(), `${CA.material.fingerprint}.crl.pem`);
  const ca = path.join(dir, "issuing.pem");
  fs.writeFileSync(ca, issuerPem);
  const r = openssl(["crl", "-in", f, "-CAfile", ca, "-noout", "-text"]);
  expect(r.out).toMatch(/verify OK/);
  return r.out;
}
/** The reason OpenSSL prints for `serial` on the CRL text, or undefined when it is not listed. */
function reasonOf(text: string, serial: string): string | undefined {
  const want = serial.toUpperCase().padStart(serial.length + (serial.length % 2), "0");
  const m = new RegExp(
    `Serial Number: 0*${want.replace(/^0+/, "")}\\s*\\n[^\\n]*Revocation Date[^\\n]*\\n(?:\\s*CRL entry extensions:\\s*\\n\\s*X509v3 CRL Reason Code:\\s*\\n\\s*([^\\n]+))?`,
  ).exec(text);
  return m ? (m[1]?.trim() ?? "(none)") : undefined;
}
const pemOf = (der: Buffer) =>
  `-----BEGIN CERTIFICATE-----\n${der.toString("base64").replace(/(.{64})/g, "$1\n")}\n-----END CERTIFICATE-----\n`;

describe("revocation declared for single devices", () => {
  const revocations = [
    { device: id(1), reason: "keyCompromise" as const },
    { device: id(2), reason: "keyCompromise" as const, at: "2026-11-30T12:00:00Z" },
    { device: id(3), reason: "cessationOfOperation" as const },
  ];
  it("plan in words, registry revoked with the reasons, the CRL lists them, OpenSSL refuses the device", async () => {
    expect((await engineOf(registry, station, CA.material, batchSpec()).converge()).counts.active).toBe(10);
    const live = await Promise.all(
      [1, 2, 3].map(async (i) => (await registry.certificates({ deviceId: id(i), status: ["live"] }))[0]!),
    );
    const engine = engineOf(registry, station, CA.material, batchSpec({ revocations }));
    const plan = await engine.plan();
    expect(plan.revoke).toEqual({ keyCompromise: 2, cessationOfOperation: 1 });
    expect(describePlan(plan)).toBe(
      "enroll 0 devices, re-issue 0, decommission 0, revoke 3 devices (keyCompromise 2, cessationOfOperation 1)",
    );
    const s = await engine.converge();
    expect(engine.revokedDevices).toBe(3);
    expect(engine.revokedThisRun).toBe(3);
    expect(s.counts).toMatchObject({ active: 7, revoked: 3 });
    for (const [i, r] of revocations.entries()) {
      const d = (await registry.getDevice(r.device))!;
      expect(d.state).toBe("revoked");
      expect(d.certSerial).toBeNull();
      const c = (await registry.certificates({ deviceId: r.device }))[0]!;
      expect(c.serial).toBe(live[i]!.serial);
      expect(c.status).toBe("revoked");
      expect(c.revocationReason).toBe(r.reason);
    }
    expect((await registry.certificates({ deviceId: id(2) }))[0]!.revokedAt!.toISOString()).toBe(
      "2026-11-30T12:00:00.000Z",
    );
    // the registry changed; the CRL has not been published yet
    expect(await crlCurrent(registry, CA.material, crlDir())).toBe(false);
    await publishCrl(registry, issuer, crlDir());
    expect(await crlCurrent(registry, CA.material, crlDir())).toBe(true);
    const text = crlText();
    expect(reasonOf(text, live[0]!.serial)).toBe("Key Compromise");
    expect(reasonOf(text, live[1]!.serial)).toBe("Key Compromise");
    expect(reasonOf(text, live[2]!.serial)).toBe("Cessation Of Operation");
    expect(text).toMatch(/Nov 30 12:00:00 2026 GMT/);
    // openssl verify -crl_check refuses the revoked device and accepts a live one
    const work = tmpdir("fg-revoke-verify-");
    fs.writeFileSync(path.join(work, "root.pem"), CA.rootPem);
    fs.writeFileSync(path.join(work, "iss.pem"), issuerPem);
    fs.copyFileSync(path.join(crlDir(), `${CA.material.fingerprint}.crl.pem`), path.join(work, "crl.pem"));
    const verify = (der: Buffer) => {
      fs.writeFileSync(path.join(work, "leaf.pem"), pemOf(der));
      return openssl(
        [
          "verify",
          "-crl_check",
          "-CAfile",
          "root.pem",
          "-untrusted",
          "iss.pem",
          "-CRLfile",
          "crl.pem",
          "leaf.pem",
        ].map((a) => (a.endsWith(".pem") ? path.join(work, a) : a)),
      );
    };
    expect(verify(live[0]!.der).out).toMatch(/certificate revoked/);
    const other = (await registry.certificates({ deviceId: id(5), status: ["live"] }))[0]!;
    expect(verify(other.der).out).toMatch(/: OK/);
    fs.rmSync(work, { recursive: true, force: true });
  });

  it("a rerun does nothing: no plan, no registry write, the CRL stays current", async () => {
    const head = await registry.auditHead();
    const engine = engineOf(registry, station, CA.material, batchSpec({ revocations }));
    const plan = await engine.plan();
    expect(plan.revoke).toBeUndefined();
    expect(describePlan(plan)).toBe("enroll 0 devices, re-issue 0, decommission 0");
    await engine.converge();
    expect(engine.revokedDevices).toBe(0);
    expect(engine.revokedThisRun).toBe(0);
    expect(await registry.auditHead()).toEqual(head);
    expect(await crlCurrent(registry, CA.material, crlDir())).toBe(true);
  });

  it("removing the declaration does not bring a revoked device back (revoked is terminal for its key)", async () => {
    const engine = engineOf(registry, station, CA.material, batchSpec());
    expect(describePlan(await engine.plan())).toBe("enroll 0 devices, re-issue 0, decommission 0");
    const s = await engine.converge();
    expect(s.counts).toMatchObject({ active: 7, revoked: 3 });
    expect(s.enrolledThisRun).toBe(0);
    expect(await registry.certificates({ deviceId: id(1), status: ["live"] })).toHaveLength(0);
    // its key stays known to the batch: another device presenting it would be quarantined duplicate-key
    const key = (await registry.getDevice(id(1)))!.publicKey!;
    await engine.loadKeys();
    expect(engine.keys!.get(createHash("sha256").update(key).digest("hex"))).toBe(id(1));
  });

  it("a device that is not in the batch, a duplicate, an unknown reason: an error naming the field", () => {
    const bad = (revs: unknown) => () =>
      engineOf(registry, station, CA.material, batchSpec({ revocations: revs as never }));
    expect(bad([{ device: id(42), reason: "keyCompromise" }])).toThrow(
      `revocations[0].device: got "fg100-0000042", want a device of batch lot (fg100-0000000 .. fg100-0000009)`,
    );
    expect(bad([{ device: "fg200-0000001", reason: "keyCompromise" }])).toThrow(
      /revocations\[0\]\.device: got "fg200-0000001"/,
    );
    expect(
      bad([
        { device: id(1), reason: "keyCompromise" },
        { device: id(1), reason: "superseded" },
      ]),
    ).toThrow(/revocations\[1\]\.device: got "fg100-0000001", want a device named once/);
    expect(bad([{ device: id(1), reason: "stolen" }])).toThrow(
      /revocations\[0\]\.reason: got "stolen", want an RFC 5280 reason: one of unspecified, keyCompromise/,
    );
    expect(bad([{ device: id(1), reason: "keyCompromise", at: "yesterday" }])).toThrow(
      /revocations\[0\]\.at: got "yesterday", want an ISO 8601 date/,
    );
    expect(() =>
      engineOf(registry, station, CA.material, batchSpec({ revoked: { reason: "nope" as never } })),
    ).toThrow(/revoked\.reason: got "nope"/);
  });
});

describe("a revocation file", () => {
  const batch = { name: "lot", model: "fg100", firstSerial: 0, count: 10 };
  const load = (name: string, text: string) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, text);
    return () => loadRevocationFile(f, batch, name);
  };
  it("YAML (a list or under revocations:) and JSON, read as the list", () => {
    expect(
      load("a.yaml", `- device: ${id(1)}\n  reason: keyCompromise\n  at: 2026-11-30T08:00:00Z\n`)(),
    ).toEqual([{ device: id(1), reason: "keyCompromise", at: "2026-11-30T08:00:00Z" }]);
    expect(load("b.yaml", `revocations:\n  - { device: ${id(2)}, reason: superseded }\n`)()).toEqual([
      { device: id(2), reason: "superseded" },
    ]);
    expect(
      load("c.json", JSON.stringify({ revocations: [{ device: id(3), reason: "privilegeWithdrawn" }] }))(),
    ).toEqual([{ device: id(3), reason: "privilegeWithdrawn" }]);
  });
  it("every problem at file:line:column with the field", () => {
    expect(load("d.yaml", `revocations:\n  - device: ${id(1)}\n    reason: stolen\n`)).toThrow(
      /^d\.yaml:3:13: revocations\[0\]\.reason: got "stolen", want an RFC 5280 reason/,
    );
    expect(
      load(
        "e.yaml",
        `- device: ${id(1)}\n  reason: keyCompromise\n- device: ${id(10)}\n  reason: keyCompromise\n`,
      ),
    ).toThrow(
      `e.yaml:3:11: revocations[1].device: got "fg100-0000010", want a device of batch lot (fg100-0000000 .. fg100-0000009)`,
    );
    expect(load("f.yaml", "devices: []\n")).toThrow(/^f\.yaml:1:1: revocations: got nothing, want a list/);
    expect(load("g.yaml", "- device: [\n")).toThrow(/^g\.yaml:\d+:\d+: revocations: got invalid YAML/);
    expect(() => loadRevocationFile(path.join(dir, "missing.yaml"), batch, "missing.yaml")).toThrow(
      /revocations: got "missing.yaml", want a readable revocation file \(ENOENT\)/,
    );
  });
});

describe("revocation of a whole batch", () => {
  it("every device of the batch, a device's own reason first; a batch revoked before enrollment enrolls nothing", async () => {
    const spec = batchSpec({ name: "lot-b", firstSerial: 10, count: 4 });
    expect((await engineOf(registry, station, CA.material, spec).converge()).counts.active).toBe(4);
    const serials = await Promise.all(
      [10, 11, 12, 13].map(async (i) => (await registry.certificates({ deviceId: id(i) }))[0]!.serial),
    );
    const revoked = {
      ...spec,
      revoked: { reason: "affiliationChanged" as const },
      revocations: [{ device: id(12), reason: "privilegeWithdrawn" as const }],
    };
    const engine = engineOf(registry, station, CA.material, revoked);
    expect(describePlan(await engine.plan())).toBe(
      "enroll 0 devices, re-issue 0, decommission 0, revoke 4 devices (affiliationChanged 3, privilegeWithdrawn 1)",
    );
    expect((await engine.converge()).counts).toMatchObject({ active: 0, revoked: 4 });
    await publishCrl(registry, issuer, crlDir());
    const text = crlText();
    expect(reasonOf(text, serials[0]!)).toBe("Affiliation Changed");
    expect(reasonOf(text, serials[2]!)).toBe("Privilege Withdrawn");
    expect(reasonOf(text, serials[3]!)).toBe("Affiliation Changed");
    // the first batch's revocations are still there (one CRL per CA)
    expect(text.match(/Serial Number:/g)).toHaveLength(7);

    // a lot declared revoked from the start: its devices are never certified (they stay pending)
    const early = batchSpec({
      name: "lot-c",
      firstSerial: 14,
      count: 2,
      revoked: { reason: "cACompromise" },
    });
    const e2 = engineOf(registry, station, CA.material, early);
    const s2 = await e2.converge();
    expect(s2.counts).toMatchObject({ pending: 2, revoked: 0, active: 0 });
    expect(s2.enrolledThisRun).toBe(0);
    expect(await registry.certificates({ batch: "lot-c" })).toHaveLength(0);
    expect(describePlan(await e2.plan())).toBe("enroll 0 devices, re-issue 0, decommission 0");
  });
});

describe("kill -9 between the registry write and the CRL publish", () => {
  it("the next run publishes the CRL with the revocation; the revocation is not applied twice", async () => {
    const spec = batchSpec({ name: "lot-d", firstSerial: 16, count: 5 });
    expect((await engineOf(registry, station, CA.material, spec).converge()).counts.active).toBe(5);
    await publishCrl(registry, issuer, crlDir());
    const declared = [16, 17, 18].map((i) => ({ device: id(i), reason: "keyCompromise" }));
    const job = path.join(dir, "revoke-job.json");
    fs.writeFileSync(
      job,
      JSON.stringify({
        registry: path.join(dir, "registry.db"),
        // the chain the batch is issued under: issuing first, then the root
        chainPem: issuerPem + CA.rootPem,
        keyPem: (CA.material.key as crypto.KeyObject).export({ type: "pkcs8", format: "pem" }),
        spec: {
          ...spec,
          profile: { subject: { organization: "Acme" }, validityDays: 365 },
          revocations: declared,
        },
      }),
    );
    const r = await run(job);
    expect(r.killed).toBe(true);
    expect(r.out.trim()).toBe("3"); // waves of 2: two transactions, both committed
    for (const d of declared) expect((await registry.getDevice(d.device))!.state).toBe("revoked");
    // what the batch provider's next run (and its preview) sees: the CRL is not current
    expect(await crlCurrent(registry, CA.material, crlDir())).toBe(false);
    const engine = engineOf(registry, station, CA.material, { ...spec, revocations: declared as never });
    expect((await engine.plan()).revoke).toBeUndefined();
    await engine.converge();
    expect(engine.revokedThisRun).toBe(0);
    await publishCrl(registry, issuer, crlDir());
    expect(await crlCurrent(registry, CA.material, crlDir())).toBe(true);
    const text = crlText();
    for (const d of declared) {
      const c = (await registry.certificates({ deviceId: d.device }))[0]!;
      expect(reasonOf(text, c.serial)).toBe("Key Compromise");
    }
  });
});

function run(job: string): Promise<{ out: string; killed: boolean }> {
  const tsx = path.resolve("node_modules/.bin/tsx");
  return new Promise((resolve, reject) => {
    const p = spawn(tsx, [path.join(__dirname, "revoke-writer.ts"), job], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("error", reject);
    p.on("close", (code, signal) => {
      const killed = signal === "SIGKILL" || code === 137;
      if (code && !killed) reject(new Error(`revoke-writer exited ${code}: ${err}`));
      else resolve({ out, killed });
    });
  });
}
