/**
 * Public keys as JSON Web Keys (RFC 7517, RFC 7518 6.2 for EC, RFC 8037 for OKP/Ed25519) read
 * straight from SubjectPublicKeyInfo DER, and JWK thumbprints (RFC 7638). The SPKI of a named
 * curve key is a fixed prefix followed by the point, so the coordinates are a slice: no key
 * import, no `export({ format: "jwk" })` (which deadlocks in long loops on Node 20.20.2, see
 * brief.md) and no per-device KeyObject.
 */
import * as crypto from "node:crypto";
import { invalid, phrase } from "../errors";

export interface PublicJwk {
  kty: "EC" | "OKP";
  crv: "P-256" | "P-384" | "Ed25519";
  x: string;
  y?: string;
}

interface Shape {
  crv: PublicJwk["crv"];
  kty: PublicJwk["kty"];
  /** DER bytes before the key: SEQ{ AlgorithmIdentifier, BIT STRING header (+ 0x04 for EC) } */
  prefix: Buffer;
  /** coordinate length in bytes */
  size: number;
}

// uncompressed points only (0x04 is part of the EC prefix): that is what X.509 and Node emit
const SHAPES: Shape[] = [
  {
    crv: "P-256",
    kty: "EC",
    prefix: Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004", "hex"),
    size: 32,
  },
  {
    crv: "P-384",
    kty: "EC",
    prefix: Buffer.from("3076301006072a8648ce3d020106052b8104002203620004", "hex"),
    size: 48,
  },
  { crv: "Ed25519", kty: "OKP", prefix: Buffer.from("302a300506032b6570032100", "hex"), size: 32 },
];

export const b64u = (b: Uint8Array): string => Buffer.from(b).toString("base64url");

const B64U = /^[A-Za-z0-9_-]*$/;

/** Strict base64url (RFC 7515 2: no padding, no whitespace); undefined when not. */
export function fromB64u(s: string): Buffer | undefined {
  if (!B64U.test(s) || s.length % 4 === 1) return undefined;
  const b = Buffer.from(s, "base64url");
  // reject non-canonical trailing bits, so one text has one meaning
  return b.toString("base64url") === s ? b : undefined;
}

function shapeOfSpki(spki: Uint8Array): Shape | undefined {
  return SHAPES.find(
    (s) =>
      spki.length === s.prefix.length + (s.kty === "EC" ? 2 * s.size : s.size) &&
      s.prefix.equals(spki.subarray(0, s.prefix.length)),
  );
}

/** The JWK of a P-256, P-384 or Ed25519 public key given as SPKI DER. */
export function jwkFromSpki(spki: Uint8Array, field = "publicKeySpki"): PublicJwk {
  if (!(spki instanceof Uint8Array)) throw invalid(field, spki, "SubjectPublicKeyInfo DER bytes");
  const s = shapeOfSpki(spki);
  if (!s) {
    throw invalid(
      field,
      phrase(`${spki.length} bytes that are not an uncompressed P-256, P-384 or Ed25519 SPKI`),
      "the SPKI DER of a P-256 (91 bytes), P-384 (120 bytes) or Ed25519 (44 bytes) public key",
    );
  }
  const k = spki.subarray(s.prefix.length);
  if (s.kty === "OKP") return { kty: "OKP", crv: s.crv, x: b64u(k) };
  return { kty: "EC", crv: s.crv, x: b64u(k.subarray(0, s.size)), y: b64u(k.subarray(s.size)) };
}

/** SPKI DER of a public JWK, or undefined when the JWK is not one of the supported shapes. */
export function spkiFromJwk(jwk: unknown): Buffer | undefined {
  if (typeof jwk !== "object" || jwk === null) return undefined;
  const j = jwk as Record<string, unknown>;
  const s = SHAPES.find((x) => x.crv === j.crv && x.kty === j.kty);
  if (!s || typeof j.x !== "string") return undefined;
  const x = fromB64u(j.x);
  if (!x || x.length !== s.size) return undefined;
  if (s.kty === "OKP") return j.y === undefined ? Buffer.concat([s.prefix, x]) : undefined;
  if (typeof j.y !== "string") return undefined;
  const y = fromB64u(j.y);
  if (!y || y.length !== s.size) return undefined;
  return Buffer.concat([s.prefix, x, y]);
}

/**
 * RFC 7638 3: SHA-256 over the required members only, in lexicographic order, no whitespace.
 * EC: crv, kty, x, y; OKP (RFC 8037 2): crv, kty, x; RSA: e, kty, n. The member values here are
 * base64url or fixed names, so JSON.stringify needs no escaping beyond what RFC 7638 asks.
 */
export function jwkThumbprint(key: object, field = "jwk"): string {
  const jwk = key as Record<string, unknown>;
  const str = (k: string): string => {
    const v = jwk[k];
    if (typeof v !== "string" || v === "") throw invalid(`${field}.${k}`, v, "a non-empty string");
    return JSON.stringify(v);
  };
  let canonical: string;
  if (jwk.kty === "EC") canonical = `{"crv":${str("crv")},"kty":"EC","x":${str("x")},"y":${str("y")}}`;
  else if (jwk.kty === "OKP") canonical = `{"crv":${str("crv")},"kty":"OKP","x":${str("x")}}`;
  else if (jwk.kty === "RSA") canonical = `{"e":${str("e")},"kty":"RSA","n":${str("n")}}`;
  else throw invalid(`${field}.kty`, jwk.kty, "EC, OKP or RSA");
  return b64u(crypto.createHash("sha256").update(canonical).digest());
}

/** x5t#S256 (RFC 7515 4.1.8): base64url SHA-256 of the certificate DER. */
export const certThumbprint = (der: Uint8Array): string =>
  b64u(crypto.createHash("sha256").update(der).digest());
