/**
 * Certificate chain check a device runs before it installs an identity certificate: the
 * chain (leaf first) must end in a root whose SHA-256 is burned into the device's trust-anchor
 * fuses, every link must be issued and signed by the next certificate, issuers must be CAs,
 * every certificate must be valid at the device's time, issuers must allow certificate signing
 * (keyUsage keyCertSign) and the path length their basicConstraints permit, and the leaf must
 * certify the device's own key. A simplified RFC 5280 section 6 path validation (no policies,
 * name constraints or revocation, which a constrained device typically leaves to the backend),
 * using Node's X509Certificate for parsing and signature checks.
 *
 * A farm validates the same CA certificates for every device of a batch, so what depends only
 * on a CA certificate's bytes (its parse, basicConstraints, keyUsage, validity dates, public
 * key) and on a pair of CA certificates (issuer names chain, signature verifies) is memoized
 * in a bounded, farm-wide CaCache keyed by SHA-256 of the DER. Those are pure functions of
 * their inputs, so a cached answer is the answer a fresh check would give; only successful
 * link checks are remembered. Everything that depends on the device or the time (the anchor
 * match, the leaf's parse, validity at the device's clock, the leaf's signature, issuer and
 * key) is checked on every call.
 */
import { createHash, type KeyObject, X509Certificate } from "node:crypto";
import { StationError, Status } from "../../core/station/frame";
import { basicConstraintsOf, parseCertificate } from "../../core/x509/parse";

export function sha256(b: Uint8Array): Buffer {
  return createHash("sha256").update(b).digest();
}

/**
 * A cheap lookup key for certificate bytes: the length and the last 16 bytes (the end of the
 * signature, as good as random). Not an identity: a hit must be confirmed by comparing the bytes.
 * It spares a SHA-256 per lookup of the CA certificates every device of a lot repeats.
 */
export function bytesKey(b: Uint8Array): string {
  const tail = Math.min(16, b.length);
  return `${b.length}:${Buffer.from(b.buffer, b.byteOffset + b.length - tail, tail).toString("latin1")}`;
}

/** What a chain check needs of a certificate that does not change with the device or time. */
export interface CaEntry {
  hash: Buffer;
  /** the hash in hex (the cache's keys) */
  hex: string;
  cert: X509Certificate;
  publicKey: KeyObject;
  /** X509Certificate.ca (basicConstraints CA and, per OpenSSL, a keyUsage allowing it) */
  x509Ca: boolean;
  /** basicConstraints itself */
  basicCa: boolean;
  pathLen: number | undefined;
  /**
   * issuer and subject names equal (RFC 5280 3.2: a root, or a root rollover's cross
   * certificate): not counted against a pathLen above it (RFC 5280 6.1.4 (l))
   */
  selfIssued: boolean;
  /** keyUsage keyCertSign, or true when the certificate has no keyUsage extension */
  certSign: boolean;
  /** what our DER reader threw, if it could not read what OpenSSL parsed (rethrown in the check) */
  readError?: unknown;
  validFrom: Date;
  validTo: Date;
}

export interface CaCacheStats {
  parses: number;
  parseHits: number;
  linkChecks: number;
  linkHits: number;
}

/** A CA certificate the cache holds: its entry, its bytes (a copy) and its bytesKey. */
interface Held {
  e: CaEntry;
  der: Buffer;
  q: string;
}

/**
 * A bounded memo of parsed CA certificates and verified (child, parent) links. A certificate is
 * found by its bytes (bytesKey, then a byte comparison) and, failing that, by its SHA-256.
 */
export class CaCache {
  /** by SHA-256 (hex), least recently used first */
  private readonly entries = new Map<string, Held>();
  /** by bytesKey; on a clash of keys the later certificate is found by its hash only */
  private readonly byBytes = new Map<string, Held>();
  private readonly links = new Map<string, true>();
  readonly stats: CaCacheStats = { parses: 0, parseHits: 0, linkChecks: 0, linkHits: 0 };

  constructor(
    readonly capacity = 256,
    readonly linkCapacity = 1024,
  ) {}

  /** The parsed certificate, or undefined if the bytes are not a certificate. */
  entry(der: Uint8Array): CaEntry | undefined {
    const q = bytesKey(der);
    const same = this.byBytes.get(q);
    if (same?.der.equals(der)) return this.hit(same);
    const hash = sha256(der);
    const k = hash.toString("hex");
    const held = this.entries.get(k);
    if (held) return this.hit(held);
    this.stats.parses++;
    const e = describe(der, hash, k);
    if (e && this.capacity > 0) {
      const h: Held = { e, der: Buffer.from(der), q };
      this.entries.set(k, h);
      if (!this.byBytes.has(q)) this.byBytes.set(q, h);
      if (this.entries.size > this.capacity) {
        const [oldest, old] = this.entries.entries().next().value!;
        this.entries.delete(oldest);
        if (this.byBytes.get(old.q) === old) this.byBytes.delete(old.q);
      }
    }
    return e;
  }

  private hit(h: Held): CaEntry {
    this.stats.parseHits++;
    this.entries.delete(h.e.hex);
    this.entries.set(h.e.hex, h);
    return h.e;
  }

  /**
   * Check that `child` is issued by `parent` (names chain) and signed by its key. Returns
   * "names" or "signature" for the first check that fails; remembers only successes.
   */
  link(child: CaEntry, parent: CaEntry): "ok" | "names" | "signature" {
    return this.remember(`l${child.hex}${parent.hex}`, () => linkOf(child.cert, parent));
  }

  /** Whether a certificate's signature verifies under its own key (issuer names not checked). */
  selfSigned(e: CaEntry): boolean {
    return this.remember(`s${e.hex}`, () => (e.cert.verify(e.publicKey) ? "ok" : "signature")) === "ok";
  }

  private remember<R extends string>(k: string, check: () => R | "ok"): R | "ok" {
    if (this.links.has(k)) {
      this.stats.linkHits++;
      this.links.delete(k);
      this.links.set(k, true);
      return "ok";
    }
    this.stats.linkChecks++;
    const r = check();
    if (r === "ok" && this.linkCapacity > 0) {
      this.links.set(k, true);
      if (this.links.size > this.linkCapacity) this.links.delete(this.links.keys().next().value!);
    }
    return r;
  }

  get size(): { entries: number; links: number } {
    return { entries: this.entries.size, links: this.links.size };
  }
}

/** The farm-wide default; a DeviceAgent has its own. */
export const sharedCaCache = new CaCache();

function linkOf(child: X509Certificate, parent: CaEntry): "ok" | "names" | "signature" {
  if (!child.checkIssued(parent.cert)) return "names";
  if (!child.verify(parent.publicKey)) return "signature";
  return "ok";
}

function describe(der: Uint8Array, hash: Buffer, hex: string): CaEntry | undefined {
  let cert: X509Certificate;
  let publicKey: KeyObject;
  try {
    cert = new X509Certificate(Buffer.from(der.buffer, der.byteOffset, der.length));
    // OpenSSL parses a certificate whose key it cannot decode, and throws only when asked for it
    publicKey = cert.publicKey;
  } catch {
    return undefined;
  }
  let basicCa = false;
  let pathLen: number | undefined;
  let selfIssued = false;
  let certSign = true;
  let readError: unknown;
  try {
    const p = parseCertificate(der);
    const bc = basicConstraintsOf(p);
    basicCa = bc?.ca ?? false;
    pathLen = bc?.pathLen;
    selfIssued = p.issuer.equals(p.subject);
    const ku = p.extensions.get("2.5.29.15");
    // BIT STRING: tag, length, unused-bits octet, then the bits; bit 5 is 0x04 of the first octet
    if (ku) certSign = ku.value.length > 3 && (ku.value[3]! & 0x04) !== 0;
  } catch (e) {
    readError = e;
  }
  return {
    hash,
    hex,
    cert,
    publicKey,
    x509Ca: cert.ca,
    basicCa,
    pathLen,
    selfIssued,
    certSign,
    readError,
    validFrom: new Date(cert.validFrom),
    validTo: new Date(cert.validTo),
  };
}

/** The CA certificates cas[from .. to-1] that count against a pathLen: all but the self-issued. */
function casBelow(cas: readonly CaEntry[], from: number, to: number): number {
  let n = 0;
  for (let k = from; k < to; k++) if (!cas[k]!.selfIssued) n++;
  return n;
}

const unparsable = (i: number) =>
  new StationError(
    Status.BAD_CERTIFICATE,
    `chain[${i}]: got bytes that do not parse, want a DER certificate`,
  );

/** The leaf, parsed (not cached: it is different for every device). */
export function parseLeaf(der: Uint8Array): X509Certificate {
  try {
    return new X509Certificate(Buffer.from(der.buffer, der.byteOffset, der.length));
  } catch {
    throw unparsable(0);
  }
}

/** The SPKI bytes as found in a parsed leaf (null: our reader could not read it). */
const rawSpki = new WeakMap<X509Certificate, Buffer | null>();

/**
 * Whether the leaf certifies `spki` (DER SubjectPublicKeyInfo, as the device exports it).
 * `leafDer` must be the bytes `leaf` was parsed from.
 */
export function leafCertifies(leaf: X509Certificate, leafDer: Uint8Array, spki: Buffer): boolean {
  // Fast path: the certificate carries the very bytes. Otherwise compare OpenSSL's re-encoding,
  // which also matches another encoding of the same key (e.g. a compressed point).
  let raw = rawSpki.get(leaf);
  if (raw === undefined) {
    try {
      raw = parseCertificate(leafDer).spki;
    } catch {
      raw = null;
    }
    rawSpki.set(leaf, raw);
  }
  if (raw?.equals(spki)) return true;
  try {
    return leaf.publicKey.export({ type: "spki", format: "der" }).equals(spki);
  } catch {
    // a key OpenSSL cannot decode is not this device's key
    return false;
  }
}

/**
 * What a chain check needs of the leaf: the parsed X509Certificate behind it (`leafCheckOf`),
 * its answers computed when asked.
 */
export interface LeafCheck {
  validFrom: Date;
  validTo: Date;
  /** X509Certificate.ca of the leaf */
  ca: boolean;
  /** linkOf(leaf, issuer): issuer names chain and the leaf's signature verifies */
  linkTo(issuer: CaEntry): "ok" | "names" | "signature";
  /** whether the leaf certifies the device key the check is for */
  certifies(): boolean;
}

/** The check of a parsed leaf for the device key `spki`; answers are computed when asked. */
export function leafCheckOf(leaf: X509Certificate, leafDer: Uint8Array, spki: Buffer): LeafCheck {
  return {
    validFrom: new Date(leaf.validFrom),
    validTo: new Date(leaf.validTo),
    ca: leaf.ca,
    linkTo: (issuer) => linkOf(leaf, issuer),
    certifies: () => leafCertifies(leaf, leafDer, spki),
  };
}

/**
 * Validate `chain` for a device whose key is `leafSpki`. Throws StationError BAD_SIGNATURE
 * for a signature that does not verify, BAD_CERTIFICATE for anything else wrong with it.
 * `leaf` is chain[0] already parsed, if the caller has it.
 */
export function verifyChain(
  chain: Uint8Array[],
  anchors: Buffer[],
  leafSpki: Buffer,
  now: Date,
  cache: CaCache = sharedCaCache,
  leaf?: X509Certificate,
): void {
  const leafCert = leaf ?? parseLeaf(chain[0]!);
  verifyChainWith(chain, anchors, now, cache, leafCheckOf(leafCert, chain[0]!, leafSpki));
}

/** verifyChain with the leaf behind a LeafCheck (the leaf itself parsed already). */
export function verifyChainWith(
  chain: Uint8Array[],
  anchors: Buffer[],
  now: Date,
  cache: CaCache,
  leafCert: LeafCheck,
): void {
  const n = chain.length;
  // parse everything first, in order, so the first unparsable certificate is the one named
  const cas: CaEntry[] = [];
  for (let i = 1; i < n; i++) {
    const e = cache.entry(chain[i]!);
    if (!e) throw unparsable(i);
    cas.push(e);
  }
  const rootEntry = n > 1 ? cas[n - 2]! : cache.entry(chain[0]!);
  if (!rootEntry) throw unparsable(0);
  if (!anchors.some((a) => a.equals(rootEntry.hash)))
    throw new StationError(
      Status.BAD_CERTIFICATE,
      "chain root: got an untrusted root, want a fused trust anchor",
    );
  // the root's self-signature (its issuer names need not chain: only its key is checked)
  if (!cache.selfSigned(rootEntry))
    throw new StationError(Status.BAD_SIGNATURE, `chain[${n - 1}]: root self-signature does not verify`);
  // issuers first: what each CA may sign (X509Certificate.checkIssued would only say "no")
  for (let i = 1; i < n; i++) {
    const e = cas[i - 1]!;
    if (e.readError !== undefined) throw e.readError;
    // basicConstraints itself: X509Certificate.ca also folds in keyUsage
    if (!e.basicCa)
      throw new StationError(Status.BAD_CERTIFICATE, `chain[${i}]: got an end entity, want a CA`);
    if (!e.certSign)
      throw new StationError(
        Status.BAD_CERTIFICATE,
        `chain[${i}].keyUsage: got a CA without keyCertSign, want keyCertSign`,
      );
    // RFC 5280 4.2.1.9: pathLen bounds the CA certificates that may follow below this one,
    // self-issued ones (a root rollover's cross certificate) not counted (6.1.4 (l))
    const below = casBelow(cas, 0, i - 1);
    if (e.pathLen !== undefined && below > e.pathLen)
      throw new StationError(
        Status.BAD_CERTIFICATE,
        `chain[${i}].pathLen: got ${below} CA(s) below a CA with pathLen ${e.pathLen}, want at most ${e.pathLen}`,
      );
  }
  for (let i = 0; i < n; i++) {
    const from = i === 0 ? leafCert.validFrom : cas[i - 1]!.validFrom;
    const to = i === 0 ? leafCert.validTo : cas[i - 1]!.validTo;
    if (!(from <= now && now <= to))
      throw new StationError(
        Status.BAD_CERTIFICATE,
        `chain[${i}].validity: got ${from.toISOString()}..${to.toISOString()}, want it to include ${now.toISOString()}`,
      );
    if (i === 0 && leafCert.ca)
      throw new StationError(Status.BAD_CERTIFICATE, "chain[0]: got a CA, want an end entity");
    if (i + 1 < n) {
      const issuer = cas[i]!;
      // the leaf is checked on every call; links between CA certificates are memoized
      const r = i === 0 ? leafCert.linkTo(issuer) : cache.link(cas[i - 1]!, issuer);
      if (r === "names")
        throw new StationError(
          Status.BAD_CERTIFICATE,
          `chain[${i}]: got issuer names that do not chain to chain[${i + 1}]`,
        );
      if (r === "signature")
        throw new StationError(
          Status.BAD_SIGNATURE,
          `chain[${i}]: signature does not verify under chain[${i + 1}]`,
        );
    }
  }
  if (!leafCert.certifies())
    throw new StationError(
      Status.BAD_CERTIFICATE,
      "chain[0].subjectPublicKey: got another key, want this device's key",
    );
}

/**
 * Validate the chain of a command's signer (devices/firmware/command.ts): every certificate a CA
 * (the signer too: a device's own end-entity certificate chains to the same anchor and must not
 * command other devices), valid at `now`, each issued and signed by the next, allowed to sign
 * certificates within its path length, ending in a root whose hash is fused in `anchors`. Every
 * check but the anchor match and the validity window is memoized in `cache`, so a signer seen
 * before costs hash lookups. Returns the signer's entry. Throws `refuse(message)`.
 */
export function verifySignerChain(
  signer: readonly Uint8Array[],
  anchors: readonly Buffer[],
  now: Date,
  cache: CaCache,
  refuse: (message: string) => Error,
): CaEntry {
  const cas: CaEntry[] = [];
  for (let i = 0; i < signer.length; i++) {
    const e = cache.entry(signer[i]!);
    if (!e) throw refuse(`auth.signer[${i}]: got bytes that do not parse, want a DER certificate`);
    cas.push(e);
  }
  const root = cas[cas.length - 1]!;
  if (!anchors.some((a) => a.equals(root.hash)))
    throw refuse(
      "auth.signer: got a chain to a root this device does not trust, want one ending in its fused trust anchor (the device is owned by another CA)",
    );
  if (!cache.selfSigned(root))
    throw refuse(`auth.signer[${cas.length - 1}]: root self-signature does not verify`);
  for (let i = 0; i < cas.length; i++) {
    const e = cas[i]!;
    if (e.readError !== undefined || !e.basicCa || !e.certSign)
      throw refuse(`auth.signer[${i}]: got a certificate that may not sign certificates, want a CA`);
    // RFC 5280 4.2.1.9: the signer is the path's target, so the CAs at 1 .. i-1 lie between
    // (self-issued ones, a root rollover's cross certificate, not counted: 6.1.4 (l))
    const below = casBelow(cas, 1, i);
    if (e.pathLen !== undefined && below > e.pathLen)
      throw refuse(`auth.signer[${i}].pathLen: got ${below} CA(s) below, want at most ${e.pathLen}`);
    if (!(e.validFrom <= now && now <= e.validTo))
      throw refuse(
        `auth.signer[${i}].validity: got ${e.validFrom.toISOString()}..${e.validTo.toISOString()}, want it to include ${now.toISOString()}`,
      );
    if (i + 1 < cas.length && cache.link(e, cas[i + 1]!) !== "ok")
      throw refuse(`auth.signer[${i}]: got a certificate not issued and signed by auth.signer[${i + 1}]`);
  }
  return cas[0]!;
}
