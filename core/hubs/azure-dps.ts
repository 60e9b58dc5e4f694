/**
 * The Azure IoT Hub Device Provisioning Service driver: trust and registrations through the DPS
 * *service* REST API, api-version 2021-10-01 (Azure/azure-rest-api-specs,
 * specification/deviceprovisioningservices/data-plane/Microsoft.Devices/stable/2021-10-01/
 * service.json), authenticated with a shared access signature of a DPS access policy.
 *
 * Two modes. `group` (HubDriver mode "ca"): one X.509 enrollment group per issuing CA, attested
 * by a CA reference (the DpsCertificate that components/hub-azure.ts uploads verified) or by the
 * CA certificate itself in signingCertificates; devices register themselves on first connect, so
 * registering costs no call, and disabling one device is the documented way: a DISABLED
 * individual enrollment with the device's registration id, which takes precedence over the
 * group. `individual` (mode "per-device"): one individual enrollment per device, attested by its
 * client certificate (primary slot; the secondary slot holds the next certificate during a
 * rotation), created in bulk operations of at most 10, disabled by provisioningStatus with the
 * record's ETag, deleted on destroy.
 *
 * CA rollover (TrustedCa.generation): the group of a CA name holds the successor (the higher
 * generation) in its primary slot and the predecessor in the secondary, caReferences or
 * signingCertificates alike, while both are trusted; once the predecessor leaves the trust list
 * the secondary slot is emptied. Each generation is its own DPS certificate (dpsCertificateName:
 * `-g<generation>` from the second on), so the names never collide. Individual enrollments attest
 * with device certificates and need nothing for a rollover.
 *
 * Every write that changes a record it read carries If-Match with that record's ETag; a record
 * changed in between is read again and the write retried once, then reported as a CONFLICT. Calls
 * hold to `ratePerSecond` (one token per enrollment written; DPS's quota is 1,000 registrations
 * a minute) and answers of 429 wait for Retry-After, then retry with back-off (rate.ts). The SAS
 * key is a secret: it is used to sign and never appears in a message, an error or a log.
 */
import * as crypto from "node:crypto";
import * as https from "node:https";
import { FleetError, invalid, phrase } from "../errors";
import { type Clock, RetryExhaustedError, realClock, retry, TokenBucket } from "./rate";
import type {
  DeviceCert,
  HubDriver,
  HubTrustSummary,
  Outcome,
  RemoteRef,
  RemoteStatus,
  TrustedCa,
} from "./types";

export const DPS_API_VERSION = "2021-10-01";
/** the most items one bulk operation may carry (the service's limit) */
export const DPS_BULK_LIMIT = 10;
/** 1,000 registrations per minute per service */
export const DPS_DEFAULT_RATE = 1000 / 60;
/** the device-facing endpoint every DPS shares (devices add the id scope) */
export const DPS_GLOBAL_ENDPOINT = "global.azure-devices-provisioning.net";

export interface AzureDpsOptions {
  /** for messages and plans: "Azure DPS 'prod'" */
  label: string;
  /** https://<dps>.azure-devices-provisioning.net, or a contract service's URL */
  endpoint: string;
  /** the shared access policy's name (e.g. provisioningserviceowner) */
  sasKeyName: string;
  /** the policy's key, base64 (a secret) */
  sasKey: string;
  mode: "group" | "individual";
  /** group mode: attest with a CA reference (a DpsCertificate, verified) or the CA certificate itself */
  groupAttestation?: "caReferences" | "signingCertificates";
  /**
   * group mode: the DPS certificate name of each CA, by CA name (a successor generation g > 1 by
   * `<name>-g<g>`); default dpsCertificateName(ca.name, ca.generation)
   */
  certificateNames?: Readonly<Record<string, string>>;
  /** the IoT hubs (host names) devices may be allocated to, and how */
  iotHubs?: readonly string[];
  allocationPolicy?: "hashed" | "geoLatency" | "static";
  reprovisionPolicy?: { updateHubAssignment: boolean; migrateDeviceData: boolean };
  /** the DPS id scope devices use with the global endpoint (for the summary) */
  idScope?: string;
  /** enrollments per bulk operation, 1..10 (default 10) */
  batch?: number;
  /** enrollments written per second (default 1000/60; 0 or Infinity: off) */
  ratePerSecond?: number;
  /** page size for queries (default 100) */
  pageSize?: number;
  /** tests: a CA to trust for the endpoint's TLS certificate */
  tls?: { ca?: string | Buffer };
  /** lifetime of each SAS token, seconds (default 3600) */
  tokenTtlSeconds?: number;
  /**
   * group mode: the device certificate of a registration (a disabled individual enrollment
   * carries it, since X.509 individual enrollments attest with one); certificates registered
   * by this driver object are remembered without it
   */
  lookupCertificate?: (ref: RemoteRef) => Promise<Buffer | undefined>;
  /**
   * group mode: the certificates a device may still connect with (its current one; two during
   * a rotation), asked when a certificate of a device in good standing is disabled and this
   * driver object did not register its successor: the device is then pinned to them instead of
   * blocked. Without it (and without a successor registered here) the device is blocked.
   */
  liveCertificates?: (deviceId: string) => Promise<ReadonlyArray<{ serial: string; der: Buffer }>>;
  /** tests: the clock for waits (Retry-After, back-off, the rate) */
  clock?: Clock;
  /** attempts for a throttled call, the first included (default 8) */
  maxAttempts?: number;
}

/**
 * DPS certificate name for a CA: stable by CA name (logical names are public API); a rollover's
 * successor (generation 2 on) gets `-g<generation>`, so both generations can be held at once and
 * the first keeps the name it had.
 */
export function dpsCertificateName(caName: string, generation?: number): string {
  if (generation !== undefined && (!Number.isInteger(generation) || generation < 1))
    throw invalid("ca.generation", generation, "a whole number >= 1");
  return `fleetguard-${slug(caName)}${generation && generation > 1 ? `-g${generation}` : ""}`;
}

/** The enrollment group id fleetguard uses for an issuing CA. */
export function enrollmentGroupId(caName: string): string {
  return `fleetguard-${slug(caName)}`;
}

const REGISTRATION_ID = /^[a-z0-9-._:]*[a-z0-9-]$/;

/** A device's DPS registration id: its device id, lowercase (the service's ids are lowercase). */
export function registrationId(deviceId: string): string {
  const id = deviceId.toLowerCase();
  if (id.length > 128 || !REGISTRATION_ID.test(id))
    throw invalid(
      "deviceId",
      deviceId,
      "at most 128 of a-z 0-9 - . _ : ending in a letter, digit or hyphen (a DPS registration id)",
    );
  return id;
}

function slug(name: string): string {
  const s = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "");
  if (!s) throw invalid("ca.name", name, "a name with a letter or digit");
  return s;
}

// biome-ignore lint/suspicious/noExplicitAny: DPS records are the service's JSON
type Json = any;

interface Answer {
  status: number;
  body: Json;
  headers: Record<string, string | string[] | undefined>;
}

/** A transport failure: the service could not be reached or dropped the connection. */
class Unreachable extends Error {}
/** 429: wait for Retry-After, then try again. */
class Throttled extends Error {}
/** 503: the service says try again later. */
class Busy extends Error {}

const READ_ONLY = ["registrationState", "createdDateTimeUtc", "lastUpdatedDateTimeUtc"];

function normSerial(s: string): string {
  return s.toLowerCase().replace(/^0+/, "");
}

export class AzureDpsDriver implements HubDriver {
  readonly kind = "azure" as const;
  readonly label: string;
  readonly mode: "per-device" | "ca";
  readonly ratePerSecond: number;
  private readonly o: AzureDpsOptions;
  private readonly host: string;
  private readonly agent: https.Agent;
  private readonly bucket: TokenBucket;
  private readonly clock: Clock;
  private readonly batch: number;
  private token?: { value: string; expires: number };
  private readonly seen = new Map<string, Buffer>();
  private issuers = new Set<string>();
  private groupIds = new Set<string>();
  /** group mode: certificates registered by this driver object, by registration id (sync registers before it disables) */
  private readonly live = new Map<string, DeviceCert[]>();

  constructor(options: AzureDpsOptions) {
    const o = options;
    if (!o || typeof o.label !== "string" || !o.label)
      throw invalid("label", o?.label, "a label such as \"Azure DPS 'prod'\"");
    let url: URL;
    try {
      url = new URL(o.endpoint);
    } catch {
      throw invalid("endpoint", o.endpoint, "https://<dps>.azure-devices-provisioning.net");
    }
    if (url.protocol !== "https:") throw invalid("endpoint", o.endpoint, "an https:// URL");
    if (typeof o.sasKeyName !== "string" || !o.sasKeyName)
      throw invalid("sasKeyName", o.sasKeyName, "a shared access policy name");
    if (typeof o.sasKey !== "string" || !/^[A-Za-z0-9+/]+={0,2}$/.test(o.sasKey) || o.sasKey.length < 16)
      throw invalid(
        "sasKey",
        typeof o.sasKey === "string" ? phrase(`${o.sasKey.length} characters`) : o.sasKey,
        "the policy's base64 key",
      );
    if (o.mode !== "group" && o.mode !== "individual") throw invalid("mode", o.mode, "group or individual");
    const batch = o.batch ?? DPS_BULK_LIMIT;
    if (!Number.isInteger(batch) || batch < 1 || batch > DPS_BULK_LIMIT)
      throw invalid("batch", batch, `an integer 1..${DPS_BULK_LIMIT} (the service's bulk limit)`);
    if (
      o.groupAttestation !== undefined &&
      o.groupAttestation !== "caReferences" &&
      o.groupAttestation !== "signingCertificates"
    )
      throw invalid("groupAttestation", o.groupAttestation, "caReferences or signingCertificates");
    this.o = o;
    this.label = o.label;
    this.mode = o.mode === "group" ? "ca" : "per-device";
    this.ratePerSecond = o.ratePerSecond ?? DPS_DEFAULT_RATE;
    this.clock = o.clock ?? realClock;
    this.bucket = new TokenBucket(this.ratePerSecond, undefined, this.clock);
    this.batch = batch;
    this.host = url.host;
    this.agent = new https.Agent({ keepAlive: true, maxSockets: 4, ...(o.tls?.ca ? { ca: o.tls.ca } : {}) });
    this.base = url.origin + url.pathname.replace(/\/+$/, "");
  }

  private readonly base: string;

  // ---- transport -------------------------------------------------------------------------

  private sas(): string {
    const now = Math.floor(Date.now() / 1000);
    if (this.token && this.token.expires - 300 > now) return this.token.value;
    const ttl = this.o.tokenTtlSeconds ?? 3600;
    const se = now + ttl;
    const sr = encodeURIComponent(this.host);
    const sig = crypto
      .createHmac("sha256", Buffer.from(this.o.sasKey, "base64"))
      .update(`${sr}\n${se}`)
      .digest("base64");
    this.token = {
      value: `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}&skn=${encodeURIComponent(this.o.sasKeyName)}`,
      expires: se,
    };
    return this.token.value;
  }

  private once(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Answer> {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const url = `${this.base}${path}${path.includes("?") ? "&" : "?"}api-version=${DPS_API_VERSION}`;
    return new Promise<Answer>((resolve, reject) => {
      const req = https.request(
        url,
        {
          method,
          agent: this.agent,
          headers: {
            authorization: this.sas(),
            accept: "application/json",
            ...(text !== undefined
              ? { "content-type": "application/json", "content-length": Buffer.byteLength(text) }
              : {}),
            ...headers,
          },
          timeout: 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", (e) => reject(new Unreachable(e.message)));
          res.on("end", () => {
            const raw = Buffer.concat(chunks).toString("utf8");
            let parsed: Json;
            try {
              parsed = raw ? JSON.parse(raw) : undefined;
            } catch {
              parsed = { message: raw.slice(0, 200) };
            }
            resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error("timed out after 30 s")));
      req.on("error", (e: NodeJS.ErrnoException) => reject(new Unreachable(e.code ?? e.message)));
      if (text !== undefined) req.write(text);
      req.end();
    });
  }

  /** One call, retried on 429 (after Retry-After), 503 and dropped connections; errors mapped. */
  private async call(
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<Answer> {
    let transportFailures = 0;
    try {
      const a = await retry(
        async () => {
          let r: Answer;
          try {
            r = await this.once(method, path, body, headers);
          } catch (e) {
            transportFailures++;
            throw e;
          }
          if (r.status === 429) {
            const after = Number(r.headers["retry-after"]);
            await this.clock.sleep((Number.isFinite(after) && after >= 0 ? Math.min(after, 60) : 1) * 1000);
            throw new Throttled("throttled (429)");
          }
          if (r.status === 503) throw new Busy("service unavailable (503)");
          return r;
        },
        {
          retryable: (e) =>
            e instanceof Throttled ||
            e instanceof Busy ||
            (e instanceof Unreachable && transportFailures < 3),
          maxAttempts: this.o.maxAttempts ?? 8,
          maxElapsedMs: 300_000,
          clock: this.clock,
        },
      );
      if (a.status === 401 || a.status === 403)
        throw new FleetError(
          "INVALID_INPUT",
          `sasKey: got credentials ${this.label} refuses (${a.status}${a.body?.message ? `: ${String(a.body.message).slice(0, 120)}` : ""}), want a current key of its shared access policy '${this.o.sasKeyName}'`,
          "sasKey",
        );
      return a;
    } catch (e) {
      if (e instanceof FleetError) throw e;
      const last = e instanceof RetryExhaustedError ? e.cause : e;
      if (last instanceof Unreachable)
        throw new FleetError(
          "UNAVAILABLE",
          `${this.label}: unreachable at ${this.host} (${last.message})`,
          "hub",
        );
      if (last instanceof Throttled || last instanceof Busy)
        throw new FleetError(
          "UNAVAILABLE",
          `${this.label}: still ${last.message} after ${e instanceof RetryExhaustedError ? e.attempts : 1} attempts; the quota is 1,000 registrations a minute: lower ratePerSecond`,
          "hub",
        );
      throw e;
    }
  }

  private unexpected(a: Answer, what: string): FleetError {
    const msg = a.body?.message ? String(a.body.message).slice(0, 300) : "no message";
    return new FleetError(
      a.status >= 500 ? "UNAVAILABLE" : "INTERNAL",
      `${this.label}: ${what}: got ${a.status} (${msg})`,
      "hub",
    );
  }

  private async take(n: number): Promise<void> {
    for (let i = 0; i < n; i++) await this.bucket.take();
  }

  /** Every record of a query, page by page (x-ms-continuation). */
  private async queryAll(kind: "enrollments" | "enrollmentGroups"): Promise<Json[]> {
    const out: Json[] = [];
    let continuation: string | undefined;
    do {
      const a = await this.call(
        "POST",
        `/${kind}/query`,
        { query: "*" },
        {
          "x-ms-max-item-count": String(this.o.pageSize ?? 100),
          ...(continuation ? { "x-ms-continuation": continuation } : {}),
        },
      );
      if (a.status !== 200 || !Array.isArray(a.body)) throw this.unexpected(a, `query ${kind}`);
      out.push(...a.body);
      const c = a.headers["x-ms-continuation"];
      continuation = typeof c === "string" && c ? c : undefined;
    } while (continuation);
    return out;
  }

  private async getEnrollment(id: string): Promise<Json | undefined> {
    const a = await this.call("GET", `/enrollments/${encodeURIComponent(id)}`);
    if (a.status === 404) return undefined;
    if (a.status !== 200) throw this.unexpected(a, `read enrollment ${id}`);
    return a.body;
  }

  // ---- trust -----------------------------------------------------------------------------

  /** The DPS certificate name of a CA generation. */
  private certificateName(ca: TrustedCa): string {
    const g = ca.generation ?? 1;
    return this.o.certificateNames?.[g > 1 ? `${ca.name}-g${g}` : ca.name] ?? dpsCertificateName(ca.name, g);
  }

  /** The group of one CA name: the newest generation in the primary slot, the one before in the secondary. */
  private groupBody(primary: TrustedCa, secondary?: TrustedCa): Json {
    const x509 =
      (this.o.groupAttestation ?? "caReferences") === "caReferences"
        ? {
            caReferences: {
              primary: this.certificateName(primary),
              ...(secondary ? { secondary: this.certificateName(secondary) } : {}),
            },
          }
        : {
            signingCertificates: {
              primary: { certificate: primary.certificatePem },
              ...(secondary ? { secondary: { certificate: secondary.certificatePem } } : {}),
            },
          };
    return {
      enrollmentGroupId: enrollmentGroupId(primary.name),
      attestation: { type: "x509", x509 },
      capabilities: { iotEdge: false },
      provisioningStatus: "enabled",
      reprovisionPolicy: this.o.reprovisionPolicy ?? { updateHubAssignment: true, migrateDeviceData: true },
      ...(this.o.allocationPolicy ? { allocationPolicy: this.o.allocationPolicy } : {}),
      ...(this.o.iotHubs ? { iotHubs: [...this.o.iotHubs] } : {}),
    };
  }

  /** Does the group at the service already say what we want (both slots included)? */
  private groupMatches(have: Json, want: Json, primary: TrustedCa, secondary?: TrustedCa): boolean {
    const hx = have.attestation?.x509 ?? {};
    const wx = want.attestation.x509;
    const thumb = (slot: string) => hx.signingCertificates?.[slot]?.info?.sha256Thumbprint?.toLowerCase();
    const slotOk = wx.caReferences
      ? hx.caReferences?.primary === wx.caReferences.primary &&
        hx.caReferences?.secondary === wx.caReferences.secondary &&
        !hx.signingCertificates
      : thumb("primary") === primary.fingerprint.toLowerCase() &&
        thumb("secondary") === secondary?.fingerprint.toLowerCase() &&
        !hx.caReferences;
    const same = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
    return (
      slotOk &&
      have.attestation?.type === "x509" &&
      (have.provisioningStatus ?? "enabled") === "enabled" &&
      same(have.reprovisionPolicy, want.reprovisionPolicy) &&
      same(have.allocationPolicy, want.allocationPolicy) &&
      same(have.iotHubs, want.iotHubs)
    );
  }

  private async ensureGroup(primary: TrustedCa, secondary?: TrustedCa): Promise<void> {
    const want = this.groupBody(primary, secondary);
    const id = want.enrollmentGroupId as string;
    const path = `/enrollmentGroups/${encodeURIComponent(id)}`;
    const etags: string[] = [];
    for (let attempt = 1; attempt <= 2; attempt++) {
      const got = await this.call("GET", path);
      if (got.status !== 200 && got.status !== 404) throw this.unexpected(got, `read enrollment group ${id}`);
      const have = got.status === 200 ? got.body : undefined;
      if (have && this.groupMatches(have, want, primary, secondary)) return;
      if (have?.etag) etags.push(have.etag);
      await this.take(1);
      const put = await this.call("PUT", path, want, have?.etag ? { "if-match": have.etag } : {});
      if (put.status === 200) return;
      if (put.status === 412) continue;
      if (put.status === 400)
        throw new FleetError(
          "INVALID_INPUT",
          `${this.label}: enrollment group ${id} for CA '${primary.name}' refused: ${String(put.body?.message ?? "").slice(0, 300)}`,
          "hub",
        );
      throw this.unexpected(put, `write enrollment group ${id}`);
    }
    throw new FleetError(
      "CONFLICT",
      `${this.label}: enrollment group ${id} changed while fleetguard updated it (If-Match ${etags.join(", then ")}: 412 twice); someone else is writing it: run again once it is settled`,
      "hub",
    );
  }

  /**
   * The trust list by CA name, newest generation first: one or two generations a name (a group
   * has a primary and a secondary slot), never two of one generation.
   */
  private generations(cas: readonly TrustedCa[]): Map<string, TrustedCa[]> {
    const byName = new Map<string, TrustedCa[]>();
    cas.forEach((ca, i) => {
      const g = ca?.generation ?? 1;
      if (!Number.isInteger(g) || g < 1)
        throw invalid(`cas[${i}].generation`, ca?.generation, "a whole number >= 1");
      const same = byName.get(ca.name) ?? [];
      if (same.some((x) => (x.generation ?? 1) === g))
        throw invalid(
          `cas[${i}].generation`,
          g,
          `a generation other than that of the other CA named '${ca.name}'`,
        );
      same.push(ca);
      byName.set(ca.name, same);
    });
    for (const [name, list] of byName) {
      list.sort((a, b) => (b.generation ?? 1) - (a.generation ?? 1));
      if (list.length > 2)
        throw invalid(
          "cas",
          `${list.length} generations of CA '${name}' (${list.map((c) => c.generation ?? 1).join(", ")})`,
          "at most two: the successor and its predecessor (an enrollment group has a primary and a secondary slot)",
        );
    }
    return byName;
  }

  async ensureTrust(cas: readonly TrustedCa[]): Promise<HubTrustSummary> {
    if (!Array.isArray(cas) || cas.length === 0) throw invalid("cas", cas, "at least one issuing CA");
    for (const ca of cas) this.issuers.add(new crypto.X509Certificate(ca.certificatePem).subject);
    // what devices connect to: the global endpoint with the instance's id scope (never the service API host)
    const endpoint = this.o.idScope
      ? `${DPS_GLOBAL_ENDPOINT} (id scope ${this.o.idScope})`
      : DPS_GLOBAL_ENDPOINT;
    const byName = this.generations(cas);
    if (this.o.mode === "individual") return { endpoint, caIds: cas.map((c) => c.fingerprint) };
    for (const [name, [primary, secondary]] of byName) {
      await this.ensureGroup(primary, secondary);
      this.groupIds.add(enrollmentGroupId(name));
    }
    return {
      endpoint,
      caIds: cas.map((c) =>
        (this.o.groupAttestation ?? "caReferences") === "caReferences"
          ? this.certificateName(c)
          : c.fingerprint,
      ),
    };
  }

  /** Delete the enrollment groups of these CAs (destroy of the last registration using them). */
  async removeTrust(cas: readonly TrustedCa[]): Promise<void> {
    if (this.o.mode !== "group") return;
    for (const id of new Set(cas.map((ca) => enrollmentGroupId(ca.name)))) {
      await this.take(1);
      const a = await this.call("DELETE", `/enrollmentGroups/${encodeURIComponent(id)}`, undefined, {
        "if-match": "*",
      });
      if (a.status !== 204 && a.status !== 404 && a.status !== 412)
        throw this.unexpected(a, `delete enrollment group ${id}`);
    }
  }

  // ---- registrations ---------------------------------------------------------------------

  private refuse(serial: string, e: unknown): Outcome {
    if (e instanceof FleetError && e.field === "deviceId")
      return { serial, ok: false, reason: e.message, retryable: false };
    throw e;
  }

  /** Bulk operations of at most `batch` enrollments; per item errors by registration id. */
  private async bulk(
    mode: "create" | "updateIfMatchETag" | "delete",
    items: Json[],
  ): Promise<Map<string, { code: number; status: string }>> {
    if (items.length > DPS_BULK_LIMIT)
      throw new FleetError("INTERNAL", `bulk: ${items.length} items, at most ${DPS_BULK_LIMIT}`);
    await this.take(items.length);
    const a = await this.call("POST", "/enrollments", { enrollments: items, mode });
    if (a.status !== 200) throw this.unexpected(a, `bulk ${mode} of ${items.length} enrollments`);
    const errors = new Map<string, { code: number; status: string }>();
    for (const e of a.body?.errors ?? [])
      errors.set(e.registrationId, { code: e.errorCode, status: e.errorStatus });
    return errors;
  }

  private static certBase64(der: Buffer): string {
    return der.toString("base64");
  }

  async register(certs: readonly DeviceCert[], onProgress?: (done: number) => void): Promise<Outcome[]> {
    const out: Outcome[] = [];
    const byId = new Map<string, DeviceCert[]>();
    for (const c of certs) {
      try {
        const id = registrationId(c.deviceId);
        this.seen.set(c.serial, c.der);
        if (this.o.mode === "group") {
          this.live.set(id, [...(this.live.get(id) ?? []).filter((x) => x.serial !== c.serial), c]);
          out.push({ serial: c.serial, ok: true, remoteId: id });
          continue;
        }
        byId.set(id, [...(byId.get(id) ?? []), c]);
      } catch (e) {
        out.push(this.refuse(c.serial, e));
      }
    }
    if (this.o.mode === "group") {
      onProgress?.(certs.length);
      return out;
    }
    const ids = [...byId.keys()];
    let done = out.length;
    for (let i = 0; i < ids.length; i += this.batch) {
      const chunk = ids.slice(i, i + this.batch);
      const items = chunk.map((id) => this.enrollmentBody(id, byId.get(id) as DeviceCert[]));
      let errors: Map<string, { code: number; status: string }>;
      try {
        errors = await this.bulk("create", items);
      } catch (e) {
        throw this.partial(e, done, certs.length, "registered");
      }
      for (const id of chunk) {
        const mine = byId.get(id) as DeviceCert[];
        const err = errors.get(id);
        if (!err) {
          for (const c of mine) out.push({ serial: c.serial, ok: true, remoteId: id });
        } else if (err.code === 409 || err.code === 409201 || /conflict|exist/i.test(err.status)) {
          // already enrolled (a rerun, or a rotation's next certificate): converge the record
          try {
            out.push(...(await this.converge(id, mine)));
          } catch (e) {
            throw this.partial(e, done, certs.length, "registered");
          }
        } else {
          for (const c of mine)
            out.push({
              serial: c.serial,
              ok: false,
              reason: `${this.label} refused ${id}: ${err.status} (${err.code})`,
              retryable: err.code === 429 || err.code >= 500,
            });
        }
        done += mine.length;
      }
      onProgress?.(done);
    }
    return out;
  }

  private enrollmentBody(id: string, certs: readonly DeviceCert[]): Json {
    const [primary, secondary] = certs;
    return {
      registrationId: id,
      deviceId: primary.deviceId,
      attestation: {
        type: "x509",
        x509: {
          clientCertificates: {
            primary: { certificate: AzureDpsDriver.certBase64(primary.der) },
            ...(secondary ? { secondary: { certificate: AzureDpsDriver.certBase64(secondary.der) } } : {}),
          },
        },
      },
      capabilities: { iotEdge: false },
      provisioningStatus: "enabled",
      reprovisionPolicy: this.o.reprovisionPolicy ?? { updateHubAssignment: true, migrateDeviceData: true },
      ...(this.o.allocationPolicy ? { allocationPolicy: this.o.allocationPolicy } : {}),
      ...(this.o.iotHubs ? { iotHubs: [...this.o.iotHubs] } : {}),
    };
  }

  /** An existing enrollment: enabled, holding these certificates (rerun or rotation); If-Match, one re-read. */
  private async converge(id: string, certs: readonly DeviceCert[]): Promise<Outcome[]> {
    for (let attempt = 1; attempt <= 2; attempt++) {
      const have = await this.getEnrollment(id);
      const sha = (slot: string) =>
        have?.attestation?.x509?.clientCertificates?.[slot]?.info?.sha256Thumbprint?.toLowerCase();
      const held = [sha("primary"), sha("secondary")];
      const missing = certs.filter((c) => !held.includes(c.sha256.toLowerCase()));
      if (have && missing.length === 0 && (have.provisioningStatus ?? "enabled") === "enabled")
        return certs.map((c) => ({ serial: c.serial, ok: true, remoteId: id }));
      let body: Json;
      let ifMatch: Record<string, string> = {};
      if (!have) body = this.enrollmentBody(id, certs);
      else {
        body = this.writable(have);
        body.provisioningStatus = "enabled";
        const cc = body.attestation.x509.clientCertificates;
        // the newest certificate goes to the secondary slot; the primary stays until it is disabled
        for (const c of missing) {
          if (!cc.primary) cc.primary = { certificate: AzureDpsDriver.certBase64(c.der) };
          else cc.secondary = { certificate: AzureDpsDriver.certBase64(c.der) };
        }
        ifMatch = { "if-match": have.etag };
      }
      await this.take(1);
      const put = await this.call("PUT", `/enrollments/${encodeURIComponent(id)}`, body, ifMatch);
      if (put.status === 200) return certs.map((c) => ({ serial: c.serial, ok: true, remoteId: id }));
      if (put.status === 412) continue;
      const why = `${this.label} refused ${id}: ${put.status} ${String(put.body?.message ?? "").slice(0, 200)}`;
      return certs.map((c) => ({ serial: c.serial, ok: false, reason: why, retryable: put.status >= 500 }));
    }
    return certs.map((c) => ({
      serial: c.serial,
      ok: false,
      reason: `${this.label}: enrollment ${id} changed while fleetguard updated it (412 twice): CONFLICT`,
      retryable: true,
    }));
  }

  /** A record as read, made fit to send back: no read-only properties. */
  private writable(have: Json): Json {
    const body = structuredClone(have);
    for (const k of READ_ONLY) delete body[k];
    delete body.etag;
    return body;
  }

  private partial(e: unknown, done: number, total: number, verb: string): FleetError {
    const why = e instanceof Error ? e.message : String(e);
    return new FleetError(
      e instanceof FleetError ? e.code : "UNAVAILABLE",
      `${why} (${done} of ${total} ${verb} by then)`,
      e instanceof FleetError ? e.field : "hub",
    );
  }

  async disable(refs: readonly RemoteRef[], onProgress?: (done: number) => void): Promise<Outcome[]> {
    const out: Outcome[] = [];
    let done = 0;
    for (let i = 0; i < refs.length; i += this.batch) {
      const chunk = refs.slice(i, i + this.batch);
      try {
        out.push(
          ...(this.o.mode === "group"
            ? await this.blockInGroup(chunk)
            : await this.disableEnrollments(chunk)),
        );
      } catch (e) {
        throw this.partial(e, done, refs.length, "disabled");
      }
      done += chunk.length;
      onProgress?.(done);
    }
    return out;
  }

  /** group mode: a DISABLED individual enrollment per device, which takes precedence over the group. */
  private async blockInGroup(refs: readonly RemoteRef[]): Promise<Outcome[]> {
    const out: Outcome[] = [];
    const items: Json[] = [];
    const itemRefs = new Map<string, RemoteRef[]>();
    const pinned = new Map<string, ReadonlyArray<{ der: Buffer }>>();
    for (const r of refs) {
      let id: string;
      try {
        id = r.remoteId ?? registrationId(r.deviceId);
      } catch (e) {
        out.push(this.refuse(r.serial, e));
        continue;
      }
      if (itemRefs.has(id)) {
        itemRefs.get(id)?.push(r);
        continue;
      }
      // a device with another live certificate (a rotation) is pinned to it, not blocked: an
      // enabled individual enrollment holding only the live certificates locks the old one out
      const known = this.live.get(id) ?? (await this.o.liveCertificates?.(r.deviceId)) ?? [];
      const live = known.filter((c) => !refs.some((x) => x.serial === c.serial));
      if (live.length) {
        itemRefs.set(id, [r]);
        pinned.set(id, live);
        items.push(this.pinBody(id, r.deviceId, live));
        continue;
      }
      const der = this.seen.get(r.serial) ?? (await this.o.lookupCertificate?.(r));
      if (!der) {
        out.push({
          serial: r.serial,
          ok: false,
          reason: `${this.label}: disabling ${id} in group mode needs its certificate (an X.509 individual enrollment attests with one): pass lookupCertificate`,
          retryable: false,
        });
        continue;
      }
      itemRefs.set(id, [r]);
      items.push({
        registrationId: id,
        deviceId: r.deviceId,
        attestation: {
          type: "x509",
          x509: { clientCertificates: { primary: { certificate: AzureDpsDriver.certBase64(der) } } },
        },
        capabilities: { iotEdge: false },
        provisioningStatus: "disabled",
      });
    }
    if (!items.length) return out;
    const errors = await this.bulk("create", items);
    for (const [id, rs] of itemRefs) {
      const err = errors.get(id);
      if (!err) {
        for (const r of rs) out.push({ serial: r.serial, ok: true, remoteId: id });
        continue;
      }
      if (err.code === 409 || /conflict|exist/i.test(err.status)) {
        // an enrollment exists for the device already: pin it to the live certificates, or disable it
        const live = pinned.get(id);
        const [o] = live ? await this.pin(id, rs[0], live) : await this.setDisabled(id, rs[0], true);
        for (const r of rs) out.push({ ...o, serial: r.serial } as Outcome);
        continue;
      }
      for (const r of rs)
        out.push({
          serial: r.serial,
          ok: false,
          reason: `${this.label} refused ${id}: ${err.status} (${err.code})`,
          retryable: err.code >= 500,
        });
    }
    return out;
  }

  private pinBody(id: string, deviceId: string, live: ReadonlyArray<{ der: Buffer }>): Json {
    const [primary, secondary] = live.slice(-2);
    return {
      registrationId: id,
      deviceId,
      attestation: {
        type: "x509",
        x509: {
          clientCertificates: {
            primary: { certificate: AzureDpsDriver.certBase64(primary.der) },
            ...(secondary ? { secondary: { certificate: AzureDpsDriver.certBase64(secondary.der) } } : {}),
          },
        },
      },
      capabilities: { iotEdge: false },
      provisioningStatus: "enabled",
    };
  }

  /** group mode: make the device's individual enrollment hold exactly its live certificates, enabled. */
  private async pin(id: string, r: RemoteRef, live: ReadonlyArray<{ der: Buffer }>): Promise<Outcome[]> {
    for (let attempt = 1; attempt <= 2; attempt++) {
      const have = await this.getEnrollment(id);
      await this.take(1);
      const put = await this.call(
        "PUT",
        `/enrollments/${encodeURIComponent(id)}`,
        this.pinBody(id, r.deviceId, live),
        have?.etag ? { "if-match": have.etag } : {},
      );
      if (put.status === 200) return [{ serial: r.serial, ok: true, remoteId: id }];
      if (put.status === 412) continue;
      return [
        {
          serial: r.serial,
          ok: false,
          reason: `${this.label} refused pinning ${id} to its live certificate: ${put.status} ${String(put.body?.message ?? "").slice(0, 200)}`,
          retryable: put.status >= 500,
        },
      ];
    }
    return [
      {
        serial: r.serial,
        ok: false,
        reason: `${this.label}: enrollment ${id} changed while fleetguard wrote it (412 twice): CONFLICT`,
        retryable: true,
      },
    ];
  }

  /** individual mode: drop the certificate's slot if the other slot is live, else disable the enrollment. */
  private async disableEnrollments(refs: readonly RemoteRef[]): Promise<Outcome[]> {
    const out: Outcome[] = [];
    for (const r of refs) {
      let id: string;
      try {
        id = r.remoteId ?? registrationId(r.deviceId);
      } catch (e) {
        out.push(this.refuse(r.serial, e));
        continue;
      }
      out.push(...(await this.setDisabled(id, r)));
    }
    return out;
  }

  /**
   * individual mode: the certificate leaves its slot when the other slot holds a live one (a
   * rotation), nothing is written when the enrollment no longer holds it, else the enrollment is
   * disabled; `blockDevice` (group mode): the enrollment is disabled whatever it holds
   */
  private async setDisabled(id: string, r: RemoteRef, blockDevice = false): Promise<Outcome[]> {
    for (let attempt = 1; attempt <= 2; attempt++) {
      const have = await this.getEnrollment(id);
      if (!have) return [{ serial: r.serial, ok: true, remoteId: id }]; // nothing can attest with it
      const body = this.writable(have);
      const cc = body.attestation?.x509?.clientCertificates ?? {};
      const slotOf = (s: string) =>
        cc[s]?.info?.serialNumber && normSerial(cc[s].info.serialNumber) === normSerial(r.serial);
      const held = slotOf("primary") ? "primary" : slotOf("secondary") ? "secondary" : undefined;
      const other = held === "primary" ? "secondary" : "primary";
      if (!blockDevice && !held && (cc.primary || cc.secondary))
        return [{ serial: r.serial, ok: true, remoteId: id }]; // it attests with other certificates only
      if (!blockDevice && held && cc[other]) {
        // a rotation: the device's other certificate stays; this one leaves the enrollment
        cc.primary = cc[other];
        delete cc.secondary;
      } else {
        if (have.provisioningStatus === "disabled") return [{ serial: r.serial, ok: true, remoteId: id }];
        body.provisioningStatus = "disabled";
      }
      await this.take(1);
      const put = await this.call("PUT", `/enrollments/${encodeURIComponent(id)}`, body, {
        "if-match": have.etag,
      });
      if (put.status === 200) return [{ serial: r.serial, ok: true, remoteId: id }];
      if (put.status === 412) continue;
      return [
        {
          serial: r.serial,
          ok: false,
          reason: `${this.label} refused disabling ${id}: ${put.status} ${String(put.body?.message ?? "").slice(0, 200)}`,
          retryable: put.status >= 500,
        },
      ];
    }
    return [
      {
        serial: r.serial,
        ok: false,
        reason: `${this.label}: enrollment ${id} changed while fleetguard disabled it (412 twice): CONFLICT`,
        retryable: true,
      },
    ];
  }

  async remove(refs: readonly RemoteRef[], onProgress?: (done: number) => void): Promise<Outcome[]> {
    const out: Outcome[] = [];
    let done = 0;
    for (let i = 0; i < refs.length; i += this.batch) {
      const chunk = refs.slice(i, i + this.batch);
      const byId = new Map<string, RemoteRef[]>();
      for (const r of chunk) {
        try {
          const id = r.remoteId ?? registrationId(r.deviceId);
          byId.set(id, [...(byId.get(id) ?? []), r]);
        } catch (e) {
          out.push(this.refuse(r.serial, e));
        }
      }
      let errors: Map<string, { code: number; status: string }>;
      try {
        errors = byId.size
          ? await this.bulk(
              "delete",
              [...byId.keys()].map((id) => ({ registrationId: id, attestation: { type: "x509" } })),
            )
          : new Map();
      } catch (e) {
        throw this.partial(e, done, refs.length, "removed");
      }
      for (const [id, rs] of byId) {
        const err = errors.get(id);
        // 404: not there (group mode registers nothing per device; or a rerun): removed all the same
        const ok = !err || err.code === 404 || /not ?found/i.test(err.status);
        for (const r of rs)
          out.push(
            ok
              ? { serial: r.serial, ok: true, remoteId: id }
              : {
                  serial: r.serial,
                  ok: false,
                  reason: `${this.label} refused deleting ${id}: ${err?.status} (${err?.code})`,
                  retryable: (err?.code ?? 0) >= 500,
                },
          );
      }
      done += chunk.length;
      onProgress?.(done);
    }
    return out;
  }

  async read(refs: readonly RemoteRef[]): Promise<RemoteStatus[]> {
    const ids = refs.map((r) => {
      try {
        return r.remoteId ?? registrationId(r.deviceId);
      } catch {
        return undefined;
      }
    });
    // many refs: one paged query beats a read each
    const all = new Map<string, Json>();
    if (refs.length > 20) for (const e of await this.queryAll("enrollments")) all.set(e.registrationId, e);
    else
      for (const id of new Set(ids))
        if (id) {
          const e = await this.getEnrollment(id);
          if (e) all.set(id, e);
        }
    let groupActive = true;
    if (this.o.mode === "group") {
      const groups = await this.queryAll("enrollmentGroups");
      // this registration's groups (from ensureTrust), else any group fleetguard made
      const ours = (id: string) =>
        this.groupIds.size ? this.groupIds.has(id) : id.startsWith("fleetguard-");
      groupActive = groups.some(
        (g) => ours(String(g.enrollmentGroupId)) && (g.provisioningStatus ?? "enabled") === "enabled",
      );
    }
    return refs.map((r, i) => {
      const id = ids[i];
      const e = id ? all.get(id) : undefined;
      const cc = e?.attestation?.x509?.clientCertificates ?? {};
      if (this.o.mode === "group") {
        // an individual enrollment takes precedence over the group: disabled, or holding other certificates only
        if (e && e.provisioningStatus === "disabled")
          return { serial: r.serial, remoteId: id ?? "", status: "inactive" };
        if (e) {
          const holds = ["primary", "secondary"].some(
            (s) => cc[s]?.info?.serialNumber && normSerial(cc[s].info.serialNumber) === normSerial(r.serial),
          );
          if (!holds) return { serial: r.serial, remoteId: id ?? "", status: "inactive" };
        }
        return { serial: r.serial, remoteId: id ?? "", status: groupActive ? "active" : "missing" };
      }
      if (!e) return { serial: r.serial, remoteId: id ?? "", status: "missing" };
      const held = ["primary", "secondary"].some(
        (s) => cc[s]?.info?.serialNumber && normSerial(cc[s].info.serialNumber) === normSerial(r.serial),
      );
      if (!held) return { serial: r.serial, remoteId: id ?? "", status: "missing" };
      return {
        serial: r.serial,
        remoteId: id ?? "",
        status: (e.provisioningStatus ?? "enabled") === "enabled" ? "active" : "inactive",
      };
    });
  }

  async unknown(known: ReadonlySet<string>): Promise<string[]> {
    const out: string[] = [];
    for (const e of await this.queryAll("enrollments")) {
      if (known.has(e.registrationId)) continue;
      // only enrollments of certificates under this registration's CAs (others belong to someone else)
      const issuer = e.attestation?.x509?.clientCertificates?.primary?.info?.issuerName;
      if (this.issuers.size && issuer && !this.issuerKnown(issuer)) continue;
      out.push(e.registrationId);
    }
    return out.sort();
  }

  private issuerKnown(issuerName: string): boolean {
    const norm = (s: string) =>
      s
        .split(/\s*[,\n]\s*/)
        .filter(Boolean)
        .sort()
        .join(",");
    const n = norm(issuerName);
    for (const s of this.issuers) if (norm(s) === n) return true;
    return false;
  }

  async close(): Promise<void> {
    this.agent.destroy();
  }
}
