/**
 * Key algorithms a CA or device may use, and the signature algorithm each implies
 * (RFC 5758 for ECDSA, RFC 8410 for Ed25519, RFC 4055 for RSA). Signing goes through
 * Node's crypto with KeyObjects kept in memory: re-parsing a PEM per signature is ~15x
 * slower under OpenSSL 3 (brief.md).
 */
import * as crypto from "node:crypto";
import { invalid, phrase } from "../errors";
import { NULL, oid, seq } from "./der";

export const KEY_ALGORITHMS = ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072"] as const;
export type KeyAlgorithm = (typeof KEY_ALGORITHMS)[number];

interface AlgInfo {
  /** DER AlgorithmIdentifier used in signatures made by this key type */
  sigAlgId: Buffer;
  /** digest for crypto.sign, null for Ed25519 */
  hash: string | null;
  bits: number;
  generate(): crypto.KeyPairKeyObjectResult;
}

const ALGS: Record<KeyAlgorithm, AlgInfo> = {
  "ecdsa-p256": {
    sigAlgId: seq(oid("1.2.840.10045.4.3.2")),
    hash: "sha256",
    bits: 256,
    generate: () => crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" }),
  },
  "ecdsa-p384": {
    sigAlgId: seq(oid("1.2.840.10045.4.3.3")),
    hash: "sha384",
    bits: 384,
    generate: () => crypto.generateKeyPairSync("ec", { namedCurve: "secp384r1" }),
  },
  ed25519: {
    sigAlgId: seq(oid("1.3.101.112")),
    hash: null,
    bits: 256,
    generate: () => crypto.generateKeyPairSync("ed25519"),
  },
  "rsa-3072": {
    sigAlgId: seq(oid("1.2.840.113549.1.1.11"), NULL),
    hash: "sha256",
    bits: 3072,
    generate: () => crypto.generateKeyPairSync("rsa", { modulusLength: 3072, publicExponent: 65537 }),
  },
};

/**
 * A CA key that lives outside this process's memory (an HSM through PKCS#11): it signs, it never
 * exports. `sign` gets the whole to-be-signed bytes and returns the signature as X.509 wants it
 * (ECDSA: a DER Ecdsa-Sig-Value; RSA: PKCS#1 v1.5 with SHA-256; Ed25519: the raw 64 bytes).
 */
export interface ExternalSigner {
  readonly algorithm: KeyAlgorithm;
  readonly publicKey: crypto.KeyObject;
  sign(data: Uint8Array): Buffer;
}

/** What a CA signs with: a private KeyObject held in memory, or an external signer. */
export type SigningKey = crypto.KeyObject | ExternalSigner;

export const isExternalSigner = (k: SigningKey): k is ExternalSigner => !(k instanceof crypto.KeyObject);

/** The public half of a signing key (for matching it against a certificate). */
export function publicKeyOf(k: SigningKey): crypto.KeyObject {
  return isExternalSigner(k) ? k.publicKey : crypto.createPublicKey(k);
}

export function isKeyAlgorithm(v: unknown): v is KeyAlgorithm {
  return typeof v === "string" && (KEY_ALGORITHMS as readonly string[]).includes(v);
}

export function assertKeyAlgorithm(v: unknown, field: string): KeyAlgorithm {
  if (!isKeyAlgorithm(v)) throw invalid(field, v, `one of ${KEY_ALGORITHMS.join(", ")}`);
  return v;
}

export function algInfo(alg: KeyAlgorithm): AlgInfo {
  return ALGS[alg];
}

/** The algorithm of an existing key (a BYO root, a device public key). */
export function algorithmOf(key: SigningKey, field: string): KeyAlgorithm {
  if (isExternalSigner(key)) return key.algorithm;
  const t = key.asymmetricKeyType;
  const d = key.asymmetricKeyDetails ?? {};
  if (t === "ec" && d.namedCurve === "prime256v1") return "ecdsa-p256";
  if (t === "ec" && d.namedCurve === "secp384r1") return "ecdsa-p384";
  if (t === "ed25519") return "ed25519";
  if (t === "rsa" && d.modulusLength === 3072) return "rsa-3072";
  const got = t === "ec" ? `ec ${d.namedCurve}` : t === "rsa" ? `rsa-${d.modulusLength}` : String(t);
  throw invalid(field, phrase(got), `a key of ${KEY_ALGORITHMS.join(", ")}`);
}

export function generateKey(alg: KeyAlgorithm): crypto.KeyPairKeyObjectResult {
  return ALGS[alg].generate();
}

export function spkiDer(publicKey: crypto.KeyObject): Buffer {
  return publicKey.export({ type: "spki", format: "der" });
}

/** Sign with the issuer's key; ECDSA signatures come out DER-encoded as X.509 wants. */
export function signWith(alg: KeyAlgorithm, key: SigningKey, data: Uint8Array): Buffer {
  if (isExternalSigner(key)) {
    if (key.algorithm !== alg) throw invalid("signer.algorithm", key.algorithm, `a ${alg} key`);
    return key.sign(data);
  }
  return crypto.sign(ALGS[alg].hash, data, key);
}

export function privateKeyPem(key: crypto.KeyObject): string {
  return key.export({ type: "pkcs8", format: "pem" }) as string;
}

export function loadPrivateKey(pem: unknown, field: string): crypto.KeyObject {
  if (typeof pem !== "string" || !/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw invalid(
      field,
      typeof pem === "string" ? phrase("text without a PRIVATE KEY block") : pem,
      "a PEM private key (PKCS#8)",
    );
  }
  try {
    return crypto.createPrivateKey({ key: pem, format: "pem" });
  } catch {
    // the OpenSSL message may quote the input; never pass it on
    throw invalid(field, phrase("a PRIVATE KEY block OpenSSL cannot parse"), "a PEM private key (PKCS#8)");
  }
}
