/**
 * The cryptographic work of enrolling one device, in plain Node crypto, shared by the raw
 * bound (bench/lib/bound.ts) and the naive one-resource-per-device provider
 * (bench/fixtures/naive-program): a P-256 key pair (FIPS 186-5), a PKCS#10 request built and
 * signed by it (RFC 2986, devices/firmware/pkix.ts), the request parsed and its proof of
 * possession checked (core/station/csr.ts), and an RFC 5280 device certificate issued from a
 * precomputed DER template by a P-256 issuing CA (core/x509/cert.ts LeafTemplate).
 *
 * The device's SubjectPublicKeyInfo is assembled from the point in a SEC1 export of the new
 * private key plus the fixed P-256 SPKI prefix: `publicKey.export({type: "spki"})` runs at
 * ~6,000/s here and barely scales to a second thread (OpenSSL 3 encoder look-up), the SEC1
 * export at ~80,000/s and scales. Never a JWK export of a freshly generated key: that loop
 * deadlocks Node 20.20.2 (brief.md). `verifyCsr` imports the request's key from a JWK *built
 * from the DER bytes*, which is the fast and safe direction.
 */
import * as crypto from "node:crypto";
import { issueCa } from "../../core/ca";
import { invalid } from "../../core/errors";
import { verifyCsr } from "../../core/station/csr";
import { LeafTemplate, randomSerial } from "../../core/x509/cert";
import { EKU, keyIdentifier } from "../../core/x509/ext";
import { spkiDer } from "../../core/x509/keys";
import { parseCertificate, subjectKeyIdOf } from "../../core/x509/parse";
import { pemOne } from "../../core/x509/pem";
import { buildCsr } from "../../devices/firmware/pkix";

/** The issuing CA a benchmark enrolls under: PEMs, so they cross threads and processes. */
export interface BenchIssuer {
  rootCertificatePem: string;
  certificatePem: string;
  /** PKCS#8 PEM of the issuing CA's P-256 key */
  keyPem: string;
}

/** A throwaway P-256 root and issuing CA made with core/ca (the same code CaHierarchy uses). */
export function makeBenchIssuer(): BenchIssuer {
  const root = issueCa({
    name: "bench-root",
    role: "root",
    algorithm: "ecdsa-p256",
    subject: { commonName: "fleetguard Bench Root" },
    validityDays: 3650,
  });
  const iss = issueCa(
    {
      name: "bench-issuing",
      role: "issuing",
      algorithm: "ecdsa-p256",
      subject: { commonName: "fleetguard Bench Issuing", organization: "fleetguard bench" },
      validityDays: 730,
    },
    { name: "bench-root", ...root },
  );
  return { rootCertificatePem: root.certificatePem, certificatePem: iss.certificatePem, keyPem: iss.keyPem };
}

export interface EnrollContext {
  template: LeafTemplate;
}

/** Import the issuer once (a PKCS#8 import is ~2,250/s: never per device) and build the template. */
export function enrollContext(issuer: Pick<BenchIssuer, "certificatePem" | "keyPem">): EnrollContext {
  const key = crypto.createPrivateKey(issuer.keyPem);
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType !== "ec" || d?.namedCurve !== "prime256v1")
    throw invalid("issuer.keyPem", `${key.asymmetricKeyType} ${d?.namedCurve ?? ""}`.trim(), "a P-256 key");
  const cert = parseCertificate(pemOne(issuer.certificatePem, "CERTIFICATE", "issuer.certificatePem"));
  const x = new crypto.X509Certificate(issuer.certificatePem);
  if (!x.checkPrivateKey(key)) throw invalid("issuer.keyPem", "another key", "the issuing certificate's key");
  // the authority key identifier must equal the issuer's subject key identifier
  const keyId = subjectKeyIdOf(cert) ?? keyIdentifier(spkiDer(x.publicKey));
  const now = Date.now();
  const template = new LeafTemplate(
    { algorithm: "ecdsa-p256", key, subject: cert.subject, keyId },
    {
      organization: "fleetguard bench",
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 365 * 86_400_000),
      keyUsage: ["digitalSignature"],
      extKeyUsage: [EKU.clientAuth],
    },
  );
  return { template };
}

export interface Enrolled {
  /** DER X.509 device certificate */
  certificate: Buffer;
  /** DER SubjectPublicKeyInfo of the device key */
  spki: Buffer;
  serial: Buffer;
}

// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) ... }
const P256_SPKI_PREFIX = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex");
// ECPrivateKey (RFC 5915) ends with [1] { BIT STRING 0x00 || 04 X Y }
const SEC1_PUBLIC_TAIL = Buffer.from("a144034200", "hex");

/** A fresh P-256 key pair and its SPKI DER (see the module note on why not `export("spki")`). */
export function p256KeyPair(): { privateKey: crypto.KeyObject; spki: Buffer } {
  const { privateKey } = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const sec1 = privateKey.export({ type: "sec1", format: "der" });
  const n = sec1.length;
  if (n !== 121 || !sec1.subarray(n - 70, n - 65).equals(SEC1_PUBLIC_TAIL) || sec1[n - 65] !== 4) {
    sec1.fill(0);
    throw invalid("sec1", `${n} bytes`, "a 121-byte P-256 ECPrivateKey with its public key");
  }
  const spki = Buffer.concat([P256_SPKI_PREFIX, sec1.subarray(n - 65)]);
  sec1.fill(0); // it holds the private scalar
  return { privateKey, spki };
}

/**
 * One device: key pair, CSR, CSR verified, certificate issued. The device's private key is
 * dropped here, as it would stay on the device.
 */
export function enrollDevice(ctx: EnrollContext, deviceId: string): Enrolled {
  const { privateKey, spki } = p256KeyPair();
  const csr = buildCsr([["CN", deviceId]], spki, privateKey);
  const parsed = verifyCsr(csr, spki);
  const cn = parsed.subject.find(([a]) => a === "CN")?.[1];
  if (cn !== deviceId) throw invalid("csr.subject.CN", cn, deviceId);
  const serial = randomSerial();
  const certificate = ctx.template.issue(serial, cn, parsed.spki, {
    dns: [`${deviceId}.devices.fleetguard.example`],
  });
  return { certificate, spki, serial };
}

export const deviceName = (i: number): string => `dev-${String(i).padStart(7, "0")}`;
