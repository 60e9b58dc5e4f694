/**
 * Throwaway SoftHSM2 tokens for the PKCS#11 custody tests and benchmark. The process gets its own
 * token directory and softhsm2.conf (SOFTHSM2_CONF, read by the module at C_Initialize), and each
 * call makes a fresh token in it with its own label, user PIN and PIN file (0600), so tests never
 * share keys and never touch the machine's /var/lib/softhsm.
 */
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const MODULE_CANDIDATES = [
  "/usr/lib/softhsm/libsofthsm2.so",
  `/usr/lib/${os.arch() === "arm64" ? "aarch64" : "x86_64"}-linux-gnu/softhsm/libsofthsm2.so`,
  "/usr/lib64/softhsm/libsofthsm2.so",
  "/usr/local/lib/softhsm/libsofthsm2.so",
];

/** The SoftHSM2 PKCS#11 library; fails (never skips) when scripts/ensure-softhsm was not run. */
export function softhsmModule(): string {
  const m = MODULE_CANDIDATES.find((p) => fs.existsSync(p));
  if (!m) throw new Error("SoftHSM2 is not installed: run `bash scripts/ensure-softhsm` (CI does)");
  return m;
}

let processDir: string | undefined;

function tokenDir(): string {
  if (processDir) return processDir;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-softhsm-"));
  fs.mkdirSync(path.join(dir, "tokens"), { mode: 0o700 });
  const conf = path.join(dir, "softhsm2.conf");
  fs.writeFileSync(
    conf,
    `directories.tokendir = ${path.join(dir, "tokens")}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`,
    { mode: 0o600 },
  );
  process.env.SOFTHSM2_CONF = conf;
  process.once("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
  processDir = dir;
  return dir;
}

export interface SoftToken {
  label: string;
  pin: string;
  soPin: string;
  /** the user PIN in a 0600 file */
  pinFile: string;
  module: string;
  /** the token's URI with module-path and pin-source; `keyUri` adds a key's label */
  uri: string;
  keyUri(object: string): string;
  /** the SOFTHSM2_CONF every process touching this token needs */
  env: NodeJS.ProcessEnv;
  cleanup(): void;
}

const enc = (s: string) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16)}`);

export function softToken(labelPrefix = "fg"): SoftToken {
  const module = softhsmModule();
  const dir = tokenDir();
  const label = `${labelPrefix}-${crypto.randomBytes(4).toString("hex")}`.slice(0, 32);
  const pin = crypto.randomBytes(6).toString("hex");
  const soPin = crypto.randomBytes(6).toString("hex");
  const pinFile = path.join(dir, `${label}.pin`);
  fs.writeFileSync(pinFile, `${pin}\n`, { mode: 0o600 });
  const env = { ...process.env, SOFTHSM2_CONF: process.env.SOFTHSM2_CONF };
  execFileSync(
    "softhsm2-util",
    ["--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", soPin],
    {
      env,
      stdio: "pipe",
    },
  );
  const query = `module-path=${module}&pin-source=file:${pinFile}`;
  return {
    label,
    pin,
    soPin,
    pinFile,
    module,
    uri: `pkcs11:token=${enc(label)}?${query}`,
    keyUri: (object) => `pkcs11:token=${enc(label)};object=${enc(object)}?${query}`,
    env,
    cleanup() {
      try {
        execFileSync("softhsm2-util", ["--delete-token", "--token", label], { env, stdio: "pipe" });
      } catch {
        // already gone; the process directory goes at exit anyway
      }
      fs.rmSync(pinFile, { force: true });
    },
  };
}

/**
 * Runs in a separate node process with its own pkcs11js instance, as an independent reader of the
 * token: loading the same module in the test process would share its C_Initialize state with the
 * code under test.
 */
const INSPECT = `
const p = require("pkcs11js");
const a = JSON.parse(process.env.FG_ARGS);
const m = new p.PKCS11(); m.load(a.module); m.C_Initialize();
const slot = m.C_GetSlotList(true).find((s) => m.C_GetTokenInfo(s).label.trim() === a.label);
const s = m.C_OpenSession(slot, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
m.C_Login(s, p.CKU_USER, a.pin);
const find = (t) => { m.C_FindObjectsInit(s, t); const r = m.C_FindObjects(s, 100); m.C_FindObjectsFinal(s); return r; };
const out = {};
if (a.op === "inspect") {
  const keys = find([{ type: p.CKA_CLASS, value: p.CKO_PRIVATE_KEY }, { type: p.CKA_LABEL, value: a.object }]);
  out.count = keys.length;
  const k = keys[0];
  const one = (type) => { try { return m.C_GetAttributeValue(s, k, [{ type }])[0].value; } catch (e) { return { error: e.message }; } };
  const bool = (type) => { const v = one(type); return Buffer.isBuffer(v) ? v[0] !== 0 : v; };
  for (const n of ["CKA_EXTRACTABLE", "CKA_SENSITIVE", "CKA_NEVER_EXTRACTABLE", "CKA_ALWAYS_SENSITIVE", "CKA_TOKEN", "CKA_PRIVATE", "CKA_SIGN", "CKA_LOCAL", "CKA_DECRYPT", "CKA_UNWRAP", "CKA_DERIVE"]) out[n] = bool(p[n]);
  const secret = one(p.CKA_VALUE); const d = one(p.CKA_PRIVATE_EXPONENT);
  out.CKA_VALUE = Buffer.isBuffer(secret) ? "READ " + secret.length + " bytes" : secret.error;
  out.CKA_PRIVATE_EXPONENT = Buffer.isBuffer(d) ? "READ " + d.length + " bytes" : d.error;
  const kek = m.C_GenerateKey(s, { mechanism: p.CKM_AES_KEY_GEN }, [{ type: p.CKA_TOKEN, value: false }, { type: p.CKA_VALUE_LEN, value: 32 }, { type: p.CKA_WRAP, value: true }]);
  try { const w = m.C_WrapKey(s, { mechanism: p.CKM_AES_KEY_WRAP_PAD }, kek, k, Buffer.alloc(8192)); out.wrap = "WRAPPED " + w.length + " bytes"; } catch (e) { out.wrap = e.message; }
} else if (a.op === "weak") {
  m.C_GenerateKeyPair(s, { mechanism: p.CKM_EC_KEY_PAIR_GEN },
    [{ type: p.CKA_TOKEN, value: true }, { type: p.CKA_LABEL, value: a.object }, { type: p.CKA_EC_PARAMS, value: Buffer.from("06082a8648ce3d030107", "hex") }, { type: p.CKA_VERIFY, value: true }],
    [{ type: p.CKA_TOKEN, value: true }, { type: p.CKA_LABEL, value: a.object }, { type: p.CKA_PRIVATE, value: true }, { type: p.CKA_SENSITIVE, value: false }, { type: p.CKA_EXTRACTABLE, value: true }, { type: p.CKA_SIGN, value: true }]);
  out.ok = true;
}
m.C_Finalize();
process.stdout.write(JSON.stringify(out));
`;

function runInspector(t: SoftToken, args: Record<string, unknown>): Record<string, unknown> {
  const out = execFileSync(process.execPath, ["-e", INSPECT], {
    env: { ...t.env, FG_ARGS: JSON.stringify({ module: t.module, label: t.label, pin: t.pin, ...args }) },
    cwd: path.resolve(__dirname, "../.."),
    encoding: "utf8",
  });
  return JSON.parse(out) as Record<string, unknown>;
}

/** What another process reads of the private key labelled `object`, and whether it can get it out. */
export function inspectPrivateKey(t: SoftToken, object: string): Record<string, unknown> {
  return runInspector(t, { op: "inspect", object });
}

/** Make an extractable, non-sensitive P-256 key labelled `object` (what custody must refuse). */
export function createExtractableKey(t: SoftToken, object: string): void {
  runInspector(t, { op: "weak", object });
}
