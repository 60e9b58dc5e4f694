/**
 * The CA dynamic provider's implementation (Pulumi CRUD -> core/ca). Loaded lazily inside
 * the provider process by providers/runtime/index.js; never serialized into state.
 * Key material is returned only in `keyPem`, which the resource marks as a secret output.
 */
import * as crypto from "node:crypto";
import {
  type CaRequest,
  importCa,
  issueCa,
  type ParentFacts,
  parentFacts,
  validateCaRequest,
} from "../../core/ca";
import { FleetError } from "../../core/errors";

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

const isUnknown = (v: unknown): boolean =>
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

/** Stable JSON with sorted keys, treating absent and null alike. */
function canonical(v: unknown): string {
  if (v === undefined || v === null) return "null";
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (typeof v === "object") {
    return `{${Object.keys(v as object)
      .filter(
        (k) => (v as Record<string, unknown>)[k] !== undefined && (v as Record<string, unknown>)[k] !== null,
      )
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

const fingerprint = (pem: string): string => {
  const m = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/.exec(pem);
  if (!m) return "";
  return crypto
    .createHash("sha256")
    .update(Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"))
    .digest("hex");
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
    if (canonical(declared[k]) !== canonical((news as unknown as Record<string, unknown>)[k]))
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
  return {
    changes: replaces.length > 0 || descChanged,
    replaces,
    stables: replaces.length ? [] : STABLE_OUTPUTS,
    deleteBeforeReplace: false,
  };
}

export function create(inputs: CaInputs) {
  const issued = inputs.existing
    ? importCa(inputs.name, inputs.existing.certificatePem, inputs.existing.privateKeyPem)
    : issueCa(inputs, inputs.issuer);
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
    ...issued,
  };
  return { id: `${inputs.name}-${issued.fingerprintSha256.slice(0, 16)}`, outs };
}

export function update(_id: string, olds: Record<string, unknown>, news: CaInputs) {
  return { outs: { ...olds, description: news.description ?? null } };
}

/** Refresh: the CA lives only in state, so check it is intact and report it unchanged. */
export function read(id: string, props: Record<string, unknown>) {
  const pem = props.certificatePem;
  if (typeof pem !== "string" || fingerprint(pem) !== props.fingerprintSha256) {
    throw new FleetError("INTEGRITY", `ca ${id}: certificatePem in state does not match fingerprintSha256`);
  }
  return { id, props };
}
