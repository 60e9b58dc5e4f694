// deriveP256 also returns the public key as DER SubjectPublicKeyInfo, built from the point it
// computed: it must be byte for byte what OpenSSL exports, for the known-answer vectors and
// for many random secrets.
import { createPublicKey, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { deriveP256, epochContext, IDENTITY_CONTEXT } from "../../../devices/puf";

const kat = JSON.parse(readFileSync(join(__dirname, "vectors", "p256-fips186-5-a21.json"), "utf8")) as {
  vectors: Array<{ secret: string; context: string; x: string; y: string }>;
};

describe("deriveP256 spki", () => {
  it("is the known-answer public point in a P-256 SubjectPublicKeyInfo", () => {
    for (const v of kat.vectors) {
      const { spki } = deriveP256(Buffer.from(v.secret, "hex"), v.context);
      expect(spki.subarray(-64).toString("hex")).toBe(v.x + v.y);
      const jwk = createPublicKey({ key: spki, format: "der", type: "spki" }).export({ format: "jwk" });
      expect(jwk).toMatchObject({ kty: "EC", crv: "P-256" });
    }
  });

  it("equals OpenSSL's export of the public key, for 300 random secrets", () => {
    for (let i = 0; i < 300; i++) {
      const k = deriveP256(randomBytes(32), i % 3 === 0 ? IDENTITY_CONTEXT : epochContext(i));
      const exported = k.publicKey.export({ type: "spki", format: "der" });
      expect(k.spki.equals(exported)).toBe(true);
      expect(createPublicKey(k.privateKey).export({ type: "spki", format: "der" }).equals(k.spki)).toBe(true);
    }
  });
});
