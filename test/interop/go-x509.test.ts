/**
 * Interoperability with Go's crypto/x509 (docs/pki-interop.md): every kind of certificate and CRL
 * fleetguard makes, produced by core/ exactly as a fleet run does, is handed to the stdlib-only Go
 * program in test/interop/go/, which parses each one (x509.ParseCertificate, x509.ParseRevocationList)
 * and verifies the chains (Certificate.Verify with the key usages a hub would ask for). A Go-based hub
 * or verifier that cannot load a certificate rejects the whole device or manifest, so each must pass.
 */
import * as crypto from "node:crypto";
import { describe, expect, it } from "vitest";
import { type IssuedCa, issueCa, signCrl } from "../../core/ca";
import { compileTemplate, deviceNames, resolveProfile } from "../../core/enroll/profile";
import { createManifestSigner, MANIFEST_SIGNER_EKU, SIGNER_ALGORITHMS } from "../../core/manifest";
import { LeafTemplate } from "../../core/x509/cert";
import { algorithmOf, KEY_ALGORITHMS, loadPrivateKey, spkiDer } from "../../core/x509/keys";
import { parseCertificate, subjectKeyIdOf } from "../../core/x509/parse";
import { pemOne, toPem } from "../../core/x509/pem";
import { type GoCase, runGoInterop } from "./go-runner";

const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
const CRL_URL = "http://crl.fleet.example.com/issuing-eu.crl";

function hierarchy() {
  const root = issueCa({
    name: "root",
    role: "root",
    algorithm: "ecdsa-p384",
    subject: { commonName: "Interop Root CA", organization: "Fleetguard Interop" },
    validityDays: 3650,
    pathLen: 2,
  });
  const intermediate = issueCa(
    {
      name: "intermediate",
      role: "intermediate",
      algorithm: "ecdsa-p384",
      subject: { commonName: "Interop Intermediate CA", organization: "Fleetguard Interop" },
      validityDays: 1825,
      pathLen: 1,
    },
    { name: "root", ...root },
  );
  const issuing = issueCa(
    {
      name: "issuing-eu",
      role: "issuing",
      algorithm: "ecdsa-p256",
      subject: { commonName: "Interop Issuing CA EU", organization: "Fleetguard Interop" },
      validityDays: 825,
      nameConstraints: { permittedDNS: ["devices.fleet.example.com"] },
      crlDistributionPoint: CRL_URL,
    },
    { name: "intermediate", ...intermediate },
  );
  return { root, intermediate, issuing };
}

/** A device certificate through the enrollment path: resolveProfile, compileTemplate, issue. */
function deviceLeaf(
  issuing: IssuedCa,
  deviceId: string,
  sans: { uri?: string[]; dns?: string[] } = { dns: ["{deviceId}.devices.fleet.example.com"] },
): string {
  const profile = resolveProfile({
    subject: { organization: "Fleetguard Interop", commonName: "{deviceId}" },
    sans,
    crlUrls: [CRL_URL],
  });
  const template = compileTemplate(
    profile,
    {
      certificate: pemOne(issuing.certificatePem, "CERTIFICATE", "issuing"),
      key: loadPrivateKey(issuing.keyPem, "issuing.keyPem"),
      chain: [],
      fingerprint: issuing.fingerprintSha256,
    },
    new Date(),
  );
  const names = deviceNames(profile, deviceId, "lot-1", "fg100");
  const { publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  const der = template.issue(crypto.randomBytes(16), names.commonName, spkiDer(publicKey), names.san);
  return toPem("CERTIFICATE", der);
}

describe("Go crypto/x509 reads every certificate and CRL fleetguard makes", () => {
  it("parses and verifies root, intermediate, issuing CA, device leaf, manifest signers and CRLs", async () => {
    const { root, intermediate, issuing } = hierarchy();
    const device = deviceLeaf(issuing, "fg100-0000042");
    const revokedSerial = crypto.randomBytes(16).toString("hex").replace(/^0+/, "");
    const issuingCrl = signCrl(issuing, {
      previousNumber: 6,
      revoked: [
        { serialHex: revokedSerial, revokedAt: new Date(Date.now() - 3_600_000), reason: "keyCompromise" },
      ],
    });
    const rootCrl = signCrl(root, {});
    const signers = SIGNER_ALGORITHMS.map((algorithm) => ({
      algorithm,
      pem: createManifestSigner(issuing, { algorithm }).signerCertificatePem,
    }));
    const chainToRoot: Pick<GoCase, "roots" | "intermediates"> = {
      roots: ["root"],
      intermediates: ["intermediate", "issuing-eu"],
    };

    const results = await runGoInterop({
      now: new Date().toISOString(),
      cases: [
        { name: "root", kind: "cert", pem: root.certificatePem, wantCA: true, wantMaxPathLen: 2 },
        {
          name: "intermediate",
          kind: "cert",
          pem: intermediate.certificatePem,
          wantCA: true,
          wantMaxPathLen: 1,
          roots: ["root"],
          usages: ["any"],
        },
        {
          name: "issuing-eu",
          kind: "cert",
          pem: issuing.certificatePem,
          wantCA: true,
          wantMaxPathLen: 0,
          wantPermittedDNS: ["devices.fleet.example.com"],
          wantCrlDistributionPoints: [CRL_URL],
          roots: ["root"],
          intermediates: ["intermediate"],
          usages: ["any"],
        },
        {
          name: "device",
          kind: "cert",
          pem: device,
          wantCA: false,
          wantEkuOids: [CLIENT_AUTH],
          wantCrlDistributionPoints: [CRL_URL],
          ...chainToRoot,
          usages: ["clientAuth"],
        },
        ...signers.map(
          (s): GoCase => ({
            name: `manifest-signer-${s.algorithm}`,
            kind: "cert",
            pem: s.pem,
            wantCA: false,
            wantEkuOids: [MANIFEST_SIGNER_EKU],
            ...chainToRoot,
            // Go knows no manifest-signing usage: "any" lets Verify build the path, and wantEkuOids
            // checks that Go read fleetguard's purpose from the certificate
            usages: ["any"],
          }),
        ),
        {
          name: "crl-issuing-eu",
          kind: "crl",
          pem: issuingCrl.crlPem,
          issuer: "issuing-eu",
          wantRevoked: [revokedSerial],
          wantNumber: 7,
        },
        {
          name: "crl-root",
          kind: "crl",
          pem: rootCrl.crlPem,
          issuer: "root",
          wantRevoked: [],
          wantNumber: 1,
        },
      ],
    });
    expect(results.filter((r) => !r.ok)).toEqual([]);
    expect(results.map((r) => r.name)).toEqual([
      "root",
      "intermediate",
      "issuing-eu",
      "device",
      ...SIGNER_ALGORITHMS.map((a) => `manifest-signer-${a}`),
      "crl-issuing-eu",
      "crl-root",
    ]);
  });

  it.each(KEY_ALGORITHMS)(
    "reads a %s hierarchy: CA certificates, device leaf, manifest signer, CRL",
    async (algorithm) => {
      const ca = (name: string, role: "root" | "issuing", parent?: IssuedCa) =>
        issueCa(
          {
            name,
            role,
            algorithm,
            subject: { commonName: `Interop ${algorithm} ${role}` },
            validityDays: 400,
          },
          parent ? { name: "root", ...parent } : undefined,
        );
      const root = ca("root", "root");
      const issuing = ca("issuing", "issuing", root);
      const path = { roots: ["root"], intermediates: ["issuing"] };
      const results = await runGoInterop({
        now: new Date().toISOString(),
        cases: [
          { name: "root", kind: "cert", pem: root.certificatePem, wantCA: true },
          {
            name: "issuing",
            kind: "cert",
            pem: issuing.certificatePem,
            wantCA: true,
            roots: ["root"],
            usages: ["any"],
          },
          {
            name: "device",
            kind: "cert",
            pem: deviceLeaf(issuing, "fg100-0000007"),
            ...path,
            usages: ["clientAuth"],
          },
          {
            name: "manifest-signer",
            kind: "cert",
            pem: createManifestSigner(issuing).signerCertificatePem,
            wantEkuOids: [MANIFEST_SIGNER_EKU],
            ...path,
            usages: ["any"],
          },
          {
            name: "crl",
            kind: "crl",
            pem: signCrl(issuing, {}).crlPem,
            issuer: "issuing",
            wantRevoked: [],
            wantNumber: 1,
          },
        ],
      });
      expect(results.filter((r) => !r.ok)).toEqual([]);
      expect(results).toHaveLength(5);
    },
  );

  it("notices what it is asked to check, and pins Go's limits that docs/pki-interop.md describes", async () => {
    const { root, intermediate, issuing } = hierarchy();
    const results = await runGoInterop({
      now: new Date().toISOString(),
      cases: [
        { name: "root", kind: "cert", pem: root.certificatePem },
        { name: "intermediate", kind: "cert", pem: intermediate.certificatePem },
        { name: "issuing-eu", kind: "cert", pem: issuing.certificatePem },
        {
          name: "device",
          kind: "cert",
          pem: deviceLeaf(issuing, "fg100-0000001"),
          wantEkuOids: [MANIFEST_SIGNER_EKU],
        },
        {
          name: "device-outside-constraints",
          kind: "cert",
          // a DNS name outside the issuing CA's permitted subtree, signed below the enrollment path
          // (which refuses it before signing): Go's Verify must refuse it too
          pem: rogueLeaf(issuing, "fg100-0000009.elsewhere.example.org"),
          roots: ["root"],
          intermediates: ["intermediate", "issuing-eu"],
          usages: ["clientAuth"],
        },
        {
          // Go 1.26 (crypto/x509/constraints.go, parseURIs) refuses any URI SAN without a host once
          // the chain has name constraints of any type: docs/pki-interop.md tells profiles to use
          // DNS SANs, or no name constraints, for Go-verified devices
          name: "device-urn-under-constraints",
          kind: "cert",
          pem: deviceLeaf(issuing, "fg100-0000010", { uri: ["urn:fleetguard:device:{deviceId}"] }),
          roots: ["root"],
          intermediates: ["intermediate", "issuing-eu"],
          usages: ["clientAuth"],
        },
        { name: "crl-wrong-issuer", kind: "crl", pem: signCrl(root, {}).crlPem, issuer: "issuing-eu" },
      ],
    });
    const byName = new Map(results.map((r) => [r.name, r]));
    expect(byName.get("device")?.error).toMatch(/extKeyUsage: got \[1\.3\.6\.1\.5\.5\.7\.3\.2\]/);
    expect(byName.get("device-outside-constraints")?.error).toMatch(/Verify: .*not permitted/);
    expect(byName.get("device-urn-under-constraints")?.error).toMatch(/URI with empty host/);
    expect(byName.get("crl-wrong-issuer")?.error).toMatch(/CheckSignatureFrom/);
  });
});

/** A leaf signed straight from core/x509's template, with none of the profile's name checks. */
function rogueLeaf(issuing: IssuedCa, dnsName: string): string {
  const c = parseCertificate(pemOne(issuing.certificatePem, "CERTIFICATE", "issuing"));
  const key = loadPrivateKey(issuing.keyPem, "issuing.keyPem");
  const now = Date.now();
  const template = new LeafTemplate(
    { algorithm: algorithmOf(key, "issuing.keyPem"), key, subject: c.subject, keyId: subjectKeyIdOf(c)! },
    {
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 86_400_000),
      keyUsage: ["digitalSignature"],
      extKeyUsage: [CLIENT_AUTH],
    },
  );
  const { publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  return toPem(
    "CERTIFICATE",
    template.issue(crypto.randomBytes(16), "rogue", spkiDer(publicKey), { dns: [dnsName] }),
  );
}
