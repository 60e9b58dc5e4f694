// PKCS#11 custody against a real SoftHSM2 token (scripts/ensure-softhsm installs it): keys made in
// the token, certificates and CRLs signed through it and checked by OpenSSL, the key's attributes
// read back by a separate process, and the refusals (wrong PIN, missing module, extractable key).
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import {
  closePkcs11,
  ecdsaRawToDer,
  formatPkcs11Uri,
  generatePkcs11Key,
  openPkcs11Signer,
  type Pkcs11Uri,
  parsePkcs11Uri,
} from "../../../core/custody/pkcs11";
import { FleetError } from "../../../core/errors";
import { encodeTbs, LeafTemplate, randomSerial, signTbs } from "../../../core/x509/cert";
import { buildCrl } from "../../../core/x509/crl";
import {
  authorityKeyIdentifier,
  basicConstraints,
  keyIdentifier,
  keyUsage,
  subjectKeyIdentifier,
} from "../../../core/x509/ext";
import { type ExternalSigner, generateKey, type KeyAlgorithm, spkiDer } from "../../../core/x509/keys";
import { encodeSubject } from "../../../core/x509/names";
import { toPem } from "../../../core/x509/pem";
import { openssl, tmpdir, verifyChain } from "../../helpers/openssl";
import { createExtractableKey, inspectPrivateKey, type SoftToken, softToken } from "../../helpers/softhsm";

const FIELD = "custody.pkcs11.uri";
const tokens: SoftToken[] = [];
const token = () => {
  const t = softToken();
  tokens.push(t);
  return t;
};
afterAll(() => {
  closePkcs11();
  for (const t of tokens) t.cleanup();
});

function thrown(f: () => unknown): FleetError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(FleetError);
    return e as FleetError;
  }
  throw new Error("expected a FleetError");
}

/** A self-signed CA certificate whose key is the signer (as CaHierarchy makes a root). */
function rootCert(
  signer: ExternalSigner,
  cn: string,
): { der: Buffer; pem: string; subject: Buffer; kid: Buffer } {
  const spki = spkiDer(signer.publicKey);
  const kid = keyIdentifier(spki);
  const subject = encodeSubject({ commonName: cn, organization: "fleetguard tests" });
  const now = Date.now();
  const tbs = encodeTbs(
    {
      serial: randomSerial(),
      issuer: subject,
      subject,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 30 * 86_400_000),
      spki,
      extensions: [
        basicConstraints(true, 1),
        keyUsage(["digitalSignature", "keyCertSign", "cRLSign"]),
        subjectKeyIdentifier(kid),
        authorityKeyIdentifier(kid),
      ],
    },
    signer.algorithm,
  );
  const der = signTbs(tbs, signer.algorithm, signer);
  return { der, pem: toPem("CERTIFICATE", der), subject, kid };
}

describe("pkcs11: URIs (RFC 7512)", () => {
  it("parses RFC 7512's examples", () => {
    const u = parsePkcs11Uri(
      "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;" +
        "object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin",
    );
    expect(u).toEqual({
      token: "The Software PKCS#11 Softtoken",
      manufacturer: "Snake Oil, Inc.",
      model: "1.0",
      object: "my-certificate",
      type: "cert",
      id: Buffer.from("69953e5cf4bdec91", "hex"),
      serial: "",
      pinSource: "file:/etc/token_pin",
    });
    expect(
      parsePkcs11Uri("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1"),
    ).toEqual({
      object: "my-sign-key",
      type: "private",
      modulePath: "/mnt/libmypkcs11.so.1",
    });
    expect(parsePkcs11Uri("pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1").token).toBe(
      "Name with a small A with acute: á",
    );
    expect(parsePkcs11Uri("pkcs11:slot-id=248432768;library-version=2.6").slotId).toBe(248432768);
    expect(parsePkcs11Uri("PKCS11:")).toEqual({});
  });

  it("formats what it parses, and parses what it formats (any label, id, path)", () => {
    const text = fc.string({ unit: "grapheme", maxLength: 24 });
    fc.assert(
      fc.property(
        fc.record(
          {
            token: text,
            serial: fc.string({ maxLength: 16 }),
            object: text,
            id: fc.uint8Array({ minLength: 1, maxLength: 20 }).map((b) => Buffer.from(b)),
            type: fc.constantFrom("private", "public", "cert", "secret-key", "data"),
            slotId: fc.nat(),
            modulePath: text.map((s) => `/opt/${s}/lib p11.so`),
            pinSource: text.map((s) => `file:/run/${s}`),
          },
          { requiredKeys: [] },
        ),
        (u) => {
          const s = formatPkcs11Uri(u as Pkcs11Uri);
          expect(s).toMatch(/^pkcs11:[^#\s]*$/);
          expect(parsePkcs11Uri(s)).toEqual(u);
          expect(formatPkcs11Uri(parsePkcs11Uri(s))).toBe(s);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("never writes a PIN and refuses pin-value unless allowed, without echoing it", () => {
    const e = thrown(() => parsePkcs11Uri("pkcs11:token=t?pin-value=S3cr3t-4711"));
    expect(e.code).toBe("INVALID_INPUT");
    expect(e.field).toBe(FIELD);
    expect(e.message).toMatch(/^custody\.pkcs11\.uri: got a URI with pin-value, want .*pin-source=file:/);
    expect(e.message).not.toContain("S3cr3t");
    const u = parsePkcs11Uri("pkcs11:token=t?pin-value=S3cr3t-4711", { allowPinValue: true });
    expect(u.pinValue).toBe("S3cr3t-4711");
    expect(formatPkcs11Uri(u)).toBe("pkcs11:token=t");
  });

  it("refuses malformed URIs naming the field", () => {
    const cases: [unknown, RegExp][] = [
      [undefined, /got undefined, want a pkcs11: URI/],
      [42, /got 42, want a pkcs11: URI/],
      ["file:/etc/passwd", /got a string that is not a pkcs11: URI/],
      ["pkcs11:token=a;token=b", /got token twice/],
      ["pkcs11:color=red", /got the path attribute "color", want one of token, /],
      [
        "pkcs11:token=a?module-name=softhsm2",
        /got the query attribute "module-name", want one of module-path/,
      ],
      ["pkcs11:token", /got the path attribute "token"/],
      ["pkcs11:token=a%2", /broken %-escape/],
      ["pkcs11:token=a%zz", /broken %-escape/],
      ["pkcs11:token=a b", /the character " "/],
      ["pkcs11:token=a/b", /the character "\/"/],
      ["pkcs11:token=%FF", /not UTF-8/],
      ["pkcs11:type=key", /got type "key", want one of public, private/],
      ["pkcs11:id=", /got an empty id/],
      ["pkcs11:slot-id=-1", /got slot-id "-1", want a decimal slot number/],
      ["pkcs11:token=a#frag", /fragment/],
      ["pkcs11:?module-path=libsofthsm2.so", /got module-path "libsofthsm2.so", want an absolute path/],
      ["pkcs11:?pin-source=https://example.com/pin", /got pin-source "https:.*", want a file: URI/],
      ["pkcs11:?pin-source=file:relative/pin", /want a file: URI of an absolute path/],
      [`pkcs11:token=${"a".repeat(5000)}`, /got a URI of 5013 characters, want at most 4096/],
    ];
    for (const [uri, re] of cases) {
      const e = thrown(() => parsePkcs11Uri(uri));
      expect(e.code).toBe("INVALID_INPUT");
      expect(e.field).toBe(FIELD);
      expect(e.message.startsWith(`${FIELD}: got `)).toBe(true);
      expect(e.message).toMatch(re);
    }
    expect(thrown(() => parsePkcs11Uri("x", { field: "cas.root.custody.uri" })).message).toMatch(
      /^cas\.root\.custody\.uri: got/,
    );
  });

  it("converts PKCS#11's r||s to a DER Ecdsa-Sig-Value, minimal integers", () => {
    const r = Buffer.alloc(32, 0);
    r[31] = 1;
    const s = Buffer.alloc(32, 0xff);
    expect(ecdsaRawToDer(Buffer.concat([r, s]), 32).toString("hex")).toBe(
      `3026020101022100${"ff".repeat(32)}`,
    );
    // a real one: Node's own raw signature, converted, is what Node's DER signature verifies as
    const k = generateKey("ecdsa-p256");
    const raw = crypto.sign("sha256", Buffer.from("m"), { key: k.privateKey, dsaEncoding: "ieee-p1363" });
    expect(crypto.verify("sha256", Buffer.from("m"), k.publicKey, ecdsaRawToDer(raw, 32))).toBe(true);
    expect(thrown(() => ecdsaRawToDer(raw.subarray(1), 32)).message).toMatch(/got 63 bytes, want 64 bytes/);
  });
});

describe("pkcs11: keys made and used inside SoftHSM2", () => {
  const algs: KeyAlgorithm[] = ["ecdsa-p256", "ecdsa-p384", "rsa-3072", "ed25519"];

  for (const alg of algs) {
    it(`${alg}: generates in the token, signs a CA, a device certificate and a CRL that OpenSSL verifies`, () => {
      const t = token();
      const g = generatePkcs11Key(t.keyUri(`root-${alg}`), alg);
      expect(g.created).toBe(true);
      expect(g.uri).toMatch(
        new RegExp(
          `^pkcs11:token=${t.label};object=root-${alg};type=private;id=(%[0-9A-F]{2}){16}\\?module-path=`,
        ),
      );
      expect(g.uri).not.toContain(t.pin);
      const signer = openPkcs11Signer(g.uri, alg);
      expect(signer.algorithm).toBe(alg);
      expect(spkiDer(signer.publicKey).equals(g.publicKeySpkiDer)).toBe(true);

      const root = rootCert(signer, `HSM root ${alg}`);
      const dir = tmpdir();
      try {
        fs.writeFileSync(path.join(dir, "root.pem"), root.pem);
        expect(
          openssl([
            "verify",
            "-x509_strict",
            "-CAfile",
            path.join(dir, "root.pem"),
            path.join(dir, "root.pem"),
          ]).out,
        ).toMatch(/: OK/);
        // a device certificate by the enrollment's DER template path
        const device = generateKey("ecdsa-p256");
        const tpl = new LeafTemplate(
          { algorithm: alg, key: signer, subject: root.subject, keyId: root.kid },
          {
            organization: "fleetguard tests",
            notBefore: new Date(Date.now() - 60_000),
            notAfter: new Date(Date.now() + 86_400_000),
            keyUsage: ["digitalSignature"],
            extKeyUsage: ["1.3.6.1.5.5.7.3.2"],
          },
        );
        const leaf = tpl.issue(randomSerial(), "dev-0001", spkiDer(device.publicKey), {
          uri: ["urn:fleetguard:device:dev-0001"],
        });
        const v = verifyChain(root.pem, "", toPem("CERTIFICATE", leaf));
        expect(v.out).toMatch(/: OK/);
        expect(v.ok).toBe(true);

        const crl = buildCrl({
          issuerName: root.subject,
          issuerKeyId: root.kid,
          signer: alg,
          key: signer,
          thisUpdate: new Date(Date.now() - 60_000),
          nextUpdate: new Date(Date.now() + 3_600_000),
          crlNumber: 7,
          revoked: [{ serialHex: "0abc", revokedAt: new Date(), reason: "keyCompromise" }],
        });
        fs.writeFileSync(path.join(dir, "crl.pem"), toPem("X509 CRL", crl));
        const c = openssl([
          "crl",
          "-in",
          path.join(dir, "crl.pem"),
          "-CAfile",
          path.join(dir, "root.pem"),
          "-noout",
          "-text",
        ]);
        expect(c.out).toMatch(/verify OK/);
        expect(c.out).toMatch(/X509v3 CRL Number:\s+7/);
        // and a CRL whose signature was tampered with does not verify
        const bad = Buffer.from(crl);
        bad[bad.length - 5]! ^= 0x40;
        fs.writeFileSync(path.join(dir, "bad.pem"), toPem("X509 CRL", bad));
        expect(
          openssl(["crl", "-in", path.join(dir, "bad.pem"), "-CAfile", path.join(dir, "root.pem"), "-noout"])
            .out,
        ).toMatch(/verify fail|bad signature|error/i);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it("keeps the private key in the token: not extractable, sensitive, CKA_VALUE unreadable, wrapping refused", () => {
    const t = token();
    generatePkcs11Key(t.keyUri("kept"), "ecdsa-p256");
    generatePkcs11Key(t.keyUri("kept-rsa"), "rsa-3072");
    for (const object of ["kept", "kept-rsa"]) {
      const a = inspectPrivateKey(t, object);
      expect(a.count).toBe(1);
      expect(a).toMatchObject({
        CKA_EXTRACTABLE: false,
        CKA_SENSITIVE: true,
        CKA_NEVER_EXTRACTABLE: true,
        CKA_ALWAYS_SENSITIVE: true,
        CKA_LOCAL: true,
        CKA_TOKEN: true,
        CKA_PRIVATE: true,
        CKA_SIGN: true,
      });
      expect(a.wrap).toMatch(/CKR_KEY_UNEXTRACTABLE|CKR_KEY_NOT_WRAPPABLE/);
    }
    const ec = inspectPrivateKey(t, "kept");
    const rsa = inspectPrivateKey(t, "kept-rsa");
    expect(ec.CKA_VALUE).toMatch(/CKR_ATTRIBUTE_SENSITIVE/);
    expect(rsa.CKA_PRIVATE_EXPONENT).toMatch(/CKR_ATTRIBUTE_SENSITIVE/);
    // a CA key signs and does nothing else
    expect(ec.CKA_DERIVE).toBe(false);
    expect(rsa).toMatchObject({ CKA_DECRYPT: false, CKA_UNWRAP: false });
  });

  it("is idempotent for the same label and algorithm, and refuses a label taken by another key", () => {
    const t = token();
    const first = generatePkcs11Key(t.keyUri("ca-key"), "ecdsa-p384");
    const again = generatePkcs11Key(t.keyUri("ca-key"), "ecdsa-p384");
    expect(again.created).toBe(false);
    expect(again.uri).toBe(first.uri);
    expect(again.publicKeySpkiDer.equals(first.publicKeySpkiDer)).toBe(true);
    // the returned URI (with its id) finds the same key too
    expect(generatePkcs11Key(first.uri, "ecdsa-p384").created).toBe(false);
    expect(inspectPrivateKey(t, "ca-key").count).toBe(1);

    const other = thrown(() => generatePkcs11Key(t.keyUri("ca-key"), "ecdsa-p256"));
    expect(other.code).toBe("CONFLICT");
    expect(other.message).toMatch(
      /^custody\.pkcs11\.uri: got key "ca-key" .* of another type or size .*, want a ecdsa-p256 key/,
    );
    const otherId = thrown(() =>
      generatePkcs11Key(t.keyUri("ca-key").replace("?", ";id=%01%02?"), "ecdsa-p384"),
    );
    expect(otherId.code).toBe("CONFLICT");
    expect(otherId.message).toMatch(/objects labelled "ca-key" .* that are not this key/);
    expect(thrown(() => openPkcs11Signer(first.uri, "rsa-3072")).code).toBe("CONFLICT");
  });

  it("refuses a key that could leave the token", () => {
    const t = token();
    createExtractableKey(t, "weak");
    const e = thrown(() => openPkcs11Signer(t.keyUri("weak"), "ecdsa-p256"));
    expect(e.code).toBe("INTEGRITY");
    expect(e.field).toBe(FIELD);
    expect(e.message).toMatch(
      /^custody\.pkcs11\.uri: got key "weak" in token ".*" with CKA_SENSITIVE false and CKA_EXTRACTABLE true, want a key that cannot leave the token/,
    );
    // nor does generate adopt it as "the same key"
    expect(thrown(() => generatePkcs11Key(t.keyUri("weak"), "ecdsa-p256")).code).toBe("INTEGRITY");
  });

  it("a wrong PIN is refused clearly and the PIN is not in the error", () => {
    const t = token();
    const wrong = path.join(path.dirname(t.pinFile), `${t.label}.wrong`);
    fs.writeFileSync(wrong, "991177335\n", { mode: 0o600 });
    const e = thrown(() => generatePkcs11Key(t.keyUri("k").replace(t.pinFile, wrong), "ecdsa-p256"));
    expect(e.code).toBe("INVALID_INPUT");
    expect(e.field).toBe(FIELD);
    expect(e.message).toMatch(
      new RegExp(
        `^custody\\.pkcs11\\.uri: got a PIN that token "${t.label}" refuses \\(CKR_PIN_INCORRECT\\), want the token's user PIN \\(from pin-source\\)`,
      ),
    );
    expect(e.message).not.toContain("991177335");
    expect(e.message).not.toContain(t.pin);
    // the PIN from FLEETGUARD_PKCS11_PIN, wrong and then right
    const noSource = t.keyUri("k").replace(/&pin-source=[^&]*/, "");
    const envWrong = thrown(() =>
      generatePkcs11Key(noSource, "ecdsa-p256", { env: { FLEETGUARD_PKCS11_PIN: "0000" } }),
    );
    expect(envWrong.message).toMatch(
      /refuses \(CKR_PIN_INCORRECT\), want the token's user PIN \(from FLEETGUARD_PKCS11_PIN\)/,
    );
    const none = thrown(() => generatePkcs11Key(noSource, "ecdsa-p256", { env: {} }));
    expect(none.code).toBe("INVALID_INPUT");
    expect(none.message).toMatch(
      /got no PIN for token .*, want pin-source=file:<path> in the URI or FLEETGUARD_PKCS11_PIN set/,
    );
    // an unreadable PIN file names itself, not its content
    const gone = thrown(() =>
      generatePkcs11Key(t.keyUri("k").replace(t.pinFile, "/nonexistent/pin"), "ecdsa-p256"),
    );
    expect(gone.message).toMatch(/got pin-source \/nonexistent\/pin that cannot be read \(ENOENT\)/);
    expect(generatePkcs11Key(noSource, "ecdsa-p256", { env: { FLEETGUARD_PKCS11_PIN: t.pin } }).created).toBe(
      true,
    );
  });

  it("a missing module or token is UNAVAILABLE naming the field", () => {
    const t = token();
    const missing = thrown(() =>
      openPkcs11Signer(t.keyUri("k").replace(t.module, "/usr/lib/nonexistent/libhsm.so"), "ecdsa-p256"),
    );
    expect(missing.code).toBe("UNAVAILABLE");
    expect(missing.field).toBe(FIELD);
    expect(missing.message).toMatch(
      /^custody\.pkcs11\.uri: got module-path \/usr\/lib\/nonexistent\/libhsm\.so that does not exist, want the HSM's PKCS#11 library/,
    );
    const notLib = thrown(() => openPkcs11Signer(t.keyUri("k").replace(t.module, t.pinFile), "ecdsa-p256"));
    expect(notLib.code).toBe("UNAVAILABLE");
    expect(notLib.message).toMatch(/cannot be loaded as a PKCS#11 library/);
    const noModule = thrown(() =>
      openPkcs11Signer(`pkcs11:token=${t.label};object=k`, "ecdsa-p256", { env: {} }),
    );
    expect(noModule.code).toBe("INVALID_INPUT");
    expect(noModule.message).toMatch(/got a URI without module-path, want module-path=/);
    const noToken = thrown(() =>
      openPkcs11Signer(t.keyUri("k").replace(t.label, "no-such-token"), "ecdsa-p256"),
    );
    expect(noToken.code).toBe("UNAVAILABLE");
    expect(noToken.message).toMatch(
      new RegExp(`got token "no-such-token" that .* does not have \\(its tokens: .*"${t.label}".*\\)`),
    );
    const noKey = thrown(() => openPkcs11Signer(t.keyUri("never-made"), "ecdsa-p256"));
    expect(noKey.code).toBe("NOT_FOUND");
    expect(thrown(() => openPkcs11Signer(t.uri, "ecdsa-p256")).message).toMatch(
      /got a URI without object or id/,
    );
    expect(thrown(() => generatePkcs11Key(t.uri, "ecdsa-p256")).message).toMatch(/got a URI without object/);
    expect(thrown(() => generatePkcs11Key(t.keyUri("k"), "ecdsa-p521" as KeyAlgorithm)).field).toBe(
      "algorithm",
    );
    expect(
      thrown(() =>
        generatePkcs11Key(`${t.keyUri("k")}`.replace("object=k", "object=k;type=cert"), "ecdsa-p256"),
      ).message,
    ).toMatch(/got type=cert, want type=private/);
  });

  it("keeps signing after the module was closed or re-initialised (one session per token, reopened)", () => {
    const a = token();
    const g = generatePkcs11Key(a.keyUri("long-lived"), "ecdsa-p256");
    const signer = openPkcs11Signer(g.uri, "ecdsa-p256");
    const msg = Buffer.from("tbs");
    expect(crypto.verify("sha256", msg, signer.publicKey, signer.sign(msg))).toBe(true);
    // a token made after the module was loaded makes it re-read its slots (C_Finalize, C_Initialize)
    const b = token();
    generatePkcs11Key(b.keyUri("other"), "ecdsa-p256");
    expect(crypto.verify("sha256", msg, signer.publicKey, signer.sign(msg))).toBe(true);
    closePkcs11();
    expect(crypto.verify("sha256", msg, signer.publicKey, signer.sign(msg))).toBe(true);
    expect(() => signer.sign("text" as unknown as Uint8Array)).toThrow(
      /data: got "text", want bytes to sign/,
    );
  });
});
