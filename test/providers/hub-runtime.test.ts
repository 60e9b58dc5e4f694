/**
 * The hub provider (providers/runtime/hub.ts: what `pulumi up`, preview, refresh and destroy call)
 * against real peers: moto's server for AWS IoT and the DPS contract service for Azure (a local
 * HTTPS service checked against the published OpenAPI document, not Azure). A real SQLite
 * registry holds the devices. The provider process is killed with SIGKILL part-way through a
 * rate-limited registration; the next run converges with every certificate registered exactly
 * once. Refresh finds a certificate deactivated behind fleetguard's back and the next update
 * puts it right; destroy removes what the registration created and keeps the audit history.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  DeleteCertificateCommand,
  ListCertificatesCommand,
  RegisterCertificateCommand,
  UpdateCertificateCommand,
} from "@aws-sdk/client-iot";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dpsCertificateName } from "../../core/hubs/azure-dps";
import { openRegistry } from "../../core/registry";
import type { Registry } from "../../core/registry/types";
import { create, del, diff, type HubInputs, read, update } from "../../providers/runtime/hub";
import {
  type Device,
  makeDevice,
  makePki,
  type Pki,
  provisionHub,
  region,
  sdk,
} from "../core/hubs/aws-fixtures";
import { type AwsEmulator, startMoto } from "../helpers/aws-emulators";
import { startDpsContract } from "../helpers/dps-contract/server";
import { tmpdir } from "../helpers/openssl";

const REPO = path.join(__dirname, "..", "..");
const work = tmpdir("fleetguard-hub-provider-");
let moto: AwsEmulator;
const env = { ...process.env };

beforeAll(async () => {
  moto = await startMoto();
  // the driver takes AWS credentials from the SDK's default chain, never from the state
  process.env.AWS_ACCESS_KEY_ID = "test";
  process.env.AWS_SECRET_ACCESS_KEY = "test";
  process.env.AWS_REGION = region;
}, 180_000);
afterAll(async () => {
  await moto?.stop();
  process.env = env;
  fs.rmSync(work, { recursive: true, force: true });
});

/** A registry holding `n` active devices of batch b1 with certificates of `pki`. */
async function fleet(name: string, pki: Pki, n: number): Promise<{ location: string; devices: Device[] }> {
  const location = path.join(work, `${name}.db`);
  const reg = await openRegistry(location);
  await reg.putBatch({ name: "b1", model: "fg100", source: "puf", spec: "{}" });
  const devices = Array.from({ length: n }, (_, i) => makeDevice(pki, `fg100-${String(i).padStart(7, "0")}`));
  await reg.addDevices(
    "b1",
    devices.map((d) => d.cert.deviceId),
  );
  const now = new Date();
  for (const d of devices) {
    const c = d.cert;
    await reg.apply([
      {
        deviceId: c.deviceId,
        batch: "b1",
        from: "pending",
        to: "attested",
        publicKey: Buffer.alloc(91, 1),
        epoch: 0,
      },
      {
        deviceId: c.deviceId,
        batch: "b1",
        from: "attested",
        to: "issued",
        certificate: {
          serial: c.serial,
          deviceId: c.deviceId,
          batch: "b1",
          issuer: c.issuer,
          der: c.der,
          notBefore: now,
          notAfter: new Date(now.getTime() + 864e5),
          issuedAt: now,
        },
      },
      { deviceId: c.deviceId, batch: "b1", from: "issued", to: "installed" },
      { deviceId: c.deviceId, batch: "b1", from: "installed", to: "active" },
    ]);
  }
  await reg.close();
  return { location, devices };
}

async function withReg<T>(location: string, f: (r: Registry) => Promise<T>): Promise<T> {
  const r = await openRegistry(location);
  try {
    return await f(r);
  } finally {
    await r.close();
  }
}

const trust = (pki: Pki): HubInputs["trust"] => ({
  name: pki.trusted.name,
  certificatePem: pki.trusted.certificatePem,
  chainPem: pki.trusted.chainPem,
  crlPems: [],
  batchCrl: null,
});

async function certificatesAtAws(): Promise<Array<{ certificateId?: string; status?: string }>> {
  const out = await sdk(moto.endpoint).send(new ListCertificatesCommand({ pageSize: 250 }));
  return out.certificates ?? [];
}

describe("hub provider, AWS IoT (moto)", () => {
  it("create registers every device; a provider killed with SIGKILL mid-registration converges on the next run with no duplicate; refresh and destroy", async () => {
    await moto.reset();
    const pki = makePki("prov");
    const hub = await provisionHub(sdk(moto.endpoint), pki);
    const { location, devices } = await fleet("aws", pki, 40);
    const inputs: HubInputs = {
      kind: "fleetguard:hub",
      registration: "prod",
      batch: "b1",
      hub: {
        kind: "aws",
        account: "test",
        region,
        endpoint: moto.endpoint,
        mode: "per-device",
        ratePerSecond: 8,
        caCertificates: [{ id: hub.caId, pem: pki.issuing.certificatePem }],
        policyName: hub.policyName,
        thingTypeName: hub.thingTypeName,
        thingGroupName: hub.thingGroupName,
      },
      trust: trust(pki),
      registry: location,
    };
    // the plan, from the registry alone (no AWS call)
    expect((await diff("prod/b1", {}, inputs)).changes).toBe(true);

    // kill -9 the provider process once it has registered some, not all
    const file = path.join(work, "inputs.json");
    fs.writeFileSync(file, JSON.stringify(inputs));
    const child = spawn(process.execPath, ["--import", "tsx", path.join(__dirname, "hub-child.ts"), file], {
      cwd: REPO,
      env: process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise((r) => child.once("exit", r));
    // the wave's intents are in the registry before the first call; kill once AWS holds a few
    for (let i = 0; i < 600 && (await certificatesAtAws()).length < 5; i++)
      await new Promise((r) => setTimeout(r, 100));
    child.kill("SIGKILL");
    await exited;
    const mid = await withReg(location, (r) => r.hubCounts("prod", "b1"));
    const heldAtAws = (await certificatesAtAws()).length;
    expect(heldAtAws).toBeGreaterThanOrEqual(5);
    expect(heldAtAws).toBeLessThan(40);
    // what AWS did after the last record is unknown to the registry: intents, finished by the next run
    expect(mid.registering + mid.active).toBe(40);

    // the next run (rate limit off) finishes: every certificate registered once, ACTIVE
    const outs = await update(
      "prod/b1",
      {},
      { ...inputs, hub: { ...inputs.hub, ratePerSecond: 0 } as HubInputs["hub"] },
    );
    expect(outs.outs).toMatchObject({ registered: 40, active: 40, failed: 0, pending: 0 });
    const atAws = await certificatesAtAws();
    expect(atAws).toHaveLength(40);
    expect(new Set(atAws.map((c) => c.certificateId)).size).toBe(40);
    expect(atAws.every((c) => c.status === "ACTIVE")).toBe(true);
    await withReg(location, async (r) => expect((await r.verify()).ok).toBe(true));

    // a certificate deactivated at AWS behind fleetguard's back: refresh records it, the next update reactivates it
    const victim = devices[7]!.cert.sha256;
    await sdk(moto.endpoint).send(
      new UpdateCertificateCommand({ certificateId: victim, newStatus: "INACTIVE" }),
    );
    // and one registered under the CA that the registry never recorded
    const intruder = makeDevice(pki, "fg100-9999999");
    await sdk(moto.endpoint).send(
      new RegisterCertificateCommand({
        certificatePem: intruder.certPem,
        caCertificatePem: pki.issuing.certificatePem,
        status: "ACTIVE",
      }),
    );
    const props = { ...inputs, ...outs.outs } as Record<string, unknown>;
    const r = await read("prod/b1", props);
    expect(r.props.drift).toMatchObject({ deactivated: 1, unknown: 1 });
    await sdk(moto.endpoint).send(
      new UpdateCertificateCommand({ certificateId: intruder.cert.sha256, newStatus: "INACTIVE" }),
    );
    await sdk(moto.endpoint).send(new DeleteCertificateCommand({ certificateId: intruder.cert.sha256 }));
    expect((await diff("prod/b1", props, inputs)).changes).toBe(true);
    await update("prod/b1", props, {
      ...inputs,
      hub: { ...inputs.hub, ratePerSecond: 0 } as HubInputs["hub"],
    });
    expect((await certificatesAtAws()).find((c) => c.certificateId === victim)?.status).toBe("ACTIVE");

    // decommissioned at the registry: INACTIVE at AWS in the same run; then nothing is outstanding
    await withReg(location, (reg) =>
      reg.apply([
        {
          deviceId: devices[3]!.cert.deviceId,
          batch: "b1",
          from: "active",
          to: "decommissioned",
          revoke: { at: new Date(), reason: "cessationOfOperation" },
        },
      ]),
    );
    const after = await update("prod/b1", props, {
      ...inputs,
      hub: { ...inputs.hub, ratePerSecond: 0 } as HubInputs["hub"],
    });
    expect(after.outs).toMatchObject({ active: 39, disabled: 1 });
    expect(
      (await certificatesAtAws()).find((c) => c.certificateId === devices[3]!.cert.sha256)?.status,
    ).toMatch(/INACTIVE|REVOKED/);
    const settled = { ...inputs, ...after.outs } as Record<string, unknown>;
    const unlimited = { ...inputs, hub: { ...inputs.hub, ratePerSecond: 0 } as HubInputs["hub"] };
    // nothing outstanding: no change (the nightly preview); another rate is a change of the hub's settings
    expect((await diff("prod/b1", settled, unlimited)).changes).toBe(false);
    expect((await diff("prod/b1", settled, inputs)).changes).toBe(true);

    // destroy: the certificates are gone at AWS; the registry keeps the history
    await del("prod/b1", settled);
    expect(await certificatesAtAws()).toHaveLength(0);
    await withReg(location, async (reg) => {
      expect((await reg.hubCounts("prod", "b1")).removed).toBe(40);
      expect((await reg.verify()).ok).toBe(true);
    });
  }, 300_000);

  it("an unreachable hub: a clear error naming the hub and the count done, nothing recorded as registered", async () => {
    const pki = makePki("down");
    const { location } = await fleet("down", pki, 3);
    const inputs: HubInputs = {
      kind: "fleetguard:hub",
      registration: "prod",
      batch: "b1",
      hub: {
        kind: "aws",
        account: "down",
        region,
        endpoint: "http://127.0.0.1:9",
        mode: "per-device",
        ratePerSecond: 0,
        caCertificates: [{ id: "0".repeat(64), pem: pki.issuing.certificatePem }],
        policyName: "p",
      },
      trust: trust(pki),
      registry: location,
    };
    await expect(create(inputs)).rejects.toThrow(/AWS IoT 'down'/);
    await withReg(location, async (r) => expect((await r.hubCounts("prod", "b1")).active).toBe(0));
  }, 120_000);
});

describe("hub provider, Azure DPS (contract service)", () => {
  it("group mode: the enrollment group is made, no per-device call, a decommissioned device blocked; destroy removes the group", async () => {
    const key = Buffer.from("contract-test-key-not-a-secret-0123456789").toString("base64");
    // the DPS certificate the group references (ARM uploads it: azure-native DpsCertificate)
    const dps = await startDpsContract({
      policies: { provisioningserviceowner: key },
      certificates: [dpsCertificateName("dps")],
    });
    try {
      const pki = makePki("dps");
      const { location, devices } = await fleet("dps", pki, 12);
      const inputs: HubInputs = {
        kind: "fleetguard:hub",
        registration: "eu",
        batch: "b1",
        hub: {
          kind: "azure",
          account: "eu",
          endpoint: dps.url,
          sasKeyName: "provisioningserviceowner",
          sasKey: key,
          mode: "group",
          ratePerSecond: 0,
          tlsCaPem: dps.ca,
        },
        trust: trust(pki),
        registry: location,
      };
      const c = await create(inputs);
      expect(c.outs).toMatchObject({ active: 12, failed: 0 });
      expect(dps.groups.size).toBe(1);
      expect(dps.enrollments.size).toBe(0);
      await withReg(location, (reg) =>
        reg.apply([
          {
            deviceId: devices[5]!.cert.deviceId,
            batch: "b1",
            from: "active",
            to: "decommissioned",
            revoke: { at: new Date(), reason: "cessationOfOperation" },
          },
        ]),
      );
      const u = await update("eu/b1", c.outs, inputs);
      expect(u.outs).toMatchObject({ active: 11, disabled: 1 });
      const blocked = [...dps.enrollments.values()] as Array<{ provisioningStatus?: string }>;
      expect(blocked.map((e) => e.provisioningStatus)).toEqual(["disabled"]);
      await del("eu/b1", u.outs);
      expect(dps.groups.size).toBe(0);
      expect(dps.violations).toEqual([]);
    } finally {
      await dps.close();
    }
  }, 120_000);
});
