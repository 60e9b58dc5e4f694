/**
 * CA key custody: where a CA's private key lives and how a provider process opens it, so that
 * keys never cross Pulumi's RPC nor sit in the state (brief, rule 4). Three custodies:
 *   - `embedded` (the default): a sealed key store beside the registry (core/custody/embedded);
 *   - `pkcs11`: an HSM token, keys generated inside it and never extractable, named by an
 *     RFC 7512 `pkcs11:` URI (core/custody/pkcs11; SoftHSM2 in tests);
 *   - `pulumi-secret`: the key as a Pulumi secret output (encrypted in the state, but it crosses
 *     the engine's RPC and shows in `-v=9` logs): only as an explicit choice.
 * What the state holds is a KeyRef: the custody, where, the key id, and the public key digest.
 */
import * as path from "node:path";
import { FleetError, invalid, phrase } from "../errors";
import {
  type ExternalSigner,
  generateKey,
  type KeyAlgorithm,
  loadPrivateKey,
  privateKeyPem,
  publicKeyOf,
  type SigningKey,
  spkiDer,
} from "../x509/keys";
import { EmbeddedKeyStore, sha256 } from "./embedded";
import { formatPkcs11Uri, parsePkcs11Uri } from "./pkcs11-uri";

export const CUSTODY_KINDS = ["embedded", "pkcs11", "pulumi-secret"] as const;
export type CustodyKind = (typeof CUSTODY_KINDS)[number];

/**
 * embedded: `store` is the key store folder (relative to the program directory);
 * pkcs11: `uri` is the token's RFC 7512 URI with module-path, no PIN in it (pin-source=file:...
 * or FLEETGUARD_PKCS11_PIN).
 */
export type CustodySpec =
  | { kind: "embedded"; store?: string }
  | { kind: "pkcs11"; uri: string }
  | { kind: "pulumi-secret" };

export const DEFAULT_KEY_STORE = ".fleetguard/keys";

/** What the state holds about a CA key: enough to open it, nothing secret. */
export interface KeyRef {
  custody: CustodyKind;
  /** embedded: the store folder as declared; pkcs11: the key's URI (no PIN); pulumi-secret: "" */
  location: string;
  /** embedded: the key id in the store; pkcs11: the object label; pulumi-secret: "" */
  id: string;
  algorithm: KeyAlgorithm;
  /** SHA-256 (hex) of the public key, SubjectPublicKeyInfo DER: what is opened must match it */
  publicKeySha256: string;
}

/** Check a custody declaration: a clear error naming the field for anything else. */
export function validateCustody(v: unknown, field = "custody"): CustodySpec {
  if (v === undefined || v === null) return { kind: "embedded" };
  if (typeof v !== "object" || Array.isArray(v))
    throw invalid(field, v, `{ kind: ${CUSTODY_KINDS.map((k) => `'${k}'`).join(" | ")} }`);
  const c = v as Record<string, unknown>;
  const allowed: Record<CustodyKind, string[]> = {
    embedded: ["kind", "store"],
    pkcs11: ["kind", "uri"],
    "pulumi-secret": ["kind"],
  };
  if (!CUSTODY_KINDS.includes(c.kind as CustodyKind))
    throw invalid(`${field}.kind`, c.kind, `one of ${CUSTODY_KINDS.join(", ")}`);
  const kind = c.kind as CustodyKind;
  for (const k of Object.keys(c))
    if (!allowed[kind].includes(k))
      throw invalid(`${field}.${k}`, c[k], `no such field for custody '${kind}'`);
  if (kind === "embedded") {
    if (c.store !== undefined && (typeof c.store !== "string" || !c.store || c.store.includes("\0")))
      throw invalid(`${field}.store`, c.store, "a folder path for the key store");
    return { kind, ...(c.store ? { store: c.store as string } : {}) };
  }
  if (kind === "pkcs11") {
    // the full RFC 7512 grammar, so a bad URI fails the preview with the reason (never quoting a PIN)
    const u = parsePkcs11Uri(c.uri, { field: `${field}.uri` });
    if (!u.modulePath)
      throw invalid(
        `${field}.uri`,
        phrase("a URI without module-path"),
        "module-path=/path/to/the/PKCS#11 library",
      );
    return { kind, uri: c.uri as string };
  }
  return { kind: "pulumi-secret" };
}

const storeOf = (location: string, baseDir: string) => new EmbeddedKeyStore(path.resolve(baseDir, location));

/** The URI of object `label` in the token named by `uri` (any object, id or type in it is replaced). */
export function pkcs11ObjectUri(uri: string, label: string): string {
  const { id: _id, type: _type, ...token } = parsePkcs11Uri(uri, { field: "custody.uri" });
  return formatPkcs11Uri({ ...token, object: label, type: "private" });
}

// the PKCS#11 binding is native: load it only when a pkcs11 custody is used
interface Pkcs11Backend {
  generatePkcs11Key(uri: string, algorithm: KeyAlgorithm): { uri: string; publicKeySpkiDer: Uint8Array };
  openPkcs11Signer(uri: string, algorithm: KeyAlgorithm): ExternalSigner;
}
const pkcs11 = (): Pkcs11Backend => require("./pkcs11");

export interface CreatedKey {
  ref: KeyRef;
  key: SigningKey;
  spki: Buffer;
  /** pulumi-secret custody only: the key, for the secret output */
  privateKeyPem?: string;
}

/**
 * Create a CA key of `algorithm` in custody `spec`, named `id` (unique per key: a CA name and a
 * random suffix). The key is generated where it will live: inside the token for PKCS#11.
 */
export function createCaKey(
  spec: CustodySpec,
  id: string,
  algorithm: KeyAlgorithm,
  baseDir = process.cwd(),
): CreatedKey {
  if (spec.kind === "embedded") {
    const location = spec.store ?? DEFAULT_KEY_STORE;
    const { spki, privateKey } = storeOf(location, baseDir).generate(id, algorithm);
    return {
      ref: { custody: "embedded", location, id, algorithm, publicKeySha256: sha256(spki) },
      key: privateKey,
      spki,
    };
  }
  if (spec.kind === "pkcs11") {
    const uri = pkcs11ObjectUri(spec.uri, id);
    const g = pkcs11().generatePkcs11Key(uri, algorithm);
    const signer = pkcs11().openPkcs11Signer(g.uri, algorithm);
    const spki = Buffer.from(g.publicKeySpkiDer);
    return {
      ref: { custody: "pkcs11", location: g.uri, id, algorithm, publicKeySha256: sha256(spki) },
      key: signer,
      spki,
    };
  }
  const pair = generateKey(algorithm);
  const spki = spkiDer(pair.publicKey);
  return {
    ref: { custody: "pulumi-secret", location: "", id: "", algorithm, publicKeySha256: sha256(spki) },
    key: pair.privateKey,
    spki,
    privateKeyPem: privateKeyPem(pair.privateKey),
  };
}

/** Check that `v` is a KeyRef (as read back from the state), naming the field otherwise. */
export function validateKeyRef(v: unknown, field: string): KeyRef {
  const r = v as KeyRef;
  if (
    !r ||
    typeof r !== "object" ||
    !CUSTODY_KINDS.includes(r.custody) ||
    typeof r.location !== "string" ||
    typeof r.id !== "string" ||
    typeof r.publicKeySha256 !== "string" ||
    !/^[0-9a-f]{64}$/.test(r.publicKeySha256)
  )
    throw invalid(field, v, "a CA key reference { custody, location, id, algorithm, publicKeySha256 }");
  return r;
}

const cache = new Map<string, SigningKey>();

/**
 * Open the CA key `ref` names, in this process. `keyPem` is needed only for the pulumi-secret
 * custody. The key's public half must match the reference (a swapped key is refused).
 */
export function openCaKey(
  ref: KeyRef,
  opts: { keyPem?: string; baseDir?: string; field?: string } = {},
): SigningKey {
  const field = opts.field ?? "keyRef";
  validateKeyRef(ref, field);
  let key: SigningKey;
  if (ref.custody === "pulumi-secret") {
    key = loadPrivateKey(opts.keyPem, `${field}: keyPem`);
  } else {
    const k = `${ref.custody}\n${path.resolve(opts.baseDir ?? process.cwd(), ref.location)}\n${ref.id}`;
    const hit = cache.get(k);
    if (hit) key = hit;
    else {
      key =
        ref.custody === "embedded"
          ? storeOf(ref.location, opts.baseDir ?? process.cwd()).open(ref.id, ref.publicKeySha256).privateKey
          : pkcs11().openPkcs11Signer(ref.location, ref.algorithm);
      cache.set(k, key);
    }
  }
  if (sha256(spkiDer(publicKeyOf(key))) !== ref.publicKeySha256)
    throw new FleetError(
      "INTEGRITY",
      `${field}: got a ${ref.custody} key whose public key does not match the CA certificate, want the CA's own key`,
      field,
    );
  return key;
}
