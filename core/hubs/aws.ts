/**
 * The AWS IoT Core hub driver (HubDriver, core/hubs/types.ts) over @aws-sdk/client-iot. The CA
 * registration, policy, thing type and group are Pulumi resources (components/hub-aws.ts); this
 * driver does the per-device part, in two modes:
 *  - per-device: RegisterCertificate (with the issuing CA's PEM, status ACTIVE), CreateThing
 *    (thing name = device ID), AttachPolicy (to the certificate), AttachThingPrincipal and
 *    AddThingToThingGroup: five control-plane calls a device, each API held to its own token
 *    bucket (AWS quotes TPS per API: RegisterCertificate 10/s).
 *  - jitp: the CA carries a just-in-time provisioning template; AWS registers a device's
 *    certificate on its first connect, so register makes no call (the remote id is the id AWS
 *    will give: the SHA-256 of the DER). A device disabled before it ever connected has no
 *    certificate at AWS to deactivate: the driver registers it INACTIVE (REVOKED when revoked),
 *    which stops the CA's JITP from admitting it later (AWS registers only unknown certificates).
 * What AWS enforces and the emulators do not is enforced here (hubs.md): a REVOKED certificate is
 * never made ACTIVE again (moto allows REVOKED -> ACTIVE), and the CAs must be registered and
 * ACTIVE before any certificate (ensureTrust, also run by the first register).
 * CA rollover (TrustedCa.generation): AWS holds up to 10 CA certificates with one subject, so a
 * successor and its predecessor are both registered and ACTIVE during the overlap, and every
 * RegisterCertificate names the device certificate's own issuer (caCertificatePem: AWS requires
 * it once two CAs share a subject). A configured CA that shares its subject with a CA of the trust
 * list but is not in it is a retired generation: not required, and no device is registered under
 * it (its certificates are only disabled, and still scanned for unknown registrations).
 * Retries: the SDK's own retry is off (maxAttempts 1); throttling, 5xx and dropped connections are
 * retried with full-jitter back-off (rate.ts). Credentials come from the options or the SDK's
 * default chain and never appear in a message.
 */
import * as crypto from "node:crypto";
import {
  AddThingToThingGroupCommand,
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  CreateThingCommand,
  DeleteCertificateCommand,
  DeleteThingCommand,
  DescribeCACertificateCommand,
  DescribeCertificateCommand,
  DescribeEndpointCommand,
  DetachPolicyCommand,
  DetachThingPrincipalCommand,
  IoTClient,
  ListCertificatesByCACommand,
  type ListCertificatesByCACommandOutput,
  RegisterCertificateCommand,
  UpdateCertificateCommand,
} from "@aws-sdk/client-iot";
import { FleetError, invalid } from "../errors";
import { pemOne, toPem } from "../x509/pem";
import { type Clock, RetryExhaustedError, rateIsOff, realClock, retry, TokenBucket } from "./rate";
import type {
  DeviceCert,
  HubDriver,
  HubTrustSummary,
  Outcome,
  RemoteRef,
  RemoteStatus,
  TrustedCa,
} from "./types";

export type AwsIotMode = "per-device" | "jitp";

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface AwsIotDriverOptions {
  /** for messages: "AWS IoT 'prod'" */
  label: string;
  region: string;
  /** an emulator's URL (moto, ministack); unset: AWS */
  endpoint?: string;
  /** unset: the SDK's default chain (environment, profile, SSO, instance role) */
  credentials?: AwsCredentials;
  mode: AwsIotMode;
  /** calls per second per API (default 10); 0 or Infinity: no limit */
  ratePerSecond?: number;
  /**
   * the bucket size per API (default 1: calls evenly spaced at 1/rate, so a server-side quota of
   * the same rate never sees a burst, even when network delays bunch requests together)
   */
  burst?: number;
  /** the issuing CAs registered at AWS (aws.iot.CaCertificate): their AWS id when known, and PEM */
  caCertificates: ReadonlyArray<{ id?: string; pem: string }>;
  policyName: string;
  thingTypeName?: string;
  thingGroupName?: string;
  /** the batch this registration serves (a thing attribute, and messages) */
  batch: string;
  /** devices worked on at once (default 16) */
  concurrency?: number;
  /** back-off for throttling and dropped connections */
  retry?: { maxAttempts?: number; maxElapsedMs?: number; baseMs?: number; capMs?: number };
  /** per request (default 30,000 ms) and to connect (default 5,000 ms) */
  requestTimeoutMs?: number;
  connectTimeoutMs?: number;
  clock?: Clock;
  random?: () => number;
}

/**
 * A RemoteRef as the AWS driver can use more of it: the certificate (JITP: to block a certificate
 * AWS has not seen yet) and whether it was revoked (REVOKED rather than INACTIVE).
 */
export interface AwsRemoteRef extends RemoteRef {
  der?: Buffer;
  revoked?: boolean;
}

/**
 * A run that stopped on an error every further call would meet (unreachable, credentials,
 * throttling that persists): the message says the count done; `outcomes` holds one per item (the
 * finished ones as they ended, the rest retryable), so a caller may record exactly what was done.
 */
export class HubRunError extends FleetError {
  constructor(
    message: string,
    readonly outcomes: Outcome[],
    readonly done: number,
    readonly total: number,
  ) {
    super("UNAVAILABLE", message, "hub");
    this.name = "HubRunError";
  }
}

const n = (x: number) => x.toLocaleString("en-US");
const sha256 = (b: Uint8Array) => crypto.createHash("sha256").update(b).digest("hex");

export type AwsErrorClass =
  | "throttled"
  | "transient"
  | "credentials"
  | "denied"
  | "unreachable"
  | "missing"
  | "exists"
  | "refused";

const THROTTLING = new Set([
  "ThrottlingException",
  "Throttling",
  "TooManyRequestsException",
  "RequestLimitExceeded",
  "RequestThrottled",
  "RequestThrottledException",
  "SlowDown",
]);
const CREDENTIALS = new Set([
  "ExpiredToken",
  "ExpiredTokenException",
  "UnrecognizedClientException",
  "InvalidSignatureException",
  "InvalidClientTokenId",
  "SignatureDoesNotMatch",
  "IncompleteSignature",
  "MissingAuthenticationToken",
  "CredentialsProviderError",
  "UnauthorizedException",
]);
const TRANSIENT = new Set(["ServiceUnavailableException", "InternalFailureException", "InternalException"]);
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "ECONNABORTED",
]);

interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  cause?: unknown;
  $metadata?: { httpStatusCode?: number };
  resourceId?: string;
  resourceArn?: string;
}

function networkCode(e: unknown): string | undefined {
  for (let x = e as SdkError | undefined, i = 0; x && i < 4; x = x.cause as SdkError | undefined, i++) {
    if (x.code && NETWORK_CODES.has(x.code)) return x.code;
    if (x.name === "TimeoutError" || x.name === "RequestTimeout") return "a timeout";
  }
  return undefined;
}

export function classifyAwsError(e: unknown): AwsErrorClass {
  const x = (e ?? {}) as SdkError;
  const name = x.name ?? "";
  const status = x.$metadata?.httpStatusCode;
  if (THROTTLING.has(name) || status === 429) return "throttled";
  if (CREDENTIALS.has(name)) return "credentials";
  if (name === "AccessDeniedException" || name === "AccessDenied") return "denied";
  if (name === "ResourceNotFoundException") return "missing";
  if (name === "ResourceAlreadyExistsException") return "exists";
  if (networkCode(e)) return "unreachable";
  if (TRANSIENT.has(name) || (status !== undefined && status >= 500)) return "transient";
  return "refused";
}

/** "ThrottlingException: Rate exceeded", never the request (which may carry a PEM) */
function brief(e: unknown): string {
  const x = (e ?? {}) as SdkError;
  const msg = (x.message ?? String(e))
    .replace(/-----BEGIN[\s\S]*?-----END[^-]*-----/g, "<pem>")
    .slice(0, 300);
  return x.name && x.name !== "Error" ? `${x.name}: ${msg}` : msg;
}

class Fatal extends Error {}

/** The status a DescribeCertificate answer maps to. */
function statusOf(s: string | undefined): RemoteStatus["status"] {
  if (s === "ACTIVE") return "active";
  if (s === "REVOKED") return "revoked";
  return "inactive";
}

export class AwsIotDriver implements HubDriver {
  readonly kind = "aws" as const;
  readonly label: string;
  readonly mode: "per-device" | "ca";
  readonly ratePerSecond: number;
  private readonly o: AwsIotDriverOptions;
  private readonly client: IoTClient;
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly clock: Clock;
  /** the CAs registered for this hub (options.caCertificates), by fingerprint: { id at AWS, PEM as registered } */
  private readonly configured = new Map<string, { id: string; pem: string }>();
  /** the CAs devices are registered under, by fingerprint (the trust list's and configured CAs of other subjects) */
  private cas = new Map<string, { id: string; pem: string }>();
  /** configured CAs the trust list retired (an earlier generation: the subject of a listed CA, not listed) */
  private retired = new Map<string, { id: string; pem: string }>();
  private trusted: HubTrustSummary | undefined;

  constructor(options: AwsIotDriverOptions) {
    const o = options;
    if (!o || typeof o !== "object") throw invalid("options", o, "AwsIotDriverOptions");
    if (typeof o.label !== "string" || !o.label)
      throw invalid("label", o.label, "a label such as \"AWS IoT 'prod'\"");
    if (typeof o.region !== "string" || !/^[a-z]{2}(-[a-z]+)+-\d+$/.test(o.region))
      throw invalid(`${o.label}: region`, o.region, "an AWS region such as eu-central-1");
    if (o.mode !== "per-device" && o.mode !== "jitp")
      throw invalid(`${o.label}: mode`, o.mode, '"per-device" or "jitp"');
    if (typeof o.policyName !== "string" || !/^[\w+=,.@-]{1,128}$/.test(o.policyName))
      throw invalid(`${o.label}: policyName`, o.policyName, "an IoT policy name ([\\w+=,.@-]{1,128})");
    if (!Array.isArray(o.caCertificates) || o.caCertificates.length === 0)
      throw invalid(`${o.label}: caCertificates`, o.caCertificates, "at least one issuing CA { id?, pem }");
    const rate = o.ratePerSecond ?? 10;
    if (typeof rate !== "number" || Number.isNaN(rate) || rate < 0)
      throw invalid(`${o.label}: ratePerSecond`, rate, "a number >= 0 (0 or Infinity: no limit)");
    const conc = o.concurrency ?? 16;
    if (!Number.isInteger(conc) || conc < 1 || conc > 256)
      throw invalid(`${o.label}: concurrency`, conc, "an integer in 1..256");
    o.caCertificates.forEach((ca, i) => {
      const der = pemOne(ca?.pem, "CERTIFICATE", `${o.label}: caCertificates[${i}].pem`);
      if (ca.id !== undefined && !/^[0-9a-f]{64}$/.test(ca.id))
        throw invalid(`${o.label}: caCertificates[${i}].id`, ca.id, "an AWS certificate id (64 hex digits)");
      this.configured.set(sha256(der), { id: ca.id ?? sha256(der), pem: ca.pem });
    });
    this.cas = new Map(this.configured);
    this.o = { ...o, concurrency: conc };
    this.label = o.label;
    this.mode = o.mode === "jitp" ? "ca" : "per-device";
    this.ratePerSecond = rateIsOff(rate) ? Number.POSITIVE_INFINITY : rate;
    this.clock = o.clock ?? realClock;
    this.client = new IoTClient({
      region: o.region,
      ...(o.endpoint ? { endpoint: o.endpoint } : {}),
      ...(o.credentials ? { credentials: { ...o.credentials } } : {}),
      maxAttempts: 1,
      requestHandler: {
        requestTimeout: o.requestTimeoutMs ?? 30_000,
        connectionTimeout: o.connectTimeoutMs ?? 5_000,
      },
    });
  }

  private where(): string {
    return this.o.endpoint ? `${this.o.endpoint}` : `the AWS IoT endpoint of ${this.o.region}`;
  }

  /** One API call: its bucket, then the call, retried on throttling and transient errors. */
  private async call<T>(api: string, send: () => Promise<T>): Promise<T> {
    let bucket = this.buckets.get(api);
    if (!bucket) {
      bucket = new TokenBucket(
        rateIsOff(this.ratePerSecond) ? 0 : this.ratePerSecond,
        this.o.burst ?? 1,
        this.clock,
      );
      this.buckets.set(api, bucket);
    }
    const b = bucket;
    const r = this.o.retry ?? {};
    try {
      return await retry(
        async () => {
          await b.take();
          return send();
        },
        {
          retryable: (e) => {
            const c = classifyAwsError(e);
            return c === "throttled" || c === "transient" || c === "unreachable";
          },
          maxAttempts: r.maxAttempts ?? 8,
          maxElapsedMs: r.maxElapsedMs ?? 120_000,
          baseMs: r.baseMs ?? 200,
          capMs: r.capMs ?? 20_000,
          clock: this.clock,
          random: this.o.random,
        },
      );
    } catch (e) {
      const last = e instanceof RetryExhaustedError ? e.cause : e;
      const c = classifyAwsError(last);
      const tries = e instanceof RetryExhaustedError ? ` (${e.attempts} attempts)` : "";
      if (c === "throttled")
        throw new Fatal(
          `${api} still throttled after back-off${tries}: ${brief(last)}; ${rateIsOff(this.ratePerSecond) ? "set a ratePerSecond (now off)" : `lower ratePerSecond (now ${this.ratePerSecond}/s)`} or ask AWS for a higher quota`,
        );
      if (c === "unreachable")
        throw new Fatal(`cannot reach ${this.where()}${tries}: ${networkCode(last)} (${brief(last)})`);
      if (c === "credentials")
        throw new Fatal(
          `the AWS credentials were refused (${brief(last)}): give valid credentials (options or the default chain: environment, profile, SSO, instance role)`,
        );
      if (c === "denied")
        throw new Fatal(
          `the AWS credentials may not call ${api} (${brief(last)}): grant it to the identity that runs fleetguard`,
        );
      if (c === "transient") throw new Fatal(`${api}: AWS kept failing${tries}: ${brief(last)}`);
      throw last;
    }
  }

  /**
   * The CAs to trust for this list: the listed ones (configured id and PEM text when known: moto
   * links a certificate to its CA by the exact PEM), then configured CAs of other subjects (other
   * batches' CAs at this hub); a configured CA with a listed CA's subject that is not listed
   * itself is an earlier generation the rollover has left behind.
   */
  private trustSets(cas: readonly TrustedCa[]): {
    active: Map<string, { id: string; pem: string }>;
    retired: Map<string, { id: string; pem: string }>;
  } {
    const active = new Map<string, { id: string; pem: string }>();
    const subjects = new Set<string>();
    const byName = new Map<string, { subject: string; generation: number }>();
    cas.forEach((ca, i) => {
      const at = `${this.label}: CA '${ca?.name}' certificatePem`;
      const der = pemOne(ca?.certificatePem, "CERTIFICATE", at);
      const fp = sha256(der);
      if (ca.fingerprint !== fp)
        throw invalid(
          `${this.label}: cas[${i}].fingerprint`,
          ca.fingerprint,
          `${fp} (the certificate's SHA-256)`,
        );
      const subject = new crypto.X509Certificate(der).subject;
      const g = ca.generation ?? 1;
      const same = byName.get(ca.name);
      if (same && same.subject !== subject)
        throw invalid(
          `${this.label}: cas[${i}]`,
          `CA '${ca.name}' with subject ${subject.replace(/\n/g, ", ")}`,
          `the subject of its other generation (${same.subject.replace(/\n/g, ", ")}): a rollover keeps the subject`,
        );
      if (same && same.generation === g)
        throw invalid(
          `${this.label}: cas[${i}].generation`,
          g,
          `a generation other than that of the other CA named '${ca.name}'`,
        );
      byName.set(ca.name, { subject, generation: g });
      subjects.add(subject);
      active.set(fp, this.configured.get(fp) ?? { id: fp, pem: ca.certificatePem });
    });
    const retired = new Map<string, { id: string; pem: string }>();
    for (const [fp, ca] of this.configured) {
      if (active.has(fp)) continue;
      const subject = new crypto.X509Certificate(ca.pem).subject;
      (subjects.has(subject) ? retired : active).set(fp, ca);
    }
    return { active, retired };
  }

  async ensureTrust(cas: readonly TrustedCa[]): Promise<HubTrustSummary> {
    try {
      return await this.trust(cas);
    } catch (e) {
      if (e instanceof Fatal) throw new FleetError("UNAVAILABLE", `${this.label}: ${e.message}`, "hub");
      throw e;
    }
  }

  private async trust(cas: readonly TrustedCa[]): Promise<HubTrustSummary> {
    if (!Array.isArray(cas)) throw invalid(`${this.label}: cas`, cas, "a list of issuing CAs");
    if (cas.length) {
      const { active, retired } = this.trustSets(cas);
      this.cas = active;
      this.retired = retired;
    }
    const caIds: string[] = [];
    for (const [fp, ca] of this.cas) {
      let d: { status?: string; autoRegistrationStatus?: string } | undefined;
      try {
        d = (
          await this.call("DescribeCACertificate", () =>
            this.client.send(new DescribeCACertificateCommand({ certificateId: ca.id })),
          )
        ).certificateDescription;
      } catch (e) {
        if (classifyAwsError(e) !== "missing") throw e;
        throw new FleetError(
          "NOT_FOUND",
          `${this.label}: CA ${ca.id.slice(0, 16)}… (fingerprint ${fp.slice(0, 16)}…) is not registered at AWS: register it (aws.iot.CaCertificate) before its certificates`,
          "caCertificates",
        );
      }
      if (d?.status !== "ACTIVE")
        throw new FleetError(
          "CONFLICT",
          `${this.label}: CA ${ca.id.slice(0, 16)}… status: got ${d?.status ?? "none"}, want ACTIVE (certificates under an inactive CA cannot connect)`,
          "caCertificates",
        );
      // AWS always reports it; moto does not (then it cannot be checked here)
      if (
        this.o.mode === "jitp" &&
        d.autoRegistrationStatus !== undefined &&
        d.autoRegistrationStatus !== "ENABLE"
      )
        throw new FleetError(
          "CONFLICT",
          `${this.label}: CA ${ca.id.slice(0, 16)}… autoRegistrationStatus: got ${d.autoRegistrationStatus ?? "none"}, want ENABLE (mode jitp: the CA registers its devices on first connect)`,
          "caCertificates",
        );
      caIds.push(ca.id);
    }
    const ep = await this.call("DescribeEndpoint", () =>
      this.client.send(new DescribeEndpointCommand({ endpointType: "iot:Data-ATS" })),
    );
    const host = ep.endpointAddress ?? "";
    this.trusted = { endpoint: /:\d+$/.test(host) ? host : `${host}:8883`, caIds };
    return this.trusted;
  }

  /** Run `one` over `items`, `concurrency` at a time; stop taking new ones on a Fatal. */
  private async each<T extends { serial: string }>(
    items: readonly T[],
    verb: string,
    one: (item: T) => Promise<Outcome>,
    onProgress?: (done: number) => void,
  ): Promise<Outcome[]> {
    const out: (Outcome | undefined)[] = Array.from({ length: items.length }, () => undefined);
    let next = 0;
    let done = 0;
    let fatal: string | undefined;
    const worker = async () => {
      while (fatal === undefined && next < items.length) {
        const i = next++;
        const it = items[i];
        try {
          out[i] = await one(it);
        } catch (e) {
          if (e instanceof Fatal) {
            fatal ??= e.message;
            out[i] = { serial: it.serial, ok: false, reason: e.message, retryable: true };
            continue;
          }
          out[i] = { serial: it.serial, ok: false, reason: brief(e), retryable: false };
        }
        done++;
        onProgress?.(done);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.o.concurrency ?? 16, items.length) }, worker));
    const outcomes = out.map(
      (o, i) =>
        o ?? { serial: items[i].serial, ok: false as const, reason: `not tried: ${fatal}`, retryable: true },
    );
    if (fatal !== undefined) {
      const ok = outcomes.filter((o) => o.ok).length;
      throw new HubRunError(
        `${this.label}: ${n(ok)} of ${n(items.length)} ${verb}, then: ${fatal}`,
        outcomes,
        ok,
        items.length,
      );
    }
    return outcomes;
  }

  private async ready(): Promise<void> {
    if (!this.trusted) await this.ensureTrust([]);
  }

  async register(certs: readonly DeviceCert[], onProgress?: (done: number) => void): Promise<Outcome[]> {
    if (certs.length === 0) return [];
    await this.ready();
    return this.each(certs, "registered", (c) => this.registerOne(c), onProgress);
  }

  private async describe(id: string): Promise<{ status?: string; arn?: string } | undefined> {
    try {
      const d = (
        await this.call("DescribeCertificate", () =>
          this.client.send(new DescribeCertificateCommand({ certificateId: id })),
        )
      ).certificateDescription;
      return { status: d?.status, arn: d?.certificateArn };
    } catch (e) {
      if (classifyAwsError(e) === "missing") return undefined;
      throw e;
    }
  }

  private async registerOne(c: DeviceCert): Promise<Outcome> {
    // the certificate's own issuer: with two CAs of one subject (a rollover) AWS needs the right one
    const ca = this.cas.get(c.issuer);
    if (!ca)
      return {
        serial: c.serial,
        ok: false,
        reason: this.retired.has(c.issuer)
          ? `issuer ${c.issuer.slice(0, 16)}… is an earlier generation of a CA this hub no longer trusts (rolled over): no certificate is registered under it`
          : `issuer ${c.issuer.slice(0, 16)}… is not a CA of this registration (caCertificates)`,
        retryable: false,
      };
    if (this.o.mode === "jitp") return { serial: c.serial, ok: true, remoteId: c.sha256 };
    let id: string;
    let arn: string | undefined;
    try {
      const r = await this.call("RegisterCertificate", () =>
        this.client.send(
          new RegisterCertificateCommand({
            certificatePem: toPem("CERTIFICATE", c.der),
            caCertificatePem: ca.pem,
            status: "ACTIVE",
          }),
        ),
      );
      id = r.certificateId ?? c.sha256;
      arn = r.certificateArn;
    } catch (e) {
      if (classifyAwsError(e) !== "exists") throw e;
      // registered before (a rerun, a kill -9 after AWS answered): find it and continue
      const x = e as SdkError;
      id = x.resourceId ?? c.sha256;
      const d = await this.describe(id);
      if (!d) throw e;
      arn = d.arn ?? x.resourceArn;
      if (d.status === "REVOKED")
        return {
          serial: c.serial,
          ok: false,
          reason: "REVOKED is final at AWS: the certificate is not reactivated",
          retryable: false,
        };
      if (d.status !== "ACTIVE") {
        if (d.status === "PENDING_TRANSFER")
          return {
            serial: c.serial,
            ok: false,
            reason: "the certificate is PENDING_TRANSFER to another account",
            retryable: false,
          };
        await this.call("UpdateCertificate", () =>
          this.client.send(new UpdateCertificateCommand({ certificateId: id, newStatus: "ACTIVE" })),
        );
      }
    }
    if (!arn) arn = (await this.describe(id))?.arn;
    if (!arn) throw new Error(`certificate ${id.slice(0, 16)}… has no ARN at AWS`);
    const principal = arn;
    try {
      await this.call("CreateThing", () =>
        this.client.send(
          new CreateThingCommand({
            thingName: c.deviceId,
            ...(this.o.thingTypeName ? { thingTypeName: this.o.thingTypeName } : {}),
            attributePayload: { attributes: { fleetguardBatch: c.batch || this.o.batch } },
          }),
        ),
      );
    } catch (e) {
      // the thing exists (a rerun, or made by hand with other attributes): fine
      if (classifyAwsError(e) !== "exists") throw e;
    }
    await this.call("AttachPolicy", () =>
      this.client.send(new AttachPolicyCommand({ policyName: this.o.policyName, target: principal })),
    );
    await this.call("AttachThingPrincipal", () =>
      this.client.send(new AttachThingPrincipalCommand({ thingName: c.deviceId, principal })),
    );
    if (this.o.thingGroupName) {
      const group = this.o.thingGroupName;
      await this.call("AddThingToThingGroup", () =>
        this.client.send(new AddThingToThingGroupCommand({ thingGroupName: group, thingName: c.deviceId })),
      );
    }
    return { serial: c.serial, ok: true, remoteId: id };
  }

  private idOf(r: AwsRemoteRef): string | undefined {
    if (r.remoteId) return r.remoteId;
    if (r.der) return sha256(r.der);
    return undefined;
  }

  private async detach(deviceId: string, arn: string): Promise<void> {
    for (const [api, send] of [
      [
        "DetachThingPrincipal",
        () => this.client.send(new DetachThingPrincipalCommand({ thingName: deviceId, principal: arn })),
      ],
      [
        "DetachPolicy",
        () => this.client.send(new DetachPolicyCommand({ policyName: this.o.policyName, target: arn })),
      ],
    ] as const) {
      try {
        await this.call(api, send as () => Promise<unknown>);
      } catch (e) {
        if (classifyAwsError(e) !== "missing") throw e;
      }
    }
  }

  async disable(refs: readonly RemoteRef[], onProgress?: (done: number) => void): Promise<Outcome[]> {
    if (refs.length === 0) return [];
    await this.ready();
    return this.each(refs as readonly AwsRemoteRef[], "disabled", (r) => this.disableOne(r), onProgress);
  }

  private async disableOne(r: AwsRemoteRef): Promise<Outcome> {
    const id = this.idOf(r);
    const target = r.revoked ? "REVOKED" : "INACTIVE";
    if (!id) return { serial: r.serial, ok: true, remoteId: "" };
    const d = await this.describe(id);
    if (!d) {
      if (this.o.mode !== "jitp") return { serial: r.serial, ok: true, remoteId: id };
      // JITP: never connected, so AWS does not know it; register it disabled so the CA cannot admit it
      if (!r.der)
        return {
          serial: r.serial,
          ok: false,
          reason:
            "never connected and its certificate is not known here: cannot block it at AWS before first connect",
          retryable: false,
        };
      const der = r.der;
      const ca = this.caForDer(der);
      try {
        await this.call("RegisterCertificate", () =>
          this.client.send(
            new RegisterCertificateCommand({
              certificatePem: toPem("CERTIFICATE", der),
              ...(ca ? { caCertificatePem: ca.pem } : {}),
              status: target,
            }),
          ),
        );
      } catch (e) {
        // it connected meanwhile: disable it as registered
        if (classifyAwsError(e) !== "exists") throw e;
        return this.disableOne(r);
      }
      return { serial: r.serial, ok: true, remoteId: id };
    }
    if (d.status !== "REVOKED" && d.status !== target) {
      await this.call("UpdateCertificate", () =>
        this.client.send(new UpdateCertificateCommand({ certificateId: id, newStatus: target })),
      );
    }
    if (d.arn) await this.detach(r.deviceId, d.arn);
    return { serial: r.serial, ok: true, remoteId: id };
  }

  /**
   * The registration CA that issued this DER, retired generations included (a superseded
   * certificate of the predecessor is blocked under it): the issuer name and the signature, since
   * a rollover gives two CAs one subject.
   */
  private caForDer(der: Buffer): { id: string; pem: string } | undefined {
    const leaf = new crypto.X509Certificate(der);
    for (const ca of [...this.cas.values(), ...this.retired.values()]) {
      const x = new crypto.X509Certificate(ca.pem);
      if (leaf.checkIssued(x) && leaf.verify(x.publicKey)) return ca;
    }
    return undefined;
  }

  async remove(refs: readonly RemoteRef[], onProgress?: (done: number) => void): Promise<Outcome[]> {
    if (refs.length === 0) return [];
    return this.each(refs as readonly AwsRemoteRef[], "removed", (r) => this.removeOne(r), onProgress);
  }

  private async removeOne(r: AwsRemoteRef): Promise<Outcome> {
    const id = this.idOf(r);
    if (id) {
      const d = await this.describe(id);
      if (d) {
        if (d.status === "ACTIVE")
          await this.call("UpdateCertificate", () =>
            this.client.send(new UpdateCertificateCommand({ certificateId: id, newStatus: "INACTIVE" })),
          );
        if (d.arn) await this.detach(r.deviceId, d.arn);
        try {
          await this.call("DeleteCertificate", () =>
            this.client.send(new DeleteCertificateCommand({ certificateId: id })),
          );
        } catch (e) {
          if (classifyAwsError(e) !== "missing") throw e;
        }
      }
    }
    try {
      await this.call("DeleteThing", () =>
        this.client.send(new DeleteThingCommand({ thingName: r.deviceId })),
      );
    } catch (e) {
      if (classifyAwsError(e) !== "missing") throw e;
    }
    return { serial: r.serial, ok: true, remoteId: id ?? "" };
  }

  async read(refs: readonly RemoteRef[]): Promise<RemoteStatus[]> {
    const out: RemoteStatus[] = [];
    let fatal: string | undefined;
    let done = 0;
    let next = 0;
    const worker = async () => {
      while (fatal === undefined && next < refs.length) {
        const i = next++;
        const r = refs[i] as AwsRemoteRef;
        const id = this.idOf(r);
        try {
          const d = id ? await this.describe(id) : undefined;
          out[i] = { serial: r.serial, remoteId: id ?? "", status: d ? statusOf(d.status) : "missing" };
          done++;
        } catch (e) {
          fatal ??= e instanceof Fatal ? e.message : brief(e);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.o.concurrency ?? 16, refs.length) }, worker));
    if (fatal !== undefined)
      throw new FleetError(
        "UNAVAILABLE",
        `${this.label}: ${n(done)} of ${n(refs.length)} read, then: ${fatal}`,
        "hub",
      );
    return out;
  }

  async unknown(known: ReadonlySet<string>): Promise<string[]> {
    const found: string[] = [];
    try {
      // retired generations too: while Pulumi still declares the predecessor it is ACTIVE at AWS
      const scan = [
        ...[...this.cas.values()].map((ca) => ({ ca, retired: false })),
        ...[...this.retired.values()].map((ca) => ({ ca, retired: true })),
      ];
      for (const { ca, retired } of scan) {
        for (let marker: string | undefined; ; ) {
          let page: ListCertificatesByCACommandOutput;
          try {
            page = await this.call("ListCertificatesByCA", () =>
              this.client.send(
                new ListCertificatesByCACommand({
                  caCertificateId: ca.id,
                  pageSize: 250,
                  ...(marker ? { marker } : {}),
                }),
              ),
            );
          } catch (e) {
            // a retired generation already deleted at AWS holds nothing
            if (retired && classifyAwsError(e) === "missing") break;
            throw e;
          }
          for (const c of page.certificates ?? [])
            if (c.certificateId && !known.has(c.certificateId)) found.push(c.certificateId);
          marker = page.nextMarker;
          if (!marker) break;
        }
      }
    } catch (e) {
      if (e instanceof Fatal) throw new FleetError("UNAVAILABLE", `${this.label}: ${e.message}`, "hub");
      throw e;
    }
    return found;
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
