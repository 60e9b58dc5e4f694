// The enrollment engine against a real device farm (in process, over TCP) and a real SQLite
// registry; every certificate and CRL is checked with OpenSSL.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { issueCa } from "../../../core/ca";
import { publishCrl } from "../../../core/enroll/crl";
import { BatchEngine, type BatchSpec, describePlan } from "../../../core/enroll/engine";
import { compileTemplate, type IssuerMaterial, resolveProfile } from "../../../core/enroll/profile";
import { openRegistry } from "../../../core/registry";
import type { Registry } from "../../../core/registry/types";
import { StationClient } from "../../../core/station/client";
import { loadPrivateKey } from "../../../core/x509/keys";
import { pemBlocks, toPem } from "../../../core/x509/pem";
import { type RunningFarm, startFarm } from "../../../devices/farm/serve";
import { Hsm } from "../../../devices/injection/hsm";
import { openssl, tmpdir, verifyLeaves as verifyMany } from "../../helpers/openssl";
import { type PostgresServer, startPostgres } from "../../helpers/postgres";

const root = issueCa({
  name: "root",
  role: "root",
  algorithm: "ecdsa-p384",
  subject: { commonName: "Engine Test Root" },
  validityDays: 3650,
  pathLen: 2,
});
const inter = issueCa(
  {
    name: "inter",
    role: "intermediate",
    algorithm: "ecdsa-p256",
    subject: { commonName: "Engine Inter" },
    validityDays: 1825,
    pathLen: 1,
  },
  { name: "root", ...root },
);
const issuing = issueCa(
  {
    name: "iss",
    role: "issuing",
    algorithm: "ecdsa-p256",
    subject: { commonName: "Engine Issuing" },
    validityDays: 730,
  },
  { name: "inter", ...inter },
);

function issuerMaterial(ca = issuing): IssuerMaterial {
  const chain = pemBlocks(ca.chainPem, "CERTIFICATE", "chain");
  return {
    certificate: chain[0]!,
    chain: chain.slice(1),
    key: loadPrivateKey(ca.keyPem, "key"),
    fingerprint: crypto.createHash("sha256").update(chain[0]!).digest("hex"),
  };
}

const CLONE = "fg100-0000007";
const NOISY = "fg100-0000011";

let dir: string;
let farm: RunningFarm;
let station: StationClient;
let registry: Registry;

const spec = (over: Partial<BatchSpec> = {}): BatchSpec => ({
  name: "lot-1",
  model: "fg100",
  source: "puf",
  firstSerial: 0,
  count: 40,
  profile: resolveProfile({
    subject: { organization: "Acme" },
    sans: { uri: ["urn:acme:device:{deviceId}"] },
    validityDays: 365,
  }),
  maxQuarantinedFraction: 0.1,
  maxWaveFraction: 0.5,
  ...over,
});

const engine = (s: BatchSpec, issuer = issuerMaterial()) =>
  new BatchEngine({ registry, station, issuer, waveSize: 16, concurrency: 2, deviceTimeoutMs: 5000 }, s);

/** verify leaves with OpenSSL: root trusted, intermediates untrusted; optional CRL check */
function verifyLeaves(leaves: Buffer[], crlPem?: string): { ok: boolean; out: string } {
  const r = verifyMany(root.certificatePem, issuing.certificatePem + inter.certificatePem, leaves, crlPem);
  return { ok: r.ok === leaves.length, out: r.out };
}

let pg: PostgresServer | undefined;
beforeAll(async () => {
  pg = await startPostgres();
}, 180_000);
afterAll(async () => {
  await pg?.stop();
});

// the same story on both registry backends, each with its own farm
describe.each(["sqlite", "postgres"] as const)("BatchEngine (registry: %s)", (backend) => {
  beforeAll(async () => {
    dir = tmpdir("fg-engine-");
    // 42 devices at the station; the batch declares up to 44 (two records without a device)
    farm = await startFarm({ stateDir: path.join(dir, "farm"), count: 42, clones: [CLONE], noisy: [NOISY] });
    station = new StationClient({ port: farm.port, poolSize: 2, timeoutMs: 20_000 });
    registry = await openRegistry(
      backend === "sqlite" ? path.join(dir, "registry.db") : await pg!.createDatabase(`engine_${Date.now()}`),
    );
  }, 60_000);

  afterAll(async () => {
    await station?.close();
    await farm?.close();
    await registry?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("plans a new batch in words a reviewer understands", async () => {
    const p = await engine(spec()).plan();
    expect(describePlan(p)).toBe("enroll 40 devices, re-issue 0, decommission 0");
  });

  it("enrolls every device, quarantines the clone and the unreadable PUF, and records everything", async () => {
    const s = await engine(spec()).converge();
    expect(s.counts.active).toBe(38);
    expect(s.counts.quarantined).toBe(2);
    expect(s.quarantineReasons).toEqual({ "key-failure": 2 });
    expect(s.enrolledThisRun).toBe(38);
    const clone = await registry.getDevice(CLONE);
    expect(clone?.state).toBe("quarantined");
    expect(clone?.reason).toMatch(/PUF unreadable, or a clone/);
    expect(await registry.certificates({ deviceId: CLONE })).toHaveLength(0);
    expect(await registry.certificates({ deviceId: NOISY })).toHaveLength(0);

    // every active device: exactly one live certificate, the one the device holds, verified by OpenSSL
    const live = await registry.certificates({ batch: "lot-1", status: ["live"] });
    expect(live).toHaveLength(38);
    expect(new Set(live.map((c) => c.deviceId)).size).toBe(38);
    const v = verifyLeaves(live.map((c) => c.der));
    expect(v.ok, v.out).toBe(true);
    const dev = await station.status("fg100-0000003");
    const rec = live.find((c) => c.deviceId === "fg100-0000003")!;
    expect(dev.chain[0]!.equals(rec.der)).toBe(true);
    expect(dev.lifecycle).toBe("closed");
    const text = openssl(
      ["x509", "-noout", "-subject", "-ext", "subjectAltName"],
      toPem("CERTIFICATE", rec.der),
    ).out;
    expect(text).toMatch(/O\s*=\s*Acme, CN\s*=\s*fg100-0000003/);
    expect(text).toContain("URI:urn:acme:device:fg100-0000003");

    // the audit trail of one device: declared, attested and issued in one step (the key and the
    // certificate in one row), installed and confirmed in one (the epoch)
    const trail = await registry.audit({ deviceId: "fg100-0000003" });
    const steps = trail[0]!.to === "pending" ? trail.slice(1) : trail;
    expect(steps.map((a) => `${a.from} -> ${a.to}`)).toEqual(["pending -> issued", "issued -> active"]);
    // what the one-step rows recorded: the key and the certificate, then the epoch
    const dev3 = (await registry.getDevice("fg100-0000003"))!;
    expect(dev3).toMatchObject({ state: "active", certSerial: rec.serial });
    expect(dev3.publicKey).toBeInstanceOf(Buffer);
    expect(dev3.epoch).toEqual(expect.any(Number));
    expect((await registry.verify({ batch: "lot-1" })).ok).toBe(true);
  }, 60_000);

  it("a second run changes nothing and yields the same manifest digest", async () => {
    const e = engine(spec());
    expect(describePlan(await e.plan())).toBe("enroll 0 devices, re-issue 0, decommission 0");
    const before = (await e.summary()).manifestDigest;
    const s = await e.converge();
    expect(s.enrolledThisRun).toBe(0);
    expect(s.manifestDigest).toBe(before);
    expect(await registry.certificates({ batch: "lot-1" })).toHaveLength(38);
  }, 60_000);

  it("fails the run when quarantine exceeds the policy, keeping what was done", async () => {
    await expect(engine(spec({ maxQuarantinedFraction: 0.01 })).converge()).rejects.toThrow(
      /got 2 of 40 devices quarantined .* want at most 1\.0% \(policy identity\.maxQuarantinedFraction\)/,
    );
    expect((await registry.counts("lot-1")).active).toBe(38);
  }, 60_000);

  it("an interrupted install (device found issued) gets its recorded certificate again, not a second one", async () => {
    const id = "fg100-0000005";
    const d = (await registry.getDevice(id))!;
    await registry.apply([
      { deviceId: id, batch: "lot-1", from: "active", to: "issued", reason: "test: interrupted" },
    ]);
    const s = await engine(spec()).converge();
    expect(s.counts.active).toBe(38);
    const certs = await registry.certificates({ deviceId: id });
    expect(certs).toHaveLength(1);
    expect(certs[0]!.serial).toBe(d.certSerial);
  }, 60_000);

  it("records without a device are quarantined; a profile change re-issues in waves and revokes the old ones", async () => {
    const s1 = await engine(spec({ count: 44, maxQuarantinedFraction: 0.2 })).converge();
    expect(s1.quarantineReasons).toEqual({ "key-failure": 2, "unknown-device": 2 });
    const old = await registry.certificates({ batch: "lot-1", status: ["live"] });
    const changed = spec({
      count: 44,
      maxQuarantinedFraction: 0.2,
      profile: resolveProfile({
        subject: { organization: "Acme", organizationalUnit: "Line A" },
        validityDays: 180,
      }),
    });
    expect(describePlan(await engine(changed).plan())).toBe("enroll 0 devices, re-issue 40, decommission 0");
    const s2 = await engine(changed).converge();
    expect(s2.reissuedThisRun).toBe(40);
    const live = await registry.certificates({ batch: "lot-1", status: ["live"] });
    expect(live).toHaveLength(40);
    expect(live.every((c) => !old.some((o) => o.serial === c.serial))).toBe(true);
    const revoked = await registry.certificates({ batch: "lot-1", status: ["revoked"] });
    expect(revoked).toHaveLength(40);
    expect(revoked.every((c) => c.revocationReason === "superseded")).toBe(true);

    // the CRL lists the superseded certificates; OpenSSL accepts it and rejects a superseded one
    const crl = await publishCrl(
      registry,
      { ...issuing, key: issuerMaterial().key!, fingerprint: issuerMaterial().fingerprint },
      path.join(dir, "crl"),
    );
    expect(crl.revoked).toBe(40);
    const crlPem = fs.readFileSync(crl.path, "utf8");
    const d = tmpdir();
    fs.writeFileSync(path.join(d, "iss.pem"), issuing.certificatePem);
    fs.writeFileSync(path.join(d, "crl.pem"), crlPem);
    const check = openssl([
      "crl",
      "-in",
      path.join(d, "crl.pem"),
      "-CAfile",
      path.join(d, "iss.pem"),
      "-noout",
    ]);
    expect(check.out).toMatch(/verify OK/);
    fs.rmSync(d, { recursive: true, force: true });
    expect(verifyLeaves([revoked[0]!.der], crlPem).out).toMatch(/certificate revoked/);
    const ok = verifyLeaves(
      live.slice(0, 5).map((c) => c.der),
      crlPem,
    );
    expect(ok.ok, ok.out).toBe(true);
  }, 90_000);

  it("shrinking the batch decommissions the removed devices; delete revokes everything", async () => {
    const small = spec({
      count: 30,
      maxQuarantinedFraction: 0.2,
      profile: resolveProfile({
        subject: { organization: "Acme", organizationalUnit: "Line A" },
        validityDays: 180,
      }),
    });
    expect(describePlan(await engine(small).plan())).toBe("enroll 0 devices, re-issue 0, decommission 14");
    const s = await engine(small).converge();
    expect(s.decommissionedThisRun).toBe(14);
    expect((await station.status("fg100-0000035")).lifecycle).toBe("decommissioned");
    expect(await registry.certificates({ deviceId: "fg100-0000035", status: ["live"] })).toHaveLength(0);

    const r = await engine(small).deleteBatch();
    expect(r.decommissioned).toBe(30);
    expect(await registry.certificates({ batch: "lot-1", status: ["live"] })).toHaveLength(0);
    expect((await registry.getBatch("lot-1"))?.deletedAt).toBeInstanceOf(Date);
    const crl = await publishCrl(
      registry,
      { ...issuing, key: issuerMaterial().key!, fingerprint: issuerMaterial().fingerprint },
      path.join(dir, "crl"),
    );
    expect(crl.crlNumber).toBe(2);
    // 40 superseded, 12 live ones of the removed devices, 28 of the deleted batch
    expect(crl.revoked).toBe(40 + 12 + 28);
  }, 90_000);
});

describe("BatchEngine with injected identities", () => {
  it("enrolls devices whose key was injected on the line; a device never injected is quarantined", async () => {
    const d = tmpdir("fg-engine-inj-");
    const f = await startFarm({ stateDir: path.join(d, "farm"), count: 8 });
    const st = new StationClient({ port: f.port, timeoutMs: 20_000 });
    const reg = await openRegistry(path.join(d, "registry.db"));
    try {
      // the production line: the OEM's HSM wraps a per-chip identity key (and a line certificate) to 5 chips
      const hsm = Hsm.create(
        path.join(d, "hsm.json"),
        { productId: "fg100-line", limit: 5, secrets: {} },
        f.vendor.certificate,
      );
      const lineIssuer = issuerMaterial();
      const line = compileTemplate(resolveProfile({}), lineIssuer, new Date());
      for (let i = 0; i < 5; i++) {
        const id = `fg100-000000${i}`;
        const chip = await st.identify(id, { chipCert: true });
        const lic = hsm.license(chip.chipCertificate!, (chipId, spki) => [
          line.issue(crypto.randomBytes(16), chipId, spki),
          lineIssuer.certificate,
          ...lineIssuer.chain,
        ]);
        await st.inject(id, lic.license, lic.payload);
      }
      const e = new BatchEngine(
        { registry: reg, station: st, issuer: issuerMaterial(), waveSize: 4, deviceTimeoutMs: 5000 },
        spec({ name: "inj", source: "injected", count: 6, maxQuarantinedFraction: 0.2 }),
      );
      const s = await e.converge();
      expect(s.counts.active).toBe(5);
      expect(s.counts.quarantined).toBe(1);
      expect((await reg.getDevice("fg100-0000005"))?.reason).toMatch(/^source-mismatch/);
      const live = await reg.certificates({ batch: "inj", status: ["live"] });
      const v = verifyLeaves(live.map((c) => c.der));
      expect(v.ok, v.out).toBe(true);
      // the device now holds the fleet certificate, bound to the injected key
      const status = await st.status("fg100-0000002");
      const rec = live.find((c) => c.deviceId === "fg100-0000002")!;
      expect(status.chain[0]!.equals(rec.der)).toBe(true);
      expect(status.source).toBe("injected");
    } finally {
      await st.close();
      await f.close();
      await reg.close();
      fs.rmSync(d, { recursive: true, force: true });
    }
  }, 60_000);
});
