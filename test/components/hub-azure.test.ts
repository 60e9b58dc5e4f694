/**
 * The Azure hub infrastructure's resource graph with Pulumi mocks (the azure-native provider
 * plugin cannot be installed here): names stable by CA name, parents, the hub's connection
 * string kept secret, verified CA certificates, the declared view FG-HUB-004 evaluates, and the
 * import cost (the service modules only, never the package root).
 */
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it } from "vitest";
import {
  type AzureHubArgs,
  type AzureIssuingCa,
  azureHubInfrastructure,
  azureHubNames,
  checkAzureHubArgs,
  declaredAzureHub,
} from "../../components/hub-azure";
import { evaluate, loadPolicyFile } from "../../policies/engine";

const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const registered: { type: string; name: string; inputs: Record<string, unknown>; parent?: string }[] = [];
/** Mocks see secrets as {<sig>: ..., value}; a nested secret makes its enclosing object one. */
function unwrap(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(unwrap);
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (SECRET_SIG in o) return unwrap(o.value);
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, unwrap(x)]));
  }
  return v;
}
const calls: { token: string; inputs: Record<string, unknown> }[] = [];

beforeAll(() => {
  pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        if (args.type === "azure-native:deviceprovisioningservices:IotDpsResource")
          return {
            id: `${args.name}-id`,
            state: {
              ...args.inputs,
              name: args.inputs.provisioningServiceName,
              properties: {
                ...(unwrap(args.inputs.properties) as object),
                deviceProvisioningHostName: "global.azure-devices-provisioning.net",
                serviceOperationsHostName: `${args.inputs.provisioningServiceName}.azure-devices-provisioning.net`,
                idScope: "0ne00ABCDEF",
              },
            },
          };
        if (args.type === "azure-native:iothub:IotHubResource")
          return {
            id: `${args.name}-id`,
            state: {
              ...args.inputs,
              name: args.inputs.resourceName,
              properties: { hostName: `${args.inputs.resourceName}.azure-devices.net` },
            },
          };
        return { id: `${args.name}-id`, state: args.inputs };
      },
      call(args) {
        calls.push({ token: args.token, inputs: args.inputs });
        if (args.token === "azure-native:iothub:listIotHubResourceKeysForKeyName")
          return {
            keyName: "iothubowner",
            primaryKey: "cHJpbWFyeS1rZXktb2YtdGhlLWh1Yg==",
            rights: "RegistryWrite",
          };
        return args.inputs;
      },
    },
    "fleet",
    "unit",
    false,
  );
});

const outputOf = <T>(o: pulumi.Output<T>): Promise<T> => new Promise((resolve) => o.apply((v) => resolve(v)));
const settle = () => new Promise((r) => setTimeout(r, 50));

class Parent extends pulumi.ComponentResource {
  constructor(name: string) {
    super("fleetguard:hubs:HubRegistration", name, {}, {});
  }
}

const cas: AzureIssuingCa[] = [
  { name: "line-a", certificatePem: "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n" },
  { name: "line-b", certificatePem: "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n" },
];
const args: AzureHubArgs = {
  resourceGroupName: "rg-fleet",
  location: "westeurope",
  dpsName: "example-dps",
  iotHub: { create: { name: "example-hub", sku: "S1", units: 2 } },
  batches: ["line-a-lot-1"],
};

describe("argument shaping (pure)", () => {
  it("names children by the registration and CA names", () => {
    expect(azureHubNames("prod", args, cas)).toEqual({
      dps: { logical: "prod-dps", azure: "example-dps" },
      hub: { logical: "prod-iothub", azure: "example-hub" },
      certificates: [
        { ca: "line-a", logical: "prod-ca-line-a", azure: "fleetguard-line-a" },
        { ca: "line-b", logical: "prod-ca-line-b", azure: "fleetguard-line-b" },
      ],
    });
    // a CA added in front changes no other name
    const more = azureHubNames("prod", args, [{ name: "line-0", certificatePem: "x" }, ...cas]).certificates;
    expect(more.slice(1)).toEqual(azureHubNames("prod", args, cas).certificates);
  });

  it("reports every problem at once, naming the field", () => {
    const bad = { ...args, dpsName: "-x", dpsUnits: 0, mode: "both", iotHub: {} } as unknown as AzureHubArgs;
    expect(() => checkAzureHubArgs("prod", bad, [cas[0], { ...cas[0], name: "LINE-A" }])).toThrow(
      /dpsName: got "-x", want 3-64 .*; dpsUnits: got 0, want an integer 1\.\.10; mode: got "both", want group or individual; iotHub: got object, want .*; issuingCas\[1\]\.name: got "LINE-A", want a name whose certificate name \(fleetguard-line-a\) no other CA has/,
    );
    expect(() => checkAzureHubArgs("prod", args, [])).toThrow(
      /issuingCas: got array\(0\), want at least one issuing CA/,
    );
  });

  it("declares one X.509 CA group per issuing CA, verified when fleetguard holds the CA key", () => {
    expect(declaredAzureHub(args, cas)).toEqual({
      enrollmentGroups: [
        { name: "fleetguard-line-a", attestation: "x509-ca", caVerified: true, batches: ["line-a-lot-1"] },
        { name: "fleetguard-line-b", attestation: "x509-ca", caVerified: true, batches: ["line-a-lot-1"] },
      ],
    });
    expect(declaredAzureHub({ ...args, mode: "individual" }, cas)).toEqual({
      enrollmentGroups: [
        { name: "individual-enrollments", attestation: "x509-individual", batches: ["line-a-lot-1"] },
      ],
    });
  });

  it("FG-HUB-004 passes on the declared view, and refuses a CA fleetguard cannot vouch for", () => {
    const policy = loadPolicyFile(path.join(__dirname, "../../policies/baseline.yaml"));
    const run = (hub: ReturnType<typeof declaredAzureHub>) =>
      evaluate(policy, { declared: { hubs: { azure: hub } } }).runs.find((r) => r.id === "FG-HUB-004");
    expect(run(declaredAzureHub(args, cas))?.status).toBe("pass");
    expect(run(declaredAzureHub({ ...args, mode: "individual" }, cas))?.status).toBe("pass");
    const outside = run(declaredAzureHub(args, [{ ...cas[0], keyHeldByFleetguard: false }]));
    expect(outside?.status).toBe("fail");
    expect(outside?.findings[0].message).toMatch(/caVerified: got false, want true/);
  });
});

describe("azureHubInfrastructure (mocks)", () => {
  it("creates the hub, the DPS linked to it by a secret connection string, and a verified certificate per CA", async () => {
    const parent = new Parent("prod");
    const infra = azureHubInfrastructure("prod", args, cas, parent);
    expect(await outputOf(infra.idScope)).toBe("0ne00ABCDEF");
    expect(await outputOf(infra.dpsEndpoint)).toBe("global.azure-devices-provisioning.net");
    expect(await outputOf(infra.serviceEndpoint)).toBe("https://example-dps.azure-devices-provisioning.net");
    expect(infra.certificateNames).toEqual(["fleetguard-line-a", "fleetguard-line-b"]);
    expect(Object.keys(infra.certificates)).toEqual(["line-a", "line-b"]);
    await outputOf(infra.certificates["line-b"].id);
    await settle();
    const mine = registered.filter((r) => r.name.startsWith("prod-"));
    expect(mine.map((r) => [r.type, r.name])).toEqual([
      ["azure-native:iothub:IotHubResource", "prod-iothub"],
      ["azure-native:deviceprovisioningservices:IotDpsResource", "prod-dps"],
      ["azure-native:deviceprovisioningservices:DpsCertificate", "prod-ca-line-a"],
      ["azure-native:deviceprovisioningservices:DpsCertificate", "prod-ca-line-b"],
    ]);
    const hub = mine[0].inputs;
    expect(hub).toMatchObject({
      resourceName: "example-hub",
      location: "westeurope",
      sku: { name: "S1", capacity: 2 },
    });
    // the connection string is a secret, so the engine sees the DPS properties as one
    expect(SECRET_SIG in (mine[1].inputs.properties as object)).toBe(true);
    const d = unwrap(mine[1].inputs) as {
      properties: { iotHubs: Array<Record<string, unknown>>; allocationPolicy: string };
      sku: unknown;
    };
    expect(d.sku).toEqual({ name: "S1", capacity: 1 });
    expect(d.properties.allocationPolicy).toBe("Hashed");
    expect(d.properties.iotHubs[0]).toEqual({
      connectionString:
        "HostName=example-hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=cHJpbWFyeS1rZXktb2YtdGhlLWh1Yg==",
      location: "westeurope",
      applyAllocationPolicy: true,
    });
    expect(
      calls.find((c) => c.token === "azure-native:iothub:listIotHubResourceKeysForKeyName")?.inputs,
    ).toMatchObject({
      keyName: "iothubowner",
      resourceName: "example-hub",
    });
    for (const [i, c] of mine.slice(2).entries())
      expect(c.inputs).toMatchObject({
        provisioningServiceName: "example-dps",
        certificateName: `fleetguard-line-${"ab"[i]}`,
        properties: { certificate: cas[i].certificatePem, isVerified: true },
      });
  });

  it("links an existing hub by its connection string (kept secret) and creates no hub", async () => {
    const parent = new Parent("edge");
    const infra = azureHubInfrastructure(
      "edge",
      {
        resourceGroupName: "rg",
        location: "northeurope",
        iotHub: {
          existing: {
            connectionString: "HostName=old.azure-devices.net;SharedAccessKeyName=x;SharedAccessKey=eQ==",
            location: "northeurope",
          },
        },
        allocationPolicy: "GeoLatency",
        mode: "individual",
      },
      cas,
      parent,
    );
    expect(infra.hub).toBeUndefined();
    expect(infra.certificateNames).toEqual([]);
    await outputOf(infra.idScope);
    await settle();
    const mine = registered.filter((r) => r.name.startsWith("edge-"));
    expect(mine.map((r) => r.type)).toEqual(["azure-native:deviceprovisioningservices:IotDpsResource"]);
    expect(SECRET_SIG in (mine[0].inputs.properties as object)).toBe(true);
    const p = unwrap(mine[0].inputs.properties) as {
      iotHubs: Array<Record<string, unknown>>;
      allocationPolicy: string;
    };
    expect(p.allocationPolicy).toBe("GeoLatency");
    expect(p.iotHubs[0].connectionString).toBe(
      "HostName=old.azure-devices.net;SharedAccessKeyName=x;SharedAccessKey=eQ==",
    );
    expect(mine[0].inputs.provisioningServiceName).toBe("edge");
  });
});

describe("CA rollover (mocks)", () => {
  const G = (g: number) => `-----BEGIN CERTIFICATE-----\nG${g}\n-----END CERTIFICATE-----\n`;
  const gen = (g: number): AzureIssuingCa => ({ name: "line-a", generation: g, certificatePem: G(g) });

  it("names a successor's certificate -g<g>; the first generation keeps its names; one enrollment group per CA name", () => {
    expect(azureHubNames("prod", args, [gen(2), gen(1)]).certificates).toEqual([
      { ca: "line-a-g2", logical: "prod-ca-line-a-g2", azure: "fleetguard-line-a-g2" },
      { ca: "line-a", logical: "prod-ca-line-a", azure: "fleetguard-line-a" },
    ]);
    // the names of generation 1 are those a stack made before any rollover
    expect(azureHubNames("prod", args, [gen(1)]).certificates).toEqual(
      azureHubNames("prod", args, [cas[0]]).certificates,
    );
    expect(declaredAzureHub(args, [gen(2), gen(1), cas[1]])).toEqual(declaredAzureHub(args, cas));
    // a generation brought from outside makes the group unverified
    expect(
      declaredAzureHub(args, [gen(2), { ...gen(1), keyHeldByFleetguard: false }]).enrollmentGroups,
    ).toEqual([
      { name: "fleetguard-line-a", attestation: "x509-ca", caVerified: false, batches: ["line-a-lot-1"] },
    ]);
    expect(() => checkAzureHubArgs("prod", args, [gen(2), gen(2)])).toThrow(
      /issuingCas\[1\]\.name: got "line-a", want a name whose certificate name \(fleetguard-line-a-g2\) no other CA has/,
    );
    expect(() => checkAzureHubArgs("prod", args, [{ ...gen(1), generation: 0 }])).toThrow(
      /issuingCas\[0\]\.generation: got 0, want a whole number >= 1/,
    );
  });

  it("declares the predecessor's DpsCertificate during the overlap, and not the one before once the generation goes up again", async () => {
    const two = azureHubInfrastructure("roll", args, [gen(2), gen(1)], new Parent("roll"));
    expect(two.certificateNames).toEqual(["fleetguard-line-a-g2", "fleetguard-line-a"]);
    expect(Object.keys(two.certificates)).toEqual(["line-a-g2", "line-a"]);
    await outputOf(two.certificates["line-a"].id);
    await settle();
    const certs = (prefix: string) =>
      registered
        .filter((r) => r.name.startsWith(prefix) && r.type.endsWith(":DpsCertificate"))
        .map((r) => [
          r.name,
          r.inputs.certificateName,
          (r.inputs.properties as { certificate: string }).certificate,
        ]);
    expect(certs("roll-")).toEqual([
      ["roll-ca-line-a-g2", "fleetguard-line-a-g2", G(2)],
      ["roll-ca-line-a", "fleetguard-line-a", G(1)],
    ]);
    const three = azureHubInfrastructure("again", args, [gen(3), gen(2)], new Parent("again"));
    await outputOf(three.certificates["line-a-g2"].id);
    await settle();
    expect(certs("again-")).toEqual([
      ["again-ca-line-a-g3", "fleetguard-line-a-g3", G(3)],
      ["again-ca-line-a-g2", "fleetguard-line-a-g2", G(2)],
    ]);
  });
});

describe("import cost", () => {
  it("imports the two service modules only, never the azure-native package root", () => {
    const src = fs.readFileSync(path.join(__dirname, "../../components/hub-azure.ts"), "utf8");
    const imports = [...src.matchAll(/from\s+"(@pulumi\/azure-native[^"]*)"/g)].map((m) => m[1]);
    expect(imports.sort()).toEqual([
      "@pulumi/azure-native/deviceprovisioningservices",
      "@pulumi/azure-native/iothub",
    ]);
    const req = createRequire(__filename);
    const loaded = Object.keys(req.cache).filter((k) =>
      k.includes(`${path.sep}@pulumi${path.sep}azure-native${path.sep}`),
    );
    // the root index would have loaded every service's index (~490 files)
    expect(loaded.length).toBeGreaterThan(0);
    expect(loaded.length).toBeLessThan(30);
    expect(loaded.some((k) => k.endsWith(`azure-native${path.sep}index.js`))).toBe(false);
  });
});
