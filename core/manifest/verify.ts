/**
 * Manifest verification (RFC 7515 5.2 for the JWS, RFC 5280 6.1 for the certificate paths,
 * RFC 7638 for key IDs). The signer certificate is checked once: valid now, chaining to a trust
 * anchor, digitalSignature and the manifest-signer extendedKeyUsage. Each entry is then checked
 * on its own and either accepted or reported with a reason; one bad entry never hides the rest.
 * Input that is not a manifest at all (wrong types, bad base64url, an undecodable protected
 * header) throws INVALID_INPUT naming the field, e.g. `manifest[12].protected`.
 */
import * as crypto from "node:crypto";
import { invalid, phrase } from "../errors";
import { children, content, decodeOid, read } from "../x509/der";
import { OID } from "../x509/ext";
import { parseCertificate } from "../x509/parse";
import { pemBlocks } from "../x509/pem";
import { type Cert, type LeafCert, readCert, readLeaf, TrustAnchors, validityProblem } from "./chain";
import {
  JWS_ALGS,
  type JwsAlg,
  LEGACY_MANIFEST_SIGNER_EKU,
  MANIFEST_SIGNER_EKU,
  MANIFEST_VERSION,
  ManifestDigest,
  type ManifestEntry,
  type ManifestKey,
  type ManifestPayload,
} from "./format";
import { certThumbprint, fromB64u, jwkFromSpki, jwkThumbprint, spkiFromJwk } from "./jwk";

export const FAILURE_REASONS = [
  /** the signer certificate expired (or is not valid yet) at `now` */
  "signer-expired",
  /** the signer certificate does not chain to a trust anchor, or may not sign manifests */
  "signer-untrusted",
  /** the protected header names another signer (kid, x5t#S256) or another alg */
  "signer-mismatch",
  /** the JWS signature does not verify under the signer's key */
  "signature",
  /** the signed payload is not a manifest payload of a version we read */
  "payload",
  /** the unprotected header's uniqueId is not the payload's */
  "unique-id",
  /** the JWK is malformed, its kid is not its thumbprint, or it is not the leaf's key */
  "jwk",
  /** x5t#S256 is not the thumbprint of x5c[0] */
  "thumbprint",
  /** x5c does not form a path to a trust anchor valid now */
  "chain",
] as const;
export type FailureReason = (typeof FAILURE_REASONS)[number];

export interface ManifestFailure {
  index: number;
  uniqueId: string;
  reason: FailureReason;
  detail: string;
}

export interface VerifiedEntry {
  index: number;
  uniqueId: string;
  payload: ManifestPayload;
  entry: ManifestEntry;
}

export interface VerifyOptions {
  trustAnchorsPem: string[];
  /** the signer certificate, optionally followed by its issuer chain (a trailing root is fine) */
  signerCertificatePem: string;
  now?: Date;
}

export type CheckResult = { ok: true; entry: VerifiedEntry } | { ok: false; failure: ManifestFailure };

export interface ManifestVerifier {
  check(entry: unknown, index: number): CheckResult;
}

const ALG_OF_KEY: Record<string, { alg: JwsAlg; hash: string | null; sigLen: number }> = {
  "ec:prime256v1": { alg: "ES256", hash: "sha256", sigLen: 64 },
  "ec:secp384r1": { alg: "ES384", hash: "sha384", sigLen: 96 },
  "ed25519:": { alg: "EdDSA", hash: null, sigLen: 64 },
};

function ekuOf(c: Cert): string[] | undefined {
  const e = parseCertificate(c.der).extensions.get(OID.extKeyUsage);
  if (!e) return undefined;
  return children(e.value, read(e.value)).map((n) => decodeOid(content(e.value, n)));
}

/** keyUsage digitalSignature is bit 0: the first octet after the unused-bits count, MSB. */
function hasDigitalSignature(c: Cert): boolean {
  const e = parseCertificate(c.der).extensions.get(OID.keyUsage);
  if (!e) return true; // absent keyUsage: no restriction (RFC 5280 4.2.1.3)
  const bits = content(e.value, read(e.value));
  return bits.length > 1 && (bits[1]! & 0x80) !== 0;
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

function b64uField(v: unknown, field: string, want: string): Buffer {
  if (typeof v !== "string") throw invalid(field, v, want);
  const b = fromB64u(v);
  if (!b) throw invalid(field, phrase("text that is not unpadded base64url"), want);
  return b;
}

export function createManifestVerifier(opts: VerifyOptions): ManifestVerifier {
  if (!isObj(opts)) throw invalid("opts", opts, "{ trustAnchorsPem, signerCertificatePem }");
  const now = opts.now ?? new Date();
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) throw invalid("opts.now", opts.now, "a Date");
  const anchors = new TrustAnchors(opts.trustAnchorsPem, now, "trustAnchorsPem");
  const anchorDer = new Set(anchors.anchors.map((a) => a.der.toString("base64")));
  const bundle = pemBlocks(opts.signerCertificatePem, "CERTIFICATE", "signerCertificatePem").map((d, i) =>
    readCert(d, `signerCertificatePem[${i}]`),
  );
  const signer = bundle[0]!;
  // a bundle may end with the root: the path stops at the first anchor or self-signed certificate
  const cas: Cert[] = [];
  for (const c of bundle.slice(1)) {
    if (anchorDer.has(c.der.toString("base64")) || c.x.checkIssued(c.x)) break;
    cas.push(c);
  }
  const signerKey = signer.key;
  const keyInfo =
    ALG_OF_KEY[`${signerKey.asymmetricKeyType}:${signerKey.asymmetricKeyDetails?.namedCurve ?? ""}`];
  const signerKid = (() => {
    try {
      return jwkThumbprint(jwkFromSpki(signer.spki));
    } catch {
      return undefined;
    }
  })();
  const signerThumb = certThumbprint(signer.der);

  let signerProblem: { reason: FailureReason; detail: string } | undefined;
  const validity = validityProblem(signer.x, "signer certificate", now);
  if (validity) signerProblem = { reason: "signer-expired", detail: validity };
  else {
    const labels = cas.map((_, i) => `signerCertificatePem[${i + 1}]`);
    const p =
      anchors.caPathProblem(cas, labels) ?? anchors.leafProblem(signer.x, cas[0], "signer certificate");
    const eku = ekuOf(signer);
    if (p) signerProblem = { reason: "signer-untrusted", detail: p };
    else if (!eku?.some((o) => o === MANIFEST_SIGNER_EKU || o === LEGACY_MANIFEST_SIGNER_EKU))
      signerProblem = {
        reason: "signer-untrusted",
        detail: `signer certificate extendedKeyUsage is [${eku?.join(", ") ?? "absent"}], want ${MANIFEST_SIGNER_EKU} (manifest signing)`,
      };
    else if (!hasDigitalSignature(signer))
      signerProblem = {
        reason: "signer-untrusted",
        detail: "signer certificate keyUsage lacks digitalSignature",
      };
    else if (!keyInfo || !signerKid)
      signerProblem = { reason: "signer-untrusted", detail: "signer key is not P-256, P-384 or Ed25519" };
  }

  // device certificate paths share their upper part (the issuing CA and above): check it once
  const upper = new Map<string, { cas: Cert[]; problem?: string }>();
  const upperOf = (x5c: string[], field: string) => {
    const k = x5c.length > 1 ? x5c.slice(1).join(",") : "";
    let u = upper.get(k);
    if (!u) {
      const list = x5c
        .slice(1)
        .map((s, i) => readCert(b64Der(s, `${field}[${i + 1}]`), `${field}[${i + 1}]`));
      u = {
        cas: list,
        problem: anchors.caPathProblem(
          list,
          list.map((_, i) => `x5c[${i + 1}]`),
        ),
      };
      if (upper.size >= 1024) upper.clear(); // bounded: crafted input cannot grow it without limit
      upper.set(k, u);
    }
    return u;
  };

  const check = (raw: unknown, index: number): CheckResult => {
    const f = `manifest[${index}]`;
    if (!isObj(raw)) throw invalid(f, raw, "a JWS object { payload, protected, header, signature }");
    if (!isObj(raw.header) || typeof raw.header.uniqueId !== "string")
      throw invalid(`${f}.header`, raw.header, 'an object { "uniqueId": <device ID> }');
    const uniqueId = raw.header.uniqueId;
    const protBytes = b64uField(raw.protected, `${f}.protected`, "base64url of the JWS protected header");
    const payloadBytes = b64uField(raw.payload, `${f}.payload`, "base64url of the manifest payload");
    const sig = b64uField(raw.signature, `${f}.signature`, "base64url of the JWS signature");
    let prot: unknown;
    try {
      prot = JSON.parse(protBytes.toString("utf8"));
    } catch {
      throw invalid(
        `${f}.protected`,
        phrase("base64url of text that is not JSON"),
        "a JSON protected header",
      );
    }
    if (!isObj(prot) || typeof prot.alg !== "string" || typeof prot.kid !== "string")
      throw invalid(`${f}.protected`, phrase("a header without alg and kid"), '{ "alg", "kid", "x5t#S256" }');
    const fail = (reason: FailureReason, detail: string): CheckResult => ({
      ok: false,
      failure: { index, uniqueId, reason, detail },
    });
    if (signerProblem) return fail(signerProblem.reason, signerProblem.detail);
    if (prot.crit !== undefined)
      return fail("signer-mismatch", "protected header has crit, which we do not support");
    if (!(JWS_ALGS as readonly string[]).includes(prot.alg) || prot.alg !== keyInfo!.alg)
      return fail("signer-mismatch", `alg ${prot.alg}, want ${keyInfo!.alg} (the signer's key)`);
    if (prot.kid !== signerKid) return fail("signer-mismatch", "kid is not the signer key's thumbprint");
    if (prot["x5t#S256"] !== signerThumb)
      return fail("signer-mismatch", "x5t#S256 is not the signer certificate's thumbprint");
    const input = Buffer.from(`${raw.protected}.${raw.payload}`, "ascii");
    if (
      sig.length !== keyInfo!.sigLen ||
      !crypto.verify(keyInfo!.hash, input, { key: signerKey, dsaEncoding: "ieee-p1363" }, sig)
    )
      return fail("signature", `signature does not verify under the signer key (${prot.alg})`);

    let payload: ManifestPayload;
    try {
      payload = payloadShape(JSON.parse(payloadBytes.toString("utf8")));
    } catch (e) {
      return fail("payload", e instanceof PayloadError ? e.message : "payload is not JSON");
    }
    if (payload.uniqueId !== uniqueId)
      return fail(
        "unique-id",
        `header uniqueId ${JSON.stringify(uniqueId)} is not the payload's ${JSON.stringify(payload.uniqueId)}`,
      );
    const key = payload.publicKeySet.keys[0]!;
    const spki = spkiFromJwk(key);
    if (!spki) return fail("jwk", "publicKeySet.keys[0] is not a P-256, P-384 or Ed25519 public JWK");
    if (key.kid !== jwkThumbprint(key)) return fail("jwk", "kid is not the key's RFC 7638 thumbprint");
    const field = `${f}.payload.publicKeySet.keys[0].x5c`;
    let leafDer: Buffer;
    try {
      leafDer = b64Der(key.x5c[0]!, `${field}[0]`);
    } catch {
      return fail("payload", "x5c[0] is not base64");
    }
    if (key["x5t#S256"] !== certThumbprint(leafDer))
      return fail("thumbprint", "x5t#S256 is not the SHA-256 of x5c[0]");
    let leaf: LeafCert;
    let up: { cas: Cert[]; problem?: string };
    try {
      leaf = readLeaf(leafDer, `${field}[0]`);
      up = upperOf(key.x5c, field);
    } catch (e) {
      return fail("chain", e instanceof Error ? e.message : "x5c holds something that is not a certificate");
    }
    if (!leaf.spki.equals(spki)) return fail("jwk", "the JWK is not the public key of x5c[0]");
    const chainProblem = up.problem ?? anchors.leafDerProblem(leaf, up.cas[0], "x5c[0]");
    if (chainProblem) return fail("chain", chainProblem);
    return { ok: true, entry: { index, uniqueId, payload, entry: raw as unknown as ManifestEntry } };
  };
  return { check };
}

function b64Der(s: string, field: string): Buffer {
  // x5c is standard base64 (RFC 7517 4.7), not base64url
  if (typeof s !== "string" || !/^[A-Za-z0-9+/]+={0,2}$/.test(s) || s.length % 4 !== 0)
    throw invalid(field, phrase("text that is not standard base64"), "base64 DER (RFC 7517 4.7)");
  return Buffer.from(s, "base64");
}

class PayloadError extends Error {}

function payloadShape(p: unknown): ManifestPayload {
  const bad = (what: string) => {
    throw new PayloadError(`payload ${what}`);
  };
  if (!isObj(p)) return bad("is not a JSON object");
  if (p.version !== MANIFEST_VERSION)
    bad(`version is ${JSON.stringify(p.version)}, want ${MANIFEST_VERSION}`);
  for (const k of ["model", "uniqueId", "batch", "issuedAt"])
    if (typeof p[k] !== "string" || p[k] === "") bad(`${k} is not a non-empty string`);
  if (Number.isNaN(Date.parse(p.issuedAt as string))) bad("issuedAt is not a time");
  const set = p.publicKeySet;
  if (!isObj(set) || !Array.isArray(set.keys) || set.keys.length === 0) bad("publicKeySet has no keys");
  const k = (set as { keys: unknown[] }).keys[0];
  if (!isObj(k) || typeof k.kty !== "string") bad("publicKeySet.keys[0] is not a JWK");
  const key = k as Record<string, unknown>;
  if (!Array.isArray(key.x5c) || key.x5c.length === 0 || key.x5c.some((s) => typeof s !== "string"))
    bad("publicKeySet.keys[0].x5c is not a non-empty list of certificates");
  if (typeof key["x5t#S256"] !== "string") bad("publicKeySet.keys[0] has no x5t#S256");
  return p as unknown as ManifestPayload & { publicKeySet: { keys: ManifestKey[] } };
}

function parseManifest(json: unknown): unknown[] {
  let v = json;
  if (typeof json === "string") {
    try {
      v = JSON.parse(json);
    } catch {
      throw invalid("manifest", phrase("text that is not JSON"), "a JSON array of JWS entries");
    }
  }
  if (!Array.isArray(v)) throw invalid("manifest", v, "a JSON array of JWS entries");
  return v;
}

/** Verify a whole manifest held in memory (a JSON string or the parsed array). */
export function verifyManifest(
  json: string | unknown[],
  opts: VerifyOptions,
): { ok: VerifiedEntry[]; failures: ManifestFailure[] } {
  const v = createManifestVerifier(opts);
  const entries = parseManifest(json);
  const ok: VerifiedEntry[] = [];
  const failures: ManifestFailure[] = [];
  entries.forEach((e, i) => {
    const r = v.check(e, i);
    if (r.ok) ok.push(r.entry);
    else failures.push(r.failure);
  });
  return { ok, failures };
}

/**
 * Read a manifest written by `writeManifest` (one entry per line) from a stream, one entry at
 * a time. Another producer's single-line JSON array is refused: parse it with verifyManifest.
 */
export async function* readManifest(
  source: AsyncIterable<string | Buffer> | Iterable<string | Buffer>,
): AsyncGenerator<unknown> {
  let rest = "";
  let index = 0;
  let state = "start" as "start" | "entries" | "end";
  const line = (l: string): unknown[] => {
    const t = l.trim();
    if (t === "") return [];
    if (state === "start") {
      if (t !== "[")
        throw invalid(
          "manifest",
          phrase(`a first line ${JSON.stringify(t.slice(0, 20))}`),
          '"[" on a line of its own (as writeManifest writes)',
        );
      state = "entries";
      return [];
    }
    if (state === "end") throw invalid("manifest", phrase("text after the closing ]"), "nothing after ]");
    if (t === "]") {
      state = "end";
      return [];
    }
    try {
      return [JSON.parse(t.endsWith(",") ? t.slice(0, -1) : t)];
    } catch {
      throw invalid(
        `manifest[${index}]`,
        phrase("a line that is not one JSON entry"),
        "one JWS object per line",
      );
    } finally {
      index++;
    }
  };
  for await (const chunk of source) {
    rest += typeof chunk === "string" ? chunk : chunk.toString("utf8");
    let start = 0;
    for (let nl = rest.indexOf("\n"); nl >= 0; nl = rest.indexOf("\n", start)) {
      yield* line(rest.slice(start, nl));
      start = nl + 1;
    }
    rest = rest.slice(start);
  }
  yield* line(rest);
  if (state !== "end")
    throw invalid("manifest", phrase("a manifest without its closing ]"), "a complete manifest");
}

/** Verify a streamed manifest: counts, failures and the digest, without keeping the entries. */
export async function verifyManifestStream(
  entries: AsyncIterable<unknown> | Iterable<unknown>,
  opts: VerifyOptions,
  onProgress?: (checked: number) => void,
): Promise<{ count: number; okCount: number; failures: ManifestFailure[]; digest: string }> {
  const v = createManifestVerifier(opts);
  const digest = new ManifestDigest();
  const failures: ManifestFailure[] = [];
  let i = 0;
  let okCount = 0;
  for await (const e of entries) {
    const r = v.check(e, i++);
    digest.add(e);
    if (r.ok) okCount++;
    else failures.push(r.failure);
    onProgress?.(i);
  }
  return { count: i, okCount, failures, digest: digest.digest() };
}
