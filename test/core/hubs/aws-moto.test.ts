/**
 * The AWS IoT driver against moto's server (moto 5.2.5, started on loopback by the test). moto is
 * shallow (hubs.md): it does not verify signatures, links a certificate to its CA only by the
 * exact PEM text, does not check credentials, and lets REVOKED go back to ACTIVE. So these tests
 * assert through the SDK what the driver made, and that the driver itself enforces what AWS
 * enforces. Throttling, dropped connections and AWS error bodies come from a small HTTP proxy in
 * front of moto (aws-fixtures.ts).
 */
import {
  DescribeCertificateCommand,
  DescribeThingCommand,
  ListCertificatesByCACommand,
  ListCertificatesCommand,
  ListTargetsForPolicyCommand,
  ListThingPrincipalsCommand,
  ListThingsCommand,
  ListThingsInThingGroupCommand,
  RegisterCACertificateCommand,
  RegisterCertificateCommand,
  UpdateCACertificateCommand,
  UpdateCertificateCommand,
} from "@aws-sdk/client-iot";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import {
  AwsIotDriver,
  type AwsIotDriverOptions,
  classifyAwsError,
  HubRunError,
} from "../../../core/hubs/aws";
import { type AwsEmulator, freePort, startMoto } from "../../helpers/aws-emulators";
import {
  creds,
  makeDevice,
  makePki,
  type Pki,
  provisionHub,
  region,
  sdk,
  startProxy,
  successorOf,
} from "./aws-fixtures";

let moto: AwsEmulator;
beforeAll(async () => {
  moto = await startMoto();
}, 120_000);
afterAll(async () => {
  await moto?.stop();
});
beforeEach(async () => {
  await moto.reset();
});

const fastRetry = { maxAttempts: 6, baseMs: 1, capMs: 5 };

async function setup(o: { autoRegistration?: boolean } = {}) {
  const pki = makePki();
  const iot = sdk(moto.endpoint);
  const hub = await provisionHub(iot, pki, o);
  const opts = (more: Partial<AwsIotDriverOptions> = {}): AwsIotDriverOptions => ({
    label: "AWS IoT 'test'",
    region,
    endpoint: moto.endpoint,
    credentials: creds,
    mode: "per-device",
    ratePerSecond: 0,
    caCertificates: [{ id: hub.caId, pem: pki.issuing.certificatePem }],
    policyName: hub.policyName,
    thingTypeName: hub.thingTypeName,
    thingGroupName: hub.thingGroupName,
    batch: "b1",
    retry: fastRetry,
    ...more,
  });
  return { pki, iot, hub, opts };
}

const devices = (pki: Pki, n: number, from = 0) =>
  Array.from({ length: n }, (_, i) => makeDevice(pki, `fg100-${String(from + i).padStart(6, "0")}`));

async function principalsOf(iot: ReturnType<typeof sdk>, thingName: string): Promise<string[]> {
  return (await iot.send(new ListThingPrincipalsCommand({ thingName }))).principals ?? [];
}

describe("AwsIotDriver against moto", () => {
  it("checks the CA first, registers certificates, things and attachments, and a rerun makes no duplicate", async () => {
    const { pki, iot, hub, opts } = await setup();
    const driver = new AwsIotDriver(opts());
    const trust = await driver.ensureTrust([pki.trusted]);
    // the CA id AWS (and moto, configured like AWS) gives is the SHA-256 of the DER
    expect(hub.caId).toBe(pki.trusted.fingerprint);
    expect(trust.caIds).toEqual([hub.caId]);
    expect(trust.endpoint).toMatch(/^[a-z0-9]+-ats\.iot\.us-east-1\.amazonaws\.com:8883$/);

    const devs = devices(pki, 5);
    const progress: number[] = [];
    const out = await driver.register(
      devs.map((d) => d.cert),
      (d) => progress.push(d),
    );
    expect(out.every((o) => o.ok)).toBe(true);
    expect(progress.at(-1)).toBe(5);
    for (const d of devs) {
      const o = out.find((x) => x.serial === d.cert.serial);
      expect(o).toEqual({ serial: d.cert.serial, ok: true, remoteId: d.cert.sha256 });
      const c = (await iot.send(new DescribeCertificateCommand({ certificateId: d.cert.sha256 })))
        .certificateDescription;
      expect(c?.status).toBe("ACTIVE");
      const thing = await iot.send(new DescribeThingCommand({ thingName: d.cert.deviceId }));
      expect(thing.thingTypeName).toBe(hub.thingTypeName);
      expect(thing.attributes).toEqual({ fleetguardBatch: "b1" });
      expect(await principalsOf(iot, d.cert.deviceId)).toEqual([c?.certificateArn]);
    }
    // linked to their CA (moto: only because the CA PEM passed is the registered text)
    const byCa =
      (await iot.send(new ListCertificatesByCACommand({ caCertificateId: hub.caId }))).certificates ?? [];
    expect(byCa.map((c) => c.certificateId).sort()).toEqual(devs.map((d) => d.cert.sha256).sort());
    expect(await driver.unknown(new Set(devs.slice(1).map((d) => d.cert.sha256)))).toEqual([
      devs[0].cert.sha256,
    ]);
    const targets =
      (await iot.send(new ListTargetsForPolicyCommand({ policyName: hub.policyName }))).targets ?? [];
    expect(targets.sort()).toEqual(
      devs.map((d) => `arn:aws:iot:us-east-1:123456789012:cert/${d.cert.sha256}`).sort(),
    );
    const inGroup = (
      await iot.send(new ListThingsInThingGroupCommand({ thingGroupName: hub.thingGroupName }))
    ).things;
    expect(inGroup?.sort()).toEqual(devs.map((d) => d.cert.deviceId).sort());

    // rerun (a new driver, as the next `up`): same ids, nothing twice
    const again = await new AwsIotDriver(opts()).register(devs.map((d) => d.cert));
    expect(again).toEqual(
      out
        .map((o) => ({ ...o }))
        .sort(
          (a, b) =>
            devs.findIndex((d) => d.cert.serial === a.serial) -
            devs.findIndex((d) => d.cert.serial === b.serial),
        ),
    );
    expect((await iot.send(new ListCertificatesCommand({}))).certificates).toHaveLength(5);
    expect((await iot.send(new ListThingsCommand({}))).things).toHaveLength(5);
    for (const d of devs) expect(await principalsOf(iot, d.cert.deviceId)).toHaveLength(1);
    expect(
      (await iot.send(new ListTargetsForPolicyCommand({ policyName: hub.policyName }))).targets,
    ).toHaveLength(5);
    await driver.close();
  });

  it("converges after a run killed between calls (certificate registered, nothing else)", async () => {
    const { pki, iot, hub, opts } = await setup();
    const [a, b] = devices(pki, 2);
    // what a kill -9 right after AWS answered RegisterCertificate leaves: the certificate, no thing
    await iot.send(
      new RegisterCertificateCommand({
        certificatePem: a.certPem,
        caCertificatePem: pki.issuing.certificatePem,
        status: "ACTIVE",
      }),
    );
    const out = await new AwsIotDriver(opts()).register([a.cert, b.cert]);
    expect(out).toEqual([
      { serial: a.cert.serial, ok: true, remoteId: a.cert.sha256 },
      { serial: b.cert.serial, ok: true, remoteId: b.cert.sha256 },
    ]);
    expect((await iot.send(new ListCertificatesCommand({}))).certificates).toHaveLength(2);
    expect(await principalsOf(iot, a.cert.deviceId)).toEqual([
      `arn:aws:iot:us-east-1:123456789012:cert/${a.cert.sha256}`,
    ]);
    const targets = (await iot.send(new ListTargetsForPolicyCommand({ policyName: hub.policyName }))).targets;
    expect(targets).toHaveLength(2);
  });

  it("refuses to register before the CA is registered and ACTIVE at AWS", async () => {
    const pki = makePki();
    const iot = sdk(moto.endpoint);
    const driver = new AwsIotDriver({
      label: "AWS IoT 'test'",
      region,
      endpoint: moto.endpoint,
      credentials: creds,
      mode: "per-device",
      caCertificates: [{ pem: pki.issuing.certificatePem }],
      policyName: "p",
      batch: "b1",
      retry: fastRetry,
    });
    const err = await driver.register([makeDevice(pki, "fg100-000001").cert]).catch((e) => e);
    expect(err).toBeInstanceOf(FleetError);
    expect(err.code).toBe("NOT_FOUND");
    expect(err.message).toMatch(
      /^AWS IoT 'test': CA [0-9a-f]{16}… \(fingerprint [0-9a-f]{16}…\) is not registered at AWS: register it \(aws\.iot\.CaCertificate\) before its certificates$/,
    );
    // moto would have taken the certificate without its CA: nothing was sent
    expect((await iot.send(new ListCertificatesCommand({}))).certificates).toEqual([]);

    const hub = await provisionHub(iot, pki);
    await iot.send(new UpdateCACertificateCommand({ certificateId: hub.caId, newStatus: "INACTIVE" }));
    const inactive = await driver.ensureTrust([pki.trusted]).catch((e) => e);
    expect(inactive.code).toBe("CONFLICT");
    expect(inactive.message).toContain("status: got INACTIVE, want ACTIVE");
  });

  it("disables: INACTIVE, then detached from thing and policy; read reports it; remove deletes", async () => {
    const { pki, iot, hub, opts } = await setup();
    const driver = new AwsIotDriver(opts());
    const devs = devices(pki, 3);
    await driver.register(devs.map((d) => d.cert));
    const [gone, ...kept] = devs;
    const dis = await driver.disable([
      { deviceId: gone.cert.deviceId, serial: gone.cert.serial, remoteId: gone.cert.sha256 },
    ]);
    expect(dis).toEqual([{ serial: gone.cert.serial, ok: true, remoteId: gone.cert.sha256 }]);
    const c = (await iot.send(new DescribeCertificateCommand({ certificateId: gone.cert.sha256 })))
      .certificateDescription;
    expect(c?.status).toBe("INACTIVE");
    expect(await principalsOf(iot, gone.cert.deviceId)).toEqual([]);
    const targets =
      (await iot.send(new ListTargetsForPolicyCommand({ policyName: hub.policyName }))).targets ?? [];
    expect(targets).not.toContain(c?.certificateArn);
    expect(targets).toHaveLength(2);
    // disabling again converges (nothing to detach)
    expect(
      (
        await driver.disable([
          { deviceId: gone.cert.deviceId, serial: gone.cert.serial, remoteId: gone.cert.sha256 },
        ])
      )[0].ok,
    ).toBe(true);

    const refs = devs.map((d) => ({
      deviceId: d.cert.deviceId,
      serial: d.cert.serial,
      remoteId: d.cert.sha256,
    }));
    const unknownCert = makeDevice(pki, "fg100-999999");
    const read = await driver.read([
      ...refs,
      {
        deviceId: unknownCert.cert.deviceId,
        serial: unknownCert.cert.serial,
        remoteId: unknownCert.cert.sha256,
      },
    ]);
    expect(read.map((r) => r.status)).toEqual(["inactive", "active", "active", "missing"]);

    const removed = await driver.remove(refs);
    expect(removed.every((o) => o.ok)).toBe(true);
    expect((await iot.send(new ListCertificatesCommand({}))).certificates).toEqual([]);
    expect((await iot.send(new ListThingsCommand({}))).things).toEqual([]);
    expect((await driver.read(refs)).map((r) => r.status)).toEqual(["missing", "missing", "missing"]);
    expect(kept).toHaveLength(2);
  });

  it("never makes a REVOKED certificate ACTIVE again (moto itself would allow it)", async () => {
    const { pki, iot, opts } = await setup();
    const driver = new AwsIotDriver(opts());
    const [a, b] = devices(pki, 2);
    await driver.register([a.cert, b.cert]);
    // moto lets REVOKED -> ACTIVE, which AWS refuses: shown on b, so the driver's refusal is its own
    await iot.send(new UpdateCertificateCommand({ certificateId: b.cert.sha256, newStatus: "REVOKED" }));
    await iot.send(new UpdateCertificateCommand({ certificateId: b.cert.sha256, newStatus: "ACTIVE" }));
    expect(
      (await iot.send(new DescribeCertificateCommand({ certificateId: b.cert.sha256 })))
        .certificateDescription?.status,
    ).toBe("ACTIVE");

    await iot.send(new UpdateCertificateCommand({ certificateId: a.cert.sha256, newStatus: "REVOKED" }));
    const again = await driver.register([a.cert]);
    expect(again).toEqual([
      {
        serial: a.cert.serial,
        ok: false,
        reason: "REVOKED is final at AWS: the certificate is not reactivated",
        retryable: false,
      },
    ]);
    expect(
      (await iot.send(new DescribeCertificateCommand({ certificateId: a.cert.sha256 })))
        .certificateDescription?.status,
    ).toBe("REVOKED");
    // disabling a REVOKED certificate leaves it REVOKED (never INACTIVE, from which it could come back)
    await driver.disable([{ deviceId: a.cert.deviceId, serial: a.cert.serial, remoteId: a.cert.sha256 }]);
    expect(
      (await iot.send(new DescribeCertificateCommand({ certificateId: a.cert.sha256 })))
        .certificateDescription?.status,
    ).toBe("REVOKED");
    // a revoked device is disabled as REVOKED
    await driver.disable([
      { deviceId: b.cert.deviceId, serial: b.cert.serial, remoteId: b.cert.sha256, revoked: true } as never,
    ]);
    expect(
      (await iot.send(new DescribeCertificateCommand({ certificateId: b.cert.sha256 })))
        .certificateDescription?.status,
    ).toBe("REVOKED");
  });

  it("reactivates a certificate that is INACTIVE when asked to register it (INACTIVE is not final)", async () => {
    const { pki, iot, opts } = await setup();
    const driver = new AwsIotDriver(opts());
    const [a] = devices(pki, 1);
    await driver.register([a.cert]);
    await driver.disable([{ deviceId: a.cert.deviceId, serial: a.cert.serial, remoteId: a.cert.sha256 }]);
    const out = await driver.register([a.cert]);
    expect(out[0].ok).toBe(true);
    expect(
      (await iot.send(new DescribeCertificateCommand({ certificateId: a.cert.sha256 })))
        .certificateDescription?.status,
    ).toBe("ACTIVE");
    expect(await principalsOf(iot, a.cert.deviceId)).toHaveLength(1);
  });

  it("jitp: register makes no call; disabling a device that never connected registers it INACTIVE (REVOKED when revoked)", async () => {
    const { pki, iot, opts } = await setup({ autoRegistration: true });
    const driver = new AwsIotDriver(opts({ mode: "jitp" }));
    expect(driver.mode).toBe("ca");
    const [a, b, c] = devices(pki, 3);
    const out = await driver.register([a.cert, b.cert, c.cert]);
    expect(out).toEqual([a, b, c].map((d) => ({ serial: d.cert.serial, ok: true, remoteId: d.cert.sha256 })));
    expect((await iot.send(new ListCertificatesCommand({}))).certificates).toEqual([]);
    const dis = await driver.disable([
      { deviceId: a.cert.deviceId, serial: a.cert.serial, remoteId: a.cert.sha256, der: a.cert.der },
      {
        deviceId: b.cert.deviceId,
        serial: b.cert.serial,
        remoteId: b.cert.sha256,
        der: b.cert.der,
        revoked: true,
      },
      { deviceId: c.cert.deviceId, serial: c.cert.serial, remoteId: c.cert.sha256 },
    ] as never);
    expect(dis.map((o) => o.ok)).toEqual([true, true, false]);
    expect(dis[2]).toMatchObject({
      retryable: false,
      reason: expect.stringContaining("cannot block it at AWS before first connect"),
    });
    const st = async (id: string) =>
      (await iot.send(new DescribeCertificateCommand({ certificateId: id }))).certificateDescription?.status;
    expect(await st(a.cert.sha256)).toBe("INACTIVE");
    expect(await st(b.cert.sha256)).toBe("REVOKED");
    expect(
      (await driver.read([{ deviceId: c.cert.deviceId, serial: c.cert.serial, remoteId: c.cert.sha256 }]))[0]
        .status,
    ).toBe("missing");

    // moto does not keep the CA's auto-registration setting (DescribeCACertificate has no
    // autoRegistrationStatus), so the driver's check of it is tested against ministack
  });

  it("holds each API to ratePerSecond (virtual time: no real sleeping)", async () => {
    const { pki, opts } = await setup();
    const proxy = await startProxy(moto.endpoint);
    // one device at a time, so the clock moves only by the buckets' waits
    let t = 0;
    const clock = {
      now: () => t,
      sleep: async (ms: number) => {
        t += ms;
      },
    };
    const at = new Map<string, number[]>();
    proxy.throttle = (_n, path) => {
      const key = path.split("?")[0]?.replace(/\/fg100-\d+/, "/{thing}") ?? "";
      at.set(key, [...(at.get(key) ?? []), t]);
      return false;
    };
    try {
      const driver = new AwsIotDriver(
        opts({ endpoint: proxy.url, ratePerSecond: 10, concurrency: 1, clock }),
      );
      await driver.ensureTrust([pki.trusted]);
      const out = await driver.register(devices(pki, 12).map((d) => d.cert));
      expect(out.every((o) => o.ok)).toBe(true);
      const perApi = [...at.entries()].filter(([, ts]) => ts.length === 12);
      expect(perApi.map(([k]) => k).sort()).toEqual(
        [
          "/certificate/register",
          "/target-policies/fleetguard-devices",
          "/thing-groups/addThingToThingGroup",
          "/things/{thing}",
          "/things/{thing}/principals",
        ].sort(),
      );
      for (const [, ts] of perApi) {
        // evenly spaced at 1/rate: 100 ms of virtual time between two calls of one API
        for (let i = 1; i < ts.length; i++)
          expect((ts[i] as number) - (ts[i - 1] as number)).toBeGreaterThanOrEqual(100 - 1e-9);
      }
      expect(t).toBeCloseTo(1100, 6); // 12 devices: 11 waits of 100 ms
    } finally {
      await proxy.close();
    }
  });

  it("backs off on throttling (429 ThrottlingException every 3rd call) and completes", async () => {
    const { pki, iot, opts } = await setup();
    const proxy = await startProxy(moto.endpoint);
    try {
      proxy.throttle = (nth) => nth % 3 === 0;
      const driver = new AwsIotDriver(
        opts({ endpoint: proxy.url, retry: { maxAttempts: 10, baseMs: 1, capMs: 10 } }),
      );
      const devs = devices(pki, 6);
      const out = await driver.register(devs.map((d) => d.cert));
      expect(out.every((o) => o.ok)).toBe(true);
      expect(proxy.throttled).toBeGreaterThan(5);
      expect((await iot.send(new ListCertificatesCommand({}))).certificates).toHaveLength(6);
      for (const d of devs) expect(await principalsOf(iot, d.cert.deviceId)).toHaveLength(1);
    } finally {
      await proxy.close();
    }
  });

  it("says the count done when throttling persists", async () => {
    const { pki, opts } = await setup();
    const proxy = await startProxy(moto.endpoint);
    try {
      const driver = new AwsIotDriver(
        opts({ endpoint: proxy.url, concurrency: 1, retry: { maxAttempts: 3, baseMs: 1, capMs: 2 } }),
      );
      await driver.ensureTrust([pki.trusted]);
      const devs = devices(pki, 4);
      let done = 0;
      const err = await driver
        .register(
          devs.map((d) => d.cert),
          (d) => {
            done = d;
            if (d === 2) proxy.throttle = () => true;
          },
        )
        .catch((e) => e);
      expect(done).toBe(2);
      expect(err).toBeInstanceOf(HubRunError);
      expect(err.code).toBe("UNAVAILABLE");
      expect(err.message).toBe(
        "AWS IoT 'test': 2 of 4 registered, then: RegisterCertificate still throttled after back-off (3 attempts): ThrottlingException: Rate exceeded; set a ratePerSecond (now off) or ask AWS for a higher quota",
      );
      expect(err.outcomes.map((o: { ok: boolean }) => o.ok)).toEqual([true, true, false, false]);
      expect(err.outcomes.slice(2).every((o: { retryable: boolean }) => o.retryable)).toBe(true);
    } finally {
      await proxy.close();
    }
  });

  it("an unreachable hub: UNAVAILABLE naming the hub, with the count done", async () => {
    const { pki, opts } = await setup();
    const closed = await freePort();
    const nowhere = new AwsIotDriver(
      opts({ endpoint: `http://127.0.0.1:${closed}`, retry: { maxAttempts: 2, baseMs: 1, capMs: 2 } }),
    );
    const e1 = await nowhere.ensureTrust([pki.trusted]).catch((e) => e);
    expect(e1).toBeInstanceOf(FleetError);
    expect(e1.code).toBe("UNAVAILABLE");
    expect(e1.message).toBe(
      `AWS IoT 'test': cannot reach http://127.0.0.1:${closed} (2 attempts): ECONNREFUSED (${e1.message.split("ECONNREFUSED (")[1]}`,
    );

    // the hub goes away mid-run: the count done, and what was not tried is retryable
    const proxy = await startProxy(moto.endpoint);
    try {
      const driver = new AwsIotDriver(
        opts({ endpoint: proxy.url, concurrency: 1, retry: { maxAttempts: 2, baseMs: 1, capMs: 2 } }),
      );
      const devs = devices(pki, 5);
      const err = await driver
        .register(
          devs.map((d) => d.cert),
          (d) => {
            if (d === 3) proxy.down = true;
          },
        )
        .catch((e) => e);
      expect(err).toBeInstanceOf(HubRunError);
      expect(err.code).toBe("UNAVAILABLE");
      expect(err.message).toMatch(
        new RegExp(
          `^AWS IoT 'test': 3 of 5 registered, then: cannot reach ${proxy.url} \\(2 attempts\\): ECONNRESET`,
        ),
      );
      expect(err.outcomes.filter((o: { ok: boolean }) => o.ok)).toHaveLength(3);
    } finally {
      await proxy.close();
    }
  });

  it("maps expired and unrecognised credentials to a credentials error, without the secret", async () => {
    const { pki, opts } = await setup();
    const proxy = await startProxy(moto.endpoint);
    try {
      for (const [type, message] of [
        ["ExpiredTokenException", "The security token included in the request is expired"],
        ["UnrecognizedClientException", "The security token included in the request is invalid."],
        [
          "InvalidSignatureException",
          "The request signature we calculated does not match the signature you provided.",
        ],
      ]) {
        proxy.failWith = { status: 403, type, message };
        const secret = "s3cr3t-never-printed";
        const driver = new AwsIotDriver(
          opts({ endpoint: proxy.url, credentials: { accessKeyId: "AKIAEXAMPLE", secretAccessKey: secret } }),
        );
        const err = await driver.ensureTrust([pki.trusted]).catch((e) => e);
        expect(err).toBeInstanceOf(FleetError);
        expect(err.code).toBe("UNAVAILABLE");
        expect(err.message).toBe(
          `AWS IoT 'test': the AWS credentials were refused (${type}: ${message}): give valid credentials (options or the default chain: environment, profile, SSO, instance role)`,
        );
        expect(err.message).not.toContain(secret);
        expect(err.message).not.toContain("AKIAEXAMPLE");
      }
    } finally {
      await proxy.close();
    }
  });

  it("an identity that may not call an API stops the run: the count done, which API", async () => {
    const { pki, opts } = await setup();
    const proxy = await startProxy(moto.endpoint);
    try {
      const driver = new AwsIotDriver(opts({ endpoint: proxy.url, concurrency: 1 }));
      await driver.ensureTrust([pki.trusted]);
      const err = await driver
        .register(
          devices(pki, 3).map((d) => d.cert),
          (d) => {
            if (d === 1)
              proxy.failWith = {
                status: 403,
                type: "AccessDeniedException",
                message: "User is not authorized to perform: iot:RegisterCertificate",
              };
          },
        )
        .catch((e) => e);
      expect(err).toBeInstanceOf(HubRunError);
      expect(err.message).toBe(
        "AWS IoT 'test': 1 of 3 registered, then: the AWS credentials may not call RegisterCertificate (AccessDeniedException: User is not authorized to perform: iot:RegisterCertificate): grant it to the identity that runs fleetguard",
      );
    } finally {
      await proxy.close();
    }
  });

  it("classifies AWS errors", () => {
    expect(classifyAwsError({ name: "ThrottlingException" })).toBe("throttled");
    expect(classifyAwsError({ name: "Whatever", $metadata: { httpStatusCode: 429 } })).toBe("throttled");
    expect(classifyAwsError({ name: "ExpiredTokenException" })).toBe("credentials");
    expect(classifyAwsError({ name: "ServiceUnavailableException" })).toBe("transient");
    expect(classifyAwsError({ name: "AccessDeniedException" })).toBe("denied");
    expect(classifyAwsError({ name: "Error", cause: { code: "ECONNREFUSED" } })).toBe("unreachable");
    expect(
      classifyAwsError({ name: "CertificateValidationException", $metadata: { httpStatusCode: 400 } }),
    ).toBe("refused");
  });

  it("rejects bad options with the field named", () => {
    const pem = makePki().issuing.certificatePem;
    const base: AwsIotDriverOptions = {
      label: "AWS IoT 'x'",
      region,
      mode: "per-device",
      caCertificates: [{ pem }],
      policyName: "p",
      batch: "b1",
    };
    expect(() => new AwsIotDriver({ ...base, region: "mars" })).toThrow(
      /^AWS IoT 'x': region: got "mars", want an AWS region/,
    );
    expect(() => new AwsIotDriver({ ...base, mode: "bulk" as never })).toThrow(
      /^AWS IoT 'x': mode: got "bulk"/,
    );
    expect(() => new AwsIotDriver({ ...base, ratePerSecond: -1 })).toThrow(
      /^AWS IoT 'x': ratePerSecond: got -1/,
    );
    expect(() => new AwsIotDriver({ ...base, caCertificates: [] })).toThrow(
      /^AWS IoT 'x': caCertificates: got array\(0\)/,
    );
    expect(() => new AwsIotDriver({ ...base, caCertificates: [{ pem, id: "nope" }] })).toThrow(
      /caCertificates\[0\]\.id: got "nope"/,
    );
    expect(new AwsIotDriver({ ...base, ratePerSecond: 0 }).ratePerSecond).toBe(Number.POSITIVE_INFINITY);
    expect(new AwsIotDriver(base).ratePerSecond).toBe(10);
  });
});

describe("CA rollover: two CA certificates with one subject (moto)", () => {
  async function rollover(o: { autoRegistration?: boolean } = {}) {
    const base = await setup(o);
    const pred = base.pki;
    const succ = successorOf(pred);
    // what the second aws.iot.CaCertificate makes (components/hub-aws.ts: `<hub>-ca-<name>-g2`)
    const reg = await base.iot.send(
      new RegisterCACertificateCommand({
        caCertificate: succ.issuing.certificatePem,
        setAsActive: true,
        allowAutoRegistration: o.autoRegistration ?? false,
        certificateMode: "SNI_ONLY",
      }),
    );
    const succId = reg.certificateId as string;
    expect(succId).toBe(succ.trusted.fingerprint);
    expect(succId).not.toBe(base.hub.caId);
    // the hub's inputs list both CAs (the component declares the predecessor while the program's generation is 2)
    const caCertificates = [
      { id: succId, pem: succ.issuing.certificatePem },
      { id: base.hub.caId, pem: pred.issuing.certificatePem },
    ];
    return { ...base, pred, succ, succId, predId: base.hub.caId, caCertificates };
  }
  const byCa = async (iot: ReturnType<typeof sdk>, caCertificateId: string) =>
    ((await iot.send(new ListCertificatesByCACommand({ caCertificateId }))).certificates ?? [])
      .map((c) => c.certificateId)
      .sort();
  const status = async (iot: ReturnType<typeof sdk>, id: string) =>
    (await iot.send(new DescribeCertificateCommand({ certificateId: id }))).certificateDescription?.status;

  it("during the overlap both are required ACTIVE and each device is registered under its own issuer; after, the predecessor is neither required nor used", async () => {
    const { iot, pred, succ, succId, predId, caCertificates, opts } = await rollover();
    const overlap = new AwsIotDriver(opts({ caCertificates }));
    const trust = await overlap.ensureTrust([succ.trusted, { ...pred.trusted, generation: 1 }]);
    expect(trust.caIds).toEqual([succId, predId]);

    // devices of both generations (the predecessor's not yet re-issued, new ones under the successor)
    const old = devices(pred, 3);
    const fresh = Array.from({ length: 3 }, (_, i) =>
      makeDevice(succ, `fg200-${String(i).padStart(6, "0")}`),
    );
    const out = await overlap.register([...old, ...fresh].map((d) => d.cert));
    expect(out.every((o) => o.ok)).toBe(true);
    // moto links a certificate to the CA whose exact PEM RegisterCertificate named: each its own issuer
    expect(await byCa(iot, predId)).toEqual(old.map((d) => d.cert.sha256).sort());
    expect(await byCa(iot, succId)).toEqual(fresh.map((d) => d.cert.sha256).sort());

    // both generations must be ACTIVE while both are trusted
    await iot.send(new UpdateCACertificateCommand({ certificateId: predId, newStatus: "INACTIVE" }));
    const inactive = await new AwsIotDriver(opts({ caCertificates }))
      .ensureTrust([succ.trusted, pred.trusted])
      .catch((e) => e);
    expect(inactive).toMatchObject({ code: "CONFLICT" });
    expect(inactive.message).toBe(
      `AWS IoT 'test': CA ${predId.slice(0, 16)}… status: got INACTIVE, want ACTIVE (certificates under an inactive CA cannot connect)`,
    );

    // the rotation has moved every device: the trust list holds the successor alone. The
    // predecessor is still configured (Pulumi declares it until the next generation) but is not
    // required (it is INACTIVE here and the trust holds), and nothing is registered under it
    const after = new AwsIotDriver(opts({ caCertificates }));
    expect((await after.ensureTrust([succ.trusted])).caIds).toEqual([succId]);
    const late = makeDevice(pred, "fg100-000900");
    const next = makeDevice(succ, "fg200-000900");
    const [refused, ok] = await after.register([late.cert, next.cert]);
    expect(refused).toEqual({
      serial: late.cert.serial,
      ok: false,
      retryable: false,
      reason: `issuer ${pred.trusted.fingerprint.slice(0, 16)}… is an earlier generation of a CA this hub no longer trusts (rolled over): no certificate is registered under it`,
    });
    expect(ok).toEqual({ serial: next.cert.serial, ok: true, remoteId: next.cert.sha256 });
    expect(await byCa(iot, predId)).toEqual(old.map((d) => d.cert.sha256).sort());
    expect(await byCa(iot, succId)).toEqual([...fresh, next].map((d) => d.cert.sha256).sort());

    // the predecessor's superseded certificates are disabled as always
    const dis = await after.disable(
      old.map((d) => ({ deviceId: d.cert.deviceId, serial: d.cert.serial, remoteId: d.cert.sha256 })),
    );
    expect(dis.every((o) => o.ok)).toBe(true);
    for (const d of old) expect(await status(iot, d.cert.sha256)).toBe("INACTIVE");
    // a certificate registered under the predecessor behind fleetguard's back is still found
    const rogue = makeDevice(pred, "fg100-000666");
    await iot.send(
      new RegisterCertificateCommand({
        certificatePem: rogue.certPem,
        caCertificatePem: pred.issuing.certificatePem,
        status: "ACTIVE",
      }),
    );
    const known = new Set([...old, ...fresh, next].map((d) => d.cert.sha256));
    expect(await after.unknown(known)).toEqual([rogue.cert.sha256]);
    await overlap.close();
    await after.close();
  });

  it("jitp: a predecessor's certificate that never connected is blocked under its own issuer (found by signature: the subjects are one)", async () => {
    const { iot, pred, succ, succId, predId, caCertificates, opts } = await rollover({
      autoRegistration: true,
    });
    const driver = new AwsIotDriver(opts({ mode: "jitp", caCertificates }));
    await driver.ensureTrust([succ.trusted]);
    const [a] = devices(pred, 1);
    const b = makeDevice(succ, "fg200-000001");
    const dis = await driver.disable([
      { deviceId: a.cert.deviceId, serial: a.cert.serial, remoteId: a.cert.sha256, der: a.cert.der },
      {
        deviceId: b.cert.deviceId,
        serial: b.cert.serial,
        remoteId: b.cert.sha256,
        der: b.cert.der,
        revoked: true,
      },
    ] as never);
    expect(dis.every((o) => o.ok)).toBe(true);
    expect(await byCa(iot, predId)).toEqual([a.cert.sha256]);
    expect(await byCa(iot, succId)).toEqual([b.cert.sha256]);
    expect(await status(iot, a.cert.sha256)).toBe("INACTIVE");
    expect(await status(iot, b.cert.sha256)).toBe("REVOKED");
    await driver.close();
  });

  it("refuses a trust list whose two CAs of one name differ in subject or share a generation", async () => {
    const { pki, opts } = await setup();
    const other = makePki("other");
    const d = new AwsIotDriver(opts());
    const subj = await d
      .ensureTrust([pki.trusted, { ...other.trusted, name: pki.trusted.name, generation: 2 }])
      .catch((e) => e);
    expect(subj).toMatchObject({ code: "INVALID_INPUT" });
    expect(subj.message).toMatch(
      /^AWS IoT 'test': cas\[1\]: got "CA 'iss' with subject .*CN=Test Issuing other.*", want the subject of its other generation \(.*CN=Test Issuing iss.*\): a rollover keeps the subject$/,
    );
    const succ = successorOf(pki);
    const gen = await d
      .ensureTrust([pki.trusted, { ...succ.trusted, generation: undefined }])
      .catch((e) => e);
    expect(gen.message).toBe(
      "AWS IoT 'test': cas[1].generation: got 1, want a generation other than that of the other CA named 'iss'",
    );
    const fp = await d.ensureTrust([{ ...pki.trusted, fingerprint: "deadbeef" }]).catch((e) => e);
    expect(fp.message).toMatch(
      /^AWS IoT 'test': cas\[0\]\.fingerprint: got "deadbeef", want [0-9a-f]{64} \(the certificate's SHA-256\)$/,
    );
    await d.close();
  });
});
