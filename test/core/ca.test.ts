import * as crypto from "node:crypto";
import { describe, expect, it } from "vitest";
import { type CaRequest, importCa, issueCa, parentFacts, validateCaRequest } from "../../core/ca";
import { FleetError } from "../../core/errors";
import { LeafTemplate, randomSerial } from "../../core/x509/cert";
import { EKU, keyIdentifier } from "../../core/x509/ext";
import { spkiDer } from "../../core/x509/keys";
import { parseCertificate } from "../../core/x509/parse";
import { pemOne } from "../../core/x509/pem";
import { verifyChain, x509Text } from "../helpers/openssl";

const rootReq: CaRequest = {
  name: "root",
  role: "root",
  algorithm: "ecdsa-p384",
  subject: { commonName: "Test Root", organization: "Acme", country: "DE" },
  validityDays: 3650,
  pathLen: 2,
  nameConstraints: { permittedDNS: ["devices.acme.example"], excludedDNS: ["bad.devices.acme.example"] },
};

const issuingUnder = (inter: ReturnType<typeof issueCa>) =>
  issueCa(
    {
      name: "iss",
      role: "issuing",
      algorithm: "ecdsa-p256",
      subject: { commonName: "Iss" },
      validityDays: 700,
    },
    { name: "inter", ...inter },
  );

describe("CA issuance verified by OpenSSL", () => {
  const root = issueCa(rootReq);
  const inter = issueCa(
    {
      name: "inter",
      role: "intermediate",
      algorithm: "ecdsa-p256",
      subject: { commonName: "Test Inter" },
      validityDays: 1825,
      crlDistributionPoint: "http://crl.acme.example/i.crl",
    },
    { name: "root", ...root },
  );

  it.each(["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072"] as const)(
    "issuing CA with %s verifies under root -> intermediate",
    (algorithm) => {
      const iss = issueCa(
        {
          name: "iss",
          role: "issuing",
          algorithm,
          subject: { commonName: "Test Issuing" },
          validityDays: 730,
        },
        { name: "inter", ...inter },
      );
      const v = verifyChain(root.certificatePem, inter.certificatePem, iss.certificatePem);
      expect(v.out).toContain("OK");
      expect(v.ok).toBe(true);
      expect(iss.chainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(3);
      expect(iss.pathLen).toBe(0);
      expect(iss.authorityKeyId).toBe(inter.subjectKeyId);
    },
  );

  it("marks basicConstraints, keyUsage and nameConstraints critical (RFC 5280)", () => {
    const text = x509Text(root.certificatePem);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:2/);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign/);
    expect(text).toMatch(
      /Name Constraints: critical\s+Permitted:\s+DNS:devices.acme.example\s+Excluded:\s+DNS:bad.devices.acme.example/,
    );
    expect(text).toMatch(/Subject Key Identifier/);
    const itext = x509Text(inter.certificatePem);
    expect(itext).toMatch(/CRL Distribution Points:\s+Full Name:\s+URI:http:\/\/crl.acme.example\/i.crl/);
    expect(itext).toMatch(/pathlen:1/); // inherited parent pathLen - 1
  });

  it("derives the key identifier per RFC 7093 and the fingerprint over the DER", () => {
    const der = pemOne(root.certificatePem, "CERTIFICATE", "t");
    const x = new crypto.X509Certificate(der);
    expect(root.subjectKeyId).toBe(keyIdentifier(spkiDer(x.publicKey)).toString("hex"));
    expect(root.fingerprintSha256).toBe(x.fingerprint256.replace(/:/g, "").toLowerCase());
    expect(root.keyPem).toMatch(/BEGIN PRIVATE KEY/);
  });

  it("issues device certificates from a LeafTemplate that OpenSSL accepts", () => {
    const iss = issuingUnder(inter);
    const issDer = pemOne(iss.certificatePem, "CERTIFICATE", "t");
    const pc = parseCertificate(issDer);
    const tpl = new LeafTemplate(
      {
        algorithm: "ecdsa-p256",
        key: crypto.createPrivateKey(iss.keyPem),
        subject: pc.subject,
        keyId: Buffer.from(iss.subjectKeyId, "hex"),
      },
      {
        organization: "Acme",
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 365 * 86400_000),
        keyUsage: ["digitalSignature"],
        extKeyUsage: [EKU.clientAuth],
        crlUrls: ["http://crl.acme.example/iss.crl"],
      },
    );
    const dev = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const leaf = tpl.issue(randomSerial(), "dev-000001", spkiDer(dev.publicKey), {
      dns: ["dev-000001.devices.acme.example"],
    });
    const leafPem = `-----BEGIN CERTIFICATE-----\n${leaf
      .toString("base64")
      .match(/.{1,64}/g)!
      .join("\n")}\n-----END CERTIFICATE-----\n`;
    const v = verifyChain(root.certificatePem, inter.certificatePem + iss.certificatePem, leafPem);
    expect(v.out).toContain("OK");
    const text = x509Text(leafPem);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/TLS Web Client Authentication/);
    expect(text).toMatch(/DNS:dev-000001.devices.acme.example/);
  });

  it("rejects a device name outside the root's name constraints (OpenSSL agrees)", () => {
    const iss = issuingUnder(inter);
    const pc = parseCertificate(pemOne(iss.certificatePem, "CERTIFICATE", "t"));
    const tpl = new LeafTemplate(
      {
        algorithm: "ecdsa-p256",
        key: crypto.createPrivateKey(iss.keyPem),
        subject: pc.subject,
        keyId: Buffer.from(iss.subjectKeyId, "hex"),
      },
      {
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 86400_000),
        keyUsage: ["digitalSignature"],
        extKeyUsage: [],
      },
    );
    const dev = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const leaf = tpl.issue(randomSerial(), "x", spkiDer(dev.publicKey), { dns: ["dev.evil.example"] });
    const leafPem = `-----BEGIN CERTIFICATE-----\n${leaf.toString("base64")}\n-----END CERTIFICATE-----\n`;
    const v = verifyChain(root.certificatePem, inter.certificatePem + iss.certificatePem, leafPem);
    expect(v.ok).toBe(false);
    expect(v.out).toMatch(/permitted subtree violation/);
  });
});

describe("serial numbers", () => {
  it("are positive, DER-minimal, 16 octets from the CSPRNG and distinct", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const s = randomSerial();
      expect(s.length).toBe(16);
      expect(s[0]! & 0x80).toBe(0);
      expect(s[0]).not.toBe(0);
      seen.add(s.toString("hex"));
    }
    expect(seen.size).toBe(2000);
    // an all-zero or all-ones source still yields a valid positive serial
    expect(randomSerial((n) => new Uint8Array(n))[0]).toBe(1);
    expect(randomSerial((n) => new Uint8Array(n).fill(0xff))[0]).toBe(0x7f);
  });
});

describe("validation errors name the field, what was got and what was wanted", () => {
  const root = issueCa({ ...rootReq, validityDays: 365, pathLen: 1 });
  const facts = parentFacts("root", root.certificatePem);
  const base = {
    name: "c",
    role: "intermediate" as const,
    algorithm: "ecdsa-p256" as const,
    subject: { commonName: "C" },
    validityDays: 100,
  };

  it("child validity outliving its parent", () => {
    const f = validateCaRequest({ ...base, validityDays: 400 }, facts);
    expect(f.map((x) => x.field)).toEqual(["validityDays"]);
    expect(f[0]!.message).toMatch(
      /^validityDays: got 400 \(until .*\), want at most 36[45] so it ends before its issuer 'root'/,
    );
  });
  it("pathLen the parent forbids", () => {
    expect(validateCaRequest({ ...base, pathLen: 3 }, facts)[0]!.message).toBe(
      "pathLen: got 3, want at most 0 (issuer 'root' has pathLen 1)",
    );
    const inter = issueCa({ ...base, name: "inter" }, { name: "root", ...root });
    const f = validateCaRequest(base, parentFacts("inter", inter.certificatePem));
    expect(f[0]!.message).toBe(
      "issuer: got 'inter' with pathLen 0, want an issuer whose pathLen allows a CA below it",
    );
  });
  it("unknown algorithm", () => {
    expect(validateCaRequest({ ...base, algorithm: "dsa-1024" })[0]!.message).toBe(
      'algorithm: got "dsa-1024", want one of ecdsa-p256, ecdsa-p384, ed25519, rsa-3072',
    );
  });
  it("malformed PEM", () => {
    expect(() => parentFacts("root", "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----")).toThrow(
      /issuer.certificatePem: got .*, want/,
    );
    expect(() => parentFacts("root", "hello")).toThrow(
      "issuer.certificatePem: got text that is not PEM, want a PEM with -----BEGIN CERTIFICATE-----",
    );
    const bad = `-----BEGIN CERTIFICATE-----\n${Buffer.from("not a certificate").toString("base64")}\n-----END CERTIFICATE-----`;
    expect(() => parentFacts("root", bad)).toThrow(
      "issuer.certificatePem: got bytes that are not a DER X.509 certificate, want a DER-encoded X.509 certificate",
    );
  });
  it("a name outside the parent's name constraints", () => {
    const f = validateCaRequest(
      {
        ...base,
        subject: { commonName: "ca.other.example" },
        nameConstraints: { permittedDNS: ["x.other.example"] },
      },
      facts,
    );
    expect(f.map((x) => x.message)).toEqual([
      "nameConstraints.permittedDNS[0]: got \"x.other.example\", want a name within issuer 'root' permitted subtrees [devices.acme.example]",
      "subject.commonName: got \"ca.other.example\", want a name within issuer 'root' permitted subtrees [devices.acme.example]",
    ]);
    const ex = validateCaRequest(
      { ...base, nameConstraints: { permittedDNS: ["a.bad.devices.acme.example"] } },
      facts,
    );
    expect(ex[0]!.message).toMatch(/outside issuer 'root' excluded subtree bad.devices.acme.example/);
  });
  it("issueCa refuses a bad request with FleetError INVALID_INPUT and no key in the message", () => {
    try {
      issueCa({ ...base, validityDays: 999 }, { name: "root", ...root });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(FleetError);
      expect((e as FleetError).code).toBe("INVALID_INPUT");
      expect((e as Error).message).not.toMatch(/PRIVATE KEY|BEGIN/);
    }
  });
});

describe("bring your own root", () => {
  const root = issueCa(rootReq);
  it("imports a matching certificate and key", () => {
    const r = importCa("root", root.certificatePem, root.keyPem);
    expect(r.fingerprintSha256).toBe(root.fingerprintSha256);
    expect(r.pathLen).toBe(2);
    expect(r.algorithm).toBe("ecdsa-p384");
  });
  it("reads the key identifier of an AKI that also carries issuer and serial (OpenSSL-made root)", async () => {
    const { tmpdir, openssl } = await import("../helpers/openssl");
    const fs = await import("node:fs");
    const path = await import("node:path");
    const dir = tmpdir();
    const key = path.join(dir, "k.pem");
    const cert = path.join(dir, "c.pem");
    expect(
      openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key]).status,
    ).toBe(0);
    const r = openssl([
      "req",
      "-x509",
      "-new",
      "-key",
      key,
      "-subj",
      "/CN=AKI Root",
      "-days",
      "30",
      "-out",
      cert,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-addext",
      "subjectKeyIdentifier=hash",
      "-addext",
      "authorityKeyIdentifier=keyid:always,issuer:always",
    ]);
    expect(r.status, r.out).toBe(0);
    const imported = importCa("root", fs.readFileSync(cert, "utf8"), fs.readFileSync(key, "utf8"));
    expect(imported.subjectKeyId).toMatch(/^[0-9a-f]{40}$/);
    expect(imported.authorityKeyId).toBe(imported.subjectKeyId);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("refuses a key that does not match, without echoing the key", () => {
    const other = crypto
      .generateKeyPairSync("ec", { namedCurve: "secp384r1" })
      .privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    expect(() => importCa("root", root.certificatePem, other)).toThrow(
      "existing.privateKeyPem: got a key that does not match the certificate, want the private key of existing.certificatePem",
    );
    expect(() => importCa("root", root.certificatePem, "garbage")).toThrow(
      "existing.privateKeyPem: got text without a PRIVATE KEY block, want a PEM private key (PKCS#8)",
    );
  });
});

describe("CRLs", () => {
  it("are v2 CRLs with AKI and a growing cRLNumber that OpenSSL verifies against the CA", async () => {
    const { signCrl } = await import("../../core/ca");
    const { tmpdir, openssl } = await import("../helpers/openssl");
    const fs = await import("node:fs");
    const path = await import("node:path");
    const root = issueCa(rootReq);
    const first = signCrl(root, { intervalHours: 24 });
    const second = signCrl(root, {
      previousNumber: first.crlNumber,
      intervalHours: 24,
      revoked: [
        {
          serialHex: "0123456789abcdef",
          revokedAt: new Date("2026-01-02T03:04:05Z"),
          reason: "keyCompromise",
        },
      ],
    });
    expect(second.crlNumber).toBe(first.crlNumber + 1);
    expect(Date.parse(second.nextUpdate) - Date.parse(second.thisUpdate)).toBe(24 * 3600_000 + 60_000);
    const dir = tmpdir();
    fs.writeFileSync(path.join(dir, "ca.pem"), root.certificatePem);
    fs.writeFileSync(path.join(dir, "crl.pem"), second.crlPem);
    const v = openssl([
      "crl",
      "-in",
      path.join(dir, "crl.pem"),
      "-CAfile",
      path.join(dir, "ca.pem"),
      "-noout",
      "-text",
    ]);
    expect(v.out).toMatch(/verify OK/);
    expect(v.out).toMatch(/Version 2/);
    expect(v.out).toMatch(/X509v3 CRL Number:\s+2/);
    expect(v.out).toMatch(
      /Serial Number: 0123456789ABCDEF\s+Revocation Date: Jan {2}2 03:04:05 2026 GMT\s+CRL entry extensions:\s+X509v3 CRL Reason Code:\s+Key Compromise/,
    );
    // a CRL signed by another key does not verify
    const other = issueCa(rootReq);
    fs.writeFileSync(path.join(dir, "other.pem"), other.certificatePem);
    expect(
      openssl(["crl", "-in", path.join(dir, "crl.pem"), "-CAfile", path.join(dir, "other.pem"), "-noout"])
        .out,
    ).toMatch(/verify failure|unable to get issuer|error/i);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("refuses a bad interval and a bad serial", async () => {
    const { signCrl } = await import("../../core/ca");
    const root = issueCa(rootReq);
    expect(validateCaRequest({ ...rootReq, crlIntervalHours: 0 })[0]!.message).toBe(
      "crlIntervalHours: got 0, want a whole number of hours from 1 to 8760",
    );
    expect(() => signCrl(root, { revoked: [{ serialHex: "xyz", revokedAt: new Date() }] })).toThrow(
      'revoked[0].serialHex: got "xyz", want a hexadecimal serial number',
    );
  });
});
