/**
 * HubRegistration's resource graph with Pulumi mocks (the engine runs it in
 * test/integration/hub-local.test.ts): one dynamic resource per hub and batch, named by batch;
 * AWS and Azure infrastructure as ordinary resources that the per-batch resources wait for; the
 * hub's settings secret; the declared hub checked by the policy at construction; bad input
 * naming the field.
 */
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it } from "vitest";
import { CaHierarchy } from "../../components/CaHierarchy";
import { DeviceIdentityBatch } from "../../components/DeviceIdentityBatch";
import {
  checkHubArgs,
  declaredHubs,
  HubRegistration,
  type HubRegistrationArgs,
  trustedCas,
} from "../../components/HubRegistration";

type Registered = { type: string; name: string; inputs: Record<string, unknown> };
const registered: Registered[] = [];

const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const isSecret = (v: unknown) => !!v && typeof v === "object" && SECRET_SIG in (v as object);
function unwrap(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(unwrap);
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (SECRET_SIG in o) return unwrap(o.value);
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, unwrap(x)]));
  }
  return v;
}

beforeAll(() => {
  pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        const state: Record<string, unknown> = { ...args.inputs };
        if (args.type === "pulumi-nodejs:dynamic:Resource") {
          // a CA: enough of its outputs for the batch and the hub to be declared
          Object.assign(state, {
            certificatePem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
            chainPem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
            keyRef: { custody: "embedded", location: "x", keyId: "k", publicKeySha256: "0".repeat(64) },
            crlPem: "-----BEGIN X509 CRL-----\nAA==\n-----END X509 CRL-----\n",
            fingerprintSha256: "ab".repeat(32),
            registered: 0,
            active: 0,
            disabled: 0,
            failed: 0,
            endpoint: "e",
            caIds: [],
            crl: { path: "crl/x.crl.pem", crlNumber: 1, revoked: 0 },
          });
        }
        if (args.type === "azure-native:deviceprovisioningservices:IotDpsResource")
          Object.assign(state, {
            name: args.inputs.provisioningServiceName,
            properties: {
              idScope: "0ne00000001",
              serviceOperationsHostName: "dps.azure-devices-provisioning.net",
            },
          });
        return { id: `${args.name}-id`, state };
      },
      call(args) {
        if (args.token === "azure-native:deviceprovisioningservices:listIotDpsResourceKeysForKeyName")
          return { primaryKey: "c2VjcmV0LWtleQ==", keyName: args.inputs.keyName };
        if (args.token.startsWith("azure-native:iothub:listIotHubResourceKeysForKeyName"))
          return { primaryKey: "aHViLWtleQ==", keyName: args.inputs.keyName };
        return args.inputs;
      },
    },
    "fleet",
    "unit",
    false,
  );
});

const POLICY = path.join(__dirname, "..", "..", "policies", "baseline.yaml");

function fleet(prefix: string, generation?: number) {
  const pki = new CaHierarchy(`${prefix}-pki`, {
    root: {
      name: "root",
      algorithm: "ecdsa-p256",
      subject: { commonName: "R" },
      validityDays: 3650,
      pathLen: 1,
    },
    issuing: [
      {
        name: "line",
        algorithm: "ecdsa-p256",
        subject: { commonName: "L" },
        validityDays: 730,
        ...(generation ? { generation } : {}),
      },
    ],
  });
  const lot = (name: string) =>
    new DeviceIdentityBatch(`${prefix}-${name}`, {
      name,
      model: "fg100",
      serials: { count: 10 },
      identitySource: "puf",
      issuingCa: pki.issuingCa("line"),
      station: { port: 7000 },
    });
  return { pki, a: lot("lot-a"), b: lot("lot-b") };
}

const hubResources = (prefix: string) =>
  registered.filter(
    (r) =>
      r.type === "pulumi-nodejs:dynamic:Resource" &&
      r.name.startsWith(prefix) &&
      r.inputs.kind === "fleetguard:hub",
  );
/** Until `n` hub resources of `prefix` are registered (they wait for their batch and the hub's infrastructure). */
async function settle(prefix: string, n: number): Promise<void> {
  for (let i = 0; i < 1200 && hubResources(prefix).length < n; i++)
    await new Promise((r) => setTimeout(r, 50));
}

describe("HubRegistration (mocks)", () => {
  it("local: one dynamic resource per batch, named by batch, with the hub's settings secret", async () => {
    const { a, b } = fleet("l");
    new HubRegistration("l-hub", { batches: [a, b], hub: { kind: "local", stateDir: ".state/hub" } });
    await settle("l-hub", 2);
    const rs = hubResources("l-hub");
    expect(rs.map((r) => r.name).sort()).toEqual(["l-hub-lot-a", "l-hub-lot-b"]);
    const r = rs.find((x) => x.name === "l-hub-lot-a")!;
    expect(isSecret(r.inputs.hub)).toBe(true);
    expect(unwrap(r.inputs.hub)).toEqual({ kind: "local", stateDir: ".state/hub" });
    expect(r.inputs).toMatchObject({ registration: "l-hub", batch: "lot-a" });
    expect(unwrap(r.inputs.trust)).toMatchObject({
      name: "line",
      batchCrl: { path: "crl/x.crl.pem", crlNumber: 1 },
    });
    // the CRLs of the CAs above the issuing CA (here the root's)
    expect((unwrap(r.inputs.trust) as { crlPems: string[] }).crlPems).toHaveLength(1);
  });

  it("aws: the CA registration, policy, thing type and group as resources; the per-batch resources get their names and the CA once", async () => {
    const { a, b } = fleet("w");
    new HubRegistration("w-hub", {
      batches: [a, b],
      hub: { kind: "aws", region: "eu-central-1", label: "prod", endpoint: "http://127.0.0.1:5000" },
      policy: POLICY,
    });
    await settle("w-hub", 2);
    const aws = registered.filter((r) => r.type.startsWith("aws:") && r.name.startsWith("w-hub"));
    expect(aws.filter((r) => r.type === "aws:iot/caCertificate:CaCertificate").map((r) => r.name)).toEqual([
      "w-hub-ca-line",
    ]);
    expect(aws.map((r) => r.type)).toEqual(
      expect.arrayContaining([
        "aws:iot/policy:Policy",
        "aws:iot/thingType:ThingType",
        "aws:iot/thingGroup:ThingGroup",
      ]),
    );
    const r = hubResources("w-hub").find((x) => x.name === "w-hub-lot-b")!;
    expect(unwrap(r.inputs.hub)).toMatchObject({
      kind: "aws",
      account: "prod",
      region: "eu-central-1",
      mode: "per-device",
      ratePerSecond: 10,
      policyName: "w-hub-devices",
      caCertificates: [{ id: "w-hub-ca-line-id" }],
    });
  });

  it("azure: DPS, its hub and the verified CA as resources; the SAS key read from the DPS, secret", async () => {
    const { a } = fleet("z");
    new HubRegistration("z-hub", {
      batches: [a],
      hub: { kind: "azure", resourceGroupName: "rg", location: "westeurope", iotHub: { create: {} } },
      policy: POLICY,
    });
    await settle("z-hub", 1);
    expect(
      registered
        .filter((r) => r.name.startsWith("z-hub") && r.type.startsWith("azure-native:"))
        .map((r) => r.type),
    ).toEqual(
      expect.arrayContaining([
        "azure-native:deviceprovisioningservices:IotDpsResource",
        "azure-native:deviceprovisioningservices:DpsCertificate",
      ]),
    );
    const r = hubResources("z-hub")[0]!;
    expect(isSecret(r.inputs.hub)).toBe(true);
    expect(unwrap(r.inputs.hub)).toMatchObject({
      kind: "azure",
      mode: "group",
      sasKeyName: "provisioningserviceowner",
      sasKey: "c2VjcmV0LWtleQ==",
    });
  });

  it("the declared hub is what the policy sees, and a policy that refuses it stops the program", () => {
    const { a } = fleet("p");
    const aws = declaredHubs("p-hub", { batches: [a], hub: { kind: "aws", region: "eu-central-1" } });
    expect(aws.aws?.policies?.[0]?.name).toBe("p-hub-devices");
    expect(JSON.stringify(aws.aws?.policies?.[0]?.document)).toContain("${iot:Connection.Thing.ThingName}");
    // logging is required at ERROR (FG-HUB-003) by a policy that makes it mandatory
    const strict = {
      name: "strict",
      spec: { hubs: { aws: { minLogLevel: "INFO" } }, enforcement: { "FG-HUB-003": "mandatory" } },
    };
    expect(
      () =>
        new HubRegistration("p-hub2", {
          batches: [a],
          hub: { kind: "aws", region: "eu-central-1" },
          policy: strict as never,
        }),
    ).toThrow(/HubRegistration 'p-hub2': policy 'strict' refuses this declaration .*FG-HUB-003/s);
  });

  it("aws with issuing CAs alone (just-in-time provisioning): the CA registrations and no per-device resource", async () => {
    const { pki } = fleet("j");
    new HubRegistration("j-hub", {
      issuingCas: [pki.issuingCa("line")],
      hub: { kind: "aws", region: "eu-central-1", mode: "jitp" },
    });
    for (let i = 0; i < 100 && !registered.some((r) => r.name === "j-hub-ca-line"); i++)
      await new Promise((r) => setTimeout(r, 50));
    const ca = registered.find((r) => r.name === "j-hub-ca-line");
    expect(ca?.type).toBe("aws:iot/caCertificate:CaCertificate");
    expect(ca?.inputs.allowAutoRegistration).toBe(true);
    expect(
      registered.some(
        (r) => r.type === "aws:iot/provisioningTemplate:ProvisioningTemplate" && r.name === "j-hub-jitp",
      ),
    ).toBe(true);
    expect(hubResources("j-hub")).toEqual([]);
  });

  it("bad input names the field, before any resource is registered", () => {
    const { a } = fleet("e");
    const bad = (args: unknown) => () => checkHubArgs("e-hub", args as HubRegistrationArgs);
    expect(bad({ batches: [], hub: { kind: "local" } })).toThrow(
      /^batches: got array\(0\), want one or more DeviceIdentityBatch components \(or issuingCas to trust\)/,
    );
    expect(bad({ issuingCas: [a.issuingCa], hub: { kind: "local" } })).toThrow(
      /^batches: got array\(0\), want one or more DeviceIdentityBatch components: the local hub admits registered certificates only/,
    );
    expect(bad({ batches: [a], hub: { kind: "gcp" } })).toThrow(
      /^hub\.kind: got "gcp", want 'local', 'aws' or 'azure'/,
    );
    expect(bad({ batches: [a, a], hub: { kind: "local" } })).toThrow(
      /^batches\[1\]: got "lot-a", want each batch once/,
    );
    expect(bad({ batches: [a], hub: { kind: "aws", region: "mars" } })).toThrow(
      /^hub\.region: got "mars", want an AWS region/,
    );
    expect(bad({ batches: [a], hub: { kind: "aws", region: "eu-west-1", ratePerSecond: -1 } })).toThrow(
      /^hub\.ratePerSecond: got -1/,
    );
    expect(() => new HubRegistration("e-hub", { batches: [a], hub: { kind: "nope" } } as never)).toThrow(
      /HubRegistration 'e-hub': hub\.kind: got "nope"/,
    );
  });
});

describe("HubRegistration during a CA rollover (mocks)", () => {
  const fake = (name: string, generation?: number, previous?: object) =>
    ({
      name,
      ...(generation ? { generation } : {}),
      certificatePem: pulumi.output(`PEM ${name} g${generation ?? 1}`),
      ...(previous ? { previous } : {}),
    }) as never;

  it("trustedCas lists each CA once, followed by its predecessor while one is declared", () => {
    const a2 = fake("a", 2, fake("a", 1));
    const list = trustedCas({
      issuingCas: [a2, fake("b"), a2],
      hub: { kind: "aws", region: "eu-central-1" },
    });
    expect(list.map((c) => [c.name, c.generation ?? 1])).toEqual([
      ["a", 2],
      ["a", 1],
      ["b", 1],
    ]);
    // the predecessor's own predecessor is never listed (raising the generation again drops it)
    expect(
      trustedCas({ issuingCas: [fake("a", 3, fake("a", 2))], hub: { kind: "local" } }).map(
        (c) => c.generation,
      ),
    ).toEqual([3, 2]);
  });

  const caNames = (prefix: string) =>
    registered
      .filter((r) => r.type === "aws:iot/caCertificate:CaCertificate" && r.name.startsWith(prefix))
      .map((r) => r.name)
      .sort();

  it("aws: generation 2 declares both CA certificates, the first under today's name; generation 3 no longer declares the first", async () => {
    const { a, b } = fleet("r2", 2);
    new HubRegistration("r2-hub", {
      batches: [a, b],
      hub: { kind: "aws", region: "eu-central-1", mode: "jitp" },
    });
    await settle("r2-hub", 2);
    expect(caNames("r2-hub")).toEqual(["r2-hub-ca-line", "r2-hub-ca-line-g2"]);
    const r = hubResources("r2-hub").find((x) => x.name === "r2-hub-lot-a")!;
    expect(
      (unwrap(r.inputs.hub) as { caCertificates: Array<{ id: string }> }).caCertificates.map((c) => c.id),
    ).toEqual(["r2-hub-ca-line-g2-id", "r2-hub-ca-line-id"]);
    for (const n of caNames("r2-hub"))
      expect(registered.find((x) => x.name === n)?.inputs).toMatchObject({
        active: true,
        allowAutoRegistration: true,
      });

    const { a: a3 } = fleet("r3", 3);
    new HubRegistration("r3-hub", { batches: [a3], hub: { kind: "aws", region: "eu-central-1" } });
    await settle("r3-hub", 1);
    expect(caNames("r3-hub")).toEqual(["r3-hub-ca-line-g2", "r3-hub-ca-line-g3"]);
  });

  it("azure: generation 2 uploads both DPS certificates (the successor's ends in -g2); one enrollment group for the CA", async () => {
    const { a } = fleet("rz", 2);
    const args: HubRegistrationArgs = {
      batches: [a],
      hub: { kind: "azure", resourceGroupName: "rg", location: "westeurope", iotHub: { create: {} } },
      policy: POLICY,
    };
    new HubRegistration("rz-hub", args);
    await settle("rz-hub", 1);
    const certs = registered.filter(
      (r) =>
        r.name.startsWith("rz-hub") && r.type === "azure-native:deviceprovisioningservices:DpsCertificate",
    );
    expect(certs.map((c) => [c.name, c.inputs.certificateName]).sort()).toEqual([
      ["rz-hub-ca-line", "fleetguard-line"],
      ["rz-hub-ca-line-g2", "fleetguard-line-g2"],
    ]);
    expect(declaredHubs("rz-hub", args).azure?.enrollmentGroups?.map((g) => g.name)).toEqual([
      "fleetguard-line",
    ]);
  });
});
