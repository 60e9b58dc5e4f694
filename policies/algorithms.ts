/**
 * Key algorithm names as fleet files and components spell them ("ecdsa-p256", "rsa-3072", "ed25519")
 * and the (family, bits) pairs the policy's per-role rules are written in.
 */
export type KeyFamily = "ecdsa" | "rsa" | "ed25519";

export interface KeySpec {
  family: KeyFamily;
  bits: number;
}

const ecBits: Record<string, number> = {
  "p-256": 256,
  "p-384": 384,
  "p-521": 521,
  prime256v1: 256,
  secp384r1: 384,
  secp521r1: 521,
};

/** Parse "ecdsa-p384" / "rsa-3072" / "ed25519"; undefined when the name is not one we know. */
export function parseAlgorithm(name: string): KeySpec | undefined {
  const n = name.trim().toLowerCase();
  if (n === "ed25519") return { family: "ed25519", bits: 256 };
  let m = /^ecdsa-p(256|384|521)$/.exec(n);
  if (m) return { family: "ecdsa", bits: Number(m[1]) };
  m = /^rsa-([0-9]{4,5})$/.exec(n);
  if (m) return { family: "rsa", bits: Number(m[1]) };
  m = /^(?:ec|ecdsa)-?(p-256|p-384|p-521)$/.exec(n);
  if (m) return { family: "ecdsa", bits: ecBits[m[1]!]! };
  return undefined;
}

/** Bits of a named curve as Node reports it (asymmetricKeyDetails.namedCurve). */
export function curveBits(curve: string | undefined): number | undefined {
  return curve ? ecBits[curve.toLowerCase()] : undefined;
}

export function formatKey(k: KeySpec): string {
  return k.family === "ed25519" ? "ed25519" : k.family === "ecdsa" ? `ecdsa-p${k.bits}` : `rsa-${k.bits}`;
}
