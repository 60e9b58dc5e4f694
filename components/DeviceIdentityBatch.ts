/**
 * DeviceIdentityBatch: one production lot of devices (type token fleetguard:devices:DeviceIdentityBatch).
 * `pulumi up` gives every device of the lot a unique, attested identity and a certificate from
 * the fleet's issuing CA, through the device station, recording every device in the registry.
 *
 * It is ONE Pulumi resource whatever the count (brief, rule 1): its outputs are a summary
 * (counts per device state, manifest digest, issuing CA fingerprint, policy digest), so the
 * state stays the same size from 1,000 to 1,000,000 devices. The declaration is checked
 * against the fleet policy at construction, so `pulumi preview` stops on a mandatory violation.
 *
 * Import: a batch that is in the registry but not in the stack (state lost, or moved to another
 * stack) is adopted by declaring it with the same name: create converges to what the registry
 * holds and enrolls nothing twice. (Pulumi's `import` option cannot be used: the Node dynamic
 * provider host needs the resource's stored properties to find its provider.)
 */
import * as crypto from "node:crypto";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { canonicalJson } from "../core/canonical";
import { type DeviceCertificateProfile, type NameRules, resolveProfile } from "../core/enroll/profile";
import { type DeviceRevocation, loadRevocationFile, validateRevocations } from "../core/enroll/revocations";
import { invalid, phrase } from "../core/errors";
import type { RevocationReason } from "../core/x509/crl";
import type { DeclaredBatch, TlsStack } from "../policies/context";
import { enforceAtConstruction, loadPolicyFile, type PolicyInput } from "../policies/engine";
import { DeviceBatchResource } from "../providers/batch";
import type { CaOutputs } from "./CaHierarchy";
import { declared } from "./errors";
import { childUrn } from "./urn";

export interface DeviceIdentityBatchArgs {
  /** batch (production lot) name; default: the component name */
  readonly name?: string;
  /** device model, the prefix of device IDs (`fg100-0000042`) */
  readonly model: string;
  /** device serials: `count` devices from `first` (default 0) */
  readonly serials: { readonly first?: number; readonly count: number };
  /** where device keys come from: derived from a PUF inside the chip, or injected on the line */
  readonly identitySource: "puf" | "injected";
  /** the issuing CA: `hierarchy.issuingCa("line-a")` */
  readonly issuingCa: CaOutputs;
  readonly profile?: DeviceCertificateProfile;
  /** PUF devices: the fuzzy extractor's key failure rate at the worst operating corner (checked by policy FG-ID-001) */
  readonly puf?: { readonly keyFailureRate?: number };
  /** injected devices: the HSM production counter that bounds the lot (checked by policy) */
  readonly hsmCounter?: { readonly limit: number; readonly hsm?: string };
  /** the device station (the device farm in tests and demos) */
  readonly station: pulumi.Input<{ host?: string; port: number }>;
  /** SQLite file relative to the program (default `.fleetguard/registry.db`) or a postgres:// URL */
  readonly registry?: pulumi.Input<string>;
  /** write a signed manifest of the batch (Trust&GO style, docs/manifests.md) to this file after each run */
  readonly manifestPath?: string;
  /** where revocation lists are published (default `.fleetguard/crl`) */
  readonly crlDir?: string;
  /** the TLS stack of the device firmware (e.g. `mbedtls`): policy FG-CA-003 warns about what it cannot read */
  readonly tlsStack?: TlsStack;
  /** fleet policy (path or loaded) the batch must obey; it also bounds quarantine and re-issue waves */
  readonly policy?: string | PolicyInput;
  /**
   * Devices to revoke (docs/batches.md, Revocation): `{ device, reason, at? }` each, reason an RFC 5280
   * reason (keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn,
   * ...), or the path of a YAML/JSON file holding that list (relative to the program). Every live
   * certificate of each device goes on its CA's CRL with the reason in the next `pulumi up`, and the
   * hubs that register the batch disable it in the same run. Revoked is terminal for the device's key.
   */
  readonly revocations?: ReadonlyArray<{ device: string; reason: RevocationReason; at?: string }> | string;
  /** revoke the whole batch: every device's live certificates, with `reason` */
  readonly revoked?: { readonly reason: RevocationReason; readonly at?: string };
}

export interface BatchSummaryOutput {
  total: number;
  counts: Record<string, number>;
  quarantineReasons: Record<string, number>;
  manifestDigest: string;
  issuerFingerprint: string;
  policyDigest: string;
}

function effectivePolicy(p: string | PolicyInput | undefined): PolicyInput | undefined {
  if (p === undefined) return undefined;
  if (typeof p !== "string") return p as PolicyInput;
  return loadPolicyFile(p); // every problem as file:line:column: field: message
}

/** The batch as the policy engine sees it. */
export function declaredBatch(name: string, args: DeviceIdentityBatchArgs, rules?: NameRules): DeclaredBatch {
  const profile = resolveProfile(args.profile, "profile", rules);
  return {
    id: name,
    deviceModel: args.model,
    issuingCa: args.issuingCa.name,
    identitySource: args.identitySource,
    count: args.serials.count,
    profile: {
      algorithm: "ecdsa-p256",
      validityDays: profile.validityDays,
      keyUsage: profile.keyUsage,
      extKeyUsage: profile.extKeyUsage,
    },
    ...(args.tlsStack ? { tlsStack: args.tlsStack } : {}),
    ...(args.puf ? { puf: { ...args.puf } } : {}),
    ...(args.hsmCounter ? { hsmCounter: { ...args.hsmCounter } } : {}),
  };
}

/** The arguments' shape, before any resource is registered: each error names the field. */
export function checkArgs(args: DeviceIdentityBatchArgs, first: number, rules?: NameRules): void {
  if (!args || typeof args !== "object") throw invalid("args", args, "the batch's declaration");
  if (!Number.isInteger(first) || first < 0) throw invalid("serials.first", first, "an integer >= 0");
  if (!Number.isInteger(args.serials?.count) || args.serials.count < 0)
    throw invalid("serials.count", args.serials?.count, "an integer >= 0");
  if (args.identitySource !== "puf" && args.identitySource !== "injected")
    throw invalid("identitySource", args.identitySource, "'puf' or 'injected'");
  if (!args.issuingCa?.keyRef && !args.issuingCa?.keyPem)
    throw invalid(
      "issuingCa",
      args.issuingCa,
      'an issuing CA of a CaHierarchy: hierarchy.issuingCa("line-a")',
    );
  resolveProfile(args.profile, "profile", rules); // bad profiles fail the preview, naming the field
  const r = args.registry;
  if (typeof r === "string") {
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(r)?.[1]?.toLowerCase();
    if (!r.trim() || (scheme && !["sqlite", "postgres", "postgresql"].includes(scheme)))
      throw invalid(
        "registry",
        r.trim() ? phrase(`a ${scheme}: location`) : r,
        "a SQLite file path or a postgres://user@host:port/database URL",
      );
  }
}

/**
 * The declared revocations as a list (a file is read here, at construction, so a bad entry fails
 * the preview as `file:line:column: revocations[i].field: ...`), checked against the batch.
 */
export function revocationsOf(
  batchName: string,
  args: DeviceIdentityBatchArgs,
  first: number,
  cwd = process.cwd(),
): { revocations?: DeviceRevocation[]; revoked?: { reason: RevocationReason; at?: string } } {
  const batch = { name: batchName, model: args.model, firstSerial: first, count: args.serials.count };
  const r = args.revocations;
  const revocations =
    typeof r === "string"
      ? loadRevocationFile(path.resolve(cwd, r), batch, r)
      : r === undefined
        ? undefined
        : (r as DeviceRevocation[]);
  // a CA above the batch declared revoked (CaHierarchy `revoked`) revokes everything it issued:
  // the batch's own declaration, if any, names the reason instead
  const above = args.issuingCa?.revokedAbove;
  const revoked = args.revoked
    ? { ...args.revoked }
    : above
      ? { reason: "cACompromise" as RevocationReason, ...(above.at ? { at: above.at } : {}) }
      : undefined;
  validateRevocations({ ...batch, revocations, revoked });
  return {
    ...(revocations?.length ? { revocations: revocations.map((x) => ({ ...x })) } : {}),
    ...(revoked ? { revoked } : {}),
  };
}

/**
 * The batch provider's inputs for one issuing CA (`issuer` or, during a rollover,
 * `previousIssuer`): its certificate and chain, and where its key is; the provider opens the key
 * from its custody by this reference, so the key never crosses Pulumi's RPC. Only the explicit
 * pulumi-secret custody passes the key itself (a secret).
 */
function issuerInputs(field: "issuer" | "previousIssuer", ca: CaOutputs): Record<string, unknown> {
  return {
    [field]: {
      name: ca.name,
      certificatePem: ca.certificatePem,
      chainPem: ca.chainPem,
      ...(ca.generation && ca.generation > 1 ? { generation: ca.generation } : {}),
      // a root rollover: commands to a device that trusts only the old root are signed under it
      ...(ca.crossChainPem ? { crossChainPem: ca.crossChainPem } : {}),
    },
    [`${field}KeyRef`]: ca.keyRef,
    [`${field}KeyPem`]: pulumi.secret(
      pulumi
        .all([ca.keyRef, ca.keyPem])
        .apply(([ref, pem]) => (ref && ref.custody !== "pulumi-secret" ? undefined : (pem ?? undefined))),
    ),
  };
}

export class DeviceIdentityBatch extends pulumi.ComponentResource {
  readonly batch: DeviceBatchResource;
  readonly summary: pulumi.Output<BatchSummaryOutput>;
  /** the batch (production lot) name in the registry */
  readonly batchName: string;
  /** the issuing CA the batch's devices chain to (a HubRegistration trusts it) */
  readonly issuingCa: CaOutputs;
  /** the registry the batch's devices are recorded in (a secret when it carries a password) */
  readonly registry: pulumi.Output<string>;
  /** where the batch (and its issuing CA) publish CRLs */
  readonly crlDir: string;

  constructor(name: string, args: DeviceIdentityBatchArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fleetguard:devices:DeviceIdentityBatch", name, {}, opts);
    const batchName = args.name ?? name;
    this.batchName = batchName;
    this.issuingCa = args.issuingCa;
    this.crlDir = args.crlDir ?? ".fleetguard/crl";
    const first = args.serials?.first ?? 0;
    let revocations: ReturnType<typeof revocationsOf> = {};
    // a bad declaration stops the program with the field named, no stack trace (a RunError)
    const policyInputs = declared("DeviceIdentityBatch", name, () => {
      const policy = effectivePolicy(args.policy);
      const spec = policy?.spec ?? {};
      // what device names may be: the policy's `names` (wildcards, URI schemes), else the strict rules
      const names: NameRules = {
        ...(spec.names?.allowWildcardDns !== undefined
          ? { allowWildcardDns: spec.names.allowWildcardDns }
          : {}),
        ...(spec.names?.allowedUriSchemes ? { allowedUriSchemes: spec.names.allowedUriSchemes } : {}),
      };
      checkArgs(args, first, names);
      revocations = revocationsOf(batchName, args, first);
      if (policy) enforceAtConstruction(policy, { batches: [declaredBatch(batchName, args, names)] });
      return {
        name: policy?.name ?? "(none)",
        digest: crypto.createHash("sha256").update(canonicalJson(spec)).digest("hex"),
        maxQuarantinedFraction: spec.identity?.maxQuarantinedFraction ?? 0.01,
        maxWaveFraction: spec.rotation?.maxWaveFraction ?? 1,
        names,
        ...(spec.identity?.refreshAttestSample ? { refreshSample: spec.identity.refreshAttestSample } : {}),
      };
    });
    const registry = pulumi.output(args.registry ?? ".fleetguard/registry.db");
    // any URL with a password is a secret: Pulumi quotes an input's value when a check fails on it
    const hasPassword = (u: string) => /^[a-z][a-z0-9+.-]*:\/\/[^/@]*:[^/@]*@/i.test(u);
    const ca = args.issuingCa;
    this.batch = new DeviceBatchResource(
      `${name}-lot`,
      {
        kind: "fleetguard:batch",
        name: batchName,
        model: args.model,
        source: args.identitySource,
        firstSerial: first,
        count: args.serials.count,
        profile: (args.profile ?? {}) as never,
        ...(issuerInputs("issuer", ca) as { issuer: never }),
        // a CA rollover: the predecessor's certificates conform until the rotation re-issues them
        ...(ca.previous ? issuerInputs("previousIssuer", ca.previous) : {}),
        station: pulumi.output(args.station).apply((s) => ({ host: s.host ?? "127.0.0.1", port: s.port })),
        registry: registry.apply((r) => (hasPassword(r) ? pulumi.secret(r) : r)) as never,
        crlDir: this.crlDir,
        ...(args.manifestPath ? { manifestPath: args.manifestPath } : {}),
        ...revocations,
        policy: policyInputs,
        progressUrn: childUrn(this, `${name}-lot`),
      },
      { parent: this },
    );
    const b = this.batch;
    this.registry = b.registry;
    this.summary = pulumi
      .all([b.total, b.counts, b.quarantineReasons, b.manifestDigest, b.issuerFingerprint, b.policyDigest])
      .apply(([total, counts, quarantineReasons, manifestDigest, issuerFingerprint, policyDigest]) => ({
        total,
        counts,
        quarantineReasons,
        manifestDigest,
        issuerFingerprint,
        policyDigest,
      }));
    this.registerOutputs({ summary: this.summary });
  }
}
