/**
 * Test PKI for the local hub: a root and an issuing CA made by the core (core/ca), device
 * certificates like the demo's (CN = device ID, DNS `{id}.devices.example.com`, URI
 * `urn:example:device:{id}`), and CRLs for every CA of the chain (the hub checks them all).
 */
import * as crypto from "node:crypto";
import { type IssuedCa, issueCa, signCrl } from "../../core/ca";
import type { DeviceCert, TrustedCa } from "../../core/hubs/types";
import { LeafTemplate, randomSerial } from "../../core/x509/cert";
import { EKU } from "../../core/x509/ext";
import { spkiDer } from "../../core/x509/keys";
import { parseCertificate } from "../../core/x509/parse";
import { pemOne, toPem } from "../../core/x509/pem";

export interface TestDevice {
  id: string;
  keyPem: string;
  certPem: string;
  /** device certificate, then the issuing CA (what a device presents) */
  chainPem: string;
  der: Buffer;
  serial: string;
  sha256: string;
  cert: DeviceCert;
}

export interface TestPki {
  name: string;
  root: IssuedCa;
  issuing: IssuedCa;
  /** the TrustedCa the driver gets, with current CRLs of both CAs (revoking `revoked`) */
  trusted(): TrustedCa;
  device(id: string, batch?: string): TestDevice;
  /** revoke device serials: the next trusted() carries a new issuing CRL listing them */
  revoke(...serials: string[]): void;
  /** revoke the issuing CA itself: the next trusted() carries a root CRL listing it */
  revokeIssuing(): void;
  crlPems(): string[];
}

/**
 * A test PKI; with `successorOf`, the successor of that PKI's issuing CA in a rollover: the same
 * root, the same issuing CA name and subject, a new key.
 */
export function makePki(name: string, o: { successorOf?: TestPki } = {}): TestPki {
  const root =
    o.successorOf?.root ??
    issueCa({
      name: `${name}-root`,
      role: "root",
      algorithm: "ecdsa-p256",
      subject: { commonName: `${name} Root` },
      validityDays: 3650,
    });
  const issuing = issueCa(
    {
      name: `${o.successorOf?.name ?? name}-issuing`,
      role: "issuing",
      algorithm: "ecdsa-p256",
      subject: { commonName: `${o.successorOf?.name ?? name} Issuing` },
      validityDays: 1000,
    },
    { name: `${o.successorOf?.name ?? name}-root`, ...root },
  );
  const pc = parseCertificate(pemOne(issuing.certificatePem, "CERTIFICATE", "t"));
  const tpl = new LeafTemplate(
    {
      algorithm: "ecdsa-p256",
      key: crypto.createPrivateKey(issuing.keyPem!),
      subject: pc.subject,
      keyId: Buffer.from(issuing.subjectKeyId, "hex"),
    },
    {
      organization: "Example",
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 365 * 86400_000),
      keyUsage: ["digitalSignature"],
      extKeyUsage: [EKU.clientAuth],
    },
  );
  const revoked: string[] = [];
  const revokedCas: string[] = [];
  let number = 0;
  const crlPems = () => {
    number++;
    const r = signCrl(root, {
      previousNumber: number - 1,
      revoked: revokedCas.map((s) => ({ serialHex: s, revokedAt: new Date(Date.now() - 30_000) })),
    }).crlPem;
    const i = signCrl(issuing, {
      previousNumber: number - 1,
      revoked: revoked.map((s) => ({ serialHex: s, revokedAt: new Date(Date.now() - 30_000) })),
    }).crlPem;
    return [i, r];
  };
  return {
    name,
    root,
    issuing,
    crlPems,
    trusted: () => ({
      name: `${o.successorOf?.name ?? name}-issuing`,
      ...(o.successorOf ? { generation: 2 } : {}),
      fingerprint: issuing.fingerprintSha256,
      certificatePem: issuing.certificatePem,
      chainPem: issuing.chainPem,
      crlPems: crlPems(),
    }),
    revoke: (...serials) => revoked.push(...serials),
    revokeIssuing: () => revokedCas.push(issuing.serialNumber),
    device(id, batch = "b1") {
      const pair = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
      const serialBytes = randomSerial();
      const der = tpl.issue(serialBytes, id, spkiDer(pair.publicKey), {
        dns: [`${id}.devices.example.com`],
        uri: [`urn:example:device:${id}`],
      });
      const certPem = toPem("CERTIFICATE", der);
      const sha256 = crypto.createHash("sha256").update(der).digest("hex");
      const serial = serialBytes.toString("hex");
      return {
        id,
        keyPem: pair.privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
        certPem,
        chainPem: certPem + issuing.certificatePem,
        der,
        serial,
        sha256,
        cert: { deviceId: id, batch, serial, der, sha256, issuer: issuing.fingerprintSha256 },
      };
    },
  };
}
