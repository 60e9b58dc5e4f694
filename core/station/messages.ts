/**
 * The typed bodies of the station protocol, one request and one result shape per opcode, with
 * the strict readers both ends use on untrusted maps (the farm on requests, the client on
 * responses). A reader failure is an INVALID_INPUT FleetError naming the field
 * ("nonce: got 3 bytes, want 16..64 bytes"); the farm answers it as BAD_REQUEST.
 * Field names are spelled out: bodies are small next to the keys and certificates they carry.
 */
import { invalid } from "../errors";
import { type CborMap, isMap, type Value } from "./cbor";
import { Op, type OpName, StationError, Status } from "./frame";

export type Lifecycle = "blank" | "provisioned" | "closed" | "decommissioned";
export const LIFECYCLES: readonly Lifecycle[] = ["blank", "provisioned", "closed", "decommissioned"];
export type IdentitySource = "puf" | "injected";

/** Subject attributes a station may put in a CSR, in the order given. */
export const SUBJECT_ATTRS = ["CN", "O", "OU", "C", "L", "ST", "serialNumber"] as const;
export type SubjectAttr = (typeof SUBJECT_ATTRS)[number];
export type Subject = Array<[SubjectAttr, string]>;

/**
 * The version of the device operations' bodies. 2: a closed device takes SET_TRUST, INSTALL,
 * ROTATE and DECOMMISSION only as signed commands (command.ts, `auth`), and ATTEST, STATUS and the
 * commands' results carry the device's current challenge. Every device request carries
 * `protocol`; the farm refuses one without it (a version-1 station would send unsigned commands),
 * and PING reports it, so a station refuses a farm that predates it.
 */
export const PROTOCOL = 2;
/**
 * The status of a command a closed device refuses for want of a valid authorization (none, a
 * signer that does not chain to its trust anchor, a bad signature): frame.ts's Status.UNAUTHORIZED.
 */
export const UNAUTHORIZED = Status.UNAUTHORIZED;

export const DEVICE_ID_MAX = 64;
export const NONCE_MIN = 16;
export const NONCE_MAX = 64;
export const CHAIN_MAX = 4;
export const CERT_MAX = 8192;
export const BATCH_MAX = 1024;

// ------------------------------------------------------------------ field readers

export function map(v: Value | undefined, field: string): CborMap {
  if (!isMap(v)) throw invalid(field, kind(v), "a map");
  return v;
}
export function text(m: CborMap, field: string, max = 256): string {
  const v = m[field];
  if (typeof v !== "string" || v.length === 0 || v.length > max)
    throw invalid(field, v, `text of 1..${max} chars`);
  return v;
}
export function bytes(m: CborMap, field: string, min = 1, max = CERT_MAX): Buffer {
  const v = m[field];
  if (!(v instanceof Uint8Array) || v.length < min || v.length > max)
    throw invalid(field, v instanceof Uint8Array ? v : kind(v), `${min}..${max} bytes`);
  return Buffer.from(v.buffer, v.byteOffset, v.length);
}
export function uint(m: CborMap, field: string, max = Number.MAX_SAFE_INTEGER): number {
  const v = m[field];
  if (typeof v !== "number" || v < 0 || v > max) throw invalid(field, v, `an integer in 0..${max}`);
  return v;
}
export function optBool(m: CborMap, field: string): boolean {
  const v = m[field];
  if (v === undefined || v === null) return false;
  if (typeof v !== "boolean") throw invalid(field, v, "a boolean");
  return v;
}
export function list(m: CborMap, field: string, min: number, max: number): Value[] {
  const v = m[field];
  if (!Array.isArray(v) || v.length < min || v.length > max)
    throw invalid(field, kind(v), `an array of ${min}..${max}`);
  return v;
}
function oneOf<T extends string>(m: CborMap, field: string, allowed: readonly T[]): T {
  const v = m[field];
  if (typeof v !== "string" || !allowed.includes(v as T))
    throw invalid(field, v, `one of ${allowed.join(", ")}`);
  return v as T;
}
function kind(v: Value | undefined): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (Array.isArray(v)) return `array(${v.length})`;
  return typeof v;
}

const DEVICE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
export function deviceField(m: CborMap): string {
  const d = text(m, "device", DEVICE_ID_MAX);
  if (!DEVICE_RE.test(d)) throw invalid("device", d, "letters, digits, '.', '_' or '-'");
  return d;
}

export function subjectField(m: CborMap, field = "subject"): Subject {
  const items = list(m, field, 1, 16);
  return items.map((it, i) => {
    if (!Array.isArray(it) || it.length !== 2 || typeof it[0] !== "string" || typeof it[1] !== "string")
      throw invalid(`${field}[${i}]`, kind(it), "a [attribute, value] pair of text");
    const [a, v] = it as [string, string];
    if (!SUBJECT_ATTRS.includes(a as SubjectAttr))
      throw invalid(`${field}[${i}]`, a, SUBJECT_ATTRS.join(", "));
    if (v.length === 0 || v.length > 64)
      throw invalid(`${field}[${i}].value`, v, "1..64 chars (RFC 5280 ub-name)");
    if (a === "C" && !/^[A-Z]{2}$/.test(v))
      throw invalid(`${field}[${i}].value`, v, "a two-letter country code");
    if ((a === "C" || a === "serialNumber") && !/^[A-Za-z0-9 '()+,\-./:=?]*$/.test(v))
      throw invalid(`${field}[${i}].value`, v, "PrintableString characters");
    return [a as SubjectAttr, v];
  });
}

function bytesList(m: CborMap, field: string, min: number, max: number): Buffer[] {
  return list(m, field, min, max).map((x, i) => {
    if (!(x instanceof Uint8Array) || x.length === 0 || x.length > CERT_MAX)
      throw invalid(`${field}[${i}]`, kind(x), `1..${CERT_MAX} bytes`);
    return Buffer.from(x.buffer, x.byteOffset, x.length);
  });
}

/** An authorization of one command (command.ts), signed by a CA key the device's anchor certifies. */
export interface CommandAuth {
  /** the signer's certificate first, then its issuers up to a root the device trusts */
  signer: Buffer[];
  /** the device's challenge the command was signed for */
  nonce: Buffer;
  signature: Buffer;
}

export function authField(m: CborMap): CommandAuth | undefined {
  const v = m.auth;
  if (v === undefined || v === null) return undefined;
  const a = map(v, "auth");
  return {
    signer: bytesList(a, "signer", 1, CHAIN_MAX).map((c, i) => {
      if (c.length > CERT_MAX) throw invalid(`auth.signer[${i}]`, c, `1..${CERT_MAX} bytes`);
      return c;
    }),
    nonce: bytes(a, "nonce", NONCE_MIN, NONCE_MAX),
    signature: bytes(a, "signature", 8, 1024),
  };
}

/** The request's protocol version (after its other fields were read): refused unless PROTOCOL. */
export function checkProtocol(v: Value | undefined): void {
  if (v === PROTOCOL) return;
  throw new StationError(
    Status.UNSUPPORTED_VERSION,
    `protocol: got ${v === undefined ? "1 (no protocol field)" : JSON.stringify(v)}, want ${PROTOCOL} ` +
      "(closed devices take signed commands only; upgrade the station)",
  );
}

const challenge = (m: CborMap) =>
  m.challenge === undefined || m.challenge === null ? undefined : bytes(m, "challenge", NONCE_MIN, NONCE_MAX);

// ------------------------------------------------------------------ requests and results

export interface IdentifyRequest {
  device: string;
  /** also return the vendor-signed chip certificate (key injection needs it) */
  chipCert?: boolean;
}
export interface IdentifyResult {
  device: string;
  model: string;
  lifecycle: Lifecycle;
  epoch: number;
  source: IdentitySource;
  /** SubjectPublicKeyInfo DER of the current identity key (none once decommissioned) */
  publicKey?: Buffer;
  chipCertificate?: Buffer;
}
export interface AttestRequest {
  device: string;
  nonce: Uint8Array;
}
export interface AttestResult {
  device: string;
  epoch: number;
  /** ECDSA P-256 / SHA-256, DER, over attestationMessage(device, epoch, nonce) */
  signature: Buffer;
  /** the device's current command challenge (absent once decommissioned) */
  challenge?: Buffer;
}
export interface CsrRequest {
  device: string;
  subject: Subject;
}
export interface CsrResult {
  device: string;
  epoch: number;
  csr: Buffer;
}
export interface SetTrustRequest {
  device: string;
  /** DER certificate of the root the device shall trust; its SHA-256 is burned into OTP */
  anchor: Uint8Array;
  /** required by a closed device for an anchor it does not hold yet */
  auth?: CommandAuth;
}
export interface SetTrustResult {
  device: string;
  slot: number;
  /** the challenge for the next command */
  challenge?: Buffer;
}
export interface InstallRequest {
  device: string;
  /** leaf first, ending with a trusted root */
  chain: Uint8Array[];
  /** required by a closed device for a chain other than the one it holds */
  auth?: CommandAuth;
}
export interface InstallResult {
  device: string;
  lifecycle: Lifecycle;
  epoch: number;
  challenge?: Buffer;
}
export interface RotateRequest {
  device: string;
  subject: Subject;
  /** required by a closed device to start a re-key */
  auth?: CommandAuth;
}
export interface RotateResult {
  device: string;
  epoch: number;
  csr: Buffer;
  challenge?: Buffer;
}
export interface StatusRequest {
  device: string;
}
export interface OtpRegionView {
  name: string;
  offset: number;
  words: number;
  programmed: number;
  locked: boolean;
  secret: boolean;
  /** the words, big-endian; null for secret regions (not readable from outside) */
  data: Buffer | null;
}
export interface DeviceStatus {
  device: string;
  model: string;
  lifecycle: Lifecycle;
  epoch: number;
  pendingEpoch: number | null;
  source: IdentitySource;
  helperBytes: number;
  /** SHA-256 of each trusted root, by slot */
  trustAnchors: Buffer[];
  chain: Buffer[];
  otp: OtpRegionView[];
  /** the challenge a command to this device must be signed for (absent once decommissioned) */
  challenge?: Buffer;
}
export interface DecommissionRequest {
  device: string;
  /** must repeat the device ID: zeroization is irreversible */
  confirm: string;
  /** required by a closed device */
  auth?: CommandAuth;
}
export interface DecommissionResult {
  device: string;
  lifecycle: Lifecycle;
}
export interface InjectRequest {
  device: string;
  license: Uint8Array;
  payload: Uint8Array;
}
export interface InjectResult {
  device: string;
  lifecycle: Lifecycle;
  counter: number;
}
export interface FarmInfo {
  protocol: number;
  model: string;
  count: number;
  farmId: string;
  vendorCa: Buffer;
}
export interface FarmStats {
  requests: number;
  reconstructions: number;
  reconstructionFailures: number;
  enrollments: number;
  changedDevices: number;
  walRecords: number;
  walBytes: number;
  walSyncs: number;
  uptimeMs: number;
  /** the farm process's CPU time (process.cpuUsage), ms; absent in replies of older farms */
  cpuUserMs?: number;
  cpuSystemMs?: number;
}

export interface DeviceOps {
  IDENTIFY: [IdentifyRequest, IdentifyResult];
  ATTEST: [AttestRequest, AttestResult];
  CSR: [CsrRequest, CsrResult];
  SET_TRUST: [SetTrustRequest, SetTrustResult];
  INSTALL: [InstallRequest, InstallResult];
  ROTATE: [RotateRequest, RotateResult];
  STATUS: [StatusRequest, DeviceStatus];
  DECOMMISSION: [DecommissionRequest, DecommissionResult];
  INJECT: [InjectRequest, InjectResult];
}
export type DeviceOpName = keyof DeviceOps;
export type RequestOf<K extends DeviceOpName> = DeviceOps[K][0];
export type ResultOf<K extends DeviceOpName> = DeviceOps[K][1];

const lifecycle = (m: CborMap) => oneOf(m, "lifecycle", LIFECYCLES);
const source = (m: CborMap) => oneOf(m, "source", ["puf", "injected"] as const);

interface OpSpec<K extends DeviceOpName> {
  code: number;
  /** safe to resend after a timeout or a lost connection */
  idempotent: boolean;
  parseRequest(m: CborMap): RequestOf<K>;
  parseResult(m: CborMap): ResultOf<K>;
}

/** Per device opcode: how to read its request (farm side) and its result (client side). */
export const DEVICE_OPS: { [K in DeviceOpName]: OpSpec<K> } = {
  IDENTIFY: {
    code: Op.IDENTIFY,
    idempotent: true,
    parseRequest: (m) => ({ device: deviceField(m), chipCert: optBool(m, "chipCert") }),
    parseResult: (m) => ({
      device: deviceField(m),
      model: text(m, "model", 64),
      lifecycle: lifecycle(m),
      epoch: uint(m, "epoch"),
      source: source(m),
      publicKey: m.publicKey === undefined ? undefined : bytes(m, "publicKey", 1, 512),
      chipCertificate: m.chipCertificate === undefined ? undefined : bytes(m, "chipCertificate"),
    }),
  },
  ATTEST: {
    code: Op.ATTEST,
    idempotent: true,
    parseRequest: (m) => ({ device: deviceField(m), nonce: bytes(m, "nonce", NONCE_MIN, NONCE_MAX) }),
    parseResult: (m) => ({
      device: deviceField(m),
      epoch: uint(m, "epoch"),
      signature: bytes(m, "signature", 8, 80),
      challenge: challenge(m),
    }),
  },
  CSR: {
    code: Op.CSR,
    idempotent: true,
    parseRequest: (m) => ({ device: deviceField(m), subject: subjectField(m) }),
    parseResult: (m) => ({ device: deviceField(m), epoch: uint(m, "epoch"), csr: bytes(m, "csr") }),
  },
  SET_TRUST: {
    code: Op.SET_TRUST,
    idempotent: true,
    parseRequest: (m) => ({ device: deviceField(m), anchor: bytes(m, "anchor"), auth: authField(m) }),
    parseResult: (m) => ({ device: deviceField(m), slot: uint(m, "slot", 255), challenge: challenge(m) }),
  },
  INSTALL: {
    code: Op.INSTALL,
    idempotent: true,
    parseRequest: (m) => ({
      device: deviceField(m),
      chain: bytesList(m, "chain", 2, CHAIN_MAX),
      auth: authField(m),
    }),
    parseResult: (m) => ({
      device: deviceField(m),
      lifecycle: lifecycle(m),
      epoch: uint(m, "epoch"),
      challenge: challenge(m),
    }),
  },
  ROTATE: {
    code: Op.ROTATE,
    idempotent: true,
    parseRequest: (m) => ({ device: deviceField(m), subject: subjectField(m), auth: authField(m) }),
    parseResult: (m) => ({
      device: deviceField(m),
      epoch: uint(m, "epoch"),
      csr: bytes(m, "csr"),
      challenge: challenge(m),
    }),
  },
  STATUS: {
    code: Op.STATUS,
    idempotent: true,
    parseRequest: (m) => ({ device: deviceField(m) }),
    parseResult: (m) => ({
      device: deviceField(m),
      model: text(m, "model", 64),
      lifecycle: lifecycle(m),
      epoch: uint(m, "epoch"),
      pendingEpoch: m.pendingEpoch === null || m.pendingEpoch === undefined ? null : uint(m, "pendingEpoch"),
      source: source(m),
      helperBytes: uint(m, "helperBytes"),
      trustAnchors: bytesList(m, "trustAnchors", 0, 8),
      chain: bytesList(m, "chain", 0, CHAIN_MAX),
      otp: list(m, "otp", 0, 64).map((r, i) => {
        const x = map(r, `otp[${i}]`);
        return {
          name: text(x, "name", 32),
          offset: uint(x, "offset"),
          words: uint(x, "words"),
          programmed: uint(x, "programmed"),
          locked: optBool(x, "locked"),
          secret: optBool(x, "secret"),
          data: x.data === null || x.data === undefined ? null : bytes(x, "data", 0, 4096),
        };
      }),
      challenge: challenge(m),
    }),
  },
  DECOMMISSION: {
    code: Op.DECOMMISSION,
    idempotent: true,
    parseRequest: (m) => ({
      device: deviceField(m),
      confirm: text(m, "confirm", DEVICE_ID_MAX),
      auth: authField(m),
    }),
    parseResult: (m) => ({ device: deviceField(m), lifecycle: lifecycle(m) }),
  },
  INJECT: {
    code: Op.INJECT,
    // a lost answer is resolved by STATUS, never by sending the license again
    idempotent: false,
    parseRequest: (m) => ({
      device: deviceField(m),
      license: bytes(m, "license", 1, 1024),
      payload: bytes(m, "payload", 1, 16384),
    }),
    parseResult: (m) => ({ device: deviceField(m), lifecycle: lifecycle(m), counter: uint(m, "counter") }),
  },
};

const BY_CODE = new Map<number, DeviceOpName>(
  (Object.keys(DEVICE_OPS) as DeviceOpName[]).map((k) => [DEVICE_OPS[k].code, k]),
);
export const deviceOpByCode = (code: number): DeviceOpName | undefined => BY_CODE.get(code);
export type { OpName };

export function parseFarmInfo(m: CborMap): FarmInfo {
  return {
    protocol: uint(m, "protocol", 255),
    model: text(m, "model", 64),
    count: uint(m, "count"),
    farmId: text(m, "farmId", 128),
    vendorCa: bytes(m, "vendorCa"),
  };
}

export function parseFarmStats(m: CborMap): FarmStats {
  const keys: Array<keyof FarmStats> = [
    "requests",
    "reconstructions",
    "reconstructionFailures",
    "enrollments",
    "changedDevices",
    "walRecords",
    "walBytes",
    "walSyncs",
    "uptimeMs",
  ];
  const out = {} as FarmStats;
  for (const k of keys) out[k] = uint(m, k);
  // optional (added after version 1 shipped): an older farm's reply simply lacks them
  for (const k of ["cpuUserMs", "cpuSystemMs"] as const) if (m[k] !== undefined) out[k] = uint(m, k);
  return out;
}

// ------------------------------------------------------------------ CONNECT

/**
 * CONNECT (Op.CONNECT) is a farm operation, not a device operation: the station asks the farm to
 * make some of its enrolled devices connect to an MQTT hub over mutual TLS, each with its own key
 * and installed chain, and the farm answers with a tally. No key, and no certificate, crosses the
 * station protocol: the request names the devices and the hub, the result counts outcomes. It is
 * the devices' own firmware behaviour (a device reports in), changes no device state and needs no
 * signed command. A request covers at most CONNECT_MAX devices, so that one answer stays small and
 * a station shows progress by sending several (core/station/connect.ts).
 */
export const CONNECT_MAX = 4096;
export const CONNECT_CONCURRENCY_MAX = 4096;
/** sessions a farm keeps open at once over all CONNECT requests (each a socket and a TLS state) */
export const CONNECT_SESSIONS_MAX = 8192;
/** refusals listed by device per result; the rest are only counted, by reason */
export const CONNECT_FAILURES_MAX = 32;
/** distinct (stage, reason) pairs per result; past it, "(other reasons)" per stage */
export const CONNECT_REASONS_MAX = 32;
export const CONNECT_TIMEOUT_MAX = 600_000;
/** the longest a device holds its session open after the PUBACK */
export const CONNECT_HOLD_MAX = 600_000;
export const DEFAULT_TOPIC = "devices/{deviceId}/telemetry";
/**
 * Where a device's attempt stopped: device (not enrolled, or not a device of this farm), key (its
 * key could not be reconstructed), tcp, tls (handshake, either side refusing the other), connack
 * (the hub answered CONNECT with a refusal code), closed (the hub closed the connection before
 * CONNACK), puback (no PUBACK for the telemetry message), timeout.
 */
export const CONNECT_STAGES = [
  "device",
  "key",
  "tcp",
  "tls",
  "connack",
  "closed",
  "puback",
  "timeout",
] as const;
export type ConnectStage = (typeof CONNECT_STAGES)[number];

export interface HubEndpoint {
  host: string;
  port: number;
  /** the name to send in SNI and check in the hub's certificate (default: host) */
  servername?: string;
  /** PEM of the CA(s) the hub's server certificate must chain to */
  caPem: string;
}
export interface ConnectRequest {
  hub: HubEndpoint;
  /** explicit device IDs: each is attempted (one not enrolled is refused at stage "device") */
  devices?: string[];
  /** or a range of device indexes: its enrolled (closed) devices are attempted, the rest skipped */
  first?: number;
  count?: number;
  /** the farm's model, checked when given */
  model?: string;
  /** MQTT topic of the telemetry message; `{deviceId}` is replaced by the device ID */
  topic: string;
  /** sessions open at once */
  concurrency: number;
  /** per device, for the whole session (TCP, TLS, CONNACK, PUBACK), ms */
  timeoutMs: number;
  /** the MQTT client ID, `{deviceId}` replaced (default: the device ID): a test of a hub's client ID rule */
  clientId?: string;
  /** keep each session open this long after the PUBACK (ms), as a device that stays online */
  holdMs?: number;
}
export interface ConnectReason {
  stage: ConnectStage;
  reason: string;
  count: number;
}
export interface ConnectFailure {
  device: string;
  stage: ConnectStage;
  reason: string;
}
export interface ConnectResult {
  attempted: number;
  connected: number;
  refused: number;
  /** devices of the range that are not enrolled (not attempted) */
  skipped: number;
  /** refusals by stage and reason, most frequent first */
  reasons: ConnectReason[];
  /** the first CONNECT_FAILURES_MAX refusals, by device */
  failures: ConnectFailure[];
  elapsedMs: number;
  /** held sessions (holdMs) that the hub closed before the device did */
  closedByHub?: number;
}

const HOST_RE = /^[A-Za-z0-9._:-]+$/;

function optText(m: CborMap, field: string, max: number): string | undefined {
  return m[field] === undefined || m[field] === null ? undefined : text(m, field, max);
}

export function parseHub(v: Value | undefined, field = "hub"): HubEndpoint {
  const m = map(v, field);
  const host = text(m, "host", 253);
  if (!HOST_RE.test(host)) throw invalid(`${field}.host`, host, "a host name or IP address");
  const port = uint(m, "port", 65535);
  if (port === 0) throw invalid(`${field}.port`, port, "an integer in 1..65535");
  const servername = optText(m, "servername", 253);
  if (servername !== undefined && !/^[A-Za-z0-9.-]+$/.test(servername))
    throw invalid(`${field}.servername`, servername, "a DNS name");
  const caPem = text(m, "caPem", 65536);
  if (!caPem.includes("-----BEGIN CERTIFICATE-----"))
    throw invalid(`${field}.caPem`, `${caPem.length} chars without a certificate`, "PEM certificates");
  return { host, port, servername, caPem };
}

export function checkTopic(topic: string, field = "topic"): string {
  if (topic.length === 0 || topic.length > 200 || /[+#]/.test(topic) || topic.includes("\0"))
    throw invalid(field, topic, "an MQTT topic name of 1..200 chars without wildcards (+, #)");
  const rest = topic.replaceAll("{deviceId}", "");
  if (/[{}]/.test(rest)) throw invalid(field, topic, "no placeholder but {deviceId}");
  return topic;
}

export function parseConnectRequest(m: CborMap): ConnectRequest {
  const hub = parseHub(m.hub);
  let devices: string[] | undefined;
  let first: number | undefined;
  let count: number | undefined;
  if (m.devices !== undefined && m.devices !== null) {
    if (m.first !== undefined || m.count !== undefined)
      throw invalid("devices", "devices and a range", "either device IDs or first/count");
    devices = list(m, "devices", 1, CONNECT_MAX).map((d, i) => {
      if (typeof d !== "string" || d.length === 0 || d.length > DEVICE_ID_MAX || !DEVICE_RE.test(d))
        throw invalid(`devices[${i}]`, d, "a device ID");
      return d;
    });
  } else {
    first = uint(m, "first");
    count = uint(m, "count", CONNECT_MAX);
    if (count === 0) throw invalid("count", count, `an integer in 1..${CONNECT_MAX}`);
  }
  const model = optText(m, "model", 64);
  const topic = checkTopic(text(m, "topic", 200));
  const concurrency = uint(m, "concurrency", CONNECT_CONCURRENCY_MAX);
  if (concurrency === 0) throw invalid("concurrency", 0, `an integer in 1..${CONNECT_CONCURRENCY_MAX}`);
  const timeoutMs = uint(m, "timeoutMs", CONNECT_TIMEOUT_MAX);
  if (timeoutMs < 100) throw invalid("timeoutMs", timeoutMs, `an integer in 100..${CONNECT_TIMEOUT_MAX}`);
  const clientId = optText(m, "clientId", 128);
  if (clientId !== undefined && !/^[A-Za-z0-9{}._:-]+$/.test(clientId))
    throw invalid(
      "clientId",
      clientId,
      "a client ID template of letters, digits, '{deviceId}', '.', '_', ':', '-'",
    );
  const holdMs = m.holdMs === undefined ? undefined : uint(m, "holdMs", CONNECT_HOLD_MAX);
  return {
    hub,
    devices,
    first,
    count,
    model,
    topic,
    concurrency,
    timeoutMs,
    ...(clientId !== undefined ? { clientId } : {}),
    ...(holdMs ? { holdMs } : {}),
  };
}

/** The wire form of a request (the readers' inverse). */
export function connectRequestValue(r: ConnectRequest): CborMap {
  const hub: CborMap = { host: r.hub.host, port: r.hub.port, caPem: r.hub.caPem };
  if (r.hub.servername !== undefined) hub.servername = r.hub.servername;
  const m: CborMap = {
    hub,
    topic: r.topic,
    concurrency: r.concurrency,
    timeoutMs: r.timeoutMs,
    protocol: PROTOCOL,
  };
  if (r.devices !== undefined) m.devices = r.devices;
  if (r.first !== undefined) m.first = r.first;
  if (r.count !== undefined) m.count = r.count;
  if (r.model !== undefined) m.model = r.model;
  if (r.clientId !== undefined) m.clientId = r.clientId;
  if (r.holdMs !== undefined) m.holdMs = r.holdMs;
  return m;
}

const stage = (m: CborMap, field: string): ConnectStage => oneOf(m, field, CONNECT_STAGES);

export function parseConnectResult(m: CborMap): ConnectResult {
  const r: ConnectResult = {
    attempted: uint(m, "attempted", CONNECT_MAX),
    connected: uint(m, "connected", CONNECT_MAX),
    refused: uint(m, "refused", CONNECT_MAX),
    skipped: uint(m, "skipped", CONNECT_MAX),
    reasons: list(m, "reasons", 0, CONNECT_REASONS_MAX + CONNECT_STAGES.length).map((x, i) => {
      const e = map(x, `reasons[${i}]`);
      return {
        stage: stage(e, "stage"),
        reason: text(e, "reason", 256),
        count: uint(e, "count", CONNECT_MAX),
      };
    }),
    failures: list(m, "failures", 0, CONNECT_FAILURES_MAX).map((x, i) => {
      const e = map(x, `failures[${i}]`);
      return { device: deviceField(e), stage: stage(e, "stage"), reason: text(e, "reason", 256) };
    }),
    elapsedMs: uint(m, "elapsedMs"),
    // absent from farms before session holding
    closedByHub: m.closedByHub === undefined ? 0 : uint(m, "closedByHub", CONNECT_MAX),
  };
  if (r.connected + r.refused !== r.attempted)
    throw invalid("connected + refused", r.connected + r.refused, `the attempted count, ${r.attempted}`);
  return r;
}

/** Encode a subject for the wire. */
export const subjectValue = (s: Subject): Value => s.map(([a, v]) => [a, v]);
