/**
 * Manifest signing: a short-lived manifest-signer certificate issued by a fleet CA (RFC 5280
 * end entity, digitalSignature, extendedKeyUsage MANIFEST_SIGNER_EKU) and per-device JWS
 * entries (RFC 7515 7.2.2 flattened JSON; ES256/ES384 signatures are raw r||s per RFC 7518
 * 3.4, EdDSA per RFC 8037). The signer's private key is created here, held in a closure as a
 * KeyObject and never exported. Writing is streamed, one entry per line, so 100,000 devices
 * never need the whole manifest in memory.
 */
import * as crypto from "node:crypto";
import { once } from "node:events";
import { FleetError, invalid, phrase } from "../errors";
import { encodeTbs, randomSerial, signTbs } from "../x509/cert";
import {
  authorityKeyIdentifier,
  basicConstraints,
  extKeyUsage,
  keyIdentifier,
  keyUsage,
  subjectKeyIdentifier,
} from "../x509/ext";
import {
  algorithmOf,
  generateKey,
  type KeyAlgorithm,
  loadPrivateKey,
  publicKeyOf,
  type SigningKey,
  spkiDer,
} from "../x509/keys";
import { encodeSubject, type Subject, subjectErrors } from "../x509/names";
import { basicConstraintsOf, parseCertificate, subjectKeyIdOf } from "../x509/parse";
import { pemOne, toPem } from "../x509/pem";
import {
  type DeviceManifestInput,
  type JwsAlg,
  MANIFEST_SIGNER_EKU,
  MANIFEST_VERSION,
  type ManifestDigest,
  type ManifestEntry,
  type ManifestKey,
  type ManifestPayload,
  type ProtectedHeader,
} from "./format";
import { b64u, certThumbprint, jwkFromSpki, jwkThumbprint } from "./jwk";

export const SIGNER_ALGORITHMS = ["ecdsa-p256", "ecdsa-p384", "ed25519"] as const;
export type SignerAlgorithm = (typeof SIGNER_ALGORITHMS)[number];

/** JWS alg and crypto.sign digest for each signer key type (RFC 7518 3.1, RFC 8037 3.1). */
export const JWS_OF: Record<SignerAlgorithm, { alg: JwsAlg; hash: string | null; sigLen: number }> = {
  "ecdsa-p256": { alg: "ES256", hash: "sha256", sigLen: 64 },
  "ecdsa-p384": { alg: "ES384", hash: "sha384", sigLen: 96 },
  ed25519: { alg: "EdDSA", hash: null, sigLen: 64 },
};

export interface ManifestSignerOptions {
  /** signer key type; default ecdsa-p256 (ES256, what Trust&GO and most hubs expect) */
  algorithm?: SignerAlgorithm;
  /** signer certificate lifetime; default 30 days, clamped to the issuer's notAfter */
  validityDays?: number;
  subject?: Subject;
}

export interface Deps {
  now: () => Date;
  rng: (n: number) => Uint8Array;
}
export const defaultDeps = (): Deps => ({ now: () => new Date(), rng: crypto.randomBytes });

export interface ManifestSigner {
  /** the manifest-signer certificate alone */
  readonly signerCertificatePem: string;
  /** the signer certificate followed by the issuer's chain: what a verifier is given */
  readonly signerChainPem: string;
  readonly alg: JwsAlg;
  /** RFC 7638 thumbprint of the signer public key (the protected header's kid) */
  readonly kid: string;
  readonly notAfter: Date;
  /** One signed entry. `field` names the input in errors (e.g. "devices[12]"). */
  sign(device: DeviceManifestInput, field?: string): ManifestEntry;
}

const DAY_MS = 86_400_000;

function issuerError(field: string, got: string, want: string): FleetError {
  return invalid(field, phrase(got), want);
}

/**
 * Create a manifest signer under `issuer` (a CA: its certificate and PKCS#8 key; `chainPem`,
 * when given, is the issuer's chain up to the root and is appended to `signerChainPem`).
 */
export function createManifestSigner(
  issuer: { certificatePem: string; keyPem?: string; key?: SigningKey; chainPem?: string },
  opts: ManifestSignerOptions = {},
  deps: Deps = defaultDeps(),
): ManifestSigner {
  if (typeof issuer !== "object" || issuer === null)
    throw invalid("issuer", issuer, "{ certificatePem, keyPem }");
  const algorithm = opts.algorithm ?? "ecdsa-p256";
  if (!SIGNER_ALGORITHMS.includes(algorithm))
    throw invalid("opts.algorithm", algorithm, `one of ${SIGNER_ALGORITHMS.join(", ")}`);
  const days = opts.validityDays ?? 30;
  if (!Number.isInteger(days) || days < 1 || days > 397)
    throw invalid("opts.validityDays", days, "an integer from 1 to 397");
  const subject = opts.subject ?? { commonName: "fleetguard manifest signer" };
  const se = subjectErrors(subject, "opts.subject");
  if (se.length) throw new FleetError("INVALID_INPUT", se.join("; "), "opts.subject");

  const issuerDer = pemOne(issuer.certificatePem, "CERTIFICATE", "issuer.certificatePem");
  const ic = parseCertificate(issuerDer, "issuer.certificatePem");
  const ix = new crypto.X509Certificate(issuerDer);
  if (!basicConstraintsOf(ic)?.ca)
    throw issuerError("issuer.certificatePem", "a certificate that is not a CA", "a CA certificate");
  // a key opened from a custody (an HSM signs, it does not export), or a PEM (Pulumi-secret custody)
  const issuerKey: SigningKey = issuer.key ?? loadPrivateKey(issuer.keyPem, "issuer.keyPem");
  if (!ix.publicKey.equals(publicKeyOf(issuerKey)))
    throw issuerError("issuer.keyPem", "a key that does not match the certificate", "the CA's private key");
  const issuerAlg: KeyAlgorithm = algorithmOf(issuerKey, "issuer.keyPem");

  const now = deps.now();
  const issuerNotAfter = new Date(ix.validTo);
  if (issuerNotAfter <= now)
    throw issuerError("issuer.certificatePem", `a CA that expired ${ix.validTo}`, "a CA still valid");
  const notBefore = new Date(Math.floor(now.getTime() / 1000) * 1000 - 60_000);
  let notAfter = new Date(Math.floor(now.getTime() / 1000) * 1000 + days * DAY_MS);
  if (notAfter > issuerNotAfter) notAfter = issuerNotAfter;

  const pair = generateKey(algorithm);
  const key = pair.privateKey;
  const spki = spkiDer(pair.publicKey);
  const tbs = encodeTbs(
    {
      serial: randomSerial(deps.rng),
      issuer: ic.subject,
      subject: encodeSubject(subject),
      notBefore,
      notAfter,
      spki,
      extensions: [
        basicConstraints(false),
        keyUsage(["digitalSignature"]),
        extKeyUsage([MANIFEST_SIGNER_EKU]),
        subjectKeyIdentifier(keyIdentifier(spki)),
        authorityKeyIdentifier(subjectKeyIdOf(ic) ?? keyIdentifier(ic.spki)),
      ],
    },
    issuerAlg,
  );
  const certDer = signTbs(tbs, issuerAlg, issuerKey);
  const signerCertificatePem = toPem("CERTIFICATE", certDer);
  const { alg, hash } = JWS_OF[algorithm];
  const kid = jwkThumbprint(jwkFromSpki(spki, "signer key"));
  const header: ProtectedHeader = { alg, kid, "x5t#S256": certThumbprint(certDer) };
  // constant for the signer: the signing input of every entry starts with it
  const protectedB64 = b64u(Buffer.from(JSON.stringify(header)));
  const signingPrefix = `${protectedB64}.`;
  const checkedTops = new WeakSet<Uint8Array>();

  const sign = (device: DeviceManifestInput, field = "device"): ManifestEntry => {
    if (deps.now() > notAfter)
      throw invalid(
        "signer",
        phrase(`a signer certificate that expired ${notAfter.toISOString()}`),
        "a fresh signer (createManifestSigner)",
      );
    const payload = payloadOf(device, field, checkedTops);
    const payloadB64 = b64u(Buffer.from(JSON.stringify(payload)));
    const signature = crypto.sign(hash, Buffer.from(signingPrefix + payloadB64), {
      key,
      dsaEncoding: "ieee-p1363",
    });
    return {
      payload: payloadB64,
      protected: protectedB64,
      header: { uniqueId: payload.uniqueId },
      signature: b64u(signature),
    };
  };

  return Object.freeze({
    signerCertificatePem,
    signerChainPem: signerCertificatePem + (issuer.chainPem ?? issuer.certificatePem),
    alg,
    kid,
    notAfter,
    sign,
    toJSON: () => ({ signerCertificatePem, alg, kid }),
  });
}

const NAME = /^[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?$/;

function text(v: unknown, field: string): string {
  if (typeof v !== "string" || !NAME.test(v))
    throw invalid(field, v, "1 to 256 printable ASCII characters without leading or trailing spaces");
  return v;
}

function payloadOf(d: DeviceManifestInput, field: string, checkedTops: WeakSet<Uint8Array>): ManifestPayload {
  if (typeof d !== "object" || d === null) throw invalid(field, d, "a DeviceManifestInput object");
  const uniqueId = text(d.deviceId, `${field}.deviceId`);
  const model = text(d.model, `${field}.model`);
  const batch = text(d.batch, `${field}.batch`);
  const at =
    d.issuedAt instanceof Date ? d.issuedAt : typeof d.issuedAt === "string" ? new Date(d.issuedAt) : null;
  if (!at || Number.isNaN(at.getTime()))
    throw invalid(`${field}.issuedAt`, d.issuedAt, "a Date or ISO 8601 time");
  const jwk = jwkFromSpki(d.publicKeySpki, `${field}.publicKeySpki`);
  const chain = d.chain;
  if (!Array.isArray(chain) || chain.length === 0 || chain.some((c) => !(c instanceof Uint8Array)))
    throw invalid(`${field}.chain`, chain, "a non-empty list of DER certificates, leaf first");
  const leaf = parseCertificate(chain[0]!, `${field}.chain[0]`);
  if (!leaf.spki.equals(d.publicKeySpki))
    throw invalid(
      `${field}.chain[0]`,
      phrase("a certificate for another public key"),
      "the certificate of publicKeySpki",
    );
  const top = chain[chain.length - 1]!;
  if (chain.length > 1 && !checkedTops.has(top)) {
    const t = parseCertificate(top, `${field}.chain[${chain.length - 1}]`);
    if (t.issuer.equals(t.subject))
      throw invalid(
        `${field}.chain[${chain.length - 1}]`,
        phrase("a self-signed certificate"),
        "the chain up to but excluding the root",
      );
    checkedTops.add(top);
  }
  const key: ManifestKey = {
    ...jwk,
    kid: jwkThumbprint(jwk),
    x5c: chain.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength).toString("base64")),
    "x5t#S256": certThumbprint(chain[0]!),
  };
  return {
    version: MANIFEST_VERSION,
    model,
    uniqueId,
    batch,
    publicKeySet: { keys: [key] },
    issuedAt: at.toISOString(),
  };
}

/** Sign every device (small batches, tests). For large batches stream with `writeManifest`. */
export function buildManifest(devices: DeviceManifestInput[], signer: ManifestSigner): ManifestEntry[] {
  if (!Array.isArray(devices)) throw invalid("devices", devices, "a list of DeviceManifestInput");
  return devices.map((d, i) => signer.sign(d, `devices[${i}]`));
}

type Source<T> = Iterable<T> | AsyncIterable<T>;

/**
 * The manifest as text chunks: "[\n", then one entry per line ("," ending every line but the
 * last), then "]\n". Valid JSON as a whole, and `readManifest` can read it back line by line.
 * Each device is signed only when its chunk is pulled, so a slow writer holds back signing.
 */
export async function* manifestChunks(
  devices: Source<DeviceManifestInput>,
  signer: ManifestSigner,
  onEntry?: (entry: ManifestEntry, index: number) => void,
): AsyncGenerator<string> {
  yield "[\n";
  let i = 0;
  let pending: string | undefined;
  for await (const d of devices) {
    const e = signer.sign(d, `devices[${i}]`);
    onEntry?.(e, i);
    i++;
    if (pending !== undefined) yield `${pending},\n`;
    pending = JSON.stringify(e);
  }
  yield pending === undefined ? "]\n" : `${pending}\n]\n`;
}

/**
 * Stream a signed manifest to `out` (a file, an HTTP body), waiting for 'drain' when the
 * stream is full. Returns the entry count and the manifest digest (see `manifestDigest`).
 */
export async function writeManifest(
  devices: Source<DeviceManifestInput>,
  signer: ManifestSigner,
  out: NodeJS.WritableStream,
  digest?: ManifestDigest,
): Promise<{ count: number }> {
  let count = 0;
  let buf = "";
  const flush = async () => {
    if (!out.write(buf)) await once(out as NodeJS.EventEmitter, "drain");
    buf = "";
  };
  for await (const chunk of manifestChunks(devices, signer, (e) => {
    digest?.add(e);
    count++;
  })) {
    // coalesce ~64 KB per write: one write per 2 KB entry would dominate the cost
    buf += chunk;
    if (buf.length >= 65_536) await flush();
  }
  if (buf) await flush();
  return { count };
}
