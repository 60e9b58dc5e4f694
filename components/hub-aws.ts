/**
 * The AWS IoT Core side of a HubRegistration: the small, slow-changing infrastructure that belongs
 * in Pulumi state (one aws.iot.CaCertificate per issuing CA, the device policy, thing type and
 * group, and for just-in-time provisioning a JITP template and the role it runs as). The
 * per-device part is not here: it is the dynamic provider's, through core/hubs/aws.ts.
 *
 * Pure argument shaping (the policy document, the declared view policies check, the JITP
 * template) sits next to the builder and is tested on its own. Only the iot and iam modules of
 * @pulumi/aws are imported, never the package root.
 *
 * certificateMode DEFAULT needs a verification certificate whose CN is the account's registration
 * code (iot.getRegistrationCode), signed by the CA. fleetguard does not sign it here: the CA key
 * would have to come into this program (and cross Pulumi's RPC as an input). DEFAULT therefore
 * takes `verificationCertificatePems` (by CA name), made where the CA key lives; the registration
 * code is an output (`registrationCode`) to make it from. SNI_ONLY, the default, needs none.
 *
 * CA rollover: while an issuing CA's predecessor is still trusted (CaOutputs.previous), both are
 * registered, each its own aws.iot.CaCertificate (AWS allows several CAs with one subject). The
 * first generation keeps the name it always had (`<hub>-ca-<name>`), a successor adds its
 * generation (`<hub>-ca-<name>-g<g>`), so a stack that rolls over replaces nothing, and the
 * predecessor's predecessor, no longer declared, is deleted by the next generation's `up`.
 */
import * as iam from "@pulumi/aws/iam";
import * as iot from "@pulumi/aws/iot";
import * as pulumi from "@pulumi/pulumi";
import { invalid } from "../core/errors";
import type { DeclaredAwsHub, IotPolicyDocument } from "../policies/context";

type AwsLogging = NonNullable<DeclaredAwsHub["logging"]>;

// biome-ignore lint/suspicious/noTemplateCurlyInString: an AWS IoT policy variable, not a JS template
export const THING_NAME = "${iot:Connection.Thing.ThingName}";

const TOPIC_PREFIX = /^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/;
const RESOURCE_NAME = /^[A-Za-z0-9_-]{1,100}$/;

export interface AwsDevicePolicyArgs {
  /** AWS region of the hub; default any ("*") */
  region?: string;
  /** AWS account id; default any ("*") */
  account?: string;
  /** aws, aws-cn, aws-us-gov; default aws */
  partition?: string;
  /** the devices' topics live under `<topicPrefix>/<thing name>/` */
  topicPrefix: string;
}

/**
 * The least-privilege device policy: a certificate connects only as the thing it is attached to
 * (client ID = thing name, and only while attached), publishes and receives only under its own
 * `<prefix>/<thing>/`, and subscribes only to filters there.
 */
export function awsDevicePolicyDocument(a: AwsDevicePolicyArgs): IotPolicyDocument {
  if (!a || typeof a.topicPrefix !== "string" || !TOPIC_PREFIX.test(a.topicPrefix))
    throw invalid(
      "topicPrefix",
      a?.topicPrefix,
      "topic levels of [A-Za-z0-9_-] joined by '/', no wildcards (e.g. fleet)",
    );
  const region = a.region ?? "*";
  const account = a.account ?? "*";
  const partition = a.partition ?? "aws";
  if (region !== "*" && !/^[a-z]{2}(-[a-z]+)+-\d+$/.test(region))
    throw invalid("region", region, "an AWS region such as eu-central-1, or *");
  if (account !== "*" && !/^\d{12}$/.test(account))
    throw invalid("account", account, "a 12-digit account id, or *");
  if (!/^aws(-[a-z]+)*$/.test(partition)) throw invalid("partition", partition, "aws, aws-cn or aws-us-gov");
  const arn = (what: string) => `arn:${partition}:iot:${region}:${account}:${what}`;
  const own = `${a.topicPrefix}/${THING_NAME}/*`;
  return {
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "ConnectAsOwnThing",
        Effect: "Allow",
        Action: ["iot:Connect"],
        Resource: [arn(`client/${THING_NAME}`)],
        Condition: { Bool: { "iot:Connection.Thing.IsAttached": "true" } },
      },
      {
        Sid: "PublishReceiveOwnTopics",
        Effect: "Allow",
        Action: ["iot:Publish", "iot:Receive"],
        Resource: [arn(`topic/${own}`)],
      },
      {
        Sid: "SubscribeOwnTopics",
        Effect: "Allow",
        Action: ["iot:Subscribe"],
        Resource: [arn(`topicfilter/${own}`)],
      },
    ],
  };
}

export interface DeclaredAwsHubArgs extends AwsDevicePolicyArgs {
  policyName: string;
  /** the batches whose devices get the policy */
  batches?: string[];
  logging?: AwsLogging;
}

/** The hub as the fleet policy sees it (policies/context.ts DeclaredAwsHub): FG-HUB-00x run on it. */
export function declaredAwsHub(a: DeclaredAwsHubArgs): DeclaredAwsHub {
  if (typeof a.policyName !== "string" || !/^[\w+=,.@-]{1,128}$/.test(a.policyName))
    throw invalid("policyName", a.policyName, "an IoT policy name ([\\w+=,.@-]{1,128})");
  return {
    ...(a.logging ? { logging: a.logging } : {}),
    policies: [
      {
        name: a.policyName,
        ...(a.batches?.length ? { batches: [...a.batches] } : {}),
        document: awsDevicePolicyDocument(a),
      },
    ],
  };
}

/**
 * The JITP template (AWS "Just-in-time provisioning", provision-w-cert): the thing is named by the
 * certificate's CN (fleetguard puts the device ID there), gets the thing type and group, and the
 * certificate is made ACTIVE with the device policy attached.
 */
export function jitpTemplateBody(a: {
  policyName: string;
  thingTypeName?: string;
  thingGroupName?: string;
}): string {
  return JSON.stringify({
    Parameters: {
      "AWS::IoT::Certificate::CommonName": { Type: "String" },
      "AWS::IoT::Certificate::Id": { Type: "String" },
    },
    Resources: {
      thing: {
        Type: "AWS::IoT::Thing",
        Properties: {
          ThingName: { Ref: "AWS::IoT::Certificate::CommonName" },
          ...(a.thingTypeName ? { ThingTypeName: a.thingTypeName } : {}),
          ...(a.thingGroupName ? { ThingGroups: [a.thingGroupName] } : {}),
        },
      },
      certificate: {
        Type: "AWS::IoT::Certificate",
        Properties: { CertificateId: { Ref: "AWS::IoT::Certificate::Id" }, Status: "ACTIVE" },
      },
      policy: { Type: "AWS::IoT::Policy", Properties: { PolicyName: a.policyName } },
    },
  });
}

export interface AwsHubArgs {
  /** AWS region (default: the provider's); also scopes the policy's ARNs when given */
  region?: string;
  /** AWS account id, to scope the policy's ARNs (default any) */
  account?: string;
  /** default "fleet": devices use `<topicPrefix>/<device ID>/...` */
  topicPrefix?: string;
  /** per-device (default): the dynamic provider registers each certificate; jitp: the CA does on first connect */
  mode?: "per-device" | "jitp";
  /** SNI_ONLY (default: no verification, several accounts may register the CA) or DEFAULT */
  certificateMode?: "SNI_ONLY" | "DEFAULT";
  /**
   * DEFAULT mode: per CA name, a certificate with CN = the registration code, signed by that CA; a
   * rollover's successor by `<name>-g<generation>` (caGenerationKey): signed by the successor's key
   */
  verificationCertificatePems?: Record<string, pulumi.Input<string>>;
  /** jitp: the role the template runs as (default: one made here with AWSIoTThingsRegistration) */
  provisioningRoleArn?: pulumi.Input<string>;
  policyName?: string;
  thingTypeName?: string;
  thingGroupName?: string;
  batches?: string[];
  logging?: AwsLogging;
  tags?: Record<string, string>;
}

export interface IssuingCaInput {
  /** the CA's name in the CaHierarchy: logical names are made from it */
  name: string;
  /** the CA's generation (CaHierarchy rollover; absent: 1) */
  generation?: number;
  certificatePem: pulumi.Input<string>;
}

/**
 * A CA generation's key in names: the CA name for the first generation (what a stack made before
 * any rollover keeps), `<name>-g<g>` for a successor. Logical names (`<hub>-ca-<key>`) and
 * `verificationCertificatePems` use it.
 */
export function caGenerationKey(ca: { name: string; generation?: number }): string {
  const g = ca.generation ?? 1;
  return g > 1 ? `${ca.name}-g${g}` : ca.name;
}

export interface AwsHubInfrastructure {
  /** the AWS ids of the issuing CAs (every generation declared), in the order given */
  caCertificateIds: pulumi.Output<string[]>;
  caCertificatePems: pulumi.Output<string[]>;
  policyName: string;
  thingTypeName: string;
  thingGroupName: string;
  templateName?: string;
  /** DEFAULT mode: the account's registration code, the CN of the verification certificates */
  registrationCode?: pulumi.Output<string>;
  declared: DeclaredAwsHub;
  resources: pulumi.Resource[];
}

/** The physical names the hub uses, from its component name and args (pure). */
export function awsHubNames(
  name: string,
  args: AwsHubArgs,
): { policyName: string; thingTypeName: string; thingGroupName: string; templateName: string } {
  if (!RESOURCE_NAME.test(name)) throw invalid("name", name, "1-100 characters of [A-Za-z0-9_-]");
  const names = {
    policyName: args.policyName ?? `${name}-devices`,
    thingTypeName: args.thingTypeName ?? `${name}-device`,
    thingGroupName: args.thingGroupName ?? `${name}-devices`,
    templateName: `${name}-jitp`,
  };
  for (const k of ["thingTypeName", "thingGroupName"] as const)
    if (!/^[A-Za-z0-9:_-]{1,128}$/.test(names[k]))
      throw invalid(k, names[k], "1-128 characters of [A-Za-z0-9:_-]");
  return names;
}

/** Validate the args and the CAs before any resource is made (pure). */
export function checkAwsHubArgs(args: AwsHubArgs, issuingCas: readonly IssuingCaInput[]): void {
  if (args.mode !== undefined && args.mode !== "per-device" && args.mode !== "jitp")
    throw invalid("aws.mode", args.mode, '"per-device" or "jitp"');
  const cm = args.certificateMode ?? "SNI_ONLY";
  if (cm !== "SNI_ONLY" && cm !== "DEFAULT")
    throw invalid("aws.certificateMode", cm, '"SNI_ONLY" or "DEFAULT"');
  if (!issuingCas.length) throw invalid("issuingCas", issuingCas, "at least one issuing CA");
  const seen = new Set<string>();
  for (const ca of issuingCas) {
    if (!RESOURCE_NAME.test(ca.name))
      throw invalid("issuingCas[].name", ca.name, "a CA name of [A-Za-z0-9_-]");
    const g = ca.generation;
    if (g !== undefined && (!Number.isInteger(g) || g < 1))
      throw invalid(`issuingCas[${ca.name}].generation`, g, "a whole number >= 1");
    const key = caGenerationKey(ca);
    if (seen.has(key))
      throw invalid(
        "issuingCas[].name",
        ca.name,
        g && g > 1 ? `each CA generation once (${key} twice)` : "each CA once",
      );
    seen.add(key);
    if (cm === "DEFAULT" && !args.verificationCertificatePems?.[key])
      throw invalid(
        `aws.verificationCertificatePems.${key}`,
        undefined,
        "a certificate whose CN is the registration code (output registrationCode), signed by the CA, for certificateMode DEFAULT",
      );
  }
}

/** The policy that lets AWS IoT's JITP create things and attach policies (a managed policy). */
const THINGS_REGISTRATION = "arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration";

/** Create the hub's infrastructure as children of `parent`. Logical names come from `name` and CA names, never an index. */
export function awsHubInfrastructure(
  name: string,
  args: AwsHubArgs,
  issuingCas: readonly IssuingCaInput[],
  parent: pulumi.Resource,
): AwsHubInfrastructure {
  checkAwsHubArgs(args, issuingCas);
  const names = awsHubNames(name, args);
  const opts = { parent };
  const region = args.region;
  const common = { ...(region ? { region } : {}), ...(args.tags ? { tags: args.tags } : {}) };
  const declared = declaredAwsHub({
    policyName: names.policyName,
    region,
    account: args.account,
    topicPrefix: args.topicPrefix ?? "fleet",
    batches: args.batches,
    logging: args.logging,
  });
  const resources: pulumi.Resource[] = [];

  const policy = new iot.Policy(
    `${name}-policy`,
    { name: names.policyName, policy: JSON.stringify(declared.policies?.[0].document), ...common },
    opts,
  );
  const thingType = new iot.ThingType(`${name}-thing-type`, { name: names.thingTypeName, ...common }, opts);
  const thingGroup = new iot.ThingGroup(
    `${name}-thing-group`,
    { name: names.thingGroupName, ...common },
    opts,
  );
  resources.push(policy, thingType, thingGroup);

  let template: iot.ProvisioningTemplate | undefined;
  if (args.mode === "jitp") {
    let roleArn = args.provisioningRoleArn;
    if (!roleArn) {
      const role = new iam.Role(
        `${name}-jitp-role`,
        {
          assumeRolePolicy: JSON.stringify({
            Version: "2012-10-17",
            Statement: [
              { Effect: "Allow", Principal: { Service: "iot.amazonaws.com" }, Action: "sts:AssumeRole" },
            ],
          }),
          ...(args.tags ? { tags: args.tags } : {}),
        },
        opts,
      );
      const attach = new iam.RolePolicyAttachment(
        `${name}-jitp-role-registration`,
        { role: role.name, policyArn: THINGS_REGISTRATION },
        opts,
      );
      resources.push(role, attach);
      roleArn = role.arn;
    }
    template = new iot.ProvisioningTemplate(
      `${name}-jitp`,
      {
        name: names.templateName,
        // set explicitly: @pulumi/aws 5.57-5.60 made a template without `type` FLEET_PROVISIONING (#38629)
        type: "JITP",
        enabled: true,
        description: `fleetguard: just-in-time provisioning for hub '${name}'`,
        provisioningRoleArn: roleArn,
        templateBody: pulumi
          .all([policy.name, thingType.name, thingGroup.name])
          .apply(([policyName, thingTypeName, thingGroupName]) =>
            jitpTemplateBody({ policyName, thingTypeName, thingGroupName }),
          ),
        ...common,
      },
      { ...opts, dependsOn: [policy, thingType, thingGroup] },
    );
    resources.push(template);
  }

  const certificateMode = args.certificateMode ?? "SNI_ONLY";
  const registrationCode =
    certificateMode === "DEFAULT"
      ? iot.getRegistrationCodeOutput(region ? { region } : {}, { parent }).registrationCode
      : undefined;
  const cas = issuingCas.map((ca) => {
    const key = caGenerationKey(ca);
    const r = new iot.CaCertificate(
      `${name}-ca-${key}`,
      {
        caCertificatePem: ca.certificatePem,
        active: true,
        certificateMode,
        ...(certificateMode === "DEFAULT"
          ? { verificationCertificatePem: args.verificationCertificatePems?.[key] }
          : {}),
        allowAutoRegistration: args.mode === "jitp",
        ...(template ? { registrationConfig: { templateName: template.name } } : {}),
        ...common,
      },
      opts,
    );
    resources.push(r);
    return r;
  });

  return {
    caCertificateIds: pulumi.all(cas.map((c) => c.id)),
    // the PEMs as given (not the provider's secret copy): the driver passes this exact text with each device certificate
    caCertificatePems: pulumi.all(issuingCas.map((c) => c.certificatePem)),
    policyName: names.policyName,
    thingTypeName: names.thingTypeName,
    thingGroupName: names.thingGroupName,
    ...(template ? { templateName: names.templateName } : {}),
    ...(registrationCode ? { registrationCode } : {}),
    declared,
    resources,
  };
}
