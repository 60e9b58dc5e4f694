/**
 * The AWS IoT hub infrastructure (components/hub-aws.ts) with Pulumi mocks (the @pulumi/aws
 * provider plugin cannot be installed here): which resources, their logical names (stable, by CA
 * name), types and properties, the JITP template's type (set explicitly: @pulumi/aws 5.57-5.60
 * silently made FLEET_PROVISIONING, #38629), and the pure shaping: the least-privilege policy
 * document passes FG-HUB-001 and FG-HUB-002 through the real policy engine.
 */
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it } from "vitest";
import {
  type AwsHubArgs,
  awsDevicePolicyDocument,
  awsHubInfrastructure,
  awsHubNames,
  caGenerationKey,
  declaredAwsHub,
  type IssuingCaInput,
  jitpTemplateBody,
} from "../../components/hub-aws";
import { FleetError } from "../../core/errors";
import { check as hub001 } from "../../policies/checks/hubs/FG-HUB-001";
import { check as hub002 } from "../../policies/checks/hubs/FG-HUB-002";
import { evaluate, loadPolicyFile } from "../../policies/engine";

type Registered = { type: string; name: string; inputs: Record<string, unknown> };
const registered: Registered[] = [];
const invokes: { token: string; args: Record<string, unknown> }[] = [];

beforeAll(() => {
  pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        const state: Record<string, unknown> = { ...args.inputs };
        if (args.type === "aws:iam/role:Role") state.arn = `arn:aws:iam::123456789012:role/${args.name}`;
        if (args.type === "aws:iam/role:Role") state.name = args.name;
        // AWS gives a CA the SHA-256 of its DER as id; a stand-in is enough here
        const id =
          args.type === "aws:iot/caCertificate:CaCertificate" ? `ca-id-${args.name}` : `${args.name}-id`;
        return { id, state };
      },
      call(args) {
        invokes.push({ token: args.token, args: args.inputs });
        if (args.token === "aws:iot/getRegistrationCode:getRegistrationCode")
          return { id: "rc", registrationCode: "a".repeat(64), region: "eu-central-1" };
        return args.inputs;
      },
    },
    "fleet",
    "unit",
    false,
  );
});

/** Mocks see secrets as {<sig>: ..., value}. */
const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const isSecret = (v: unknown) => !!v && typeof v === "object" && SECRET_SIG in (v as object);
const plain = (v: unknown) => (isSecret(v) ? (v as { value: unknown }).value : v);

const out = <T>(o: pulumi.Output<T>): Promise<T> => new Promise((resolve) => o.apply(resolve));

class Parent extends pulumi.ComponentResource {
  constructor(name: string) {
    super("fleetguard:hubs:HubRegistration", name, {}, {});
  }
}

const CAS = [
  { name: "line-a", certificatePem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" },
  { name: "line-b", certificatePem: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n" },
];

async function build(name: string, args: AwsHubArgs, cas: IssuingCaInput[] = CAS) {
  registered.length = 0;
  const parent = new Parent(name);
  const infra = awsHubInfrastructure(name, args, cas, parent);
  const ids = await out(infra.caCertificateIds);
  const pems = await out(infra.caCertificatePems);
  await new Promise((r) => setTimeout(r, 50)); // let the mocks see every registration
  return { infra, ids, pems, mine: registered.filter((r) => r.type !== "fleetguard:hubs:HubRegistration") };
}

describe("awsDevicePolicyDocument (pure)", () => {
  it("is least privilege: own client ID, own topics, attached thing only", () => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: an AWS IoT policy variable
    const T = "${iot:Connection.Thing.ThingName}";
    expect(
      awsDevicePolicyDocument({ region: "eu-central-1", account: "123456789012", topicPrefix: "fleet" }),
    ).toEqual({
      Version: "2012-10-17",
      Statement: [
        {
          Sid: "ConnectAsOwnThing",
          Effect: "Allow",
          Action: ["iot:Connect"],
          Resource: [`arn:aws:iot:eu-central-1:123456789012:client/${T}`],
          Condition: { Bool: { "iot:Connection.Thing.IsAttached": "true" } },
        },
        {
          Sid: "PublishReceiveOwnTopics",
          Effect: "Allow",
          Action: ["iot:Publish", "iot:Receive"],
          Resource: [`arn:aws:iot:eu-central-1:123456789012:topic/fleet/${T}/*`],
        },
        {
          Sid: "SubscribeOwnTopics",
          Effect: "Allow",
          Action: ["iot:Subscribe"],
          Resource: [`arn:aws:iot:eu-central-1:123456789012:topicfilter/fleet/${T}/*`],
        },
      ],
    });
    const any = awsDevicePolicyDocument({ topicPrefix: "acme/sensors" });
    expect(any.Statement[1].Resource).toEqual([`arn:aws:iot:*:*:topic/acme/sensors/${T}/*`]);
  });

  it("passes FG-HUB-001 and FG-HUB-002 in the real policy engine (and a loose policy fails)", () => {
    const policy = loadPolicyFile("policies/baseline.yaml");
    for (const args of [
      { topicPrefix: "fleet" },
      { region: "eu-central-1", account: "123456789012", topicPrefix: "a/b" },
    ]) {
      const declared = declaredAwsHub({ policyName: "prod-devices", batches: ["lot-1"], ...args });
      const ev = evaluate(policy, { declared: { hubs: { aws: declared } } }, { checks: [hub001, hub002] });
      expect(ev.runs.map((r) => [r.id, r.status])).toEqual([
        ["FG-HUB-001", "pass"],
        ["FG-HUB-002", "pass"],
      ]);
    }
    const loose = declaredAwsHub({ policyName: "p", topicPrefix: "fleet" });
    loose.policies![0].document.Statement[0].Resource = ["arn:aws:iot:*:*:client/*"];
    const bad = evaluate(policy, { declared: { hubs: { aws: loose } } }, { checks: [hub001] });
    expect(bad.runs[0].status).toBe("fail");
  });

  it("declaredAwsHub is the DeclaredAwsHub view", () => {
    expect(
      declaredAwsHub({
        policyName: "p",
        topicPrefix: "fleet",
        batches: ["b1"],
        logging: { enabled: true, level: "WARN" },
      }),
    ).toEqual({
      logging: { enabled: true, level: "WARN" },
      policies: [{ name: "p", batches: ["b1"], document: awsDevicePolicyDocument({ topicPrefix: "fleet" }) }],
    });
  });

  it("rejects bad arguments with the field named", () => {
    const bad = (f: () => unknown, re: RegExp) => {
      try {
        f();
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(FleetError);
        expect((e as Error).message).toMatch(re);
      }
    };
    bad(
      () => awsDevicePolicyDocument({ topicPrefix: "fleet/#" }),
      /^topicPrefix: got "fleet\/#", want topic levels/,
    );
    bad(() => awsDevicePolicyDocument({ topicPrefix: "" }), /^topicPrefix: got ""/);
    bad(() => awsDevicePolicyDocument({ topicPrefix: "f", account: "12" }), /^account: got "12"/);
    bad(() => awsDevicePolicyDocument({ topicPrefix: "f", region: "Mars" }), /^region: got "Mars"/);
    bad(() => declaredAwsHub({ policyName: "no spaces", topicPrefix: "f" }), /^policyName: got "no spaces"/);
    bad(() => awsHubNames("bad name", {}), /^name: got "bad name"/);
  });

  it("the JITP template names the thing by the certificate's CN and attaches the policy", () => {
    const t = JSON.parse(jitpTemplateBody({ policyName: "p", thingTypeName: "tt", thingGroupName: "g" }));
    expect(t.Parameters).toEqual({
      "AWS::IoT::Certificate::CommonName": { Type: "String" },
      "AWS::IoT::Certificate::Id": { Type: "String" },
    });
    expect(t.Resources.thing).toEqual({
      Type: "AWS::IoT::Thing",
      Properties: {
        ThingName: { Ref: "AWS::IoT::Certificate::CommonName" },
        ThingTypeName: "tt",
        ThingGroups: ["g"],
      },
    });
    expect(t.Resources.certificate.Properties).toEqual({
      CertificateId: { Ref: "AWS::IoT::Certificate::Id" },
      Status: "ACTIVE",
    });
    expect(t.Resources.policy).toEqual({ Type: "AWS::IoT::Policy", Properties: { PolicyName: "p" } });
  });
});

describe("awsHubInfrastructure (Pulumi mocks)", () => {
  it("per-device, SNI_ONLY: a CaCertificate per CA named by CA, the policy, thing type and group", async () => {
    const { infra, ids, pems, mine } = await build("prod", {
      region: "eu-central-1",
      account: "123456789012",
    });
    expect(mine.map((r) => [r.type, r.name]).sort()).toEqual(
      [
        ["aws:iot/caCertificate:CaCertificate", "prod-ca-line-a"],
        ["aws:iot/caCertificate:CaCertificate", "prod-ca-line-b"],
        ["aws:iot/policy:Policy", "prod-policy"],
        ["aws:iot/thingGroup:ThingGroup", "prod-thing-group"],
        ["aws:iot/thingType:ThingType", "prod-thing-type"],
      ].sort(),
    );
    const ca = mine.find((r) => r.name === "prod-ca-line-a")!.inputs;
    // @pulumi/aws keeps the PEMs as secrets in state
    expect(isSecret(ca.caCertificatePem)).toBe(true);
    expect(plain(ca.caCertificatePem)).toBe(CAS[0].certificatePem);
    expect(ca).toMatchObject({
      active: true,
      certificateMode: "SNI_ONLY",
      allowAutoRegistration: false,
      region: "eu-central-1",
    });
    expect(ca.verificationCertificatePem).toBeUndefined();
    expect(ca.registrationConfig).toBeUndefined();
    const policy = mine.find((r) => r.name === "prod-policy")!.inputs;
    expect(policy.name).toBe("prod-devices");
    expect(JSON.parse(policy.policy as string)).toEqual(
      awsDevicePolicyDocument({ region: "eu-central-1", account: "123456789012", topicPrefix: "fleet" }),
    );
    expect(mine.find((r) => r.name === "prod-thing-type")!.inputs.name).toBe("prod-device");
    expect(mine.find((r) => r.name === "prod-thing-group")!.inputs.name).toBe("prod-devices");
    expect(ids).toEqual(["ca-id-prod-ca-line-a", "ca-id-prod-ca-line-b"]);
    expect(pems).toEqual(CAS.map((c) => c.certificatePem));
    expect(infra).toMatchObject({
      policyName: "prod-devices",
      thingTypeName: "prod-device",
      thingGroupName: "prod-devices",
    });
    expect(infra.templateName).toBeUndefined();
    expect(infra.declared.policies?.[0].name).toBe("prod-devices");
  });

  it("logical names follow CA names, not their order", async () => {
    const a = (await build("prod", {})).mine.map((r) => r.name).sort();
    const b = (await build("prod", {}, [...CAS].reverse())).mine.map((r) => r.name).sort();
    expect(b).toEqual(a);
  });

  it("jitp: a JITP template (type set explicitly), its role, and each CA's registrationConfig pointing at it", async () => {
    const { infra, mine } = await build("big", {
      mode: "jitp",
      thingTypeName: "sensor",
      thingGroupName: "lot-7",
    });
    const tpl = mine.find((r) => r.type === "aws:iot/provisioningTemplate:ProvisioningTemplate");
    expect(tpl?.name).toBe("big-jitp");
    expect(tpl?.inputs.type).toBe("JITP");
    expect(tpl?.inputs.name).toBe("big-jitp");
    expect(tpl?.inputs.enabled).toBe(true);
    expect(tpl?.inputs.provisioningRoleArn).toBe("arn:aws:iam::123456789012:role/big-jitp-role");
    expect(JSON.parse(tpl?.inputs.templateBody as string)).toEqual(
      JSON.parse(
        jitpTemplateBody({ policyName: "big-devices", thingTypeName: "sensor", thingGroupName: "lot-7" }),
      ),
    );
    const role = mine.find((r) => r.type === "aws:iam/role:Role");
    expect(role?.name).toBe("big-jitp-role");
    expect(JSON.parse(role?.inputs.assumeRolePolicy as string).Statement[0].Principal).toEqual({
      Service: "iot.amazonaws.com",
    });
    const attach = mine.find((r) => r.type === "aws:iam/rolePolicyAttachment:RolePolicyAttachment");
    expect(attach?.inputs.policyArn).toBe("arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration");
    for (const ca of mine.filter((r) => r.type === "aws:iot/caCertificate:CaCertificate")) {
      expect(ca.inputs.allowAutoRegistration).toBe(true);
      expect(ca.inputs.registrationConfig).toEqual({ templateName: "big-jitp" });
    }
    expect(infra.templateName).toBe("big-jitp");

    // a role given: none made
    const given = await build("big", { mode: "jitp", provisioningRoleArn: "arn:aws:iam::1:role/mine" });
    expect(given.mine.some((r) => r.type === "aws:iam/role:Role")).toBe(false);
    expect(given.mine.find((r) => r.name === "big-jitp")?.inputs.provisioningRoleArn).toBe(
      "arn:aws:iam::1:role/mine",
    );
  });

  it("DEFAULT mode takes a verification certificate per CA and exposes the registration code", async () => {
    const v = { "line-a": "VERIFY-A", "line-b": "VERIFY-B" };
    const { infra, mine } = await build("eu", {
      certificateMode: "DEFAULT",
      verificationCertificatePems: v,
      region: "eu-central-1",
    });
    for (const n of ["line-a", "line-b"] as const) {
      const ca = mine.find((r) => r.name === `eu-ca-${n}`)!.inputs;
      expect(ca.certificateMode).toBe("DEFAULT");
      expect(plain(ca.verificationCertificatePem)).toBe(v[n]);
    }
    expect(await out(infra.registrationCode!)).toBe("a".repeat(64));
    expect(invokes.some((i) => i.token === "aws:iot/getRegistrationCode:getRegistrationCode")).toBe(true);

    expect(() =>
      awsHubInfrastructure(
        "eu",
        { certificateMode: "DEFAULT", verificationCertificatePems: { "line-a": "V" } },
        CAS,
        new Parent("eu2"),
      ),
    ).toThrow(
      /^aws\.verificationCertificatePems\.line-b: got undefined, want a certificate whose CN is the registration code/,
    );
    expect(() => awsHubInfrastructure("x", {}, [CAS[0], CAS[0]], new Parent("x"))).toThrow(
      /^issuingCas\[\]\.name: got "line-a", want each CA once/,
    );
    expect(() => awsHubInfrastructure("x", { mode: "bulk" as never }, CAS, new Parent("x2"))).toThrow(
      /^aws\.mode: got "bulk"/,
    );
  });
});

describe("CA rollover (Pulumi mocks)", () => {
  const G = (g: number) => `-----BEGIN CERTIFICATE-----\nMIIG${g}\n-----END CERTIFICATE-----\n`;
  const caNames = (mine: Registered[]) =>
    mine.filter((r) => r.type === "aws:iot/caCertificate:CaCertificate").map((r) => r.name);

  it("during the overlap the predecessor is declared too; the first generation keeps its name; the next rollover drops the oldest", async () => {
    expect(caGenerationKey({ name: "line-a" })).toBe("line-a");
    expect(caGenerationKey({ name: "line-a", generation: 1 })).toBe("line-a");
    expect(caGenerationKey({ name: "line-a", generation: 3 })).toBe("line-a-g3");

    // before any rollover: today's name
    const before = await build("prod", {}, [{ name: "line-a", certificatePem: G(1) }]);
    expect(caNames(before.mine)).toEqual(["prod-ca-line-a"]);

    // generation 2: the successor is a new resource, the predecessor keeps its name and inputs (no replace)
    const two = await build("prod", { mode: "jitp" }, [
      { name: "line-a", generation: 2, certificatePem: G(2) },
      { name: "line-a", generation: 1, certificatePem: G(1) },
    ]);
    expect(caNames(two.mine)).toEqual(["prod-ca-line-a-g2", "prod-ca-line-a"]);
    const pred = two.mine.find((r) => r.name === "prod-ca-line-a")!.inputs;
    const succ = two.mine.find((r) => r.name === "prod-ca-line-a-g2")!.inputs;
    expect(plain(pred.caCertificatePem)).toBe(G(1));
    expect(plain(succ.caCertificatePem)).toBe(G(2));
    // both ACTIVE, and both admit their devices on first connect (JITP) while the overlap lasts
    for (const ca of [pred, succ])
      expect(ca).toMatchObject({
        active: true,
        allowAutoRegistration: true,
        registrationConfig: { templateName: "prod-jitp" },
      });
    expect(two.ids).toEqual(["ca-id-prod-ca-line-a-g2", "ca-id-prod-ca-line-a"]);
    expect(two.pems).toEqual([G(2), G(1)]);

    // generation 3: generation 1 is no longer declared (the engine deletes it), generation 2 keeps its name
    const three = await build("prod", {}, [
      { name: "line-a", generation: 3, certificatePem: G(3) },
      { name: "line-a", generation: 2, certificatePem: G(2) },
    ]);
    expect(caNames(three.mine)).toEqual(["prod-ca-line-a-g3", "prod-ca-line-a-g2"]);
    expect(plain(three.mine.find((r) => r.name === "prod-ca-line-a-g2")!.inputs.caCertificatePem)).toBe(G(2));
  });

  it("DEFAULT mode: a verification certificate per generation (the successor's by <name>-g<g>); one generation twice is refused", async () => {
    const cas = [
      { name: "line-a", generation: 2, certificatePem: G(2) },
      { name: "line-a", generation: 1, certificatePem: G(1) },
    ];
    const { mine } = await build(
      "eu",
      { certificateMode: "DEFAULT", verificationCertificatePems: { "line-a": "V1", "line-a-g2": "V2" } },
      cas,
    );
    expect(plain(mine.find((r) => r.name === "eu-ca-line-a")!.inputs.verificationCertificatePem)).toBe("V1");
    expect(plain(mine.find((r) => r.name === "eu-ca-line-a-g2")!.inputs.verificationCertificatePem)).toBe(
      "V2",
    );
    expect(() =>
      awsHubInfrastructure(
        "eu",
        { certificateMode: "DEFAULT", verificationCertificatePems: { "line-a": "V1" } },
        cas,
        new Parent("eu3"),
      ),
    ).toThrow(/^aws\.verificationCertificatePems\.line-a-g2: got undefined, want a certificate whose CN/);
    expect(() => awsHubInfrastructure("x", {}, [cas[0], cas[0]], new Parent("x3"))).toThrow(
      /^issuingCas\[\]\.name: got "line-a", want each CA generation once \(line-a-g2 twice\)$/,
    );
    expect(() => awsHubInfrastructure("x", {}, [{ ...cas[0], generation: 0 }], new Parent("x4"))).toThrow(
      /^issuingCas\[line-a\]\.generation: got 0, want a whole number >= 1$/,
    );
  });
});
