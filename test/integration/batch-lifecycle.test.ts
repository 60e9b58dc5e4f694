/**
 * DeviceIdentityBatch on the real engine against a device farm in its own process: create
 * (with a clone quarantined), no-change preview, a plan in words, grow the batch, drift found
 * by refresh, and destroy with a CRL that OpenSSL accepts.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openCaKey } from "../../core/custody";
import { signCommand } from "../../core/enroll/authorize";
import type { IssuerMaterial } from "../../core/enroll/profile";
import { StationClient } from "../../core/station/client";
import { pemBlocks } from "../../core/x509/pem";
import { openssl } from "../helpers/openssl";
import {
  batchStack,
  checkInvariants,
  configure,
  FarmProc,
  verifyLeaves,
  withRegistry,
} from "./batch-helpers";

const CLONE = "fg100-0000013";
const work = fs.mkdtempSync(path.join(os.tmpdir(), "fg-batch-"));
const farm = new FarmProc(path.join(work, "farm"), 400, ["--clones", CLONE]);
const stack = batchStack("it-batch");

interface Summary {
  total: number;
  counts: Record<string, number>;
  quarantineReasons: Record<string, number>;
  manifestDigest: string;
  issuerFingerprint: string;
}
type Cas = Record<string, { certificatePem: string; fingerprintSha256: string }>;

beforeAll(async () => {
  await farm.start();
  await stack.init();
  await configure(stack, work, farm.port, { count: 300 });
}, 120_000);

afterAll(async () => {
  await farm.stop();
  stack.cleanup();
  fs.rmSync(work, { recursive: true, force: true });
});

/** The issuing CA as its custody holds it: the key opened from the stack's embedded key store. */
async function issuingCaMaterial(): Promise<IssuerMaterial> {
  const state = JSON.parse((await stack.run(["stack", "export"])).stdout);
  const line = state.deployment.resources.find((r: { urn: string }) => r.urn.endsWith("::pki-line"));
  process.env.PULUMI_CONFIG_PASSPHRASE = stack.env.PULUMI_CONFIG_PASSPHRASE;
  const der = (pem: string) => pemBlocks(pem, "CERTIFICATE", "test")[0]!;
  return {
    certificate: der(line.outputs.certificatePem),
    chain: pemBlocks(line.outputs.chainPem, "CERTIFICATE", "test").slice(1),
    key: openCaKey(line.outputs.keyRef, { baseDir: stack.programDir }),
    fingerprint: line.outputs.fingerprintSha256,
  };
}

describe("DeviceIdentityBatch with the real engine", () => {
  let cas: Cas;

  it("create: every device enrolled and verified by OpenSSL, the clone quarantined, one resource in state", async () => {
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(up.stdout).toMatch(/batch lot: enroll \d[\d,]*\/300 devices \(\d+%\), [\d,]+\/s, ETA \d+ s/);
    const out = await stack.outputs();
    const s = out.summary as Summary;
    cas = out.cas as Cas;
    expect(s.total).toBe(300);
    expect(s.counts.active).toBe(299);
    expect(s.counts.quarantined).toBe(1);
    expect(s.quarantineReasons).toEqual({ "key-failure": 1 });
    expect(s.issuerFingerprint).toBe(cas.line!.fingerprintSha256);
    const { liveDer } = await checkInvariants(work, farm.port, "lot", { active: 299, quarantined: 1 });
    const v = verifyLeaves(cas.root!.certificatePem, cas.line!.certificatePem, liveDer);
    expect(v.ok, v.out.slice(0, 2000)).toBe(299);

    // one resource for the whole batch; no key material in plaintext anywhere in the state
    const exported = JSON.parse((await stack.run(["stack", "export"])).stdout) as {
      deployment: { resources: { urn: string }[] };
    };
    expect(exported.deployment.resources.filter((r) => r.urn.endsWith("::lot-lot"))).toHaveLength(1);
    expect(stack.stateText()).not.toMatch(/PRIVATE KEY/);
    expect(stack.stateText()).not.toContain("fg100-0000042"); // no per-device data in state
  }, 300_000);

  it("a no-change preview; a grown batch previews as a plan in words", async () => {
    const same = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(same.status, same.stdout).toBe(0);
    await configure(stack, work, farm.port, { count: 320 });
    const pv = await stack.run(["preview"]);
    expect(pv.stdout).toContain("batch lot: enroll 20 devices, re-issue 0, decommission 0");
    await stack.run(["up", "--yes", "--skip-preview"]);
    const s = (await stack.outputs()).summary as Summary;
    expect(s.counts.active).toBe(319);
    await checkInvariants(work, farm.port, "lot", { active: 319, quarantined: 1 });
  }, 300_000);

  it("a batch lost from the state is adopted back from the registry, nothing enrolled twice", async () => {
    const exported = JSON.parse((await stack.run(["stack", "export"])).stdout) as {
      deployment: { resources: { urn: string }[] };
    };
    const urn = exported.deployment.resources.find((r) => r.urn.endsWith("::lot-lot"))!.urn;
    await stack.run(["state", "delete", urn, "--yes"]);
    const certsBefore = await withRegistry(work, (reg) => reg.certificates({ batch: "lot", limit: 100_000 }));
    const up = await stack.run(["up", "--yes", "--skip-preview"]);
    expect(up.stdout).toMatch(/lot-lot created/);
    const s = (await stack.outputs()).summary as Summary;
    expect(s.total).toBe(320);
    expect(s.counts.active).toBe(319);
    const certsAfter = await withRegistry(work, (reg) => reg.certificates({ batch: "lot", limit: 100_000 }));
    expect(certsAfter.length).toBe(certsBefore.length);
    const same = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(same.status, same.stdout).toBe(0);
  }, 300_000);

  it("refresh reports drift; the next up repairs what it can and quarantines the rest", async () => {
    // out of band: an operator holding the issuing CA's key zeroizes one device at the station
    // (a closed device obeys only commands signed under its trust anchor), and the registry holds
    // a record whose device the station does not know (restored from an old backup, say)
    const st = new StationClient({ port: farm.port });
    const challenge = (await st.status("fg100-0000042")).challenge!;
    await st.decommission("fg100-0000042", {
      auth: signCommand(
        await issuingCaMaterial(),
        "fg100-0000042",
        { op: "DECOMMISSION", confirm: "fg100-0000042" },
        challenge,
      ),
    });
    await st.close();
    await withRegistry(work, async (reg) => {
      await reg.addDevices("lot", ["fg100-0000999"]);
      for (const [from, to] of [
        ["pending", "attested"],
        ["attested", "issued"],
        ["issued", "installed"],
        ["installed", "active"],
      ] as const)
        await reg.apply([{ deviceId: "fg100-0000999", batch: "lot", from, to }]);
    });
    const r = await stack.run(["refresh", "--yes"]);
    // refresh attests every active device: the zeroized one no longer proves its key, so it is
    // quarantined and its certificate revoked at once (it never gets to "lost its certificate")
    expect(r.stdout).toMatch(/drift: 0 device\(s\) lost their certificate, 1 record\(s\) without a device/);
    await withRegistry(work, async (reg) => {
      const zeroized = await reg.getDevice("fg100-0000042");
      expect(zeroized?.state).toBe("quarantined");
      expect(zeroized?.reason).toMatch(/^attestation-failed: refresh: .*lifecycle: got decommissioned/);
      expect(await reg.certificates({ deviceId: "fg100-0000042", status: ["live"] })).toHaveLength(0);
      const ghost = await reg.getDevice("fg100-0000999");
      expect(ghost?.state).toBe("quarantined");
      expect(ghost?.reason).toMatch(/^drift: a registry record without a device/);
    });
    await withRegistry(work, async (reg) => expect((await reg.counts("lot")).active).toBe(318));
    // the next up tries to put the recorded certificate back: a zeroized device refuses, so it is quarantined and revoked
    await stack.run(["up", "--yes", "--skip-preview"]);
    await withRegistry(work, async (reg) => {
      const d = await reg.getDevice("fg100-0000042");
      expect(d?.state).toBe("quarantined");
      expect(await reg.certificates({ deviceId: "fg100-0000042", status: ["live"] })).toHaveLength(0);
      // the ghost record is outside the declared serials: converging from the registry removes it
      expect((await reg.getDevice("fg100-0000999"))?.state).toBe("decommissioned");
    });
    await checkInvariants(work, farm.port, "lot", { active: 318, quarantined: 2 });
  }, 300_000);

  it("destroy revokes every certificate and publishes a CRL that OpenSSL accepts", async () => {
    const before = await withRegistry(work, (reg) => reg.certificates({ batch: "lot", status: ["live"] }));
    expect(before.length).toBe(318);
    await stack.run(["destroy", "--yes", "--skip-preview"]);
    const crlFile = path.join(work, "crl", `${cas.line!.fingerprintSha256}.crl.pem`);
    const crlPem = fs.readFileSync(crlFile, "utf8");
    fs.writeFileSync(path.join(work, "line.pem"), cas.line!.certificatePem);
    const c = openssl(["crl", "-in", crlFile, "-CAfile", path.join(work, "line.pem"), "-noout", "-text"]);
    expect(c.out).toMatch(/verify OK/);
    expect((c.out.match(/Serial Number:/g) ?? []).length).toBe(319);
    const v = verifyLeaves(cas.root!.certificatePem, cas.line!.certificatePem, [before[0]!.der], crlPem);
    expect(v.ok).toBe(0);
    expect(v.out).toMatch(/certificate revoked/);
    await withRegistry(work, async (reg) => {
      expect(await reg.certificates({ batch: "lot", status: ["live"] })).toHaveLength(0);
      const counts = await reg.counts("lot");
      expect(counts.decommissioned).toBe(321);
    });
  }, 300_000);
});
