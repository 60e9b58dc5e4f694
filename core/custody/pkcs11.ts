/**
 * PKCS#11 key custody: CA keys generated inside a token (an HSM; SoftHSM2 in tests) as
 * non-extractable, sensitive signing keys, named by RFC 7512 `pkcs11:` URIs, and an
 * ExternalSigner that signs through the token so the private key never enters this process.
 * Follows PKCS#11 2.40 (OASIS) for the calls and attributes, and RFC 7512 for the URI
 * (./pkcs11-uri); the binding is pkcs11js, loaded lazily so nothing needs it unless this custody
 * is used.
 *
 * One module load and one logged-in session per token and process: PKCS#11 login state is
 * per application and token, and C_Sign is synchronous, so a single session serves every
 * signer of that token. The PIN is never kept: it is read from its source at each login and
 * never appears in a URI this module returns nor in an error.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type * as P11 from "pkcs11js";
import { FleetError, invalid, phrase } from "../errors";
import { bitString, oid, seq, uintBytes } from "../x509/der";
import { assertKeyAlgorithm, type ExternalSigner, type KeyAlgorithm } from "../x509/keys";
import {
  formatPkcs11Uri,
  PIN_ENV,
  PKCS11_URI_FIELD,
  type Pkcs11Uri,
  parsePkcs11Uri,
  pinFilePath,
} from "./pkcs11-uri";

export {
  formatPkcs11Uri,
  type ParseOptions,
  PIN_ENV,
  PKCS11_URI_FIELD,
  type Pkcs11Uri,
  parsePkcs11Uri,
} from "./pkcs11-uri";

// ---------------------------------------------------------------------------------------------
// algorithms

/** PKCS#11 numbers pkcs11js 2.1 does not export (PKCS#11 3.0 Edwards curves). */
const CKK_EC_EDWARDS = 0x40;
const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
const CKM_EDDSA = 0x1057;

interface P11Alg {
  keyType: "ec" | "ed" | "rsa";
  /** DER ECParameters (namedCurve OID) for EC and Edwards keys */
  curve?: Buffer;
  /** also accepted when reading an existing key: PKCS#11 3.0 allows a PrintableString name */
  curveAlt?: Buffer;
  /** ECDSA: hash in software, then CKM_ECDSA on the digest; half the raw signature length */
  hash?: "sha256" | "sha384";
  half?: number;
}

const P11_ALGS: Record<KeyAlgorithm, P11Alg> = {
  "ecdsa-p256": { keyType: "ec", curve: oid("1.2.840.10045.3.1.7"), hash: "sha256", half: 32 },
  "ecdsa-p384": { keyType: "ec", curve: oid("1.3.132.0.34"), hash: "sha384", half: 48 },
  ed25519: {
    keyType: "ed",
    curve: oid("1.3.101.112"),
    curveAlt: Buffer.concat([Buffer.from([0x13, 12]), Buffer.from("edwards25519")]),
  },
  "rsa-3072": { keyType: "rsa" },
};

// ---------------------------------------------------------------------------------------------
// modules, tokens, sessions

interface LoadedModule {
  path: string;
  p11: P11.PKCS11;
  lib: typeof P11;
  /** bumped at every re-initialisation: sessions and handles from before are gone */
  generation: number;
  sessions: Map<string, Buffer>;
}

const modules = new Map<string, LoadedModule>();
let exitHook = false;

function loadBinding(field: string): typeof P11 {
  try {
    // lazy: only this custody needs the native binding
    return require("pkcs11js") as typeof P11;
  } catch {
    throw new FleetError(
      "UNAVAILABLE",
      `${field}: got no pkcs11js binding (npm package not installed or not built), want it installed to use PKCS#11 custody`,
      field,
    );
  }
}

const ckr = (e: unknown): string => {
  const m = /CKR_[A-Z0-9_]+/.exec(e instanceof Error ? e.message : String(e));
  return m ? m[0] : "an error";
};

function moduleFor(u: Pkcs11Uri, field: string, env: Env): LoadedModule {
  const modulePath = u.modulePath ?? env.FLEETGUARD_PKCS11_MODULE;
  if (!modulePath)
    throw invalid(
      field,
      phrase("a URI without module-path"),
      "module-path=<the HSM's PKCS#11 library> in the query (or FLEETGUARD_PKCS11_MODULE)",
    );
  if (!path.isAbsolute(modulePath))
    throw invalid(
      field,
      phrase(`module-path ${JSON.stringify(modulePath.slice(0, 60))}`),
      "an absolute path",
    );
  const have = modules.get(modulePath);
  if (have) return have;
  if (!fs.existsSync(modulePath))
    throw new FleetError(
      "UNAVAILABLE",
      `${field}: got module-path ${modulePath} that does not exist, want the HSM's PKCS#11 library ` +
        "(SoftHSM2: /usr/lib/softhsm/libsofthsm2.so, see scripts/ensure-softhsm)",
      field,
    );
  const lib = loadBinding(field);
  const p11 = new lib.PKCS11();
  try {
    p11.load(modulePath);
  } catch {
    throw new FleetError(
      "UNAVAILABLE",
      `${field}: got module-path ${modulePath} that cannot be loaded as a PKCS#11 library, want the HSM's PKCS#11 library`,
      field,
    );
  }
  try {
    p11.C_Initialize({ flags: lib.CKF_OS_LOCKING_OK });
  } catch (e) {
    if (ckr(e) !== "CKR_CRYPTOKI_ALREADY_INITIALIZED")
      throw new FleetError(
        "UNAVAILABLE",
        `${field}: got ${ckr(e)} from C_Initialize of ${modulePath}, want an initialised PKCS#11 library`,
        field,
      );
  }
  const m: LoadedModule = { path: modulePath, p11, lib, generation: 0, sessions: new Map() };
  modules.set(modulePath, m);
  if (!exitHook) {
    exitHook = true;
    process.once("exit", closePkcs11);
  }
  return m;
}

/** Close every session and unload every module (also done at process exit). */
export function closePkcs11(): void {
  for (const m of modules.values()) {
    try {
      m.p11.C_Finalize();
    } catch {
      // at exit there is no one left to tell
    }
    try {
      m.p11.close();
    } catch {
      // idem
    }
  }
  modules.clear();
}

/** Re-read the slot list: tokens created after C_Initialize are invisible until then (SoftHSM2). */
function reinitialise(m: LoadedModule, field: string): void {
  try {
    m.p11.C_Finalize();
  } catch {
    // already finalised: initialise below tells whether the module is usable
  }
  m.sessions.clear();
  m.generation++;
  try {
    m.p11.C_Initialize({ flags: m.lib.CKF_OS_LOCKING_OK });
  } catch (e) {
    modules.delete(m.path);
    throw new FleetError(
      "UNAVAILABLE",
      `${field}: got ${ckr(e)} re-initialising ${m.path}, want a usable PKCS#11 library`,
      field,
    );
  }
}

/** CK_ULONG handles come as native-endian buffers of 8 (LP64) or 4 bytes. */
const handleNumber = (h: Buffer): bigint =>
  h.length >= 8 ? h.readBigUInt64LE(0) : BigInt(h.readUInt32LE(0));

const pad = (s: string) => s.replace(/[\s\0]+$/, "");

interface TokenMatch {
  slot: Buffer;
  label: string;
}

function matchTokens(m: LoadedModule, u: Pkcs11Uri): TokenMatch[] {
  const { p11, lib } = m;
  if (
    u.libraryManufacturer !== undefined ||
    u.libraryDescription !== undefined ||
    u.libraryVersion !== undefined
  ) {
    const info = p11.C_GetInfo();
    if (u.libraryManufacturer !== undefined && pad(info.manufacturerID) !== u.libraryManufacturer) return [];
    if (u.libraryDescription !== undefined && pad(info.libraryDescription) !== u.libraryDescription)
      return [];
    if (u.libraryVersion !== undefined) {
      const [maj, min] = u.libraryVersion.split(".").map(Number);
      if (info.libraryVersion.major !== maj || (min !== undefined && info.libraryVersion.minor !== min))
        return [];
    }
  }
  const out: TokenMatch[] = [];
  for (const slot of p11.C_GetSlotList(true)) {
    if (u.slotId !== undefined && handleNumber(slot) !== BigInt(u.slotId)) continue;
    if (u.slotDescription !== undefined || u.slotManufacturer !== undefined) {
      const si = p11.C_GetSlotInfo(slot);
      if (u.slotDescription !== undefined && pad(si.slotDescription) !== u.slotDescription) continue;
      if (u.slotManufacturer !== undefined && pad(si.manufacturerID) !== u.slotManufacturer) continue;
    }
    const ti = p11.C_GetTokenInfo(slot);
    if (!(ti.flags & lib.CKF_TOKEN_INITIALIZED)) continue;
    if (u.token !== undefined && pad(ti.label) !== u.token) continue;
    if (u.manufacturer !== undefined && pad(ti.manufacturerID) !== u.manufacturer) continue;
    if (u.serial !== undefined && pad(ti.serialNumber) !== u.serial) continue;
    if (u.model !== undefined && pad(ti.model) !== u.model) continue;
    out.push({ slot, label: pad(ti.label) });
  }
  return out;
}

const tokenName = (u: Pkcs11Uri) =>
  u.token !== undefined
    ? `token ${JSON.stringify(u.token)}`
    : u.serial !== undefined
      ? `serial ${u.serial}`
      : "a token";

function findToken(m: LoadedModule, u: Pkcs11Uri, field: string): TokenMatch {
  let found = matchTokens(m, u);
  if (found.length === 0) {
    reinitialise(m, field);
    found = matchTokens(m, u);
  }
  if (found.length === 1) return found[0]!;
  if (found.length === 0) {
    const labels = m.p11
      .C_GetSlotList(true)
      .map((s) => m.p11.C_GetTokenInfo(s))
      .filter((t) => t.flags & m.lib.CKF_TOKEN_INITIALIZED)
      .map((t) => JSON.stringify(pad(t.label)));
    throw new FleetError(
      "UNAVAILABLE",
      `${field}: got ${tokenName(u)} that ${m.path} does not have (its tokens: ${labels.join(", ") || "none"}), ` +
        "want an initialised token the URI names",
      field,
    );
  }
  throw invalid(
    field,
    phrase(
      `a URI that matches ${found.length} tokens (${found.map((t) => JSON.stringify(t.label)).join(", ")})`,
    ),
    "a URI that names one token (token=, serial=)",
  );
}

export interface Pkcs11Options {
  /** the field named in errors; default custody.pkcs11.uri */
  field?: string;
  /** where FLEETGUARD_PKCS11_PIN and FLEETGUARD_PKCS11_MODULE are read; default process.env */
  env?: Env;
  /** accept pin-value in the URI (see ParseOptions) */
  allowPinValue?: boolean;
}
type Env = Record<string, string | undefined>;

function readPin(u: Pkcs11Uri, field: string, env: Env): string | undefined {
  if (u.pinValue !== undefined) return u.pinValue;
  if (u.pinSource !== undefined) {
    const file = pinFilePath(u.pinSource, field);
    let raw: string;
    try {
      raw = fs.readFileSync(file, "utf8");
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? "an error";
      throw invalid(
        field,
        phrase(`pin-source ${file} that cannot be read (${code})`),
        "a readable file holding the user PIN",
      );
    }
    // one trailing newline is how `echo` writes a PIN file; anything else is part of the PIN
    const pin = raw.replace(/\r?\n$/, "");
    if (pin === "")
      throw invalid(field, phrase(`pin-source ${file} that is empty`), "a file holding the user PIN");
    return pin;
  }
  const fromEnv = env[PIN_ENV];
  return fromEnv === undefined || fromEnv === "" ? undefined : fromEnv;
}

function loginError(e: unknown, label: string, u: Pkcs11Uri, field: string): FleetError {
  const code = ckr(e);
  if (code === "CKR_PIN_INCORRECT" || code === "CKR_PIN_LEN_RANGE" || code === "CKR_PIN_INVALID")
    return invalid(
      field,
      phrase(`a PIN that token ${JSON.stringify(label)} refuses (${code})`),
      `the token's user PIN (from ${u.pinValue !== undefined ? "pin-value" : u.pinSource !== undefined ? "pin-source" : PIN_ENV})`,
    );
  if (code === "CKR_PIN_LOCKED")
    return new FleetError(
      "UNAVAILABLE",
      `${field}: got token ${JSON.stringify(label)} with its user PIN locked (CKR_PIN_LOCKED), want the PIN unlocked by the token's security officer`,
      field,
    );
  return new FleetError(
    "UNAVAILABLE",
    `${field}: got ${code} logging in to token ${JSON.stringify(label)}, want a logged-in session`,
    field,
  );
}

/** The logged-in session of the token the URI names (one per token and process). */
function sessionFor(
  m: LoadedModule,
  u: Pkcs11Uri,
  field: string,
  env: Env,
): { session: Buffer; token: TokenMatch } {
  const token = findToken(m, u, field);
  const key = token.slot.toString("hex");
  const have = m.sessions.get(key);
  if (have) return { session: have, token };
  const { p11, lib } = m;
  let session: Buffer;
  try {
    session = p11.C_OpenSession(token.slot, lib.CKF_SERIAL_SESSION | lib.CKF_RW_SESSION);
  } catch (e) {
    throw new FleetError(
      "UNAVAILABLE",
      `${field}: got ${ckr(e)} opening a session on token ${JSON.stringify(token.label)}, want a session`,
      field,
    );
  }
  const ti = p11.C_GetTokenInfo(token.slot);
  try {
    const pin = readPin(u, field, env);
    if (pin !== undefined) p11.C_Login(session, lib.CKU_USER, pin);
    else if (ti.flags & lib.CKF_PROTECTED_AUTHENTICATION_PATH) p11.C_Login(session, lib.CKU_USER);
    else if (ti.flags & lib.CKF_LOGIN_REQUIRED)
      throw invalid(
        field,
        phrase(`no PIN for token ${JSON.stringify(token.label)}`),
        `pin-source=file:<path> in the URI or ${PIN_ENV} set`,
      );
  } catch (e) {
    // login is per application and token: another session of this process may have done it
    if (e instanceof FleetError || ckr(e) !== "CKR_USER_ALREADY_LOGGED_IN") {
      p11.C_CloseSession(session);
      throw e instanceof FleetError ? e : loginError(e, token.label, u, field);
    }
  }
  m.sessions.set(key, session);
  return { session, token };
}

function findObjects(m: LoadedModule, session: Buffer, template: P11.Template): Buffer[] {
  m.p11.C_FindObjectsInit(session, template);
  try {
    const out: Buffer[] = [];
    for (;;) {
      const batch = m.p11.C_FindObjects(session, 32);
      if (batch.length === 0) return out;
      out.push(...batch);
    }
  } finally {
    m.p11.C_FindObjectsFinal(session);
  }
}

function attrs(
  m: LoadedModule,
  session: Buffer,
  obj: Buffer,
  types: number[],
): Map<number, Buffer | undefined> {
  const out = new Map<number, Buffer | undefined>();
  // one at a time: a single sensitive or absent attribute fails a whole C_GetAttributeValue call
  for (const type of types) {
    try {
      out.set(type, m.p11.C_GetAttributeValue(session, obj, [{ type }])[0]!.value);
    } catch {
      out.set(type, undefined);
    }
  }
  return out;
}

const boolAttr = (b: Buffer | undefined): boolean | undefined => (b === undefined ? undefined : b[0] !== 0);
const ulongAttr = (b: Buffer | undefined): number | undefined =>
  b === undefined ? undefined : b.length >= 8 ? Number(b.readBigUInt64LE(0)) : b.readUInt32LE(0);

// ---------------------------------------------------------------------------------------------
// public keys and signatures

/** An EC point as PKCS#11 returns it: a DER OCTET STRING (2.40), or raw bytes from some tokens. */
function unwrapPoint(b: Buffer): Buffer {
  if (b[0] === 0x04 && b.length >= 2) {
    let len = b[1]!;
    let off = 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = (len << 8) | b[2 + i]!;
      off = 2 + n;
    }
    if (off + len === b.length) return b.subarray(off);
  }
  return b;
}

function publicKeyFrom(
  alg: KeyAlgorithm,
  a: Map<number, Buffer | undefined>,
  lib: typeof P11,
): crypto.KeyObject {
  const info = P11_ALGS[alg];
  if (info.keyType === "rsa") {
    const n = a.get(lib.CKA_MODULUS);
    const e = a.get(lib.CKA_PUBLIC_EXPONENT);
    if (!n || !e) throw new Error("no modulus");
    return crypto.createPublicKey({
      key: { kty: "RSA", n: n.toString("base64url"), e: e.toString("base64url") },
      format: "jwk",
    });
  }
  const point = a.get(lib.CKA_EC_POINT);
  if (!point) throw new Error("no point");
  const raw = unwrapPoint(point);
  const algId = info.keyType === "ed" ? seq(oid("1.3.101.112")) : seq(oid("1.2.840.10045.2.1"), info.curve!);
  return crypto.createPublicKey({ key: seq(algId, bitString(raw)), format: "der", type: "spki" });
}

/** PKCS#11 ECDSA gives r||s (2.40 section 2.3.1); X.509 wants Ecdsa-Sig-Value ::= SEQ { r, s }. */
export function ecdsaRawToDer(raw: Uint8Array, half: number): Buffer {
  if (raw.length !== 2 * half)
    throw invalid("signature", phrase(`${raw.length} bytes`), `${2 * half} bytes (r||s)`);
  return seq(uintBytes(raw.subarray(0, half)), uintBytes(raw.subarray(half)));
}

// ---------------------------------------------------------------------------------------------
// keys

interface KeyFound {
  priv: Buffer;
  pub: crypto.KeyObject;
  id: Buffer;
}

/** The private key object the URI names, checked: type, curve, custody attributes, public half. */
function findKey(
  m: LoadedModule,
  session: Buffer,
  u: Pkcs11Uri,
  alg: KeyAlgorithm,
  field: string,
  tokenLabel: string,
): KeyFound | undefined {
  const { lib } = m;
  const tmpl: P11.Template = [{ type: lib.CKA_CLASS, value: lib.CKO_PRIVATE_KEY }];
  if (u.object !== undefined) tmpl.push({ type: lib.CKA_LABEL, value: u.object });
  if (u.id !== undefined) tmpl.push({ type: lib.CKA_ID, value: u.id });
  const found = findObjects(m, session, tmpl);
  if (found.length === 0) return undefined;
  const what = `key ${JSON.stringify(u.object ?? u.id?.toString("hex"))} in token ${JSON.stringify(tokenLabel)}`;
  if (found.length > 1)
    throw new FleetError(
      "CONFLICT",
      `${field}: got ${found.length} private keys matching ${what}, want exactly one (add id= to the URI)`,
      field,
    );
  const priv = found[0]!;
  const a = attrs(m, session, priv, [
    lib.CKA_KEY_TYPE,
    lib.CKA_EC_PARAMS,
    lib.CKA_MODULUS,
    lib.CKA_PUBLIC_EXPONENT,
    lib.CKA_SENSITIVE,
    lib.CKA_EXTRACTABLE,
    lib.CKA_SIGN,
    lib.CKA_ALWAYS_AUTHENTICATE,
    lib.CKA_ID,
  ]);
  const info = P11_ALGS[alg];
  const keyType = ulongAttr(a.get(lib.CKA_KEY_TYPE));
  const wantType = info.keyType === "rsa" ? lib.CKK_RSA : info.keyType === "ec" ? lib.CKK_EC : CKK_EC_EDWARDS;
  const params = a.get(lib.CKA_EC_PARAMS);
  const typeOk =
    keyType === wantType &&
    (info.keyType === "rsa"
      ? a.get(lib.CKA_MODULUS)?.length === 384
      : params !== undefined && (params.equals(info.curve!) || (info.curveAlt?.equals(params) ?? false)));
  if (!typeOk)
    throw new FleetError(
      "CONFLICT",
      `${field}: got ${what} of another type or size (CKA_KEY_TYPE ${keyType}), want a ${alg} key as declared`,
      field,
    );
  const sensitive = boolAttr(a.get(lib.CKA_SENSITIVE));
  const extractable = boolAttr(a.get(lib.CKA_EXTRACTABLE));
  if (sensitive !== true || extractable !== false)
    throw new FleetError(
      "INTEGRITY",
      `${field}: got ${what} with CKA_SENSITIVE ${sensitive} and CKA_EXTRACTABLE ${extractable}, ` +
        "want a key that cannot leave the token (CKA_SENSITIVE true, CKA_EXTRACTABLE false)",
      field,
    );
  if (boolAttr(a.get(lib.CKA_SIGN)) !== true)
    throw new FleetError("INTEGRITY", `${field}: got ${what} with CKA_SIGN false, want a signing key`, field);
  if (boolAttr(a.get(lib.CKA_ALWAYS_AUTHENTICATE)) === true)
    throw invalid(
      field,
      phrase(`${what} with CKA_ALWAYS_AUTHENTICATE true`),
      "a key usable for many signatures after one login",
    );
  const id = a.get(lib.CKA_ID) ?? Buffer.alloc(0);
  let pub: crypto.KeyObject;
  try {
    if (info.keyType === "rsa") pub = publicKeyFrom(alg, a, lib);
    else {
      const pubs = findObjects(m, session, [
        { type: lib.CKA_CLASS, value: lib.CKO_PUBLIC_KEY },
        ...(u.object !== undefined ? [{ type: lib.CKA_LABEL, value: u.object }] : []),
        ...(id.length ? [{ type: lib.CKA_ID, value: id }] : []),
      ]);
      if (pubs.length !== 1) throw new Error("public");
      pub = publicKeyFrom(alg, attrs(m, session, pubs[0]!, [lib.CKA_EC_POINT]), lib);
    }
  } catch {
    throw new FleetError(
      "INTEGRITY",
      `${field}: got ${what} without one readable public key beside it, want the public key object of the pair`,
      field,
    );
  }
  return { priv, pub, id };
}

function rawSign(m: LoadedModule, session: Buffer, key: Buffer, alg: KeyAlgorithm, data: Uint8Array): Buffer {
  const info = P11_ALGS[alg];
  const { p11, lib } = m;
  const msg = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (info.keyType === "ec") {
    p11.C_SignInit(session, { mechanism: lib.CKM_ECDSA }, key);
    const digest = crypto.createHash(info.hash!).update(msg).digest();
    return ecdsaRawToDer(p11.C_Sign(session, digest, Buffer.alloc(2 * info.half!)), info.half!);
  }
  if (info.keyType === "ed") {
    p11.C_SignInit(session, { mechanism: CKM_EDDSA }, key);
    return Buffer.from(p11.C_Sign(session, msg, Buffer.alloc(64)));
  }
  p11.C_SignInit(session, { mechanism: lib.CKM_SHA256_RSA_PKCS }, key);
  return Buffer.from(p11.C_Sign(session, msg, Buffer.alloc(384)));
}

/** Sign a fresh challenge and verify it with the public half: the pair is whole and usable. */
function selfTest(
  m: LoadedModule,
  session: Buffer,
  k: KeyFound,
  alg: KeyAlgorithm,
  field: string,
  what: string,
): void {
  const challenge = crypto.randomBytes(32);
  let sig: Buffer;
  try {
    sig = rawSign(m, session, k.priv, alg, challenge);
  } catch (e) {
    throw new FleetError(
      "UNAVAILABLE",
      `${field}: got ${ckr(e)} signing with ${what}, want a signature`,
      field,
    );
  }
  const hash = P11_ALGS[alg].keyType === "ed" ? null : (P11_ALGS[alg].hash ?? "sha256");
  if (!crypto.verify(hash, challenge, k.pub, sig))
    throw new FleetError(
      "INTEGRITY",
      `${field}: got ${what} whose signature its public key does not verify, want a matching key pair`,
      field,
    );
}

export interface GeneratedKey {
  /** the key's URI, with its id and type=private, without any PIN */
  uri: string;
  publicKeySpkiDer: Buffer;
  /** false when the key already existed (a re-run after a crash) */
  created: boolean;
}

/**
 * Create a CA key pair inside the token the URI names, labelled `object`: sensitive,
 * non-extractable, signing only. Idempotent: when the token already holds a private key with that
 * label (and id, if given) of the same algorithm and custody attributes, that key is returned,
 * so a run interrupted after generation converges instead of leaving an orphan key.
 */
export function generatePkcs11Key(
  uri: string,
  algorithm: KeyAlgorithm,
  opts: Pkcs11Options = {},
): GeneratedKey {
  const field = opts.field ?? PKCS11_URI_FIELD;
  const u = parsePkcs11Uri(uri, { field, allowPinValue: opts.allowPinValue });
  assertKeyAlgorithm(algorithm, "algorithm");
  if (u.object === undefined || u.object === "")
    throw invalid(field, phrase("a URI without object"), "object=<key label> naming the key to create");
  if (u.type !== undefined && u.type !== "private")
    throw invalid(field, phrase(`type=${u.type}`), "type=private or no type");
  const env = opts.env ?? process.env;
  const m = moduleFor(u, field, env);
  const { session, token } = sessionFor(m, u, field, env);
  const { p11, lib } = m;
  const what = `key ${JSON.stringify(u.object)} in token ${JSON.stringify(token.label)}`;

  let key: KeyFound | undefined;
  let created = false;
  // by label alone: a key of that label with another id is still a clash, not a new key
  const sameLabel = findObjects(m, session, [{ type: lib.CKA_LABEL, value: u.object }]);
  if (sameLabel.length > 0) {
    key = findKey(m, session, u, algorithm, field, token.label);
    if (!key)
      throw new FleetError(
        "CONFLICT",
        `${field}: got ${sameLabel.length} objects labelled ${JSON.stringify(u.object)} in token ${JSON.stringify(token.label)} ` +
          "that are not this key, want a label no other object has",
        field,
      );
  } else {
    const info = P11_ALGS[algorithm];
    const id = u.id ?? crypto.randomBytes(16);
    const common = [
      { type: lib.CKA_TOKEN, value: true },
      { type: lib.CKA_LABEL, value: u.object },
      { type: lib.CKA_ID, value: id },
    ];
    const pubT: P11.Template = [
      ...common,
      { type: lib.CKA_VERIFY, value: true },
      { type: lib.CKA_PRIVATE, value: false },
    ];
    const privT: P11.Template = [
      ...common,
      { type: lib.CKA_PRIVATE, value: true },
      { type: lib.CKA_SENSITIVE, value: true },
      { type: lib.CKA_EXTRACTABLE, value: false },
      { type: lib.CKA_SIGN, value: true },
    ];
    let mech: number;
    if (info.keyType === "rsa") {
      mech = lib.CKM_RSA_PKCS_KEY_PAIR_GEN;
      pubT.push(
        { type: lib.CKA_MODULUS_BITS, value: 3072 },
        { type: lib.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
        { type: lib.CKA_ENCRYPT, value: false },
        { type: lib.CKA_WRAP, value: false },
      );
      // a CA key signs and does nothing else
      privT.push({ type: lib.CKA_DECRYPT, value: false }, { type: lib.CKA_UNWRAP, value: false });
    } else {
      mech = info.keyType === "ec" ? lib.CKM_EC_KEY_PAIR_GEN : CKM_EC_EDWARDS_KEY_PAIR_GEN;
      pubT.push({ type: lib.CKA_EC_PARAMS, value: info.curve! });
      privT.push({ type: lib.CKA_DERIVE, value: false });
    }
    try {
      p11.C_GenerateKeyPair(session, { mechanism: mech }, pubT, privT);
    } catch (e) {
      throw new FleetError(
        "UNAVAILABLE",
        `${field}: got ${ckr(e)} generating a ${algorithm} ${what}, want a key pair made in the token`,
        field,
      );
    }
    created = true;
    key = findKey(m, session, { ...u, id }, algorithm, field, token.label);
    if (!key)
      throw new FleetError(
        "INTEGRITY",
        `${field}: got no ${what} after generating it, want the new key`,
        field,
      );
  }
  selfTest(m, session, key, algorithm, field, what);
  const { pinValue: _pin, ...rest } = u;
  const out: Pkcs11Uri = { ...rest, id: key.id.length ? key.id : undefined, type: "private" };
  return {
    uri: formatPkcs11Uri(out),
    publicKeySpkiDer: key.pub.export({ type: "spki", format: "der" }),
    created,
  };
}

const RECONNECT = new Set([
  "CKR_SESSION_HANDLE_INVALID",
  "CKR_SESSION_CLOSED",
  "CKR_OBJECT_HANDLE_INVALID",
  "CKR_KEY_HANDLE_INVALID",
  "CKR_USER_NOT_LOGGED_IN",
  "CKR_DEVICE_REMOVED",
  "CKR_TOKEN_NOT_PRESENT",
  "CKR_CRYPTOKI_NOT_INITIALIZED",
]);

class Pkcs11Signer implements ExternalSigner {
  private session: Buffer;
  private key: Buffer;
  private generation: number;

  constructor(
    readonly algorithm: KeyAlgorithm,
    readonly publicKey: crypto.KeyObject,
    private m: LoadedModule,
    private readonly u: Pkcs11Uri,
    private readonly field: string,
    private readonly env: Env,
    found: { session: Buffer; key: Buffer },
  ) {
    this.session = found.session;
    this.key = found.key;
    this.generation = m.generation;
  }

  /** Find session and key again after the module was re-initialised or the session dropped. */
  private reconnect(): void {
    const m = modules.get(this.m.path) === this.m ? this.m : moduleFor(this.u, this.field, this.env);
    const { session, token } = sessionFor(m, this.u, this.field, this.env);
    const k = findKey(m, session, this.u, this.algorithm, this.field, token.label);
    if (!k?.pub.equals(this.publicKey))
      throw new FleetError(
        "INTEGRITY",
        `${this.field}: got ${k ? "another key" : "no key"} under the URI after reconnecting, want the key this signer opened`,
        this.field,
      );
    this.m = m;
    this.session = session;
    this.key = k.priv;
    this.generation = m.generation;
  }

  sign(data: Uint8Array): Buffer {
    if (!(data instanceof Uint8Array)) throw invalid("data", data, "bytes to sign");
    if (modules.get(this.m.path) !== this.m || this.m.generation !== this.generation) this.reconnect();
    try {
      return rawSign(this.m, this.session, this.key, this.algorithm, data);
    } catch (e) {
      if (!RECONNECT.has(ckr(e)))
        throw new FleetError(
          "UNAVAILABLE",
          `${this.field}: got ${ckr(e)} from C_Sign, want a signature`,
          this.field,
        );
      this.m.sessions.clear();
      this.reconnect();
      try {
        return rawSign(this.m, this.session, this.key, this.algorithm, data);
      } catch (e2) {
        throw new FleetError(
          "UNAVAILABLE",
          `${this.field}: got ${ckr(e2)} from C_Sign, want a signature`,
          this.field,
        );
      }
    }
  }
}

/**
 * An ExternalSigner for the private key the URI names. Refuses a key that could leave the token
 * (CKA_EXTRACTABLE true or CKA_SENSITIVE false), of another algorithm than declared, or whose
 * public half does not verify its signature.
 */
export function openPkcs11Signer(
  uri: string,
  algorithm: KeyAlgorithm,
  opts: Pkcs11Options = {},
): ExternalSigner {
  const field = opts.field ?? PKCS11_URI_FIELD;
  const u = parsePkcs11Uri(uri, { field, allowPinValue: opts.allowPinValue });
  assertKeyAlgorithm(algorithm, "algorithm");
  if (u.object === undefined && u.id === undefined)
    throw invalid(field, phrase("a URI without object or id"), "object=<key label> (and id=) naming the key");
  if (u.type !== undefined && u.type !== "private")
    throw invalid(field, phrase(`type=${u.type}`), "type=private or no type");
  const env = opts.env ?? process.env;
  const m = moduleFor(u, field, env);
  const { session, token } = sessionFor(m, u, field, env);
  const what = `key ${JSON.stringify(u.object ?? u.id?.toString("hex"))} in token ${JSON.stringify(token.label)}`;
  const k = findKey(m, session, u, algorithm, field, token.label);
  if (!k) throw new FleetError("NOT_FOUND", `${field}: got no private ${what}, want an existing key`, field);
  selfTest(m, session, k, algorithm, field, what);
  // the signer keeps the URI, not the PIN: a login after a reconnect reads the PIN's source again
  return new Pkcs11Signer(algorithm, k.pub, m, u, field, env, { session, key: k.priv });
}
