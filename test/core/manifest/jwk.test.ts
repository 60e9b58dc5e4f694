import { spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { certThumbprint, jwkFromSpki, jwkThumbprint, spkiFromJwk } from "../../../core/manifest";
import { spkiDer } from "../../../core/x509/keys";

describe("RFC 7638 JWK thumbprints", () => {
  it("RFC 7638 3.1: the RSA example key", () => {
    const jwk = {
      kty: "RSA",
      n:
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP" +
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Q" +
        "vzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6W" +
        "eZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
      e: "AQAB",
      alg: "RS256",
      kid: "2011-04-29",
    };
    expect(jwkThumbprint(jwk)).toBe("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
  });

  it("EC: the RFC 7517 A.1 P-256 example key (thumbprint computed with Python hashlib over the hand-built JSON)", () => {
    // python3: base64url(sha256('{"crv":"P-256","kty":"EC","x":"MKBC...","y":"4Etl..."}')) without padding
    const jwk = {
      kty: "EC",
      crv: "P-256",
      x: "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
      y: "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
      use: "enc",
      kid: "1",
    };
    expect(jwkThumbprint(jwk)).toBe("cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s");
    // and the same key given as SPKI: the coordinates are read from the DER correctly
    const spki = crypto.createPublicKey({ key: jwk, format: "jwk" }).export({ type: "spki", format: "der" });
    expect(jwkFromSpki(spki)).toEqual({ kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y });
  });

  it("EC: a fresh key, its thumbprint computed by Python's cryptography from the SPKI", () => {
    const spki = spkiDer(crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey);
    const py = [
      "import sys, json, hashlib, base64",
      "from cryptography.hazmat.primitives.serialization import load_der_public_key",
      "n = load_der_public_key(bytes.fromhex(sys.argv[1])).public_numbers()",
      "b = lambda i: base64.urlsafe_b64encode(i.to_bytes(32, 'big')).rstrip(b'=').decode()",
      "s = json.dumps({'crv': 'P-256', 'kty': 'EC', 'x': b(n.x), 'y': b(n.y)}, separators=(',', ':'), sort_keys=True)",
      "print(base64.urlsafe_b64encode(hashlib.sha256(s.encode()).digest()).rstrip(b'=').decode())",
    ].join("\n");
    const r = spawnSync("python3", ["-c", py, spki.toString("hex")], { encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(jwkThumbprint(jwkFromSpki(spki))).toBe(r.stdout.trim());
  });

  it("OKP (RFC 8037 A.3): the Ed25519 example key", () => {
    const jwk = { kty: "OKP", crv: "Ed25519", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" };
    expect(jwkThumbprint(jwk)).toBe("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
  });

  it("refuses what it cannot thumbprint, naming the member", () => {
    expect(() => jwkThumbprint({ kty: "oct", k: "AA" })).toThrow('jwk.kty: got "oct", want EC, OKP or RSA');
    expect(() => jwkThumbprint({ kty: "EC", crv: "P-256", x: "AA" })).toThrow(
      "jwk.y: got undefined, want a non-empty string",
    );
  });
});

describe("JWK <-> SPKI without key import", () => {
  it("P-256, P-384 and Ed25519 agree with Node's JWK export and round-trip", () => {
    for (const [type, curve] of [
      ["ec", "prime256v1"],
      ["ec", "secp384r1"],
      ["ed25519", undefined],
    ] as const) {
      for (let i = 0; i < 20; i++) {
        const pub =
          type === "ec"
            ? crypto.generateKeyPairSync("ec", { namedCurve: curve! }).publicKey
            : crypto.generateKeyPairSync("ed25519").publicKey;
        const spki = spkiDer(pub);
        const mine = jwkFromSpki(spki);
        expect(mine).toEqual(pub.export({ format: "jwk" }));
        expect(spkiFromJwk(mine)!.equals(spki)).toBe(true);
      }
    }
  });

  it("refuses other keys, compressed points and junk", () => {
    const rsa = spkiDer(crypto.generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey);
    expect(() => jwkFromSpki(rsa)).toThrow(FleetError);
    expect(() => jwkFromSpki(rsa)).toThrow(
      /^publicKeySpki: got \d+ bytes that are not an uncompressed P-256/,
    );
    const p256 = spkiDer(crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey);
    // the same point compressed (0x02/0x03 || X): a valid SPKI we do not emit nor accept
    const point = crypto.ECDH.convertKey(p256.subarray(26), "prime256v1", undefined, undefined, "compressed");
    const compressed = Buffer.concat([
      Buffer.from("3039301306072a8648ce3d020106082a8648ce3d030107032200", "hex"),
      point as Buffer,
    ]);
    expect(crypto.createPublicKey({ key: compressed, format: "der", type: "spki" }).asymmetricKeyType).toBe(
      "ec",
    );
    expect(() => jwkFromSpki(compressed)).toThrow(FleetError);
    expect(() => jwkFromSpki("x" as never)).toThrow(
      'publicKeySpki: got "x", want SubjectPublicKeyInfo DER bytes',
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 130 }), (b) => {
        try {
          const j = jwkFromSpki(b);
          // only accepted if it is exactly a supported prefix + key
          expect(spkiFromJwk(j)!.equals(Buffer.from(b))).toBe(true);
        } catch (e) {
          expect(e).toBeInstanceOf(FleetError);
        }
      }),
    );
    expect(spkiFromJwk({ kty: "EC", crv: "P-256", x: "AA", y: "AA" })).toBeUndefined();
    expect(spkiFromJwk({ kty: "EC", crv: "P-521", x: "AA", y: "AA" })).toBeUndefined();
    expect(spkiFromJwk(null)).toBeUndefined();
  });

  it("x5t#S256 is the base64url SHA-256 of the DER", () => {
    const der = Buffer.from("3003020101", "hex");
    expect(certThumbprint(der)).toBe(crypto.createHash("sha256").update(der).digest("base64url"));
  });
});
