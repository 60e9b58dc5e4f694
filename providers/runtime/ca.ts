/**
 * The CA dynamic provider's implementation (Pulumi CRUD -> core/ca). Loaded lazily inside
 * the provider process by providers/runtime/index.js; never serialized into state.
 * Key material is returned only in `keyPem`, which the resource marks as a secret output.
 */
import * as crypto from "node:crypto";
import {
  type CaRequest,
  DEFAULT_CRL_INTERVAL_HOURS,
  importCa,
  issueCa,
  type ParentFacts,
  parentFacts,
  signCrl,
  validateCaRequest,
} from "../../core/ca";
import { canonicalJson } from "../../core/canonical";
import { FleetError } from "../../core/errors";
import { pemBlocks } from "../../core/x509/pem";

/** Pulumi's marker for a value not known during preview (sdk/nodejs/runtime/rpc.ts). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

export interface CaInputs extends CaRequest {
  description?: string;
  issuer?: { name: string; certificatePem: string; chainPem: string; keyPem: string };
  /**
   * Digest of the issuer's declaration (and its issuers'), computed by the component. During a
   * preview an issuer that is merely updated has unknown outputs; this tells "updated" (keep
   * this CA) from "replaced" (replace it too) without its certificate.
   */
  issuerDeclaration?: string;
  existing?: { certificatePem: string; privateKeyPem: string };
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
];
// crlPem, crlNumber and crlNextUpdate change on an update that re-signs the CRL

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

export function check(_olds: Record<string, unknown>, news: CaInputs) {
  const failures: { property: string; reason: string }[] = [];
  const inputs = { ...news };
  if (inputs.existing) {
    if (!isUnknown(inputs.existing)) {
      try {
        importCa(inputs.name, inputs.existing.certificatePem, inputs.existing.privateKeyPem);
      } catch (err) {
        if (!(err instanceof FleetError)) throw err;
        failures.push({ property: err.field ?? "existing", reason: err.message });
      }
    }
    return { inputs, failures };
  }
  let parent: ParentFacts | undefined;
  if (inputs.issuer && !isUnknown(inputs.issuer.certificatePem)) {
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
  const descChanged = (olds.description ?? null) !== (news.description ?? null);
  const interval = news.crlIntervalHours ?? DEFAULT_CRL_INTERVAL_HOURS;
  const intervalChanged = !isUnknown(interval) && olds.crlIntervalHours !== interval;
  return {
    changes: replaces.length > 0 || descChanged || intervalChanged || crlDue(olds),
    replaces,
    stables: replaces.length ? [] : STABLE_OUTPUTS,
    deleteBeforeReplace: false,
  };
}

export function create(inputs: CaInputs) {
  const issued = inputs.existing
    ? importCa(inputs.name, inputs.existing.certificatePem, inputs.existing.privateKeyPem)
    : issueCa(inputs, inputs.issuer);
  const crl = signCrl(issued, { intervalHours: inputs.crlIntervalHours ?? DEFAULT_CRL_INTERVAL_HOURS });
  // the declaration as given, for diff(); effective values (pathLen, algorithm) come from `issued`
  const declared = Object.fromEntries(
    REPLACE_ON.map((k) => [k, (inputs as unknown as Record<string, unknown>)[k] ?? null]),
  );
  const outs = {
    kind: "fleetguard:ca",
    declared,
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
    crlPem: crl.crlPem,
    crlNumber: crl.crlNumber,
    crlNextUpdate: crl.nextUpdate,
  };
  return { id: `${inputs.name}-${issued.fingerprintSha256.slice(0, 16)}`, outs };
}

/** A CRL is re-signed once half its validity has passed: a nightly `pulumi up` keeps it fresh. */
export function crlDue(olds: Record<string, unknown>, now = new Date()): boolean {
  const next = Date.parse(String(olds.crlNextUpdate));
  const hours = Number(olds.crlIntervalHours ?? DEFAULT_CRL_INTERVAL_HOURS);
  return !Number.isFinite(next) || next - now.getTime() < (hours * 3_600_000) / 2;
}

export function update(_id: string, olds: Record<string, unknown>, news: CaInputs) {
  const interval = news.crlIntervalHours ?? DEFAULT_CRL_INTERVAL_HOURS;
  const outs: Record<string, unknown> = { ...olds, description: news.description ?? null };
  if (olds.crlIntervalHours !== interval || crlDue(olds)) {
    const crl = signCrl(olds as { certificatePem: string; keyPem: string }, {
      previousNumber: Number(olds.crlNumber ?? 0),
      intervalHours: interval,
    });
    Object.assign(outs, {
      crlIntervalHours: interval,
      crlPem: crl.crlPem,
      crlNumber: crl.crlNumber,
      crlNextUpdate: crl.nextUpdate,
    });
  }
  return { outs };
}

/** Refresh: the CA lives only in state, so check it is intact and report it unchanged. */
export function read(id: string, props: Record<string, unknown>) {
  const pem = props.certificatePem;
  if (typeof pem !== "string" || fingerprint(pem) !== props.fingerprintSha256) {
    throw new FleetError("INTEGRITY", `ca ${id}: certificatePem in state does not match fingerprintSha256`);
  }
  return { id, props };
}
