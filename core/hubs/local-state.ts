/**
 * The state folder of the embedded local MQTT hub: the one format shared by its writer (the
 * driver, core/hubs/local.ts, inside a HubRegistration's provider) and its reader (the hub,
 * hub/local/server.ts, `fleet hub serve`). Plain files, so the hub's trust survives a restart and
 * another broker (Eclipse Mosquitto: cafile, crlfile) can be configured from the same bundles.
 *
 *   <state>/registrations/<registration>--<batch>.json   one per hub registration and batch, 0600,
 *       replaced atomically and durably (core/durable.ts): { version: 1, registration, batch,
 *       updatedAt, cas: [{ name, fingerprint, certificatePem, chainPem }], crls: [PEM...],
 *       devices: { <certificate sha256>: { deviceId, serial } }   the certificates allowed to connect,
 *       disabled: { <certificate sha256>: { deviceId, serial, disabledAt } }   refused (kept for drift) }
 *   <state>/trust/ca-bundle.pem   every CA of every registration, chains included, deduplicated
 *   <state>/trust/crls.pem        one current CRL per CA (of two CRLs of one issuer the highest
 *       cRLNumber wins, a tie goes to the later thisUpdate; RFC 5280 5.2.3)
 *   <state>/server/               the hub's own TLS identity, made once and kept: a P-256 hub CA
 *       (ca-key.pem, ca.pem) and the server certificate it signs (key.pem, cert.pem; SANs
 *       localhost, 127.0.0.1, ::1 and any extra host asked for)
 *   <state>/hub-ca.pem            what devices trust to verify the hub (the hub CA)
 *   <state>/endpoint.json         written by the running hub: { host, port }
 *
 * Both sides call rebuildBundles(), so the bundles always follow the registration files. Readers
 * validate what they read: a garbled or tampered file is a FleetError naming the file, never a
 * crash. A CRL's signature is not checked here: OpenSSL checks it at every handshake (a CRL that
 * does not verify refuses its CA's devices, it never admits one).
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { PUBLIC_FILE, writeFileDurably } from "../durable";
import { FleetError, invalid, phrase } from "../errors";
import { encodeTbs, randomSerial, signTbs } from "../x509/cert";
import { children, content, decodeOid, decodeUint, type Node, read, seq, tlv, whole } from "../x509/der";
import {
  authorityKeyIdentifier,
  basicConstraints,
  EKU,
  extension,
  extKeyUsage,
  keyIdentifier,
  keyUsage,
  OID,
  subjectKeyIdentifier,
} from "../x509/ext";
import { privateKeyPem, spkiDer } from "../x509/keys";
import { encodeSubject } from "../x509/names";
import { parseCertificate, subjectKeyIdOf } from "../x509/parse";
import { pemBlocks, toPem } from "../x509/pem";

export const STATE_VERSION = 1;

export interface StoredCa {
  name: string;
  /** SHA-256 of the DER, lowercase hex */
  fingerprint: string;
  certificatePem: string;
  /** this CA first, up to and including the root */
  chainPem: string;
}

export interface StoredDevice {
  deviceId: string;
  /** certificate serial, lowercase hex */
  serial: string;
}

export interface DisabledDevice extends StoredDevice {
  disabledAt: string;
}

export interface RegistrationFile {
  version: 1;
  registration: string;
  batch: string;
  updatedAt: string;
  cas: StoredCa[];
  crls: string[];
  /** by certificate SHA-256 (lowercase hex): the certificates allowed to connect */
  devices: Record<string, StoredDevice>;
  /** by certificate SHA-256: certificates disabled at this hub (refused) */
  disabled: Record<string, DisabledDevice>;
}

/** The files of a state folder. */
export function statePaths(stateDir: string) {
  return {
    stateDir,
    registrations: path.join(stateDir, "registrations"),
    trust: path.join(stateDir, "trust"),
    caBundle: path.join(stateDir, "trust", "ca-bundle.pem"),
    crls: path.join(stateDir, "trust", "crls.pem"),
    server: path.join(stateDir, "server"),
    serverKey: path.join(stateDir, "server", "key.pem"),
    serverCert: path.join(stateDir, "server", "cert.pem"),
    hubCaKey: path.join(stateDir, "server", "ca-key.pem"),
    hubCaCert: path.join(stateDir, "server", "ca.pem"),
    hubCa: path.join(stateDir, "hub-ca.pem"),
    endpoint: path.join(stateDir, "endpoint.json"),
  };
}

/**
 * Create `dir` and its missing parents (0700) one level at a time. fs.mkdirSync's recursive mode
 * loops forever on some paths (Node 24, as root: /proc/x/y, where mkdir answers ENOENT for a
 * parent it cannot create), so a bad --state would hang instead of failing: never use it here.
 * Throws the Node error of the first level that cannot be made.
 */
export function makeDirs(dir: string): void {
  const missing: string[] = [];
  let d = path.resolve(dir);
  for (;;) {
    const st = fs.statSync(d, { throwIfNoEntry: false });
    if (st) {
      if (!st.isDirectory())
        throw Object.assign(new Error(`${d}: not a directory`), {
          code: "ENOTDIR",
          path: d,
          syscall: "mkdir",
        });
      break;
    }
    missing.push(d);
    const up = path.dirname(d);
    if (up === d) break;
    d = up;
  }
  for (const m of missing.reverse()) {
    try {
      fs.mkdirSync(m, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
  }
}

/** Registration and batch names become one file name: letters, digits, '.', '_' and single '-'. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.]*(-[A-Za-z0-9_.]+)*$/;
/** a device ID is one MQTT topic level and a certificate name: no '/', '+', '#' or spaces */
const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const SERIAL = /^[0-9a-f]{1,64}$/;

export function checkName(field: string, v: unknown): string {
  if (typeof v !== "string" || v.length > 100 || !NAME.test(v))
    throw invalid(
      field,
      v,
      "1..100 of letters, digits, '.', '_' and single '-' (no '--', no leading '-' or '.')",
    );
  return v;
}

export function checkDeviceId(field: string, v: unknown): string {
  if (typeof v !== "string" || !DEVICE_ID.test(v))
    throw invalid(field, v, "a device ID of letters, digits, '.', '_', ':' and '-' (one MQTT topic level)");
  return v;
}

export function registrationPath(stateDir: string, registration: string, batch: string): string {
  return path.join(
    statePaths(stateDir).registrations,
    `${checkName("registration", registration)}--${checkName("batch", batch)}.json`,
  );
}

/** An empty registration (no CAs, no devices). */
export function emptyRegistration(registration: string, batch: string): RegistrationFile {
  return {
    version: 1,
    registration: checkName("registration", registration),
    batch: checkName("batch", batch),
    updatedAt: new Date().toISOString(),
    cas: [],
    crls: [],
    devices: {},
    disabled: {},
  };
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Validate a parsed registration file; `file` names it in every error. */
export function validateRegistration(v: unknown, file: string): RegistrationFile {
  const bad = (field: string, got: unknown, want: string): never => {
    throw new FleetError("INTEGRITY", `${file}: ${invalid(field, got, want).message}`, field);
  };
  if (!isObj(v)) return bad("document", phrase(Array.isArray(v) ? "an array" : typeof v), "a JSON object");
  if (v.version !== STATE_VERSION) bad("version", v.version, `${STATE_VERSION}`);
  for (const k of ["registration", "batch"] as const) {
    if (typeof v[k] !== "string" || !NAME.test(v[k] as string)) bad(k, v[k], "a registration/batch name");
  }
  const base = path.basename(file);
  if (base.endsWith(".json") && base !== `${v.registration}--${v.batch}.json`)
    bad("registration", `${v.registration}--${v.batch}`, `the name of the file (${base})`);
  if (typeof v.updatedAt !== "string" || Number.isNaN(Date.parse(v.updatedAt)))
    bad("updatedAt", v.updatedAt, "an ISO date");
  if (!Array.isArray(v.cas)) bad("cas", v.cas, "an array");
  const cas = (v.cas as unknown[]).map((c, i): StoredCa => {
    const f = `cas[${i}]`;
    if (!isObj(c)) return bad(f, c, "an object");
    if (typeof c.name !== "string" || !c.name) bad(`${f}.name`, c.name, "a CA name");
    if (typeof c.fingerprint !== "string" || !HEX64.test(c.fingerprint))
      bad(`${f}.fingerprint`, c.fingerprint, "64 lowercase hex digits");
    let blocks: Buffer[];
    try {
      blocks = pemBlocks(c.certificatePem, "CERTIFICATE", `${f}.certificatePem`);
      pemBlocks(c.chainPem, "CERTIFICATE", `${f}.chainPem`);
    } catch (e) {
      return bad(`${f}.certificatePem`, phrase((e as Error).message), "PEM certificates");
    }
    if (sha256Hex(blocks[0]!) !== c.fingerprint)
      bad(`${f}.fingerprint`, c.fingerprint, "the SHA-256 of certificatePem");
    return {
      name: c.name as string,
      fingerprint: c.fingerprint as string,
      certificatePem: c.certificatePem as string,
      chainPem: c.chainPem as string,
    };
  });
  if (!Array.isArray(v.crls)) bad("crls", v.crls, "an array");
  const crls = (v.crls as unknown[]).map((c, i) => {
    try {
      const [der] = pemBlocks(c, "X509 CRL", `crls[${i}]`);
      parseCrl(der!, `crls[${i}]`);
    } catch (e) {
      bad(`crls[${i}]`, phrase((e as Error).message), "a PEM X.509 CRL");
    }
    return c as string;
  });
  const entries = (field: "devices" | "disabled") => {
    const m = v[field] ?? {};
    if (!isObj(m)) return bad(field, m, "an object keyed by certificate SHA-256");
    const out: Record<string, DisabledDevice> = {};
    for (const [sha, d] of Object.entries(m)) {
      const f = `${field}.${sha.slice(0, 16)}`;
      if (!HEX64.test(sha)) bad(field, sha, "keys of 64 lowercase hex digits");
      if (!isObj(d)) bad(f, d, "an object");
      const e = d as Record<string, unknown>;
      if (typeof e.deviceId !== "string" || !DEVICE_ID.test(e.deviceId))
        bad(`${f}.deviceId`, e.deviceId, "a device ID");
      if (typeof e.serial !== "string" || !SERIAL.test(e.serial))
        bad(`${f}.serial`, e.serial, "a lowercase hex serial");
      const entry: DisabledDevice = {
        deviceId: e.deviceId as string,
        serial: e.serial as string,
      } as DisabledDevice;
      if (field === "disabled") {
        if (typeof e.disabledAt !== "string" || Number.isNaN(Date.parse(e.disabledAt)))
          bad(`${f}.disabledAt`, e.disabledAt, "an ISO date");
        entry.disabledAt = e.disabledAt as string;
      }
      out[sha] = entry;
    }
    return out;
  };
  const devices: Record<string, StoredDevice> = entries("devices");
  const disabled = entries("disabled");
  return {
    version: 1,
    registration: v.registration as string,
    batch: v.batch as string,
    updatedAt: v.updatedAt as string,
    cas,
    crls,
    devices,
    disabled,
  };
}

/** Read and validate one registration file; undefined when it does not exist. */
export function readRegistration(file: string): RegistrationFile | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new FleetError(
      "UNAVAILABLE",
      `${file}: got ${(e as NodeJS.ErrnoException).code ?? "an error"} reading it, want a readable file`,
    );
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new FleetError(
      "INTEGRITY",
      `${file}: got ${text.length} bytes that are not JSON, want a registration document`,
    );
  }
  return validateRegistration(doc, file);
}

/** Write a registration file atomically and durably (0600), creating the folders 0700. */
export function writeRegistration(stateDir: string, reg: RegistrationFile): string {
  const file = registrationPath(stateDir, reg.registration, reg.batch);
  makeDirs(path.dirname(file));
  writeFileDurably(file, `${JSON.stringify(reg, null, 1)}\n`, { tmp: `${file}.${process.pid}.tmp` });
  return file;
}

/** Delete a registration file (destroy). */
export function deleteRegistration(stateDir: string, registration: string, batch: string): void {
  fs.rmSync(registrationPath(stateDir, registration, batch), { force: true });
}

// ---------------------------------------------------------------- CRLs

export interface ParsedCrl {
  der: Buffer;
  /** DER Name of the issuer */
  issuer: Buffer;
  thisUpdate: Date;
  nextUpdate?: Date;
  crlNumber?: bigint;
  /** the keyIdentifier of its authorityKeyIdentifier, if any: which CA of that name signed it */
  authorityKeyId?: Buffer;
  /** revoked serials, lowercase hex without leading zeros */
  revoked: string[];
}

function readTime(buf: Uint8Array, n: Node): Date {
  const s = content(buf, n).toString("ascii");
  const m =
    n.tag === 0x17
      ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s)
      : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m || (n.tag !== 0x17 && n.tag !== 0x18)) throw new Error("bad time");
  let y = Number(m[1]);
  if (n.tag === 0x17) y += y < 50 ? 2000 : 1900;
  return new Date(Date.UTC(y, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

/** Parse a DER X.509 v2 CRL (RFC 5280 5.1) far enough for the bundle and the revoked set. */
export function parseCrl(der: Uint8Array, field = "crl"): ParsedCrl {
  try {
    const root = read(der);
    if (root.end !== der.length) throw new Error("trailing bytes");
    const [tbsN] = children(der, root);
    const t = children(der, tbsN!);
    let i = 0;
    if (t[0]!.tag === 0x02) i++; // version
    i++; // signature algorithm
    const issuer = Buffer.from(whole(der, t[i++]!));
    const thisUpdate = readTime(der, t[i++]!);
    let nextUpdate: Date | undefined;
    if (t[i] && (t[i]!.tag === 0x17 || t[i]!.tag === 0x18)) nextUpdate = readTime(der, t[i++]!);
    const revoked: string[] = [];
    if (t[i] && t[i]!.tag === 0x30) {
      for (const entry of children(der, t[i++]!)) {
        const [serialN] = children(der, entry);
        revoked.push(decodeUint(content(der, serialN!)).toString(16));
      }
    }
    let crlNumber: bigint | undefined;
    let authorityKeyId: Buffer | undefined;
    if (t[i] && t[i]!.tag === 0xa0) {
      for (const e of children(der, children(der, t[i]!)[0]!)) {
        const parts = children(der, e);
        const oid = decodeOid(content(der, parts[0]!));
        const octs = content(der, parts[parts.length - 1]!);
        if (oid === OID.crlNumber) crlNumber = decodeUint(content(octs, read(octs)));
        else if (oid === OID.authorityKeyIdentifier) {
          const kid = children(octs, read(octs)).find((n) => n.tag === 0x80);
          if (kid) authorityKeyId = Buffer.from(content(octs, kid));
        }
      }
    }
    return {
      der: Buffer.from(der),
      issuer,
      thisUpdate,
      nextUpdate,
      crlNumber,
      ...(authorityKeyId ? { authorityKeyId } : {}),
      revoked,
    };
  } catch {
    throw invalid(field, phrase("bytes that are not a DER X.509 CRL"), "a DER-encoded X.509 CRL");
  }
}

/** The key of a certificate in the revoked set: its issuer's name and its serial. */
export function revocationKey(issuerName: Uint8Array, serialHex: string): string {
  return `${nameKey(issuerName)}:${serialHex.replace(/^0+(?=.)/, "").toLowerCase()}`;
}

/** Of two CRLs of one issuer, the current one: the higher cRLNumber, on a tie the later thisUpdate. */
export function newerCrl(a: ParsedCrl, b: ParsedCrl): ParsedCrl {
  const na = a.crlNumber ?? -1n;
  const nb = b.crlNumber ?? -1n;
  if (na !== nb) return na > nb ? a : b;
  return b.thisUpdate > a.thisUpdate ? b : a;
}

// ---------------------------------------------------------------- trust (what the hub enforces)

export interface TrustedDevice {
  deviceId: string;
  serial: string;
  registration: string;
  batch: string;
}

export interface Trust {
  /** the registrations read, by file */
  registrations: RegistrationFile[];
  /** files that could not be read: their CAs and devices are not trusted (fail closed) */
  errors: { file: string; message: string }[];
  /** every CA certificate (chains included), deduplicated, PEM */
  caPems: string[];
  /** names and fingerprints of the CAs, in bundle order */
  cas: { subject: string; fingerprint: string }[];
  /** one current CRL per issuer, PEM */
  crlPems: string[];
  /** CAs (by subject name key) that have no CRL: with CRL_CHECK_ALL their devices are refused */
  casWithoutCrl: string[];
  /** by certificate SHA-256: the certificates allowed to connect */
  devices: Map<string, TrustedDevice>;
  /** by certificate SHA-256: disabled certificates (for messages) */
  disabled: Map<string, TrustedDevice>;
  /** revocationKey(issuer, serial) of every certificate on a current CRL */
  revoked: Set<string>;
  /** caKey(subject) and caKey(subject, subjectKeyId) of every trusted CA (a leaf's issuer must be one) */
  issuers: Set<string>;
  /**
   * caKey(issuer, authorityKeyId) of every CRL in the bundle (caKey(issuer) for a CRL without
   * one): two CAs of one name (a rollover's predecessor and successor) each have their own CRL
   */
  crlIssuers: Set<string>;
}

const sha256Hex = (b: Uint8Array) => crypto.createHash("sha256").update(b).digest("hex");
/** The key of a distinguished name (DER) in the sets of Trust. */
export const nameKey = (name: Uint8Array): string => sha256Hex(name).slice(0, 32);

/**
 * The key of a CA in the sets of Trust: its name, and its key identifier when known (a CA's
 * subjectKeyIdentifier, a CRL's or a leaf's authorityKeyIdentifier).
 */
export const caKey = (name: Uint8Array, keyId?: Uint8Array): string =>
  keyId?.length ? `${nameKey(name)}/${Buffer.from(keyId).toString("hex")}` : nameKey(name);

/** Has the CA that issued a certificate (its issuer name and authorityKeyIdentifier) a CRL in `t`? */
export const hasCrl = (t: Pick<Trust, "crlIssuers">, issuer: Uint8Array, keyId?: Uint8Array): boolean =>
  t.crlIssuers.has(caKey(issuer, keyId)) || t.crlIssuers.has(caKey(issuer));

/** Read every registration of the state folder (a file that cannot be read is reported, not fatal). */
export function loadTrust(stateDir: string): Trust {
  const dir = statePaths(stateDir).registrations;
  let names: string[] = [];
  try {
    names = fs
      .readdirSync(dir)
      .filter((n) => n.endsWith(".json"))
      .sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT")
      throw new FleetError(
        "UNAVAILABLE",
        `${dir}: got ${(e as NodeJS.ErrnoException).code}, want a readable folder`,
      );
  }
  const trust: Trust = {
    registrations: [],
    errors: [],
    caPems: [],
    cas: [],
    crlPems: [],
    casWithoutCrl: [],
    devices: new Map(),
    disabled: new Map(),
    revoked: new Set(),
    issuers: new Set(),
    crlIssuers: new Set(),
  };
  const caSeen = new Set<string>();
  const caKeys: { name: Buffer; kid?: Buffer }[] = [];
  const crlByIssuer = new Map<string, ParsedCrl>();
  for (const n of names) {
    const file = path.join(dir, n);
    let reg: RegistrationFile | undefined;
    try {
      reg = readRegistration(file);
    } catch (e) {
      trust.errors.push({ file, message: (e as Error).message });
      continue;
    }
    if (!reg) continue;
    trust.registrations.push(reg);
    for (const ca of reg.cas) {
      for (const der of pemBlocks(ca.chainPem, "CERTIFICATE", "chainPem")) {
        const fp = sha256Hex(der);
        if (caSeen.has(fp)) continue;
        caSeen.add(fp);
        const pc = parseCertificate(der, `${file}: chainPem`);
        const kid = subjectKeyIdOf(pc);
        trust.issuers.add(caKey(pc.subject));
        trust.issuers.add(caKey(pc.subject, kid));
        caKeys.push({ name: pc.subject, kid });
        trust.caPems.push(toPem("CERTIFICATE", der));
        trust.cas.push({
          subject: new crypto.X509Certificate(der).subject.replace(/\n/g, ", "),
          fingerprint: fp,
        });
      }
    }
    for (const pem of reg.crls) {
      const c = parseCrl(pemBlocks(pem, "X509 CRL", "crls")[0]!);
      const k = caKey(c.issuer, c.authorityKeyId);
      const had = crlByIssuer.get(k);
      crlByIssuer.set(k, had ? newerCrl(had, c) : c);
    }
    const of = (d: StoredDevice) => ({ ...d, registration: reg.registration, batch: reg.batch });
    for (const [sha, d] of Object.entries(reg.devices)) trust.devices.set(sha, of(d));
    for (const [sha, d] of Object.entries(reg.disabled))
      if (!trust.devices.has(sha)) trust.disabled.set(sha, of(d));
  }
  // a certificate disabled by one registration and allowed by another stays allowed: each
  // registration speaks for its own batch; the driver never lists one certificate in two places
  for (const sha of trust.devices.keys()) trust.disabled.delete(sha);
  for (const [k, c] of crlByIssuer) {
    // a CRL of an issuer the bundle does not trust is useless to OpenSSL: leave it out
    if (!trust.issuers.has(k)) continue;
    trust.crlPems.push(toPem("X509 CRL", c.der));
    trust.crlIssuers.add(k);
    // revoked: by issuer name and serial (serials are random: two CAs of one name never share one)
    for (const s of c.revoked) trust.revoked.add(`${nameKey(c.issuer)}:${s}`);
  }
  trust.casWithoutCrl = trust.cas
    .filter((_, i) => !hasCrl(trust, caKeys[i]!.name, caKeys[i]!.kid))
    .map((c) => c.subject);
  return trust;
}

/**
 * The registrations folder's signature: names, sizes, mtimes and inodes of its *.json files (a
 * file replaced by rename gets a new inode). The hub polls it; rebuildBundles compares it.
 */
export function registrationsSignature(stateDir: string): string {
  const dir = statePaths(stateDir).registrations;
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith(".json"));
  } catch {
    return "unreadable";
  }
  names.sort();
  const parts: string[] = [];
  for (const n of names) {
    const st = fs.statSync(path.join(dir, n), { throwIfNoEntry: false });
    if (st) parts.push(`${n}:${st.size}:${st.mtimeMs}:${st.ino}`);
  }
  return parts.join("|");
}

/**
 * Rebuild trust/ca-bundle.pem and trust/crls.pem from the registration files (public, 0644).
 * Two writers (two batches' drivers, the hub) may rebuild at once: whoever sees the folder change
 * while it rebuilt does it again, so the last bundles written follow the last registration files.
 */
export function rebuildBundles(stateDir: string): Trust {
  const p = statePaths(stateDir);
  makeDirs(p.trust);
  for (let attempt = 0; ; attempt++) {
    const before = registrationsSignature(stateDir);
    const trust = loadTrust(stateDir);
    writeIfChanged(p.caBundle, trust.caPems.join(""));
    writeIfChanged(p.crls, trust.crlPems.join(""));
    if (attempt >= 4 || registrationsSignature(stateDir) === before) return trust;
  }
}

function writeIfChanged(file: string, text: string): void {
  try {
    if (fs.readFileSync(file, "utf8") === text) return;
  } catch {
    // missing: write it
  }
  writeFileDurably(file, text, { mode: PUBLIC_FILE, tmp: `${file}.${process.pid}.tmp` });
}

// ---------------------------------------------------------------- the hub's own identity

export interface ServerIdentity {
  keyPem: string;
  certPem: string;
  /** the hub CA: what devices trust to verify the hub */
  caPem: string;
  /** names in the server certificate */
  hosts: string[];
}

const DEFAULT_HOSTS = ["localhost", "127.0.0.1", "::1"];
const YEAR_MS = 365 * 86_400_000;

function ipBytes(h: string): Buffer | undefined {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(h)) return Buffer.from(h.split(".").map(Number));
  if (h.includes(":")) {
    const [head = "", tail = ""] = h.split("::");
    const parts = (s: string) => (s ? s.split(":") : []);
    const a = parts(head);
    const b = parts(tail);
    const groups = h.includes("::") ? [...a, ...Array(8 - a.length - b.length).fill("0"), ...b] : a;
    if (groups.length !== 8 || !groups.every((g) => /^[0-9a-f]{1,4}$/i.test(g))) return undefined;
    return Buffer.concat(groups.map((g) => Buffer.from(g.padStart(4, "0"), "hex")));
  }
  return undefined;
}

function sanExtension(hosts: readonly string[]): Buffer {
  const gn = hosts.map((h) => {
    const ip = ipBytes(h);
    return ip ? tlv(0x87, ip) : tlv(0x82, Buffer.from(h, "ascii"));
  });
  return extension(OID.subjectAltName, false, seq(...gn));
}

function selfSign(
  subject: string,
  key: crypto.KeyObject,
  spki: Buffer,
  issuer: { name: Buffer; key: crypto.KeyObject; kid: Buffer } | undefined,
  extensions: Buffer[],
  years: number,
): Buffer {
  const now = Math.floor(Date.now() / 1000) * 1000;
  const name = encodeSubject({ commonName: subject, organization: "fleetguard local hub" });
  const kid = keyIdentifier(spki);
  const tbs = encodeTbs(
    {
      serial: randomSerial(),
      issuer: issuer?.name ?? name,
      subject: name,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + years * YEAR_MS),
      spki,
      extensions: [...extensions, subjectKeyIdentifier(kid), authorityKeyIdentifier(issuer?.kid ?? kid)],
    },
    "ecdsa-p256",
  );
  return signTbs(tbs, "ecdsa-p256", issuer?.key ?? key);
}

function validHosts(hosts: readonly string[]): string[] {
  const out = [...DEFAULT_HOSTS];
  for (const h of hosts) {
    if (!ipBytes(h) && !/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(h))
      throw invalid("hosts", h, "a DNS name or an IP address");
    const norm = ipBytes(h) ? h : h.toLowerCase();
    if (!out.includes(norm)) out.push(norm);
  }
  return out;
}

function readPem(file: string, label: string): string {
  const text = fs.readFileSync(file, "utf8");
  try {
    pemBlocks(text, label, file);
  } catch {
    throw new FleetError(
      "INTEGRITY",
      `${file}: got a file without a PEM ${label}, want the hub's own ${label.toLowerCase()}`,
    );
  }
  return text;
}

/**
 * The hub's TLS identity: made on first start (a P-256 hub CA for 10 years, a server certificate
 * for 2 years), then kept. When `extraHosts` names a host the server certificate lacks, a new one
 * is issued by the same hub CA, so devices keep trusting hub-ca.pem.
 */
export function ensureServerIdentity(stateDir: string, extraHosts: readonly string[] = []): ServerIdentity {
  const p = statePaths(stateDir);
  const hosts = validHosts(extraHosts);
  makeDirs(p.server);
  let caKey: crypto.KeyObject;
  let caPem: string;
  if (fs.existsSync(p.hubCaKey) && fs.existsSync(p.hubCaCert)) {
    try {
      caKey = crypto.createPrivateKey(readPem(p.hubCaKey, "PRIVATE KEY"));
    } catch (e) {
      if (e instanceof FleetError) throw e;
      throw new FleetError(
        "INTEGRITY",
        `${p.hubCaKey}: got a key Node cannot read, want the hub CA's P-256 key`,
      );
    }
    caPem = readPem(p.hubCaCert, "CERTIFICATE");
  } else {
    const pair = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    caKey = pair.privateKey;
    const der = selfSign(
      "fleetguard local hub CA",
      caKey,
      spkiDer(pair.publicKey),
      undefined,
      [basicConstraints(true, 0), keyUsage(["digitalSignature", "keyCertSign", "cRLSign"])],
      10,
    );
    caPem = toPem("CERTIFICATE", der);
    writeFileDurably(p.hubCaKey, privateKeyPem(caKey));
    writeFileDurably(p.hubCaCert, caPem, { mode: PUBLIC_FILE });
  }
  const caDer = pemBlocks(caPem, "CERTIFICATE", p.hubCaCert)[0]!;
  const caX = new crypto.X509Certificate(caDer);
  if (!caX.checkPrivateKey(caKey))
    throw new FleetError(
      "INTEGRITY",
      `${p.hubCaKey}: got a key that does not match ${p.hubCaCert}, want the hub CA's key`,
    );
  let keyPem: string | undefined;
  let certPem: string | undefined;
  if (fs.existsSync(p.serverKey) && fs.existsSync(p.serverCert)) {
    keyPem = readPem(p.serverKey, "PRIVATE KEY");
    certPem = readPem(p.serverCert, "CERTIFICATE");
    const x = new crypto.X509Certificate(pemBlocks(certPem, "CERTIFICATE", p.serverCert)[0]!);
    const names = (x.subjectAltName ?? "")
      .split(", ")
      .map((s) => s.replace(/^(DNS|IP Address):/, "").toLowerCase());
    const covers = hosts.every((h) => names.includes(h.toLowerCase()) || names.includes(expandIp(h)));
    const fresh = Date.parse(x.validTo) - Date.now() > 30 * 86_400_000;
    let matches = false;
    try {
      matches =
        x.checkPrivateKey(crypto.createPrivateKey(keyPem)) && x.checkIssued(caX) && x.verify(caX.publicKey);
    } catch {
      matches = false;
    }
    if (!matches || !covers || !fresh) {
      keyPem = undefined;
      certPem = undefined;
    }
  }
  if (!keyPem || !certPem) {
    const pair = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const caParsed = parseCertificate(caDer);
    const der = selfSign(
      "fleetguard local hub",
      pair.privateKey,
      spkiDer(pair.publicKey),
      { name: caParsed.subject, key: caKey, kid: keyIdentifier(caParsed.spki) },
      [
        basicConstraints(false),
        keyUsage(["digitalSignature"]),
        extKeyUsage([EKU.serverAuth]),
        sanExtension(hosts),
      ],
      2,
    );
    keyPem = privateKeyPem(pair.privateKey);
    certPem = toPem("CERTIFICATE", der);
    writeFileDurably(p.serverKey, keyPem);
    writeFileDurably(p.serverCert, certPem, { mode: PUBLIC_FILE });
  }
  writeIfChanged(p.hubCa, caPem);
  return { keyPem, certPem, caPem, hosts };
}

/** Node prints IPv6 SANs expanded ("0:0:0:0:0:0:0:1"): compare in that form. */
function expandIp(h: string): string {
  const b = ipBytes(h);
  if (b?.length !== 16) return h;
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i).toString(16));
  return g.join(":");
}

// ---------------------------------------------------------------- endpoint

export interface Endpoint {
  host: string;
  port: number;
}

export function writeEndpoint(stateDir: string, ep: Endpoint): void {
  writeFileDurably(statePaths(stateDir).endpoint, `${JSON.stringify(ep)}\n`, { mode: PUBLIC_FILE });
}

/** The endpoint the hub last wrote; undefined when it never ran here. */
export function readEndpoint(stateDir: string): Endpoint | undefined {
  const file = statePaths(stateDir).endpoint;
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new FleetError("INTEGRITY", `${file}: got bytes that are not JSON, want {host, port}`);
  }
  if (
    !isObj(v) ||
    typeof v.host !== "string" ||
    !Number.isInteger(v.port) ||
    (v.port as number) < 1 ||
    (v.port as number) > 65535
  )
    throw new FleetError("INTEGRITY", `${file}: got ${describeShape(v)}, want {host, port}`);
  return { host: v.host, port: v.port as number };
}

const describeShape = (v: unknown) =>
  isObj(v) ? `an object with ${Object.keys(v).join(", ") || "no keys"}` : typeof v;

export { sha256Hex };
