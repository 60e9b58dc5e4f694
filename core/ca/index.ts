/**
 * CA issuance and validation (RFC 5280 4.2.1.9 basicConstraints/pathLen, 4.2.1.10 name
 * constraints, 4.2.1.3 keyUsage, 6.1 path validation rules we pre-check at declaration
 * time). Authorize (validate the request against the parent), then options (extensions),
 * then sign: the signer never branches on a role name beyond choosing defaults.
 */
import * as crypto from "node:crypto";
import { FleetError, invalid, phrase } from "../errors";
import { encodeTbs, randomSerial, signTbs } from "../x509/cert";
import { buildCrl, type RevokedEntry } from "../x509/crl";
import {
  authorityKeyIdentifier,
  basicConstraints,
  crlDistributionPoints,
  extension,
  KEY_USAGES,
  type KeyUsage,
  keyIdentifier,
  keyUsage,
  type NameConstraints,
  nameConstraints,
  OID,
  subjectKeyIdentifier,
} from "../x509/ext";
import {
  algorithmOf,
  generateKey,
  isKeyAlgorithm,
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  loadPrivateKey,
  privateKeyPem,
  type SigningKey,
  spkiDer,
} from "../x509/keys";
import { encodeSubject, type Subject, subjectErrors, subjectString } from "../x509/names";
import {
  authorityKeyIdOf,
  basicConstraintsOf,
  nameConstraintsOf,
  type ParsedCertificate,
  parseCertificate,
  subjectKeyIdOf,
} from "../x509/parse";
import { pemBlocks, pemOne, toPem } from "../x509/pem";

export const CA_ROLES = ["root", "intermediate", "issuing"] as const;
export type CaRole = (typeof CA_ROLES)[number];

export interface CaRequest {
  name: string;
  role: CaRole;
  algorithm: KeyAlgorithm;
  subject: Subject;
  validityDays: number;
  pathLen?: number;
  keyUsage?: KeyUsage[];
  nameConstraints?: NameConstraints;
  crlDistributionPoint?: string;
  /** how often this CA publishes its CRL (its nextUpdate is this far ahead); default 168 h */
  crlIntervalHours?: number;
}

/**
 * What a child needs from its parent: its certificate chain and its key, either opened from a
 * key custody (`key`) or, for the Pulumi-secret custody, as PEM (`keyPem`).
 */
export interface CaMaterial {
  certificatePem: string;
  chainPem: string;
  keyPem?: string;
  key?: SigningKey;
}

/** The signing key of `m`: the opened custody key, else the PEM (Pulumi-secret custody). */
export function signingKeyOf(m: { key?: SigningKey; keyPem?: string }, field: string): SigningKey {
  return m.key ?? loadPrivateKey(m.keyPem, field);
}

/** A CA key made by a custody before its certificate: the certificate is issued for it. */
export interface SubjectKey {
  spki: Buffer;
  key: SigningKey;
}

/** A CA certificate as issued, its key kept by a custody (only a reference leaves it). */
export interface IssuedCaCertificate {
  certificatePem: string;
  chainPem: string;
  algorithm: KeyAlgorithm;
  subjectDn: string;
  serialNumber: string;
  fingerprintSha256: string;
  subjectKeyId: string;
  authorityKeyId: string;
  notBefore: string;
  notAfter: string;
  pathLen: number | null;
}

/** A CA whose key was made in memory (the Pulumi-secret custody, bring-your-own PEMs, tests). */
export interface IssuedCa extends IssuedCaCertificate {
  keyPem: string;
}

export interface Deps {
  now: () => Date;
  rng: (n: number) => Uint8Array;
}
export const defaultDeps = (): Deps => ({ now: () => new Date(), rng: crypto.randomBytes });

export const DEFAULT_CA_KEY_USAGE: KeyUsage[] = ["digitalSignature", "keyCertSign", "cRLSign"];
const DAY_MS = 86_400_000;
const MAX_VALIDITY_DAYS = 36_500;

export interface Failure {
  field: string;
  message: string;
}

/** The facts about a parent CA that a child's declaration is checked against. */
export interface ParentFacts {
  name: string;
  notAfter: Date;
  pathLen?: number;
  ca: boolean;
  nameConstraints?: NameConstraints;
}

export function parentFacts(
  name: string,
  certificatePem: string,
  field = "issuer.certificatePem",
): ParentFacts {
  return readParent(name, certificatePem, field).facts;
}

/** Parse the parent's certificate once: the facts to check against, and the parsed certificate. */
function readParent(
  name: string,
  certificatePem: string,
  field: string,
): { facts: ParentFacts; cert: ParsedCertificate } {
  const der = pemOne(certificatePem, "CERTIFICATE", field);
  const c = parseCertificate(der, field);
  const x = new crypto.X509Certificate(der);
  const bc = basicConstraintsOf(c);
  const nc = nameConstraintsOf(c);
  return {
    facts: {
      name,
      notAfter: new Date(x.validTo),
      ca: bc?.ca ?? false,
      pathLen: bc?.pathLen,
      nameConstraints: nc,
    },
    cert: c,
  };
}

function within(name: string, base: string): boolean {
  const n = name.toLowerCase();
  const b = base.toLowerCase();
  if (b.startsWith(".")) return n.endsWith(b);
  return n === b || n.endsWith(`.${b}`);
}

const DNS_NAME = /^(?=.{1,253}$)(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i;

/** Validate a CA declaration on its own and, when known, against its parent. */
export function validateCaRequest(
  req: unknown,
  parent?: ParentFacts,
  deps: Pick<Deps, "now"> = defaultDeps(),
): Failure[] {
  const f: Failure[] = [];
  const add = (field: string, got: unknown, want: string) =>
    f.push({ field, message: invalid(field, got, want).message });
  if (typeof req !== "object" || req === null)
    return [{ field: "ca", message: invalid("ca", req, "an object").message }];
  const r = req as Partial<CaRequest>;
  if (typeof r.name !== "string" || !/^[a-z0-9][a-z0-9-]{0,62}$/.test(r.name)) {
    add(
      "name",
      r.name,
      "a lowercase name of letters, digits and dashes (it becomes part of the resource name)",
    );
  }
  if (!CA_ROLES.includes(r.role as CaRole)) add("role", r.role, `one of ${CA_ROLES.join(", ")}`);
  if (!isKeyAlgorithm(r.algorithm)) add("algorithm", r.algorithm, `one of ${KEY_ALGORITHMS.join(", ")}`);
  for (const m of subjectErrors(r.subject, "subject")) f.push({ field: m.split(":")[0]!, message: m });
  if (!Number.isInteger(r.validityDays) || r.validityDays! < 1 || r.validityDays! > MAX_VALIDITY_DAYS) {
    add("validityDays", r.validityDays, `an integer from 1 to ${MAX_VALIDITY_DAYS}`);
  }
  if (r.pathLen !== undefined && (!Number.isInteger(r.pathLen) || r.pathLen < 0 || r.pathLen > 16)) {
    add("pathLen", r.pathLen, "an integer from 0 to 16, or absent for no limit");
  }
  if (r.keyUsage !== undefined) {
    if (!Array.isArray(r.keyUsage)) add("keyUsage", r.keyUsage, `a list of ${KEY_USAGES.join(", ")}`);
    else {
      r.keyUsage.forEach((u, i) => {
        if (!KEY_USAGES.includes(u)) add(`keyUsage[${i}]`, u, `one of ${KEY_USAGES.join(", ")}`);
      });
      if (!r.keyUsage.includes("keyCertSign"))
        add("keyUsage", r.keyUsage.join(","), "a list that includes keyCertSign (it is a CA)");
    }
  }
  const nc = r.nameConstraints;
  if (nc !== undefined) {
    const keys = [
      "permittedDNS",
      "excludedDNS",
      "permittedEmail",
      "excludedEmail",
      "permittedURI",
      "excludedURI",
    ];
    for (const [k, v] of Object.entries(nc)) {
      if (!keys.includes(k)) add(`nameConstraints.${k}`, k, `one of ${keys.join(", ")}`);
      else if (!Array.isArray(v) || v.some((s) => typeof s !== "string" || s.length === 0)) {
        add(`nameConstraints.${k}`, v, "a list of non-empty strings");
      } else if (k.endsWith("DNS")) {
        v.forEach((d: string, i: number) => {
          if (!DNS_NAME.test(d.replace(/^\./, "")))
            add(`nameConstraints.${k}[${i}]`, d, "a DNS name like devices.example.com");
        });
      }
    }
  }
  if (r.crlDistributionPoint !== undefined && !/^https?:\/\/[^\s]+$/.test(String(r.crlDistributionPoint))) {
    add("crlDistributionPoint", r.crlDistributionPoint, "an http(s) URL");
  }
  if (
    r.crlIntervalHours !== undefined &&
    (!Number.isInteger(r.crlIntervalHours) || r.crlIntervalHours < 1 || r.crlIntervalHours > 8760)
  ) {
    add("crlIntervalHours", r.crlIntervalHours, "a whole number of hours from 1 to 8760");
  }
  if (r.role === "root" && parent) add("role", phrase("root with an issuer"), "no issuer for a root CA");
  if (r.role !== undefined && r.role !== "root" && !parent && f.length === 0) {
    // parent unknown (e.g. preview of a new parent): checked again at create
  }
  if (parent) {
    if (!parent.ca)
      add(
        "issuer",
        phrase(`'${parent.name}' whose certificate is not a CA`),
        "an issuer with basicConstraints CA:TRUE",
      );
    if (Number.isInteger(r.validityDays)) {
      const end = new Date(deps.now().getTime() + r.validityDays! * DAY_MS);
      // created after its parent, a child declared with the same lifetime ends a little later:
      // tolerate a day and clamp notAfter to the parent's at issuance
      if (end.getTime() > parent.notAfter.getTime() + DAY_MS) {
        const left = Math.floor((parent.notAfter.getTime() - deps.now().getTime()) / DAY_MS);
        add(
          "validityDays",
          phrase(`${r.validityDays} (until ${end.toISOString().slice(0, 10)})`),
          `at most ${left} so it ends before its issuer '${parent.name}' (${parent.notAfter.toISOString().slice(0, 10)})`,
        );
      }
    }
    if (parent.pathLen !== undefined) {
      if (parent.pathLen === 0)
        add(
          "issuer",
          phrase(`'${parent.name}' with pathLen 0`),
          "an issuer whose pathLen allows a CA below it",
        );
      else if (r.pathLen !== undefined && r.pathLen > parent.pathLen - 1) {
        add(
          "pathLen",
          r.pathLen,
          `at most ${parent.pathLen - 1} (issuer '${parent.name}' has pathLen ${parent.pathLen})`,
        );
      }
    }
    const pnc = parent.nameConstraints;
    if (pnc && nc) {
      (nc.permittedDNS ?? []).forEach((d, i) => {
        if (pnc.permittedDNS?.length && !pnc.permittedDNS.some((b) => within(d.replace(/^\./, ""), b))) {
          add(
            `nameConstraints.permittedDNS[${i}]`,
            d,
            `a name within issuer '${parent.name}' permitted subtrees [${pnc.permittedDNS.join(", ")}]`,
          );
        }
        const ex = pnc.excludedDNS?.find((b) => within(d.replace(/^\./, ""), b));
        if (ex)
          add(
            `nameConstraints.permittedDNS[${i}]`,
            d,
            `a name outside issuer '${parent.name}' excluded subtree ${ex}`,
          );
      });
    }
    const cn = r.subject?.commonName;
    if (pnc && typeof cn === "string" && DNS_NAME.test(cn)) {
      if (pnc.permittedDNS?.length && !pnc.permittedDNS.some((b) => within(cn, b))) {
        add(
          "subject.commonName",
          cn,
          `a name within issuer '${parent.name}' permitted subtrees [${pnc.permittedDNS.join(", ")}]`,
        );
      }
      const ex = pnc.excludedDNS?.find((b) => within(cn, b));
      if (ex) add("subject.commonName", cn, `a name outside issuer '${parent.name}' excluded subtree ${ex}`);
    }
  }
  return f;
}

function fail(failures: Failure[]): never {
  throw new FleetError("INVALID_INPUT", failures.map((x) => x.message).join("; "), failures[0]?.field);
}

function describeCert(
  der: Buffer,
  keyPem: string | undefined,
  chainPem: string,
  algorithm: KeyAlgorithm,
  subjectDn: string,
): IssuedCaCertificate & { keyPem?: string } {
  const c = parseCertificate(der);
  const x = new crypto.X509Certificate(der);
  const bc = basicConstraintsOf(c);
  return {
    certificatePem: toPem("CERTIFICATE", der),
    chainPem,
    ...(keyPem !== undefined ? { keyPem } : {}),
    algorithm,
    subjectDn,
    serialNumber: c.serialBytes.toString("hex"),
    fingerprintSha256: crypto.createHash("sha256").update(der).digest("hex"),
    subjectKeyId: subjectKeyIdOf(c)?.toString("hex") ?? "",
    authorityKeyId: authorityKeyIdOf(c)?.toString("hex") ?? "",
    notBefore: new Date(x.validFrom).toISOString(),
    notAfter: new Date(x.validTo).toISOString(),
    pathLen: bc?.pathLen ?? null,
  };
}

/** A CA certificate's notBefore: `now` to the second, backdated one minute to tolerate small clock skew on devices that verify the chain. */
const backdated = (now: Date): Date => new Date(Math.floor(now.getTime() / 1000) * 1000 - 60_000);

/** Create a CA: self-signed when `parent` is absent (role root), else signed by the parent. */
export function issueCa(req: CaRequest, parent?: CaMaterial & { name: string }, deps?: Deps): IssuedCa;
export function issueCa(
  req: CaRequest,
  parent: (CaMaterial & { name: string }) | undefined,
  deps: Deps | undefined,
  subjectKey: SubjectKey,
): IssuedCaCertificate;
export function issueCa(
  req: CaRequest,
  parent?: CaMaterial & { name: string },
  deps: Deps = defaultDeps(),
  subjectKey?: SubjectKey,
): IssuedCaCertificate {
  const parsedParent = parent
    ? readParent(parent.name, parent.certificatePem, "issuer.certificatePem")
    : undefined;
  const facts = parsedParent?.facts;
  const failures = validateCaRequest(req, facts, deps);
  if (!parent && req.role !== "root")
    failures.push({
      field: "issuer",
      message: invalid("issuer", phrase("none"), `an issuer CA for role ${req.role}`).message,
    });
  if (failures.length) fail(failures);

  // a custody made the key first (inside an HSM, sealed in the key store); else make one here
  const pair = subjectKey ? undefined : generateKey(req.algorithm);
  const spki = subjectKey?.spki ?? spkiDer(pair!.publicKey);
  const ownKey: SigningKey = subjectKey?.key ?? pair!.privateKey;
  if (algorithmOf(ownKey, "custody") !== req.algorithm)
    throw invalid(
      "algorithm",
      req.algorithm,
      `the algorithm of the custody's key (${algorithmOf(ownKey, "custody")})`,
    );
  const kid = keyIdentifier(spki);
  const subject = encodeSubject(req.subject);
  const now = deps.now();
  const notBefore = backdated(now);
  let notAfter = new Date(Math.floor(now.getTime() / 1000) * 1000 + req.validityDays * DAY_MS);
  if (facts && notAfter > facts.notAfter) notAfter = facts.notAfter;

  let issuerName = subject;
  let issuerKid = kid;
  let signerAlg = req.algorithm;
  let signerKey = ownKey;
  let pathLen = req.pathLen;
  if (parent && facts && parsedParent) {
    const pc = parsedParent.cert;
    issuerName = pc.subject;
    issuerKid = subjectKeyIdOf(pc) ?? keyIdentifier(pc.spki);
    signerKey = signingKeyOf(parent, "issuer.keyPem");
    signerAlg = algorithmOf(signerKey, "issuer.keyPem");
    if (pathLen === undefined && facts.pathLen !== undefined) pathLen = facts.pathLen - 1;
  }
  if (pathLen === undefined && req.role === "issuing") pathLen = 0;

  const extensions = [
    basicConstraints(true, pathLen),
    keyUsage(req.keyUsage ?? DEFAULT_CA_KEY_USAGE),
    subjectKeyIdentifier(kid),
    authorityKeyIdentifier(issuerKid),
  ];
  if (req.nameConstraints && Object.values(req.nameConstraints).some((v) => v?.length)) {
    extensions.push(nameConstraints(req.nameConstraints));
  }
  if (req.crlDistributionPoint && parent) extensions.push(crlDistributionPoints([req.crlDistributionPoint]));

  const tbs = encodeTbs(
    { serial: randomSerial(deps.rng), issuer: issuerName, subject, notBefore, notAfter, spki, extensions },
    signerAlg,
  );
  const der = signTbs(tbs, signerAlg, signerKey);
  const certPem = toPem("CERTIFICATE", der);
  // chain: this certificate, then the parent's chain up to (and including) the root
  const chainPem = parent ? certPem + parent.chainPem : certPem;
  return describeCert(
    der,
    pair ? privateKeyPem(pair.privateKey) : undefined,
    chainPem,
    req.algorithm,
    subjectString(req.subject),
  );
}

/**
 * The cross certificate of a root rollover (RFC 4210 5.3.13 "newWithOld"): the new root's subject
 * and key, issued and signed by the old root. Every extension of the new root is kept (its
 * basicConstraints pathLen too) but the authority key identifier, which names the old root's
 * key. With the same subject as the old root the certificate is self-issued, so a path
 * validator does not count it against the old root's pathLen (RFC 5280 6.1.4 (l)): a device or
 * relying party that trusts only the old root accepts a chain under the new root through it.
 * Valid from now (less a minute of skew) to the earlier of the two roots' ends.
 */
export function crossCertify(
  newRootPem: string,
  oldRoot: { certificatePem: string; key: SigningKey },
  deps: Deps = defaultDeps(),
): IssuedCaCertificate {
  const nr = parseCertificate(pemOne(newRootPem, "CERTIFICATE", "certificatePem"), "certificatePem");
  const old = readParent("previous root", oldRoot.certificatePem, "crossFrom.certificatePem");
  if (!old.facts.ca)
    throw invalid("crossFrom.certificatePem", phrase("a certificate that is not a CA"), "the old root CA");
  const nx = new crypto.X509Certificate(nr.der);
  const notBefore = backdated(deps.now());
  const ends = [new Date(nx.validTo), old.facts.notAfter];
  const notAfter = new Date(Math.min(...ends.map((d) => d.getTime())));
  const oldKid = subjectKeyIdOf(old.cert) ?? keyIdentifier(old.cert.spki);
  const extensions: Buffer[] = [];
  for (const [id, e] of nr.extensions)
    extensions.push(
      id === OID.authorityKeyIdentifier ? authorityKeyIdentifier(oldKid) : extension(id, e.critical, e.value),
    );
  if (!nr.extensions.has(OID.authorityKeyIdentifier)) extensions.push(authorityKeyIdentifier(oldKid));
  const signerAlg = algorithmOf(oldRoot.key, "crossFrom.key");
  const tbs = encodeTbs(
    {
      serial: randomSerial(deps.rng),
      issuer: old.cert.subject,
      subject: nr.subject,
      notBefore,
      notAfter,
      spki: nr.spki,
      extensions,
    },
    signerAlg,
  );
  const der = signTbs(tbs, signerAlg, oldRoot.key);
  return describeCert(
    der,
    undefined,
    toPem("CERTIFICATE", der) + oldRoot.certificatePem,
    algorithmOf(crypto.createPublicKey({ key: nr.spki, format: "der", type: "spki" }), "certificatePem"),
    nx.subject.split("\n").join(", "),
  );
}

/** Bring your own root: check the PEMs and describe them as if we had issued them. */
export function importCa(_name: string, certificatePem: unknown, keyPem: unknown): IssuedCa {
  const blocks = pemBlocks(certificatePem, "CERTIFICATE", "existing.certificatePem");
  const der = blocks[0]!;
  const c = parseCertificate(der, "existing.certificatePem");
  const x = new crypto.X509Certificate(der);
  const key = loadPrivateKey(keyPem, "existing.privateKeyPem");
  const f: Failure[] = [];
  if (!x.checkPrivateKey(key))
    f.push({
      field: "existing.privateKeyPem",
      message: invalid(
        "existing.privateKeyPem",
        phrase("a key that does not match the certificate"),
        "the private key of existing.certificatePem",
      ).message,
    });
  const bc = basicConstraintsOf(c);
  if (!bc?.ca)
    f.push({
      field: "existing.certificatePem",
      message: invalid(
        "existing.certificatePem",
        phrase("a certificate without basicConstraints CA:TRUE"),
        "a CA certificate",
      ).message,
    });
  if (new Date(x.validTo) <= new Date())
    f.push({
      field: "existing.certificatePem",
      message: invalid(
        "existing.certificatePem",
        phrase(`a certificate that expired ${x.validTo}`),
        "a certificate still valid",
      ).message,
    });
  if (f.length) fail(f);
  const algorithm = algorithmOf(key, "existing.privateKeyPem");
  const pem = toPem("CERTIFICATE", der);
  // a BYO root may arrive with its own chain (a BYO intermediate): keep what was given
  const chainPem = blocks.map((b) => toPem("CERTIFICATE", b)).join("");
  const subjectDn = x.subject.split("\n").join(", ");
  const described = describeCert(der, privateKeyPem(key), chainPem, algorithm, subjectDn);
  return { ...described, keyPem: privateKeyPem(key), certificatePem: pem } as IssuedCa;
}

export const DEFAULT_CRL_INTERVAL_HOURS = 168;

export interface SignedCrl {
  crlPem: string;
  crlNumber: number;
  thisUpdate: string;
  nextUpdate: string;
}

/**
 * Sign the CRL of `ca` (the certificates it issued that are revoked), valid for
 * `intervalHours`. cRLNumber must only grow (RFC 5280 5.2.3): pass the previous one.
 */
export function signCrl(
  ca: Pick<CaMaterial, "certificatePem" | "keyPem" | "key">,
  opts: { previousNumber?: number; intervalHours?: number; revoked?: RevokedEntry[] },
  deps: Pick<Deps, "now"> = defaultDeps(),
): SignedCrl {
  const der = pemOne(ca.certificatePem, "CERTIFICATE", "ca.certificatePem");
  const c = parseCertificate(der, "ca.certificatePem");
  const key = signingKeyOf(ca, "ca.keyPem");
  const hours = opts.intervalHours ?? DEFAULT_CRL_INTERVAL_HOURS;
  const now = new Date(Math.floor(deps.now().getTime() / 1000) * 1000);
  const thisUpdate = new Date(now.getTime() - 60_000);
  const nextUpdate = new Date(now.getTime() + hours * 3_600_000);
  const crlNumber = (opts.previousNumber ?? 0) + 1;
  const crl = buildCrl({
    issuerName: c.subject,
    issuerKeyId: subjectKeyIdOf(c) ?? keyIdentifier(c.spki),
    signer: algorithmOf(key, "ca.keyPem"),
    key,
    thisUpdate,
    nextUpdate,
    crlNumber,
    revoked: opts.revoked,
  });
  return {
    crlPem: toPem("X509 CRL", crl),
    crlNumber,
    thisUpdate: thisUpdate.toISOString(),
    nextUpdate: nextUpdate.toISOString(),
  };
}
