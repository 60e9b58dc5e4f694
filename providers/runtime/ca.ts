/**
 * The CA dynamic provider's implementation (Pulumi CRUD -> core/ca). Loaded lazily inside
 * the provider process by providers/runtime/index.js; never serialized into state.
 * Key material is returned only in `keyPem`, which the resource marks as a secret output.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  type CaRequest,
  crossCertify,
  DEFAULT_CRL_INTERVAL_HOURS,
  type IssuedCaCertificate,
  importCa,
  issueCa,
  type ParentFacts,
  parentFacts,
  validateCaRequest,
} from "../../core/ca";
import { canonicalJson } from "../../core/canonical";
import {
  type CustodySpec,
  createCaKey,
  DEFAULT_KEY_STORE,
  type KeyRef,
  openCaKey,
  validateCustody,
} from "../../core/custody";
import { EmbeddedKeyStore } from "../../core/custody/embedded";
import {
  type CrlEntry,
  caCrlCurrent,
  DEFAULT_CRL_DIR,
  digestOf,
  type PublishedCrl,
  publishCaCrl,
  subordinateSource,
} from "../../core/enroll/crl";
import { FleetError } from "../../core/errors";
import { REVOCATION_REASONS, type RevocationReason } from "../../core/x509/crl";
import {
  algorithmOf,
  loadPrivateKey,
  privateKeyPem,
  publicKeyOf,
  type SigningKey,
} from "../../core/x509/keys";
import { pemBlocks } from "../../core/x509/pem";

/** Pulumi's marker for a value not known during preview (sdk/nodejs/runtime/rpc.ts). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

export interface CaInputs extends CaRequest {
  description?: string;
  /** where this CA's key lives (default: the embedded key store); see core/custody */
  custody?: CustodySpec;
  /** the issuer's key is opened from its custody by reference; keyPem only for the pulumi-secret custody */
  issuer?: { name: string; certificatePem: string; chainPem: string; keyRef?: KeyRef; keyPem?: string };
  /**
   * Digest of the issuer's declaration (and its issuers'), computed by the component. During a
   * preview an issuer that is merely updated has unknown outputs; this tells "updated" (keep
   * this CA) from "replaced" (replace it too) without its certificate.
   */
  issuerDeclaration?: string;
  existing?: { certificatePem: string; privateKeyPem: string };
  /**
   * The CRL folder this CA publishes its CRL in (core/enroll/crl: one CRL, one cRLNumber sequence
   * shared with the batches under it); default `.fleetguard/crl` next to the program
   */
  crlDir?: string;
  /**
   * The distribution-point URLs that name this CA's CRL (those in the certificates it issues:
   * its child CAs' crlDistributionPoint): it is published under their last path segment too
   */
  crlUrls?: string[];
  /** an issuing CA's generation (CaHierarchy rollover): a successor is another CA, same subject */
  generation?: number;
  /**
   * This CA declared revoked (CaHierarchy `revoked`, a subordinate CA only): its certificate goes
   * on its issuer's CRL with this RFC 5280 reason, for good (a revoked CA is never reinstated)
   */
  revocation?: { reason: RevocationReason; at?: string };
  /** CA-level revocations: certificates this CA issued (subordinate CAs) that are revoked */
  revoked?: CrlEntry[];
  /**
   * A predecessor kept by a rollover (CaHierarchy `generation`): the CA is what its state holds.
   * Its declaration no longer governs its key or certificate (it is never replaced, whatever its
   * issuer or fields now say), and it is never created: a predecessor that is not in the state
   * means a generation was raised by more than one, or declared above 1 on a new stack.
   */
  retained?: boolean;
  /**
   * A root's successor in a root rollover: the old root, whose key cross-signs the new root
   * (outputs `crossCertificatePem`), so that what trusts only the old root accepts the new chain
   */
  crossFrom?: { name: string; certificatePem: string; keyRef?: KeyRef; keyPem?: string };
}

/** True if `v` is, or holds, a value Pulumi does not know yet (a preview of a dependent resource). */
export const isUnknown = (v: unknown): boolean =>
  v === UNKNOWN || (typeof v === "object" && v !== null && Object.values(v).some(isUnknown));

/** Inputs that, when changed, mean a new key and certificate: the CA is replaced. */
export const REPLACE_ON = [
  "name",
  "role",
  "algorithm",
  "subject",
  "validityDays",
  "pathLen",
  "keyUsage",
  "nameConstraints",
  "crlDistributionPoint",
] as const;

/** Outputs that an in-place update (description only) leaves untouched. */
const STABLE_OUTPUTS = [
  "kind",
  "declared",
  ...REPLACE_ON,
  "certificatePem",
  "chainPem",
  "keyPem",
  "keyRef",
  "fingerprintSha256",
  "subjectKeyId",
  "authorityKeyId",
  "serialNumber",
  "notBefore",
  "notAfter",
  "subjectDn",
  "issuerName",
  "issuerFingerprint",
  "issuerDeclaration",
  "existingFingerprint",
  "crossCertificatePem",
];
// crlPem, crlNumber, crlNextUpdate, crlDir and crlPath change on an update that re-signs the CRL

/** SHA-256 of the first certificate in `pem`, or "" when there is none (an unknown, a bad PEM). */
const fingerprint = (pem: string): string => {
  try {
    return crypto
      .createHash("sha256")
      .update(pemBlocks(pem, "CERTIFICATE", "certificatePem")[0]!)
      .digest("hex");
  } catch {
    return "";
  }
};

export function check(olds: Record<string, unknown>, news: CaInputs) {
  const failures: { property: string; reason: string }[] = [];
  const inputs = { ...news };
  const at = (property: string, f: () => void) => {
    try {
      f();
    } catch (err) {
      if (!(err instanceof FleetError)) throw err;
      failures.push({ property: err.field?.split(/[.[]/)[0] ?? property, reason: err.message });
    }
  };
  if (!isUnknown(inputs.custody)) at("custody", () => validateCustody(inputs.custody));
  if (inputs.retained && Object.keys(olds ?? {}).length === 0)
    failures.push({
      property: "generation",
      reason: `generation: got CA '${inputs.name}' generation ${inputs.generation ?? 1} kept as a predecessor, but it is not in this stack's state; want a generation raised by one on a deployed stack (a new stack starts at generation 1, and a rollover keeps only the CA it replaces)`,
    });
  if (inputs.revoked !== undefined && !isUnknown(inputs.revoked))
    at("revoked", () => {
      if (!Array.isArray(inputs.revoked))
        throw new FleetError(
          "INVALID_INPUT",
          `revoked: got ${typeof inputs.revoked}, want a list of {serial, revokedAt, reason?}`,
          "revoked",
        );
      inputs.revoked.forEach((e, n) => {
        if (!/^[0-9a-f]+$/i.test(String(e?.serial)) || !Number.isFinite(Date.parse(String(e?.revokedAt))))
          throw new FleetError(
            "INVALID_INPUT",
            `revoked[${n}]: got ${JSON.stringify(e)}, want {serial: hex, revokedAt: ISO date, reason?}`,
            "revoked",
          );
      });
    });
  if (inputs.revocation !== undefined && !isUnknown(inputs.revocation))
    at("revocation", () => {
      const r = inputs.revocation;
      if (!inputs.issuer)
        throw new FleetError(
          "INVALID_INPUT",
          `revoked: got a revocation of root '${inputs.name}', want it only on a subordinate CA (a root is not on any CRL: remove it from every trust store instead)`,
          "revoked",
        );
      if (!r || typeof r.reason !== "string" || !(r.reason in REVOCATION_REASONS))
        throw new FleetError(
          "INVALID_INPUT",
          `revoked.reason: got ${JSON.stringify(r?.reason)}, want an RFC 5280 reason: one of ${Object.keys(REVOCATION_REASONS).join(", ")}`,
          "revoked",
        );
      if (r.at !== undefined && !Number.isFinite(Date.parse(r.at)))
        throw new FleetError(
          "INVALID_INPUT",
          `revoked.at: got ${JSON.stringify(r.at)}, want an ISO 8601 date and time`,
          "revoked",
        );
    });
  if (olds.revocation && !inputs.revocation && !isUnknown(inputs.revocation))
    failures.push({
      property: "revoked",
      reason: `revoked: got none for CA '${inputs.name}', which is revoked, want it kept: a revoked CA is never reinstated (its certificate stays on its issuer's CRL); roll it over (generation) or declare a new CA`,
    });
  if (inputs.existing) {
    if (!isUnknown(inputs.existing))
      at("existing", () =>
        importCa(inputs.name, inputs.existing!.certificatePem, inputs.existing!.privateKeyPem),
      );
    return { inputs, failures };
  }
  let parent: ParentFacts | undefined;
  // a retained CA is not checked against an issuer: its certificate is already what it is
  if (inputs.issuer && !inputs.retained && !isUnknown(inputs.issuer.certificatePem)) {
    try {
      parent = parentFacts(inputs.issuer.name, inputs.issuer.certificatePem);
    } catch (err) {
      if (!(err instanceof FleetError)) throw err;
      failures.push({ property: "issuer.certificatePem", reason: err.message });
    }
  }
  const req = Object.fromEntries(Object.entries(inputs).filter(([k, v]) => !isUnknown(v) || k === "issuer"));
  for (const f of validateCaRequest(req, parent)) {
    failures.push({ property: f.field.split(/[.[]/)[0]!, reason: f.message });
  }
  return { inputs, failures };
}

/** The custody a CA's state says its key is in (states from before key custody: the Pulumi secret). */
const custodyOfState = (olds: Record<string, unknown>): string =>
  (olds.keyRef as KeyRef | undefined)?.custody ?? "pulumi-secret";

/** The declared custody, as compared with the state: kind, and where for a key store or a token. */
const custodyKey = (c: CustodySpec | undefined): string => {
  const v = validateCustody(c);
  return v.kind === "pulumi-secret" ? v.kind : canonicalJson(v);
};

/**
 * A key moves in place (the same key, the certificate stays) between the Pulumi secret and
 * embedded key stores, in any direction. A change to or from an HSM is a new key (keys are made
 * inside a token and never leave it): the CA is replaced.
 */
function custodyChange(olds: Record<string, unknown>, news: CaInputs): "none" | "move" | "replace" {
  if (isUnknown(news.custody) || news.existing) return "none";
  const want = validateCustody(news.custody);
  const ref = olds.keyRef as KeyRef | undefined;
  const was = custodyOfState(olds);
  const declared =
    (olds.declaredCustody as string | undefined) ??
    (was === "pulumi-secret" ? "pulumi-secret" : canonicalJson({ kind: ref?.custody }));
  if (declared === custodyKey(news.custody)) return "none";
  if (was === "pkcs11" || want.kind === "pkcs11") return "replace";
  return "move";
}

export function diff(_id: string, olds: Record<string, unknown>, news: CaInputs) {
  const replaces: string[] = [];
  const declared = (olds.declared ?? {}) as Record<string, unknown>;
  for (const k of REPLACE_ON) {
    if (canonicalJson(declared[k]) !== canonicalJson((news as unknown as Record<string, unknown>)[k]))
      replaces.push(k);
  }
  if (news.issuer) {
    const cert = news.issuer.certificatePem;
    if (typeof cert !== "string" || isUnknown(cert)) {
      const d = news.issuerDeclaration;
      if (typeof d !== "string" || isUnknown(d) || d !== olds.issuerDeclaration) replaces.push("issuer");
    } else if (fingerprint(cert) !== olds.issuerFingerprint) replaces.push("issuer");
  } else if (olds.issuerFingerprint) replaces.push("issuer");
  if (news.existing) {
    if (
      isUnknown(news.existing.certificatePem) ||
      fingerprint(news.existing.certificatePem) !== olds.existingFingerprint
    )
      replaces.push("existing");
  } else if (olds.existingFingerprint) replaces.push("existing");
  const custody = custodyChange(olds, news);
  if (custody === "replace") replaces.push("custody");
  // a predecessor is what its state holds: nothing in today's declaration replaces it
  if (news.retained) replaces.length = 0;
  const descChanged = (olds.description ?? null) !== (news.description ?? null);
  const interval = news.crlIntervalHours ?? DEFAULT_CRL_INTERVAL_HOURS;
  const intervalChanged = !isUnknown(interval) && olds.crlIntervalHours !== interval;
  return {
    changes:
      replaces.length > 0 ||
      descChanged ||
      intervalChanged ||
      custody === "move" ||
      crlDue(olds) ||
      !publicationCurrent(olds, news) ||
      !revocationCurrent(olds, news),
    replaces,
    stables: replaces.length
      ? []
      : custody === "move"
        ? STABLE_OUTPUTS.filter((k) => k !== "keyPem" && k !== "keyRef")
        : STABLE_OUTPUTS,
    deleteBeforeReplace: false,
  };
}

/** The issuer's signing key, opened in this process from its custody. */
function issuerMaterial(issuer: NonNullable<CaInputs["issuer"]>) {
  const ref: KeyRef = issuer.keyRef ?? legacyRef(issuer.keyPem);
  return {
    name: issuer.name,
    certificatePem: issuer.certificatePem,
    chainPem: issuer.chainPem,
    key: openCaKey(ref, { keyPem: issuer.keyPem, field: "issuer.keyRef" }),
  };
}

/** A state from before key custody holds the key as a Pulumi secret: describe it as such. */
function legacyRef(keyPem: unknown): KeyRef {
  const key = loadPrivateKey(keyPem, "issuer.keyPem");
  const spki = crypto.createPublicKey(key).export({ type: "spki", format: "der" });
  return {
    custody: "pulumi-secret",
    location: "",
    id: "",
    algorithm: algorithmOf(key, "issuer.keyPem"),
    publicKeySha256: crypto.createHash("sha256").update(spki).digest("hex"),
  };
}

/** A key id that is unique in a shared store or token: the CA name and a random suffix. */
const newKeyId = (name: string) => `${name}-${crypto.randomBytes(6).toString("hex")}`;

export function create(inputs: CaInputs) {
  let issued: IssuedCaCertificate & { keyPem?: string };
  let keyRef: KeyRef;
  let key: SigningKey;
  if (inputs.existing) {
    // bring-your-own PEMs: the key came through the program, so it stays a Pulumi secret
    const imported = importCa(inputs.name, inputs.existing.certificatePem, inputs.existing.privateKeyPem);
    issued = imported;
    keyRef = legacyRef(imported.keyPem);
    key = loadPrivateKey(imported.keyPem, "existing.privateKeyPem");
  } else {
    const custody = validateCustody(inputs.custody);
    const parent = inputs.issuer ? issuerMaterial(inputs.issuer) : undefined;
    const made = createCaKey(custody, newKeyId(inputs.name), inputs.algorithm);
    issued = issueCa(inputs, parent, undefined, { spki: made.spki, key: made.key });
    if (made.privateKeyPem) issued = { ...issued, keyPem: made.privateKeyPem };
    keyRef = made.ref;
    key = made.key;
  }
  // a root rollover: the old root cross-signs the new root (its key opened here from its custody)
  const cross =
    inputs.crossFrom && inputs.role === "root"
      ? crossCertify(issued.certificatePem, {
          certificatePem: inputs.crossFrom.certificatePem,
          key: issuerMaterial({ ...inputs.crossFrom, chainPem: inputs.crossFrom.certificatePem }).key,
        })
      : undefined;
  // published from creation on: a relying party finds a CRL for every CA at once
  const crl = publish(inputs, {
    certificatePem: issued.certificatePem,
    key,
    fingerprint: issued.fingerprintSha256,
  });
  // the declaration as given, for diff(); effective values (pathLen, algorithm) come from `issued`
  const declared = Object.fromEntries(
    REPLACE_ON.map((k) => [k, (inputs as unknown as Record<string, unknown>)[k] ?? null]),
  );
  const outs = {
    kind: "fleetguard:ca",
    declared,
    declaredCustody: inputs.existing ? "pulumi-secret" : custodyKey(inputs.custody),
    name: inputs.name,
    role: inputs.role,
    subject: inputs.subject ?? null,
    validityDays: inputs.validityDays ?? null,
    keyUsage: inputs.keyUsage ?? null,
    nameConstraints: inputs.nameConstraints ?? null,
    crlDistributionPoint: inputs.crlDistributionPoint ?? null,
    description: inputs.description ?? null,
    issuerName: inputs.issuer?.name ?? null,
    issuerFingerprint: inputs.issuer ? fingerprint(inputs.issuer.certificatePem) : null,
    issuerDeclaration: inputs.issuerDeclaration ?? null,
    existingFingerprint: inputs.existing ? fingerprint(inputs.existing.certificatePem) : null,
    crlIntervalHours: inputs.crlIntervalHours ?? DEFAULT_CRL_INTERVAL_HOURS,
    ...issued,
    // present (null) even without a key: a missing output is "unknown" in every later preview
    keyPem: issued.keyPem ?? null,
    keyRef,
    crlPem: crl.crlPem,
    crlNumber: crl.crlNumber,
    crlNextUpdate: crl.nextUpdate,
    crlDir: inputs.crlDir ?? DEFAULT_CRL_DIR,
    crlPath: crl.path,
    revocation: null as unknown,
    crossCertificatePem: cross?.certificatePem ?? null,
  };
  if (inputs.revocation && inputs.issuer) publishRevocation(outs, inputs);
  return { id: `${inputs.name}-${issued.fingerprintSha256.slice(0, 16)}`, outs };
}

const crlDirOf = (i: CaInputs) => path.resolve(process.cwd(), i.crlDir || DEFAULT_CRL_DIR);

const crlUrlsOf = (i: CaInputs): string[] =>
  (Array.isArray(i.crlUrls) ? i.crlUrls : []).filter((u) => typeof u === "string" && !isUnknown(u));

const revokedOf = (i: CaInputs): CrlEntry[] => (Array.isArray(i.revoked) ? i.revoked : []);

/**
 * Is this CA's published CRL current (core/enroll/crl caCrlCurrent)? During a preview with
 * unknown inputs, assume it is (the update decides).
 */
function publicationCurrent(olds: Record<string, unknown>, news: CaInputs): boolean {
  if (isUnknown(news.crlDir) || isUnknown(news.crlUrls) || isUnknown(news.revoked)) return true;
  const fp = olds.fingerprintSha256;
  if (typeof fp !== "string") return false;
  return caCrlCurrent(crlDirOf(news), fp, {
    source: "ca",
    digest: digestOf(revokedOf(news).map((e) => e.serial)),
    urls: crlUrlsOf(news),
    floor: Number(olds.crlNumber ?? 0),
    intervalHours: news.crlIntervalHours ?? DEFAULT_CRL_INTERVAL_HOURS,
  });
}

/** Publish this CA's CRL in its CRL folder (one sequence with the batches under it). */
function publish(
  i: CaInputs,
  ca: { certificatePem: string; key: SigningKey; fingerprint: string },
  floor = 0,
): PublishedCrl & { crlPem: string } {
  const p = publishCaCrl(crlDirOf(i), ca, {
    source: "ca",
    entries: revokedOf(i),
    urls: crlUrlsOf(i),
    namesField: "crlUrls",
    caName: i.name,
    floor,
    intervalHours: i.crlIntervalHours ?? DEFAULT_CRL_INTERVAL_HOURS,
  });
  return { ...p, crlPem: fs.readFileSync(p.path, "utf8") };
}

/** The entry a revoked subordinate CA puts on its issuer's CRL (its revocation time kept from the first run). */
function revocationEntry(outs: Record<string, unknown>, news: CaInputs, now = new Date()): CrlEntry {
  const was = outs.revocation as { reason: RevocationReason; at: string } | null | undefined;
  const at =
    news.revocation?.at ?? was?.at ?? new Date(Math.floor(now.getTime() / 1000) * 1000).toISOString();
  return { serial: String(outs.serialNumber).toLowerCase(), revokedAt: at, reason: news.revocation!.reason };
}

/**
 * Is this CA, declared revoked, on its issuer's CRL (the source of its own fingerprint, with its
 * serial)? Always true when it is not declared revoked; during a preview with unknowns, assume so.
 */
function revocationCurrent(olds: Record<string, unknown>, news: CaInputs): boolean {
  if (!news.revocation || !news.issuer || isUnknown(news.revocation) || isUnknown(news.issuer)) return true;
  if (typeof olds.fingerprintSha256 !== "string" || typeof olds.serialNumber !== "string") return false;
  const issuerFp = fingerprint(news.issuer.certificatePem);
  if (!issuerFp) return true;
  return caCrlCurrent(crlDirOf(news), issuerFp, {
    source: subordinateSource(olds.fingerprintSha256),
    digest: digestOf([String(olds.serialNumber).toLowerCase()]),
  });
}

/** Put this revoked CA on its issuer's CRL, signed with the issuer's key (opened here, as at issuance). */
function publishRevocation(outs: Record<string, unknown>, news: CaInputs): void {
  const parent = issuerMaterial(news.issuer!);
  const entry = revocationEntry(outs, news);
  publishCaCrl(
    crlDirOf(news),
    {
      certificatePem: news.issuer!.certificatePem,
      key: parent.key,
      fingerprint: fingerprint(news.issuer!.certificatePem),
    },
    { source: subordinateSource(String(outs.fingerprintSha256)), entries: [entry] },
  );
  outs.revocation = { reason: entry.reason, at: entry.revokedAt };
}

/** A CRL is re-signed once half its validity has passed: a nightly `pulumi up` keeps it fresh. */
export function crlDue(olds: Record<string, unknown>, now = new Date()): boolean {
  const next = Date.parse(String(olds.crlNextUpdate));
  const hours = Number(olds.crlIntervalHours ?? DEFAULT_CRL_INTERVAL_HOURS);
  return !Number.isFinite(next) || next - now.getTime() < (hours * 3_600_000) / 2;
}

/** This CA's own signing key, opened from the custody its state names. */
function ownKey(olds: Record<string, unknown>): SigningKey {
  const ref = (olds.keyRef as KeyRef | undefined) ?? legacyRef(olds.keyPem);
  return openCaKey(ref, { keyPem: olds.keyPem as string | undefined, field: "keyRef" });
}

export function update(_id: string, olds: Record<string, unknown>, news: CaInputs) {
  const interval = news.crlIntervalHours ?? DEFAULT_CRL_INTERVAL_HOURS;
  const outs: Record<string, unknown> = { ...olds, description: news.description ?? null };
  if (custodyChange(olds, news) === "move") {
    // the same key moves between the Pulumi secret and a key store: the certificate stays
    const custody = validateCustody(news.custody);
    const key = ownKey(olds) as crypto.KeyObject;
    if (custody.kind === "embedded") {
      const location = custody.store ?? DEFAULT_KEY_STORE;
      const id = newKeyId(String(olds.name));
      const spki = new EmbeddedKeyStore(path.resolve(process.cwd(), location)).seal(id, key);
      outs.keyRef = {
        custody: "embedded",
        location,
        id,
        algorithm: algorithmOf(key, "keyRef"),
        publicKeySha256: crypto.createHash("sha256").update(spki).digest("hex"),
      } satisfies KeyRef;
      outs.keyPem = null;
    } else {
      // the explicit choice of the Pulumi secret: the key goes into the state, encrypted
      outs.keyPem = privateKeyPem(key);
      outs.keyRef = legacyRef(outs.keyPem);
    }
    outs.declaredCustody = custodyKey(news.custody);
  }
  const fp = String(olds.fingerprintSha256);
  let crl: { crlPem: string; crlNumber: number; nextUpdate: string; path: string } | undefined;
  if (olds.crlIntervalHours !== interval || crlDue(olds) || !publicationCurrent(olds, news)) {
    // the first run after an upgrade continues above the CA's old series (olds.crlNumber) and
    // the batch's old one (the sidecar it left): max(both) + 1
    crl = publish(
      news,
      { certificatePem: String(olds.certificatePem), key: ownKey(olds), fingerprint: fp },
      Number(olds.crlNumber ?? 0),
    );
  }
  if (news.revocation && news.issuer && !revocationCurrent(olds, news)) {
    if (news.retained && fingerprint(news.issuer.certificatePem) !== olds.issuerFingerprint)
      throw new FleetError(
        "INVALID_INPUT",
        `revoked: got a revocation of CA '${news.name}' generation ${news.generation ?? 1}, kept by a rollover under an issuer the declaration no longer names; want the revocation on its successor, or the rollover completed first`,
        "revoked",
      );
    publishRevocation(outs, news);
  }
  if (crl)
    Object.assign(outs, {
      crlIntervalHours: interval,
      crlPem: crl.crlPem,
      crlNumber: crl.crlNumber,
      crlNextUpdate: crl.nextUpdate,
      crlDir: news.crlDir ?? DEFAULT_CRL_DIR,
      crlPath: crl.path,
    });
  return { outs };
}

/** Refresh: the CA lives only in state, so check it is intact and report it unchanged. */
export function read(id: string, props: Record<string, unknown>) {
  const pem = props.certificatePem;
  if (typeof pem !== "string" || fingerprint(pem) !== props.fingerprintSha256) {
    throw new FleetError("INTEGRITY", `ca ${id}: certificatePem in state does not match fingerprintSha256`);
  }
  // the key must still open from its custody, and be this certificate's key
  const key = ownKey(props);
  const cert = new crypto.X509Certificate(pemBlocks(pem, "CERTIFICATE", "certificatePem")[0]!);
  if (!cert.publicKey.equals(publicKeyOf(key)))
    throw new FleetError(
      "INTEGRITY",
      `ca ${id}: the key in custody is not the key of its certificate`,
      "keyRef",
    );
  return { id, props };
}
