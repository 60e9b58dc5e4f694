/**
 * A contract service for the DPS service API (api-version 2021-10-01): a local HTTPS server on
 * loopback that implements the subset fleetguard's AzureDpsDriver uses (enrollment groups and
 * individual enrollments: create or update, get, delete, query, bulk; registration states: get,
 * delete) and checks every request and every response against the vendored OpenAPI document
 * (spec.ts, with openapi-request-validator / openapi-response-validator). No emulator of DPS
 * exists; this is a contract test, not a copy of the service: it holds records in memory and
 * never allocates a device to an IoT hub nor runs the device registration flow.
 *
 * Besides the document it enforces what the service documents: SAS authentication
 * (`SharedAccessSignature sr=&sig=&se=&skn=`, HMAC-SHA256 over "<url-encoded sr>\n<se>" with the
 * base64-decoded policy key), If-Match (RFC 9110: "*" = the record exists, else the current
 * ETag; 412 otherwise), continuation paging (x-ms-max-item-count, x-ms-continuation), at most
 * 10 items per bulk operation, the path id equal to the body's id, parseable X.509 certificates
 * (answered with their info, as the service does), CA references to certificates the service
 * holds, and throttling (429 with Retry-After) when a test asks for it.
 */

import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import {
  coerceHeaders,
  loadSpec,
  type Operation,
  operations,
  readOnlyInRequest,
  type Violation,
} from "./spec";

export type { Violation } from "./spec";

// biome-ignore lint/suspicious/noExplicitAny: records are the document's JSON
type Json = any;

export const API_VERSION = "2021-10-01";
export const BULK_LIMIT = 10;
/** the page size when a query sends no x-ms-max-item-count, and the most it may ask for */
export const DEFAULT_PAGE = 100;

export interface DpsContractOptions {
  /** shared access policies: name -> base64 key */
  policies: Record<string, string>;
  /** certificate names the service holds (what caReferences may name); ARM uploads them */
  certificates?: string[];
  /** the largest page a query answers (x-ms-max-item-count above it is lowered); default 100 */
  maxPageSize?: number;
  /** seconds since the epoch (for SAS expiry); default the real clock */
  now?: () => number;
}

export interface RequestRecord {
  operationId: string;
  method: string;
  path: string;
  status: number;
  /** items in a bulk operation */
  items?: number;
  /** the request's If-Match header, when it sent one */
  ifMatch?: string;
}

export interface DpsContractService {
  /** https://127.0.0.1:<port> */
  readonly url: string;
  /** the self-signed certificate to trust (PEM) */
  readonly ca: string;
  readonly violations: Violation[];
  readonly requests: RequestRecord[];
  readonly enrollments: Map<string, Json>;
  readonly groups: Map<string, Json>;
  readonly registrations: Map<string, Json>;
  readonly certificates: Set<string>;
  /** answer the next `count` requests with 429 and this Retry-After (seconds) */
  throttleNext(count: number, retryAfterSeconds: number): void;
  /**
   * called after authentication, before the operation runs: a test changes records here (another
   * writer), returns "drop" to cut the connection (an unreachable service) or "drop-after" to run
   * the operation and cut the connection before the answer (a lost answer)
   */
  beforeHandle?: (operationId: string, id: string | undefined) => "drop" | "drop-after" | undefined;
  /** change a record behind the client's back (a new ETag), as another operator would */
  touch(kind: "enrollment" | "group", id: string, change?: (r: Json) => void): void;
  close(): Promise<void>;
}

/** The SAS token a client sends: exported so tests can build a bad one on purpose. */
export function sasToken(
  resourceUri: string,
  keyName: string,
  keyBase64: string,
  expirySeconds: number,
): string {
  const sr = encodeURIComponent(resourceUri);
  const sig = crypto
    .createHmac("sha256", Buffer.from(keyBase64, "base64"))
    .update(`${sr}\n${expirySeconds}`)
    .digest("base64");
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${expirySeconds}&skn=${encodeURIComponent(keyName)}`;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly info?: Record<string, string>,
  ) {
    super(message);
  }
}

/** A self-signed P-256 certificate for 127.0.0.1 and localhost, made by OpenSSL for this run. */
function selfSigned(): { key: string; cert: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dps-contract-"));
  try {
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=dps-contract.local",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-keyout",
        path.join(dir, "key.pem"),
        "-out",
        path.join(dir, "cert.pem"),
      ],
      { stdio: "pipe" },
    );
    return {
      key: fs.readFileSync(path.join(dir, "key.pem"), "utf8"),
      cert: fs.readFileSync(path.join(dir, "cert.pem"), "utf8"),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** X509CertificateInfo of a certificate given as PEM or base64 DER; 400 when it does not parse. */
function certificateInfo(text: string, at: string): Json {
  let x: crypto.X509Certificate;
  try {
    const pem = text.includes("-----BEGIN")
      ? text
      : `-----BEGIN CERTIFICATE-----\n${text.replace(/\s+/g, "")}\n-----END CERTIFICATE-----\n`;
    x = new crypto.X509Certificate(pem);
  } catch {
    throw new HttpError(400, `${at}: not an X.509 certificate`);
  }
  const iso = (d: string) => new Date(d).toISOString();
  return {
    subjectName: x.subject.split("\n").reverse().join(", "),
    sha1Thumbprint: x.fingerprint.replace(/:/g, ""),
    sha256Thumbprint: x.fingerprint256.replace(/:/g, ""),
    issuerName: x.issuer.split("\n").reverse().join(", "),
    notBeforeUtc: iso(x.validFrom),
    notAfterUtc: iso(x.validTo),
    serialNumber: x.serialNumber,
    version: 3,
  };
}

/** The service keeps certificate info, not the certificate, and answers with the info. */
function storeCertificates(
  x509: Json,
  at: string,
  certificates: Set<string>,
  group: boolean,
  current?: Json,
): void {
  if (!x509) throw new HttpError(400, `${at}.x509: missing for attestation type x509`);
  for (const kind of ["clientCertificates", "signingCertificates"]) {
    for (const slot of ["primary", "secondary"]) {
      const c = x509[kind]?.[slot];
      if (!c) continue;
      if (typeof c.certificate !== "string") {
        // an update may send back what a read returned (the info): the service keeps the certificate it holds
        const held = ["primary", "secondary"]
          .map((s) => current?.attestation?.x509?.[kind]?.[s]?.info)
          .find((i) => i && i.sha256Thumbprint === c.info?.sha256Thumbprint);
        if (!held)
          throw new HttpError(
            400,
            `${at}.x509.${kind}.${slot}.certificate: missing, and the info is not of a certificate the record holds`,
          );
        x509[kind][slot] = { info: held };
        continue;
      }
      x509[kind][slot] = { info: certificateInfo(c.certificate, `${at}.x509.${kind}.${slot}.certificate`) };
    }
  }
  if (x509.caReferences) {
    if (!group)
      throw new HttpError(400, `${at}.x509.caReferences: only an enrollment group may use CA references`);
    for (const slot of ["primary", "secondary"]) {
      const name = x509.caReferences[slot];
      if (name !== undefined && !certificates.has(name))
        throw new HttpError(
          400,
          `${at}.x509.caReferences.${slot}: no certificate named ${JSON.stringify(name)}`,
        );
    }
  }
  const slots = ["clientCertificates", "signingCertificates", "caReferences"].filter((k) => x509[k]?.primary);
  if (slots.length !== 1)
    throw new HttpError(
      400,
      `${at}.x509: want exactly one of clientCertificates, signingCertificates, caReferences with a primary`,
    );
  if (group && slots[0] === "clientCertificates")
    throw new HttpError(400, `${at}.x509.clientCertificates: an enrollment group attests with a CA`);
  if (!group && slots[0] !== "clientCertificates")
    throw new HttpError(400, `${at}.x509: an individual enrollment attests with clientCertificates`);
}

export async function startDpsContract(options: DpsContractOptions): Promise<DpsContractService> {
  const { doc } = loadSpec();
  const ops: Operation[] = operations(doc);
  const { key, cert } = selfSigned();
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  const maxPage = options.maxPageSize ?? DEFAULT_PAGE;
  const violations: Violation[] = [];
  const requests: RequestRecord[] = [];
  const enrollments = new Map<string, Json>();
  const groups = new Map<string, Json>();
  const registrations = new Map<string, Json>();
  const certificates = new Set(options.certificates ?? []);
  let throttle = { count: 0, retryAfter: 1 };
  let version = 0;
  let host = "";
  let svc: DpsContractService | undefined;

  const etag = () => `"${Buffer.from(`v${++version}`).toString("base64")}"`;

  function authorize(header: string | undefined): void {
    const fail = (why: string) => {
      throw new HttpError(401, `Unauthorized: ${why}`, {}, { reason: why });
    };
    if (!header?.startsWith("SharedAccessSignature ")) fail("no SharedAccessSignature authorization");
    const fields = new URLSearchParams((header as string).slice("SharedAccessSignature ".length));
    const sr = fields.get("sr");
    const sig = fields.get("sig");
    const se = fields.get("se");
    const skn = fields.get("skn");
    if (!sr || !sig || !se || !skn) fail("the token lacks one of sr, sig, se, skn");
    const k = options.policies[skn as string];
    if (k === undefined) fail(`no shared access policy named ${JSON.stringify(skn)}`);
    if (!/^\d+$/.test(se as string) || Number(se) <= now()) fail("the token has expired");
    if ((sr as string).toLowerCase() !== host.toLowerCase())
      fail(`the token is for ${JSON.stringify(sr)}, not this service`);
    const want = crypto
      .createHmac("sha256", Buffer.from(k as string, "base64"))
      .update(`${encodeURIComponent(sr as string)}\n${se}`)
      .digest();
    const got = Buffer.from(sig as string, "base64");
    if (got.length !== want.length || !crypto.timingSafeEqual(got, want))
      fail("the signature does not match");
  }

  function precondition(current: Json | undefined, ifMatch: string | undefined): void {
    if (ifMatch === undefined) return;
    if (ifMatch === "*") {
      if (!current) throw new HttpError(412, "Precondition failed: If-Match * and no such record");
      return;
    }
    if (!current || current.etag !== ifMatch)
      throw new HttpError(
        412,
        `Precondition failed: If-Match ${ifMatch} is not the record's ETag`,
        {},
        {
          current: current?.etag ?? "none",
        },
      );
  }

  function page(items: Json[], headers: Record<string, unknown>, itemType: string) {
    const asked = headers["x-ms-max-item-count"];
    const size = typeof asked === "number" && asked > 0 ? Math.min(asked, maxPage) : maxPage;
    const cont = headers["x-ms-continuation"];
    let start = 0;
    if (typeof cont === "string") {
      const m = /^offset:(\d+)$/.exec(Buffer.from(cont, "base64").toString());
      if (!m) throw new HttpError(400, "x-ms-continuation: not a token this service issued");
      start = Number(m[1]);
    }
    const sorted = [...items].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((x) => x.record);
    const out = sorted.slice(start, start + size);
    const h: Record<string, string> = { "x-ms-max-item-count": String(size), "x-ms-item-type": itemType };
    if (start + size < sorted.length)
      h["x-ms-continuation"] = Buffer.from(`offset:${start + size}`).toString("base64");
    return { status: 200, body: out, headers: h };
  }

  function query(body: Json): void {
    // the subset fleetguard sends: every record
    if (!/^\s*(\*|select \* from (enrollments|enrollmentgroups))\s*$/i.test(body.query))
      throw new HttpError(
        400,
        `query: got ${JSON.stringify(body.query)}, this contract service answers "*" only`,
      );
  }

  function putRecord(kind: "enrollment" | "group", id: string, body: Json, ifMatch: string | undefined) {
    const store = kind === "group" ? groups : enrollments;
    const idField = kind === "group" ? "enrollmentGroupId" : "registrationId";
    if (body[idField] !== id)
      throw new HttpError(
        400,
        `${idField}: got ${JSON.stringify(body[idField])}, want the path id ${JSON.stringify(id)}`,
      );
    const current = store.get(id);
    precondition(current, ifMatch);
    const record = structuredClone(body);
    if (record.attestation.type !== "x509")
      throw new HttpError(
        400,
        `attestation.type: got ${record.attestation.type}, this contract service holds x509 only`,
      );
    storeCertificates(record.attestation.x509, "attestation", certificates, kind === "group", current);
    const t = new Date().toISOString();
    record.etag = etag();
    record.createdDateTimeUtc = current?.createdDateTimeUtc ?? t;
    record.lastUpdatedDateTimeUtc = t;
    store.set(id, record);
    return record;
  }

  function bulk(body: Json) {
    const items: Json[] = body.enrollments;
    if (items.length > BULK_LIMIT)
      throw new HttpError(
        400,
        `enrollments: got ${items.length} items, want at most ${BULK_LIMIT} per bulk operation`,
      );
    const errors: Json[] = [];
    for (const e of items) {
      const id = e.registrationId;
      const current = enrollments.get(id);
      const err = (code: number, status: string) =>
        errors.push({ registrationId: id, errorCode: code, errorStatus: status });
      try {
        if (body.mode === "delete") {
          if (!current) err(404, "NotFound");
          else if (e.etag !== undefined && e.etag !== "*" && e.etag !== current.etag)
            err(412, "PreconditionFailed");
          else enrollments.delete(id);
          continue;
        }
        if (body.mode === "create" && current) {
          err(409, "Conflict: an enrollment with this registration id exists");
          continue;
        }
        if (body.mode === "updateIfMatchETag" && (!current || (e.etag !== "*" && e.etag !== current.etag))) {
          err(412, "PreconditionFailed");
          continue;
        }
        putRecord("enrollment", id, e, undefined);
      } catch (x) {
        if (!(x instanceof HttpError)) throw x;
        err(x.status, x.message);
      }
    }
    return { status: 200, body: errors.length ? { isSuccessful: false, errors } : { isSuccessful: true } };
  }

  function handle(
    op: Operation,
    params: Record<string, string>,
    headers: Record<string, unknown>,
    body: Json,
  ) {
    const id = params.id;
    const ifMatch = typeof headers["if-match"] === "string" ? (headers["if-match"] as string) : undefined;
    const get = (store: Map<string, Json>, what: string) => {
      const r = store.get(id);
      if (!r) throw new HttpError(404, `${what} ${JSON.stringify(id)} not found`);
      return r;
    };
    const del = (store: Map<string, Json>, what: string) => {
      const current = get(store, what);
      precondition(current, ifMatch);
      store.delete(id);
      return { status: 204 };
    };
    switch (op.operationId) {
      case "IndividualEnrollment_Get":
        return { status: 200, body: get(enrollments, "enrollment") };
      case "IndividualEnrollment_CreateOrUpdate":
        return { status: 200, body: putRecord("enrollment", id, body, ifMatch) };
      case "IndividualEnrollment_Delete":
        return del(enrollments, "enrollment");
      case "IndividualEnrollment_Query":
        query(body);
        return page(
          [...enrollments].map(([k, record]) => ({ id: k, record })),
          headers,
          "Enrollment",
        );
      case "IndividualEnrollment_RunBulkOperation":
        return bulk(body);
      case "EnrollmentGroup_Get":
        return { status: 200, body: get(groups, "enrollment group") };
      case "EnrollmentGroup_CreateOrUpdate":
        return { status: 200, body: putRecord("group", id, body, ifMatch) };
      case "EnrollmentGroup_Delete":
        return del(groups, "enrollment group");
      case "EnrollmentGroup_Query":
        query(body);
        return page(
          [...groups].map(([k, record]) => ({ id: k, record })),
          headers,
          "EnrollmentGroup",
        );
      case "DeviceRegistrationState_Get":
        return { status: 200, body: get(registrations, "registration") };
      case "DeviceRegistrationState_Delete":
        return del(registrations, "registration");
      default:
        throw new HttpError(501, `${op.operationId} is not part of this contract service's subset`);
    }
  }

  function send(
    res: import("node:http").ServerResponse,
    op: Operation | undefined,
    p: string,
    method: string,
    status: number,
    body: unknown,
    headers: Record<string, string>,
  ): void {
    if (op) {
      const bad = op.response.validateResponse(
        status,
        body === undefined ? undefined : structuredClone(body),
      );
      const hv = op.responseHeaders.get(String(status)) ?? op.responseHeaders.get("default");
      const types =
        op.responseHeaderTypes.get(String(status)) ?? op.responseHeaderTypes.get("default") ?? new Map();
      const hbad = hv?.validateRequest({ headers: coerceHeaders(types, headers), query: {}, params: {} });
      const errors = [...(bad?.errors ?? []), ...(hbad?.errors ?? [])];
      if (errors.length) {
        violations.push({ where: "response", operationId: op.operationId, method, path: p, status, errors });
        status = 500;
        body = {
          errorCode: 500000,
          message: `contract service: its own response violates the document: ${JSON.stringify(errors)}`,
        };
      }
    }
    const text = body === undefined ? "" : JSON.stringify(body);
    res.writeHead(status, {
      ...headers,
      ...(text ? { "content-type": "application/json; charset=utf-8" } : {}),
      "content-length": Buffer.byteLength(text),
    });
    res.end(text);
  }

  const server = https.createServer({ key, cert }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const u = new URL(req.url ?? "/", "https://x");
      const method = (req.method ?? "GET").toUpperCase();
      const op = ops.find((o) => o.method === method && o.match.test(u.pathname));
      const ifMatch = typeof req.headers["if-match"] === "string" ? req.headers["if-match"] : undefined;
      const record = (status: number, items?: number) =>
        requests.push({
          operationId: op?.operationId ?? "none",
          method,
          path: u.pathname,
          status,
          items,
          ...(ifMatch !== undefined ? { ifMatch } : {}),
        });
      const fail = (
        status: number,
        message: string,
        extra: Record<string, string> = {},
        info?: Record<string, string>,
      ) => {
        record(status);
        send(res, op, u.pathname, method, status, errorBody(status, message, info), {
          "x-ms-error-code": String(status),
          ...extra,
        });
      };
      if (!op) {
        violations.push({
          where: "request",
          operationId: "none",
          method,
          path: u.pathname,
          errors: ["no operation of the document matches"],
        });
        return fail(404, `no operation ${method} ${u.pathname} in the document`);
      }
      const m = op.match.exec(u.pathname) as RegExpExecArray;
      const params = Object.fromEntries(op.pathParams.map((n, i) => [n, decodeURIComponent(m[i + 1])]));
      const headers = coerceHeaders(op.headerTypes, req.headers as Record<string, string>);
      let body: Json;
      const raw = Buffer.concat(chunks).toString("utf8");
      const errors: unknown[] = [];
      if (raw.length) {
        if (!op.hasBody) errors.push("a body where the operation takes none");
        else if (!/^application\/json\b/.test(String(req.headers["content-type"] ?? "")))
          errors.push(`content-type: got ${req.headers["content-type"] ?? "none"}, want application/json`);
        try {
          body = JSON.parse(raw);
        } catch {
          errors.push("the body is not JSON");
        }
      }
      // the document marks api-version required but gives it a default, which the validator
      // (Ajv useDefaults) fills in: check its presence before the validator sees the query
      if (!u.searchParams.has("api-version"))
        errors.push({ location: "query", path: "api-version", message: "required by the document" });
      if (!errors.length) {
        const v = op.request.validateRequest({
          headers,
          query: Object.fromEntries(u.searchParams),
          params,
          body,
        });
        if (v?.errors) errors.push(...v.errors);
        if (body !== undefined)
          for (const ro of readOnlyInRequest(doc, op.bodySchema, body))
            errors.push({ location: "body", path: ro, message: "a read-only property in a request" });
      }
      if (errors.length) {
        violations.push({ where: "request", operationId: op.operationId, method, path: u.pathname, errors });
        return fail(400, `request violates the document: ${JSON.stringify(errors)}`);
      }
      try {
        if (u.searchParams.get("api-version") !== API_VERSION)
          throw new HttpError(
            400,
            `api-version: got ${u.searchParams.get("api-version")}, want ${API_VERSION}`,
          );
        authorize(req.headers.authorization);
        if (throttle.count > 0) {
          throttle.count--;
          throw new HttpError(429, "Too many requests", { "retry-after": String(throttle.retryAfter) });
        }
        const fault = svc?.beforeHandle?.(op.operationId, params.id);
        if (fault === "drop") {
          record(0);
          req.socket.destroy();
          return;
        }
        const r: { status: number; body?: unknown; headers?: Record<string, string> } = handle(
          op,
          params,
          headers,
          body,
        );
        if (fault === "drop-after") {
          record(0, op.operationId.endsWith("RunBulkOperation") ? body.enrollments.length : undefined);
          req.socket.destroy();
          return;
        }
        record(r.status, op.operationId.endsWith("RunBulkOperation") ? body.enrollments.length : undefined);
        send(res, op, u.pathname, method, r.status, r.body, r.headers ?? {});
      } catch (e) {
        if (!(e instanceof HttpError)) return fail(500, `contract service: ${(e as Error).message}`);
        fail(e.status, e.message, e.headers, e.info);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  host = `127.0.0.1:${port}`;

  svc = {
    url: `https://${host}`,
    ca: cert,
    violations,
    requests,
    enrollments,
    groups,
    registrations,
    certificates,
    throttleNext(count, retryAfterSeconds) {
      throttle = { count, retryAfter: retryAfterSeconds };
    },
    touch(kind, id, change) {
      const store = kind === "group" ? groups : enrollments;
      const r = store.get(id);
      if (!r) throw new Error(`touch: no ${kind} ${id}`);
      change?.(r);
      r.etag = etag();
      r.lastUpdatedDateTimeUtc = new Date().toISOString();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return svc;
}

function errorBody(status: number, message: string, info?: Record<string, string>): Json {
  return {
    errorCode: status * 1000,
    trackingId: crypto.randomUUID(),
    message,
    ...(info ? { info } : {}),
    timestampUtc: new Date().toISOString(),
  };
}
