/**
 * The AWS IoT driver against ministack (1.5.33, started on loopback by the test, AUTH=true): its
 * control plane checks SigV4 credentials, and its mTLS MQTT listener admits only certificates
 * registered ACTIVE, and (AUTH=true) holds a session to the IoT policies attached to its
 * certificate, with the policy variables substituted. So a device registered by the driver
 * connects over MQTT/TLS with its own key (mqtt.js 5.16.0 with a key made in the test, and farm
 * devices through the station's CONNECT operation, their keys never leaving the farm), and after
 * disable it is refused; the least-privilege policy of
 * components/hub-aws.ts decides what it may do. ministack does not run JITP templates (it does
 * JITR: an unknown certificate of an auto-registering CA becomes PENDING_ACTIVATION on connect),
 * which is enough to show that a certificate the driver registered INACTIVE is not admitted.
 */

import * as crypto from "node:crypto";
import {
  DescribeCertificateCommand,
  DescribeEndpointCommand,
  ListCertificatesByCACommand,
  ListCertificatesCommand,
  RegisterCACertificateCommand,
  RegisterCertificateCommand,
  UpdateCACertificateCommand,
} from "@aws-sdk/client-iot";
import mqtt from "mqtt";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { AwsIotDriver, type AwsIotDriverOptions } from "../../../core/hubs/aws";
import type { DeviceCert, TrustedCa } from "../../../core/hubs/types";
import { StationClient } from "../../../core/station/client";
import { connectDevices } from "../../../core/station/connect";
import { deviceId } from "../../../core/station/ids";
import { toPem } from "../../../core/x509/pem";
import type { RunningFarm } from "../../../devices/farm/serve";
import { farmFor, makeCa, tempDir } from "../../devices/farm/helpers";
import { type AwsEmulator, startMinistack } from "../../helpers/aws-emulators";
import {
  creds,
  type Device,
  makeDevice,
  makePki,
  type Pki,
  provisionHub,
  region,
  sdk,
  successorOf,
} from "./aws-fixtures";

let ms: AwsEmulator;
let brokerCa: string;
beforeAll(async () => {
  ms = await startMinistack({ auth: true });
}, 120_000);
afterAll(async () => {
  await ms?.stop();
});
beforeEach(async () => {
  await ms.reset();
  // the broker's certificate comes from ministack's local CA, which a reset makes anew
  brokerCa = await (await fetch(`${ms.endpoint}/_ministack/iot/ca.pem`)).text();
});

type Attempt = { connected: true; published: boolean } | { connected: false; why: string };

/** CONNECT (client ID = device ID unless told), PUBLISH one QoS 1 telemetry message, DISCONNECT. */
function connect(
  dev: Device,
  o: { clientId?: string; topic?: string; servername?: string } = {},
): Promise<Attempt> {
  return new Promise((resolve) => {
    const client = mqtt.connect({
      protocol: "mqtts",
      host: "127.0.0.1",
      port: ms.mqttPort,
      clientId: o.clientId ?? dev.cert.deviceId,
      key: dev.keyPem,
      cert: dev.certPem,
      ca: brokerCa,
      servername: o.servername,
      rejectUnauthorized: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      protocolVersion: 4,
    });
    let settled = false;
    const end = (a: Attempt) => {
      if (settled) return;
      settled = true;
      client.end(true);
      resolve(a);
    };
    let connected = false;
    client.on("connect", () => {
      connected = true;
      const topic = o.topic ?? `fleet/${dev.cert.deviceId}/telemetry`;
      client.publish(topic, JSON.stringify({ t: 21.5 }), { qos: 1 }, (err) =>
        end({ connected: true, published: !err }),
      );
    });
    client.on("error", (e) => end({ connected: false, why: e.message }));
    // after CONNACK, a close means the publish was not allowed (AWS, and ministack, drop the connection)
    client.on("close", () =>
      end(
        connected
          ? { connected: true, published: false }
          : { connected: false, why: "closed without CONNACK" },
      ),
    );
  });
}

async function setup(o: { autoRegistration?: boolean } = {}) {
  const pki = makePki();
  const iot = sdk(ms.endpoint);
  const hub = await provisionHub(iot, pki, o);
  const opts = (more: Partial<AwsIotDriverOptions> = {}): AwsIotDriverOptions => ({
    label: "AWS IoT 'ministack'",
    region,
    endpoint: ms.endpoint,
    credentials: creds,
    mode: "per-device",
    ratePerSecond: 0,
    caCertificates: [{ id: hub.caId, pem: pki.issuing.certificatePem }],
    policyName: hub.policyName,
    thingTypeName: hub.thingTypeName,
    thingGroupName: hub.thingGroupName,
    batch: "b1",
    retry: { maxAttempts: 3, baseMs: 1, capMs: 5 },
    ...more,
  });
  return { pki, iot, hub, opts };
}

const devices = (pki: Pki, n: number) =>
  Array.from({ length: n }, (_, i) => makeDevice(pki, `fg100-${String(i).padStart(6, "0")}`));
const ref = (d: Device, more: object = {}) =>
  ({ deviceId: d.cert.deviceId, serial: d.cert.serial, remoteId: d.cert.sha256, ...more }) as never;

describe("AwsIotDriver against ministack (mTLS MQTT)", () => {
  it("a registered device connects and publishes under its own prefix; after disable it is refused", async () => {
    const { pki, opts } = await setup();
    const driver = new AwsIotDriver(opts());
    const trust = await driver.ensureTrust([pki.trusted]);
    expect(trust.endpoint).toMatch(/-ats\.iot\.us-east-1\.localhost:\d+$/);
    const [a, b, stranger] = devices(pki, 3);
    const out = await driver.register([a.cert, b.cert]);
    expect(out.every((o) => o.ok)).toBe(true);

    expect(await connect(a)).toEqual({ connected: true, published: true });
    expect(await connect(b)).toEqual({ connected: true, published: true });
    // never registered (its CA is trusted, the certificate is not known): refused
    expect((await connect(stranger)).connected).toBe(false);
    // the policy: client ID must be the thing's name (FG-HUB-001's rule, enforced by ministack here)
    expect((await connect(a, { clientId: b.cert.deviceId })).connected).toBe(false);
    // and topics only under fleet/<own thing>/
    expect(await connect(a, { topic: `fleet/${b.cert.deviceId}/telemetry` })).toEqual({
      connected: true,
      published: false,
    });

    await driver.disable([ref(a)]);
    const refused = await connect(a);
    expect(refused.connected).toBe(false);
    expect(await connect(b)).toEqual({ connected: true, published: true });

    // registered again: INACTIVE is not final, so it connects again
    await driver.register([a.cert]);
    expect(await connect(a)).toEqual({ connected: true, published: true });
    await driver.close();
  });

  it("jitp: a device disabled before it ever connected is registered INACTIVE and not admitted by the CA", async () => {
    const { pki, iot, opts } = await setup({ autoRegistration: true });
    const driver = new AwsIotDriver(opts({ mode: "jitp" }));
    const trust = await driver.ensureTrust([pki.trusted]);
    const [blocked, fresh] = devices(pki, 2);
    await driver.register([blocked.cert, fresh.cert]);
    expect((await iot.send(new ListCertificatesCommand({}))).certificates).toEqual([]);
    await driver.disable([ref(blocked, { der: blocked.cert.der })]);
    const status = async (id: string) =>
      (await iot.send(new DescribeCertificateCommand({ certificateId: id })).catch(() => undefined))
        ?.certificateDescription?.status;
    expect(await status(blocked.cert.sha256)).toBe("INACTIVE");

    // SNI with the account's endpoint name: the CA (SNI_ONLY) auto-registers unknown certificates
    const servername = trust.endpoint.replace(/:\d+$/, "");
    expect((await connect(fresh, { servername })).connected).toBe(false);
    expect(await status(fresh.cert.sha256)).toBe("PENDING_ACTIVATION"); // JITR took it (a JITP template would activate it)
    expect((await connect(blocked, { servername })).connected).toBe(false);
    expect(await status(blocked.cert.sha256)).toBe("INACTIVE"); // known, so never auto-registered
  });

  it("jitp needs a CA with auto-registration (checked before any device)", async () => {
    const { pki, opts } = await setup({ autoRegistration: false });
    const err = await new AwsIotDriver(opts({ mode: "jitp" })).ensureTrust([pki.trusted]).catch((e) => e);
    expect(err).toBeInstanceOf(FleetError);
    expect(err.code).toBe("CONFLICT");
    expect(err.message).toMatch(/autoRegistrationStatus: got DISABLE, want ENABLE/);
  });

  it("a CA made INACTIVE at AWS stops registration before any certificate", async () => {
    const { pki, iot, hub, opts } = await setup();
    await iot.send(new UpdateCACertificateCommand({ certificateId: hub.caId, newStatus: "INACTIVE" }));
    const err = await new AwsIotDriver(opts())
      .register([makeDevice(pki, "fg100-000001").cert])
      .catch((e) => e);
    expect(err.code).toBe("CONFLICT");
    expect((await iot.send(new ListCertificatesCommand({}))).certificates).toEqual([]);
  });

  it("bad credentials (ministack checks SigV4 under AUTH=true): a credentials error, the secret never shown", async () => {
    const { pki, opts } = await setup();
    const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    // an access key ministack does not know (its default key "test" is taken with any secret, so a
    // wrong secret cannot be shown here; the InvalidSignature mapping is tested on moto's proxy)
    for (const credentials of [{ accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: secret }]) {
      const err = await new AwsIotDriver(opts({ credentials })).ensureTrust([pki.trusted]).catch((e) => e);
      expect(err).toBeInstanceOf(FleetError);
      expect(err.code).toBe("UNAVAILABLE");
      expect(err.message).toMatch(
        /^AWS IoT 'ministack': the AWS credentials were refused \((UnrecognizedClientException|InvalidSignatureException): .+\): give valid credentials/,
      );
      expect(err.message).not.toContain(secret);
    }
    // and the endpoint it would have given devices
    const ep = await sdk(ms.endpoint).send(new DescribeEndpointCommand({ endpointType: "iot:Data-ATS" }));
    expect(ep.endpointAddress).toBeTruthy();
  });
});

describe("CA rollover against ministack (it checks each leaf against the CA named)", () => {
  it("during the overlap devices of both generations are registered under their own issuer and connect; after, the predecessor's superseded ones are refused", async () => {
    const { pki: pred, iot, hub, opts } = await setup();
    const succ = successorOf(pred);
    const reg = await iot.send(
      new RegisterCACertificateCommand({
        caCertificate: succ.issuing.certificatePem,
        setAsActive: true,
        allowAutoRegistration: false,
        certificateMode: "SNI_ONLY",
      }),
    );
    const succId = reg.certificateId as string;
    const caCertificates = [
      { id: succId, pem: succ.issuing.certificatePem },
      { id: hub.caId, pem: pred.issuing.certificatePem },
    ];
    // naming the wrong one of two CAs with one subject is refused (AWS: the leaf must verify under it)
    const stray = makeDevice(pred, "fg100-000999");
    const wrong = await iot
      .send(
        new RegisterCertificateCommand({
          certificatePem: stray.certPem,
          caCertificatePem: succ.issuing.certificatePem,
          status: "ACTIVE",
        }),
      )
      .catch((e) => e);
    expect([wrong?.name, wrong?.message]).toEqual([
      "CertificateValidationException",
      "The signature of the certificate failed verification against the provided CA certificate.",
    ]);

    const overlap = new AwsIotDriver(opts({ caCertificates }));
    expect((await overlap.ensureTrust([succ.trusted, { ...pred.trusted, generation: 1 }])).caIds).toEqual([
      succId,
      hub.caId,
    ]);
    const old = makeDevice(pred, "fg100-000001");
    const renewed = makeDevice(succ, "fg100-000001"); // the same device, re-issued under the successor
    const fresh = makeDevice(succ, "fg100-000002");
    const out = await overlap.register([old.cert, fresh.cert]);
    expect(out.every((o) => o.ok)).toBe(true);
    const byCa = async (id: string) =>
      ((await iot.send(new ListCertificatesByCACommand({ caCertificateId: id }))).certificates ?? [])
        .map((c) => c.certificateId)
        .sort();
    expect(await byCa(hub.caId)).toEqual([old.cert.sha256]);
    expect(await byCa(succId)).toEqual([fresh.cert.sha256]);
    expect(await connect(old)).toEqual({ connected: true, published: true });
    expect(await connect(fresh)).toEqual({ connected: true, published: true });

    // the rotation re-issues the old device under the successor, then disables its old certificate
    expect((await overlap.register([renewed.cert]))[0]).toMatchObject({ ok: true });
    expect(await connect(renewed)).toEqual({ connected: true, published: true });
    await overlap.disable([ref(old)]);
    expect((await connect(old)).connected).toBe(false);

    // no live certificate is the predecessor's: the trust list holds the successor alone
    const after = new AwsIotDriver(opts({ caCertificates }));
    expect((await after.ensureTrust([succ.trusted])).caIds).toEqual([succId]);
    const late = await after.register([makeDevice(pred, "fg100-000003").cert]);
    expect(late[0]).toMatchObject({ ok: false, retryable: false });
    expect(await connect(renewed)).toEqual({ connected: true, published: true });
    expect(await connect(fresh)).toEqual({ connected: true, published: true });
    expect((await connect(old)).connected).toBe(false);
    await overlap.close();
    await after.close();
  });
});

describe("farm devices (the station's CONNECT) against ministack", () => {
  const dir = tempDir("fg-aws-farm-");
  const ca = makeCa("AWS Farm");
  const ids = Array.from({ length: 6 }, (_, i) => deviceId("fg100", i));
  const certs: DeviceCert[] = [];
  let farm: RunningFarm;
  let client: StationClient;
  const sha = (b: Uint8Array) => crypto.createHash("sha256").update(b).digest("hex");
  const issuingPem = toPem("CERTIFICATE", ca.issuing);
  const trusted: TrustedCa = {
    name: "aws-farm",
    fingerprint: sha(ca.issuing),
    certificatePem: issuingPem,
    chainPem: issuingPem + toPem("CERTIFICATE", ca.root),
    crlPems: [],
  };

  beforeAll(async () => {
    farm = await farmFor(dir.path, { count: 10 });
    client = new StationClient({ port: farm.port });
    for (const d of ids) {
      const { publicKey } = await client.identify(d);
      await client.setTrustAnchor(d, ca.root);
      const chain = ca.chainFor(publicKey as Uint8Array, d);
      await client.install(d, chain);
      const leaf = chain[0] as Buffer;
      certs.push({
        deviceId: d,
        batch: "b1",
        serial: d,
        der: leaf,
        sha256: sha(leaf),
        issuer: trusted.fingerprint,
      });
    }
  }, 60_000);
  afterAll(async () => {
    await client?.close();
    await farm?.close();
    dir.remove();
  });

  it("registered farm devices connect over mTLS; decommissioned ones are refused", async () => {
    const iot = sdk(ms.endpoint);
    const hub = await provisionHub(iot, { issuing: { certificatePem: issuingPem } } as Pki);
    const driver = new AwsIotDriver({
      label: "AWS IoT 'ministack'",
      region,
      endpoint: ms.endpoint,
      credentials: creds,
      mode: "per-device",
      ratePerSecond: 0,
      caCertificates: [{ id: hub.caId, pem: issuingPem }],
      policyName: hub.policyName,
      thingTypeName: hub.thingTypeName,
      thingGroupName: hub.thingGroupName,
      batch: "b1",
    });
    await driver.ensureTrust([trusted]);
    const registered = certs.slice(0, 5); // the sixth is never registered
    expect((await driver.register(registered)).every((o) => o.ok)).toBe(true);
    const endpoint = { host: "127.0.0.1", port: ms.mqttPort as number, caPem: brokerCa };
    const topic = "fleet/{deviceId}/telemetry";
    const all = await connectDevices(client, { hub: endpoint, devices: ids, topic, concurrency: 3 });
    expect(all.connected).toBe(5);
    expect(all.refused.map((r) => r.deviceId)).toEqual([ids[5]]);

    const gone = registered.slice(0, 2);
    const dis = await driver.disable(
      gone.map((c) => ({ deviceId: c.deviceId, serial: c.serial, remoteId: c.sha256 })),
    );
    expect(dis.every((o) => o.ok)).toBe(true);
    const after = await connectDevices(client, { hub: endpoint, devices: ids, topic, concurrency: 3 });
    expect(after.connected).toBe(3);
    expect(after.refused.map((r) => r.deviceId).sort()).toEqual([ids[0], ids[1], ids[5]].sort());
    await driver.close();
  });
});
