/**
 * Test PKI for the CRL tests: root -> intermediate -> issuing made by the CA provider's runtime
 * (the code `pulumi up` runs), publishing in one CRL folder with the distribution points of a
 * program like index.ts, devices issued under the issuing CA with their own distribution point,
 * and a real SQLite registry that records and revokes them (what a batch publishes from).
 */
import * as crypto from "node:crypto";
import { openRegistry } from "../../../core/registry";
import type { Registry } from "../../../core/registry/types";
import { LeafTemplate, randomSerial } from "../../../core/x509/cert";
import { EKU } from "../../../core/x509/ext";
import { loadPrivateKey, type SigningKey, spkiDer } from "../../../core/x509/keys";
import { parseCertificate } from "../../../core/x509/parse";
import { pemOne, toPem } from "../../../core/x509/pem";
import { create } from "../../../providers/runtime/ca";

export const BASE = "http://pki.test.example/crl";

export interface TestCa {
  outs: Record<string, unknown> & {
    certificatePem: string;
    chainPem: string;
    fingerprintSha256: string;
    crlNumber: number;
  };
  inputs: Parameters<typeof create>[0];
  key: SigningKey;
  fingerprint: string;
}

export interface CrlPki {
  dir: string;
  root: TestCa;
  intermediate: TestCa;
  issuing: TestCa;
  registry: Registry;
  /** a device under the issuing CA (recorded issued in the registry); its CDP is BASE/line-a.crl */
  device(id: string): Promise<{ id: string; certPem: string; serial: string }>;
  revoke(id: string, reason?: string): Promise<void>;
  /** what a batch passes publishCrl */
  issuer(): { certificatePem: string; key: SigningKey; fingerprint: string };
}

export async function makeCrlPki(dir: string, registryFile: string): Promise<CrlPki> {
  const common = {
    algorithm: "ecdsa-p256" as const,
    custody: { kind: "pulumi-secret" as const },
    crlDir: dir,
  };
  const make = (inputs: Parameters<typeof create>[0]): TestCa => {
    const outs = create(inputs).outs as unknown as TestCa["outs"];
    return { outs, inputs, key: loadPrivateKey(outs.keyPem, "keyPem"), fingerprint: outs.fingerprintSha256 };
  };
  const issuerOf = (c: TestCa, name: string) => ({
    name,
    certificatePem: c.outs.certificatePem,
    chainPem: c.outs.chainPem,
    keyPem: c.outs.keyPem as string,
  });
  const root = make({
    ...common,
    name: "root",
    role: "root",
    subject: { commonName: "CRL Test Root" },
    validityDays: 3650,
    pathLen: 2,
    crlUrls: [`${BASE}/root.crl`],
  });
  const intermediate = make({
    ...common,
    name: "manufacturing",
    role: "intermediate",
    subject: { commonName: "CRL Test Manufacturing" },
    validityDays: 1825,
    pathLen: 1,
    crlDistributionPoint: `${BASE}/root.crl`,
    crlUrls: [`${BASE}/manufacturing.crl`],
    issuer: issuerOf(root, "root"),
  });
  const issuing = make({
    ...common,
    name: "line-a",
    role: "issuing",
    subject: { commonName: "CRL Test Line A" },
    validityDays: 730,
    crlDistributionPoint: `${BASE}/manufacturing.crl`,
    crlIntervalHours: 24,
    issuer: issuerOf(intermediate, "manufacturing"),
  });
  const pc = parseCertificate(pemOne(issuing.outs.certificatePem, "CERTIFICATE", "t"));
  const tpl = new LeafTemplate(
    {
      algorithm: "ecdsa-p256",
      key: issuing.key,
      subject: pc.subject,
      keyId: Buffer.from(String(issuing.outs.subjectKeyId), "hex"),
    },
    {
      organization: "Example",
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 365 * 86400_000),
      keyUsage: ["digitalSignature"],
      extKeyUsage: [EKU.clientAuth],
      crlUrls: [`${BASE}/line-a.crl`],
    },
  );
  const registry = await openRegistry(registryFile);
  await registry.putBatch({ name: "lot", model: "fg100", source: "puf", spec: "{}" });
  const states = new Map<string, string>();
  return {
    dir,
    root,
    intermediate,
    issuing,
    registry,
    issuer: () => ({
      certificatePem: issuing.outs.certificatePem,
      key: issuing.key,
      fingerprint: issuing.fingerprint,
    }),
    async device(id) {
      const pair = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
      const spki = spkiDer(pair.publicKey);
      const serialBytes = randomSerial();
      const der = tpl.issue(serialBytes, id, spki, { dns: [`${id}.devices.example.com`] });
      const serial = serialBytes.toString("hex").replace(/^(00)+/, "");
      const now = new Date();
      await registry.addDevices("lot", [id]);
      await registry.apply([
        { deviceId: id, batch: "lot", from: "pending", to: "attested", publicKey: spki, epoch: 0 },
      ]);
      await registry.apply([
        {
          deviceId: id,
          batch: "lot",
          from: "attested",
          to: "issued",
          certificate: {
            serial,
            deviceId: id,
            batch: "lot",
            issuer: issuing.fingerprint,
            der,
            notBefore: new Date(now.getTime() - 60_000),
            notAfter: new Date(now.getTime() + 365 * 86400_000),
            issuedAt: now,
          },
        },
      ]);
      states.set(id, "issued");
      return { id, certPem: toPem("CERTIFICATE", der), serial };
    },
    async revoke(id, reason = "keyCompromise") {
      await registry.apply([
        {
          deviceId: id,
          batch: "lot",
          from: "issued",
          to: "revoked",
          revoke: { at: new Date(Date.now() - 5_000), reason },
        },
      ]);
    },
  };
}
