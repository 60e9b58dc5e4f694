/**
 * An emulated OEM hardware security module for key injection in an untrusted factory (the
 * role of the SSP HSM in ST's flow, AN5510): it holds the OEM secrets and a production
 * counter, checks each chip certificate against the silicon vendor CA, and only then releases
 * one license + encrypted payload for that chip (license.ts). The counter is decremented and
 * made durable (write temp file, fsync, rename, fsync directory) before a license leaves the
 * HSM, so a contract manufacturer cannot produce more chips than licensed, even by crashing
 * the station mid-way. The state file stands in for the HSM's protected storage; it holds the
 * OEM secrets in clear and is created with mode 0600.
 */
import { createECDH, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { writeFileDurably } from "../../core/durable";
import { FleetError, invalid } from "../../core/errors";
import { decode, encode, isMap, type Value } from "../../core/station/cbor";
import { P256_SPKI_PREFIX, pointOfSpki } from "./keys";
import { seal } from "./license";

export interface HsmConfig {
  productId: string;
  /** how many licenses this HSM may ever release */
  limit: number;
  /** OEM secrets given to every chip, by name (e.g. a firmware decryption key) */
  secrets: Record<string, Uint8Array>;
}

interface HsmState extends HsmConfig {
  issued: number;
}

/** Issues a certificate chain (leaf first) for a per-chip identity key made in the HSM. */
export type IdentityIssuer = (chipId: string, spki: Buffer) => Uint8Array[];

export interface LicenseResult {
  license: Buffer;
  payload: Buffer;
  /** the counter value bound into this license (1 for the first license) */
  counter: number;
  /** SubjectPublicKeyInfo of the per-chip identity key, if one was made */
  identitySpki?: Buffer;
}

/** Plaintext of a payload, what the chip burns: see decodeSecrets. */
export interface Secrets {
  secrets: Record<string, Buffer>;
  /** P-256 private scalar of an injected identity key */
  identityKey?: Buffer;
  /** its certificate chain, leaf first */
  chain?: Buffer[];
}

export function encodeSecrets(s: Secrets): Buffer {
  return encode({ secrets: s.secrets, identityKey: s.identityKey, chain: s.chain });
}

export function decodeSecrets(b: Uint8Array): Secrets {
  const v = decode(b);
  if (!isMap(v) || !isMap(v.secrets))
    throw invalid("payload", "a malformed secret set", "a map with secrets");
  const secrets: Record<string, Buffer> = {};
  for (const [k, x] of Object.entries(v.secrets)) {
    if (!(x instanceof Uint8Array)) throw invalid(`payload.secrets.${k}`, typeof x, "bytes");
    secrets[k] = Buffer.from(x);
  }
  const identityKey = v.identityKey instanceof Uint8Array ? Buffer.from(v.identityKey) : undefined;
  if (identityKey && identityKey.length !== 32) throw invalid("payload.identityKey", identityKey, "32 bytes");
  let chain: Buffer[] | undefined;
  if (Array.isArray(v.chain)) {
    chain = v.chain.map((c: Value, i) => {
      if (!(c instanceof Uint8Array)) throw invalid(`payload.chain[${i}]`, typeof c, "bytes");
      return Buffer.from(c);
    });
  }
  return { secrets, identityKey, chain };
}

export class Hsm {
  private constructor(
    private readonly path: string,
    private state: HsmState,
    private readonly vendorCa: X509Certificate,
  ) {}

  /** Make a new HSM state file (refuses to overwrite one). */
  static create(path: string, config: HsmConfig, vendorCaDer: Uint8Array): Hsm {
    if (!/^[\x21-\x7e]{1,64}$/.test(config.productId))
      throw invalid("productId", config.productId, "1..64 printable chars");
    if (!Number.isInteger(config.limit) || config.limit < 0 || config.limit > 0xfffffffe)
      throw invalid("limit", config.limit, "an integer in 0..2^32-2");
    try {
      writeFileSync(path, "", { flag: "wx", mode: 0o600 });
    } catch {
      throw new FleetError("CONFLICT", `hsm: got an existing state file ${path}, want a new one`);
    }
    const hsm = new Hsm(path, { ...config, issued: 0 }, new X509Certificate(Buffer.from(vendorCaDer)));
    hsm.persist(hsm.state);
    return hsm;
  }

  static open(path: string, vendorCaDer: Uint8Array): Hsm {
    const raw = JSON.parse(readFileSync(path, "utf8")) as {
      productId: string;
      limit: number;
      issued: number;
      secrets: Record<string, string>;
    };
    const secrets: Record<string, Uint8Array> = {};
    for (const [k, v] of Object.entries(raw.secrets)) secrets[k] = Buffer.from(v, "base64");
    return new Hsm(
      path,
      { productId: raw.productId, limit: raw.limit, issued: raw.issued, secrets },
      new X509Certificate(Buffer.from(vendorCaDer)),
    );
  }

  get productId(): string {
    return this.state.productId;
  }
  get remaining(): number {
    return this.state.limit - this.state.issued;
  }
  get issued(): number {
    return this.state.issued;
  }

  private persist(s: HsmState): void {
    const secrets: Record<string, string> = {};
    for (const [k, v] of Object.entries(s.secrets)) secrets[k] = Buffer.from(v).toString("base64");
    writeFileDurably(
      this.path,
      JSON.stringify({ productId: s.productId, limit: s.limit, issued: s.issued, secrets }),
      { mode: 0o600 }, // it holds the OEM secrets
    );
  }

  /** Check a chip certificate against the vendor CA; returns the chip ID and public point. */
  checkChip(chipCertDer: Uint8Array): { chipId: string; point: Buffer } {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(Buffer.from(chipCertDer));
    } catch {
      throw new FleetError(
        "INTEGRITY",
        "chipCertificate: got bytes that do not parse, want a DER certificate",
      );
    }
    if (!cert.checkIssued(this.vendorCa) || !cert.verify(this.vendorCa.publicKey) || cert.ca)
      throw new FleetError(
        "INTEGRITY",
        "chipCertificate: got a certificate the silicon vendor did not issue, want one it did",
      );
    const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
    if (!cn) throw new FleetError("INTEGRITY", "chipCertificate.subject: got no CN, want the chip ID");
    return { chipId: cn, point: pointOfSpki(cert.publicKey.export({ type: "spki", format: "der" })) };
  }

  /**
   * One license for the chip of `chipCertDer`. The counter is spent (durably) first; a
   * failure after that costs one license, which is the safe direction. With `issue`, the HSM
   * also makes a per-chip identity key, has its certificate issued, and puts both in the
   * payload: the private key exists only inside the HSM and encrypted to this one chip.
   */
  license(chipCertDer: Uint8Array, issue?: IdentityIssuer): LicenseResult {
    const { chipId, point } = this.checkChip(chipCertDer);
    if (this.remaining <= 0)
      throw new FleetError(
        "POLICY_VIOLATION",
        `hsm.counter: got 0 licenses left of ${this.state.limit}, want > 0 (over-production refused)`,
      );
    const next = { ...this.state, issued: this.state.issued + 1 };
    this.persist(next);
    this.state = next;
    const counter = next.issued;
    const secrets: Secrets = { secrets: {} };
    for (const [k, v] of Object.entries(this.state.secrets)) secrets.secrets[k] = Buffer.from(v);
    let identitySpki: Buffer | undefined;
    if (issue) {
      const ecdh = createECDH("prime256v1");
      const pub = ecdh.generateKeys();
      identitySpki = Buffer.concat([P256_SPKI_PREFIX, pub]);
      secrets.identityKey = ecdh.getPrivateKey();
      secrets.chain = issue(chipId, identitySpki).map((c) => Buffer.from(c));
    }
    const plain = encodeSecrets(secrets);
    const sealed = seal({ productId: this.state.productId, chipId, counter }, point, plain);
    plain.fill(0);
    secrets.identityKey?.fill(0);
    return { ...sealed, counter, identitySpki };
  }
}
