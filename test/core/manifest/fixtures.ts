/**
 * A test PKI for manifests, built with core/ca issueCa: root -> "devices" issuing CA (device
 * identity certificates, made with LeafTemplate) and root -> "manifests" issuing CA (issuer of
 * manifest signers). Also a hand-rolled JWS builder with a key the test holds, so entries can
 * be made that the real signer would refuse to make (a JWK that is not the leaf's, ...).
 */
import * as crypto from "node:crypto";
import { type IssuedCa, issueCa } from "../../../core/ca";
import type { DeviceManifestInput, ManifestEntry } from "../../../core/manifest";
import { MANIFEST_SIGNER_EKU } from "../../../core/manifest";
import { LeafTemplate, randomSerial } from "../../../core/x509/cert";
import { EKU } from "../../../core/x509/ext";
import { spkiDer } from "../../../core/x509/keys";
import { parseCertificate } from "../../../core/x509/parse";
import { pemOne, toPem } from "../../../core/x509/pem";

export interface Pki {
  root: IssuedCa;
  devices: IssuedCa;
  manifests: IssuedCa;
}

export function makePki(cn = "Test"): Pki {
  const root = issueCa({
    name: "root",
    role: "root",
    algorithm: "ecdsa-p256",
    subject: { commonName: `${cn} Root` },
    validityDays: 3650,
  });
  const under = (name: string, commonName: string) =>
    issueCa(
      { name, role: "issuing", algorithm: "ecdsa-p256", subject: { commonName }, validityDays: 730 },
      { name: "root", ...root },
    );
  return {
    root,
    devices: under("devices", `${cn} Devices`),
    manifests: under("manifests", `${cn} Manifests`),
  };
}

export const derOf = (pem: string): Buffer => pemOne(pem, "CERTIFICATE", "test");

export function templateFor(
  ca: IssuedCa,
  opts: { ekus?: string[]; days?: number; usage?: "digitalSignature" } = {},
): LeafTemplate {
  const pc = parseCertificate(derOf(ca.certificatePem));
  return new LeafTemplate(
    {
      algorithm: ca.algorithm,
      key: crypto.createPrivateKey(ca.keyPem),
      subject: pc.subject,
      keyId: Buffer.from(ca.subjectKeyId, "hex"),
    },
    {
      organization: "Acme",
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + (opts.days ?? 365) * 86_400_000),
      keyUsage: ["digitalSignature"],
      extKeyUsage: opts.ekus ?? [EKU.clientAuth],
    },
  );
}

/** `n` devices with fresh P-256 keys and certificates from `ca`; chain = [leaf, ca]. */
export function makeDevices(ca: IssuedCa, n: number, prefix = "dev"): DeviceManifestInput[] {
  const tpl = templateFor(ca);
  const caDer = derOf(ca.certificatePem);
  return Array.from({ length: n }, (_, i) => {
    const spki = spkiDer(crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey);
    const id = `${prefix}-${String(i).padStart(6, "0")}`;
    return {
      deviceId: id,
      model: "ACME-SENSOR-2",
      batch: "LOT-2026-11",
      publicKeySpki: spki,
      chain: [tpl.issue(randomSerial(), id, spki), caDer],
      issuedAt: new Date("2026-11-20T10:00:00Z"),
    };
  });
}

/** A signer the test holds the key of: a certificate from `ca` with the given EKUs. */
export function handSigner(ca: IssuedCa, ekus: string[] = [MANIFEST_SIGNER_EKU]) {
  const pair = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const spki = spkiDer(pair.publicKey);
  const der = templateFor(ca, { ekus }).issue(randomSerial(), "hand signer", spki);
  const jwk = pair.publicKey.export({ format: "jwk" }) as { x: string; y: string };
  // RFC 7638 computed here without core/manifest: members in lexicographic order
  const canon = `{"crv":"P-256","kty":"EC","x":"${jwk.x}","y":"${jwk.y}"}`;
  const kid = crypto.createHash("sha256").update(canon).digest("base64url");
  const header = {
    alg: "ES256",
    kid,
    "x5t#S256": crypto.createHash("sha256").update(der).digest("base64url"),
  };
  return {
    certificatePem: toPem("CERTIFICATE", der),
    /** sign any payload object as a manifest entry */
    sign(payload: unknown, uniqueId: string): ManifestEntry {
      const p = Buffer.from(JSON.stringify(header)).toString("base64url");
      const b = Buffer.from(JSON.stringify(payload)).toString("base64url");
      const sig = crypto.sign("sha256", Buffer.from(`${p}.${b}`), {
        key: pair.privateKey,
        dsaEncoding: "ieee-p1363",
      });
      return { payload: b, protected: p, header: { uniqueId }, signature: sig.toString("base64url") };
    },
  };
}

/** The payload a correct producer writes for `d`, built here independently of core/manifest. */
export function payloadFor(d: DeviceManifestInput) {
  const pub = crypto.createPublicKey({ key: Buffer.from(d.publicKeySpki), format: "der", type: "spki" });
  const { x, y } = pub.export({ format: "jwk" }) as { x: string; y: string };
  const kid = crypto
    .createHash("sha256")
    .update(`{"crv":"P-256","kty":"EC","x":"${x}","y":"${y}"}`)
    .digest("base64url");
  return {
    version: 1,
    model: d.model,
    uniqueId: d.deviceId,
    batch: d.batch,
    publicKeySet: {
      keys: [
        {
          kty: "EC",
          crv: "P-256",
          x,
          y,
          kid,
          x5c: d.chain.map((c) => Buffer.from(c).toString("base64")),
          "x5t#S256": crypto.createHash("sha256").update(d.chain[0]!).digest("base64url"),
        },
      ],
    },
    issuedAt: new Date(d.issuedAt).toISOString(),
  };
}
