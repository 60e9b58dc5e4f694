/**
 * The embedded key store: fleetguard's default CA key custody, which needs nothing installed.
 * Keys are generated inside the process that uses them (the CA provider), sealed at once with
 * AES-256-GCM (NIST SP 800-38D) under a key-encryption key derived with scrypt (RFC 7914) from
 * a passphrase the operator already holds (the stack's PULUMI_CONFIG_PASSPHRASE, or a dedicated
 * FLEETGUARD_KEK), and written beside the registry as one file per key (0600, folder 0700).
 * Only a reference (store folder, key id, public key digest) ever leaves the process: keys do
 * not cross Pulumi's RPC, so they are in neither the state nor the engine's verbose logs.
 *
 * The associated data binds each sealed key to its id, algorithm and public key, so a sealed
 * blob moved to another id, or a public key swapped in the file, fails to open (INTEGRITY).
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { ensurePrivateDir, writeFileDurably } from "../durable";
import { FleetError, invalid } from "../errors";
import { algorithmOf, generateKey, type KeyAlgorithm, spkiDer } from "../x509/keys";

const STORE_FILE = "store.json";
const CHECK_TEXT = "fleetguard key store v1";
/** scrypt cost: ~50-100 ms once per process and store (the derived key is cached in memory) */
const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };

interface StoreHeader {
  v: 1;
  kdf: "scrypt";
  salt: string;
  N: number;
  r: number;
  p: number;
  /** the check text sealed under the KEK: a wrong passphrase is told apart from a damaged key */
  check: Sealed;
}

interface Sealed {
  iv: string;
  tag: string;
  ct: string;
}

interface KeyFile {
  v: 1;
  id: string;
  algorithm: KeyAlgorithm;
  /** SubjectPublicKeyInfo, DER, base64 */
  spki: string;
  sealed: Sealed;
}

export interface PassphraseSource {
  /** where the passphrase came from, for messages (never the passphrase itself) */
  source: string;
  value: Buffer;
}

/**
 * The key-encryption passphrase, from the environment of the process: a dedicated
 * FLEETGUARD_KEK(_FILE) wins over the stack's PULUMI_CONFIG_PASSPHRASE(_FILE), so a team can
 * give CA keys a secret of their own.
 */
export function passphraseFromEnv(env: NodeJS.ProcessEnv = process.env): PassphraseSource {
  const fromFile = (v: string, name: string): PassphraseSource => {
    try {
      return { source: name, value: Buffer.from(fs.readFileSync(v, "utf8").replace(/\r?\n$/, ""), "utf8") };
    } catch {
      throw new FleetError(
        "UNAVAILABLE",
        `custody.embedded: got ${name}=${JSON.stringify(v)} that cannot be read, want a readable passphrase file`,
        "custody",
      );
    }
  };
  if (env.FLEETGUARD_KEK_FILE) return fromFile(env.FLEETGUARD_KEK_FILE, "FLEETGUARD_KEK_FILE");
  if (env.FLEETGUARD_KEK) return { source: "FLEETGUARD_KEK", value: Buffer.from(env.FLEETGUARD_KEK, "utf8") };
  if (env.PULUMI_CONFIG_PASSPHRASE_FILE)
    return fromFile(env.PULUMI_CONFIG_PASSPHRASE_FILE, "PULUMI_CONFIG_PASSPHRASE_FILE");
  if (env.PULUMI_CONFIG_PASSPHRASE)
    return { source: "PULUMI_CONFIG_PASSPHRASE", value: Buffer.from(env.PULUMI_CONFIG_PASSPHRASE, "utf8") };
  throw new FleetError(
    "UNAVAILABLE",
    "custody.embedded: got no passphrase, want FLEETGUARD_KEK(_FILE) or PULUMI_CONFIG_PASSPHRASE(_FILE) in the environment to seal the CA key store",
    "custody",
  );
}

const kekCache = new Map<string, Buffer>();

function seal(kek: Buffer, plain: Buffer, aad: string): Sealed {
  const iv = crypto.randomBytes(12);
  const c = crypto.createCipheriv("aes-256-gcm", kek, iv);
  c.setAAD(Buffer.from(aad, "utf8"));
  const ct = Buffer.concat([c.update(plain), c.final()]);
  return { iv: iv.toString("base64"), tag: c.getAuthTag().toString("base64"), ct: ct.toString("base64") };
}

function unseal(kek: Buffer, s: Sealed, aad: string): Buffer | undefined {
  try {
    const d = crypto.createDecipheriv("aes-256-gcm", kek, Buffer.from(s.iv, "base64"));
    d.setAAD(Buffer.from(aad, "utf8"));
    d.setAuthTag(Buffer.from(s.tag, "base64"));
    return Buffer.concat([d.update(Buffer.from(s.ct, "base64")), d.final()]);
  } catch {
    return undefined;
  }
}

/** The key store's folder: created 0700; an existing one open to others is closed (it holds CA keys). */
function ensureStoreDir(dir: string): void {
  try {
    ensurePrivateDir(dir);
  } catch {
    throw invalid("custody.embedded.store", dir, "a folder fleetguard can create for the CA key store");
  }
  const st = fs.statSync(dir);
  if (!st.isDirectory()) throw invalid("custody.embedded.store", dir, "a folder for the CA key store");
  if ((st.mode & 0o077) !== 0) fs.chmodSync(dir, 0o700);
}

const readJson = <T>(file: string, field: string): T => {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as T;
  } catch {
    throw new FleetError("INTEGRITY", `${field}: got ${file} that is not a fleetguard key store file`, field);
  }
};

/** One embedded key store (a folder). Opening derives the key-encryption key once. */
export class EmbeddedKeyStore {
  private kek?: Buffer;

  constructor(
    readonly dir: string,
    private readonly passphrase: () => PassphraseSource = () => passphraseFromEnv(),
  ) {
    if (typeof dir !== "string" || !dir) throw invalid("custody.embedded.store", dir, "a folder path");
  }

  private header(create: boolean): StoreHeader {
    const file = path.join(this.dir, STORE_FILE);
    if (fs.existsSync(file)) return readJson<StoreHeader>(file, "custody.embedded.store");
    if (!create)
      throw new FleetError(
        "NOT_FOUND",
        `custody.embedded.store: got ${this.dir} without a key store, want the folder the CA keys were created in (was it moved or deleted?)`,
        "custody",
      );
    ensureStoreDir(this.dir);
    const salt = crypto.randomBytes(16);
    const pass = this.passphrase();
    const kek = crypto.scryptSync(pass.value, salt, 32, SCRYPT);
    const h: StoreHeader = {
      v: 1,
      kdf: "scrypt",
      salt: salt.toString("base64"),
      N: SCRYPT.N,
      r: SCRYPT.r,
      p: SCRYPT.p,
      check: seal(kek, Buffer.from(CHECK_TEXT), "store"),
    };
    // a second process creating the store at the same time: the first rename wins, both re-read
    writeFileDurably(file, JSON.stringify(h), { mode: 0o600, tmp: `${file}.tmp-${process.pid}` });
    return readJson<StoreHeader>(file, "custody.embedded.store");
  }

  private key(create: boolean): Buffer {
    if (this.kek) return this.kek;
    const h = this.header(create);
    if (h.v !== 1 || h.kdf !== "scrypt")
      throw new FleetError("INTEGRITY", `custody.embedded.store: got an unknown store format in ${this.dir}`);
    const pass = this.passphrase();
    const cacheKey = crypto
      .createHash("sha256")
      .update(`${h.salt}\n${h.N}\n`)
      .update(pass.value)
      .digest("hex");
    let kek = kekCache.get(cacheKey);
    if (!kek) {
      kek = crypto.scryptSync(pass.value, Buffer.from(h.salt, "base64"), 32, {
        N: h.N,
        r: h.r,
        p: h.p,
        maxmem: SCRYPT.maxmem,
      });
      if (unseal(kek, h.check, "store")?.toString() !== CHECK_TEXT)
        throw new FleetError(
          "INTEGRITY",
          `custody.embedded: the key store at ${this.dir} is sealed with another passphrase than ${pass.source} holds, want the passphrase it was created with`,
          "custody",
        );
      kekCache.set(cacheKey, kek);
    }
    this.kek = kek;
    return kek;
  }

  private file(id: string): string {
    if (!/^[a-z0-9][a-z0-9._-]{0,127}$/.test(id)) throw invalid("custody.keyId", id, "[a-z0-9._-], 1..128");
    return path.join(this.dir, `${id}.key.json`);
  }

  /** Generate a key inside this process and seal it into the store; returns its public key. */
  generate(id: string, algorithm: KeyAlgorithm): { spki: Buffer; privateKey: crypto.KeyObject } {
    const pair = generateKey(algorithm);
    return { spki: this.seal(id, pair.privateKey), privateKey: pair.privateKey };
  }

  /** Seal an existing key (moving a CA key out of the Pulumi state) under a new id; returns its SPKI. */
  seal(id: string, privateKey: crypto.KeyObject): Buffer {
    const kek = this.key(true);
    const file = this.file(id);
    if (fs.existsSync(file))
      throw new FleetError("CONFLICT", `custody.keyId: got ${id}, which is already in ${this.dir}`);
    const algorithm = algorithmOf(privateKey, "custody.key");
    const spki = spkiDer(crypto.createPublicKey(privateKey));
    const der = privateKey.export({ type: "pkcs8", format: "der" });
    try {
      const kf: KeyFile = {
        v: 1,
        id,
        algorithm,
        spki: spki.toString("base64"),
        sealed: seal(kek, der, aadOf(id, algorithm, spki)),
      };
      writeFileDurably(file, JSON.stringify(kf), { mode: 0o600, tmp: `${file}.tmp-${process.pid}` });
    } finally {
      der.fill(0);
    }
    return spki;
  }

  /** Open key `id`: the private KeyObject, checked against the expected public key digest. */
  open(
    id: string,
    expectSpkiSha256?: string,
  ): { algorithm: KeyAlgorithm; privateKey: crypto.KeyObject; spki: Buffer } {
    const file = this.file(id);
    if (!fs.existsSync(file))
      throw new FleetError(
        "NOT_FOUND",
        `custody.keyId: got ${id}, which is not in the key store at ${this.dir}, want the store the CA was created with`,
        "custody",
      );
    const kek = this.key(false);
    const kf = readJson<KeyFile>(file, "custody.keyId");
    const spki = Buffer.from(kf.spki ?? "", "base64");
    if (kf.v !== 1 || kf.id !== id)
      throw new FleetError("INTEGRITY", `custody.keyId: ${file} does not hold key ${id}`, "custody");
    if (expectSpkiSha256 && sha256(spki) !== expectSpkiSha256)
      throw new FleetError(
        "INTEGRITY",
        `custody.keyId: got key ${id} whose public key does not match the CA certificate, want the CA's own key`,
        "custody",
      );
    const der = unseal(kek, kf.sealed, aadOf(id, kf.algorithm, spki));
    if (!der)
      throw new FleetError(
        "INTEGRITY",
        `custody.keyId: key ${id} in ${this.dir} fails its integrity check (changed, moved, or damaged)`,
        "custody",
      );
    try {
      const privateKey = crypto.createPrivateKey({ key: der, format: "der", type: "pkcs8" });
      if (!crypto.createPublicKey(privateKey).export({ type: "spki", format: "der" }).equals(spki))
        throw new FleetError(
          "INTEGRITY",
          `custody.keyId: key ${id} does not match its recorded public key`,
          "custody",
        );
      return { algorithm: kf.algorithm, privateKey, spki };
    } finally {
      der.fill(0);
    }
  }
}

const aadOf = (id: string, algorithm: string, spki: Buffer) =>
  `fleetguard-key-v1\n${id}\n${algorithm}\n${sha256(spki)}`;
export const sha256 = (b: Uint8Array): string => crypto.createHash("sha256").update(b).digest("hex");
