/**
 * CaHierarchy: a root CA, any number of intermediate CAs, and issuing CAs below them, as one
 * Pulumi component (type token fleetguard:pki:CaHierarchy). Each CA is a child resource
 * named `<hierarchy>-<ca name>`: names are public API, keyed by CA name, never by position.
 * The declaration is checked as a whole before any resource is registered (planHierarchy),
 * so a bad tree fails `pulumi preview` with the field at fault and leaves the state alone.
 */
import * as crypto from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import { canonicalJson } from "../core/canonical";
import { type CustodySpec, DEFAULT_KEY_STORE, type KeyRef, validateCustody } from "../core/custody";
import { crlUrlsFor } from "../core/enroll/profile";
import { REVOCATION_REASONS, type RevocationReason } from "../core/x509/crl";
import type { KeyUsage, NameConstraints } from "../core/x509/ext";
import { KEY_ALGORITHMS, type KeyAlgorithm } from "../core/x509/keys";
import type { Subject } from "../core/x509/names";
import { subjectString } from "../core/x509/names";
import { pemBlocks, toPem } from "../core/x509/pem";
import type { DeclaredCa } from "../policies/context";
import { enforceAtConstruction, type PolicyInput } from "../policies/engine";
import { CertificateAuthority } from "../providers/ca";
import { declared } from "./errors";

export interface CaSpec {
  /** stable key of this CA: lowercase letters, digits, dashes */
  readonly name: string;
  readonly algorithm?: KeyAlgorithm;
  readonly subject: Subject;
  readonly validityDays: number;
  readonly pathLen?: number;
  readonly keyUsage?: KeyUsage[];
  readonly nameConstraints?: NameConstraints;
  readonly crlDistributionPoint?: string;
  /** how often this CA re-signs its CRL (hours; default 168): a nightly `pulumi up` keeps it fresh */
  readonly crlIntervalHours?: number;
  /** free text; changing it updates the CA in place */
  readonly description?: pulumi.Input<string>;
  /** where this CA's key lives; default: the hierarchy's `custody` */
  readonly custody?: CustodySpec;
  /**
   * Revoke this CA (a subordinate only) and everything under it, for good: its certificate goes
   * on its issuer's CRL with this RFC 5280 reason (cACompromise, keyCompromise, superseded,
   * cessationOfOperation, ...), and every batch issued under it is revoked with reason
   * cACompromise (its devices' certificates on their CA's CRL, disabled at every hub)
   */
  readonly revoked?: { readonly reason: RevocationReason; readonly at?: string };
  /**
   * This CA's generation (default 1). Raising it by one rolls the CA over (docs/rotation.md, "CA
   * rollover"): a successor with a new key and the same subject is created, the predecessor stays
   * (trusted at hubs, its CRL re-signed) while devices still hold its certificates, new devices
   * enroll under the successor and the RotationSchedule re-issues the others in waves. Raising it
   * again retires the predecessor's predecessor. On a root or an intermediate it rolls the whole
   * subtree: every CA below gets a successor too (their effective generation, effectiveGenerations),
   * and a new root is cross-signed by the old one. Raise one generation, by one, per deployment.
   */
  readonly generation?: number;
}

export interface ChildCaSpec extends CaSpec {
  /** name of the CA that signs this one; default: the root (intermediates) or the only intermediate */
  readonly parent?: string;
}

/** Bring your own root: PEMs from a file, a vault, or @pulumi/tls resources. */
export interface ExistingRoot {
  readonly name: string;
  readonly existing: {
    readonly certificatePem: pulumi.Input<string>;
    readonly privateKeyPem: pulumi.Input<string>;
  };
  readonly description?: pulumi.Input<string>;
}

export interface CaHierarchyArgs {
  readonly root: CaSpec | ExistingRoot;
  readonly intermediates?: ChildCaSpec[];
  readonly issuing: ChildCaSpec[];
  /**
   * A fleet policy (path to a policies/*.yaml file, or a loaded policy) the declaration must
   * obey: a mandatory violation fails construction, so `pulumi preview` stops with the check id.
   */
  readonly policy?: string | PolicyInput;
  /**
   * Key custody of every CA (a CA's own `custody` wins): `{ kind: "embedded", store? }` (the
   * default: a sealed key store, `.fleetguard/keys` under the program directory, sealed with
   * FLEETGUARD_KEK or the stack's passphrase), `{ kind: "pkcs11", uri }` (an HSM, RFC 7512 URI),
   * or `{ kind: "pulumi-secret" }` (the key in the state as a Pulumi secret: it then crosses
   * Pulumi's RPC and shows in verbose engine logs; only as an explicit choice). docs/custody.md.
   */
  readonly custody?: CustodySpec;
  /**
   * The CRL folder every CA publishes its CRL in (default `.fleetguard/crl`, the batches'
   * default): give the batches under it the same `crlDir`, so that a CA's CRL has one cRLNumber
   * sequence (docs/crl.md). Each CA's CRL is also written under the file name its children's
   * `crlDistributionPoint` ends with (`root.crl`), for `fleet crl serve`.
   */
  readonly crlDir?: string;
}

/** The distribution points naming each CA's CRL: those its child CAs carry (pure; tested). */
export function crlUrlsByCa(plan: PlannedCa[]): Record<string, string[]> {
  const out: Record<string, string[]> = Object.fromEntries(plan.map((p) => [p.name, [] as string[]]));
  for (const p of plan) {
    const url = isExisting(p.spec) ? undefined : p.spec.crlDistributionPoint;
    if (p.parent && url && !out[p.parent]!.includes(url)) out[p.parent]!.push(url);
  }
  return out;
}

export interface PlannedCa {
  name: string;
  role: "root" | "intermediate" | "issuing";
  parent?: string;
  field: string;
  spec: CaSpec | ExistingRoot;
}

const isExisting = (s: CaSpec | ExistingRoot): s is ExistingRoot => "existing" in s;

/** A CA's own declared generation (CaSpec.generation, default 1). */
export const generationOf = (p: PlannedCa): number => (isExisting(p.spec) ? 1 : (p.spec.generation ?? 1));

/**
 * Each CA's effective generation: its own, plus the rollovers of the CAs above it (a new root or
 * intermediate means a successor for every CA below). Raising any one generation by one raises
 * the effective generation of that CA and of everything below it by one, so a successor never
 * takes a resource name that an earlier CA of another lineage had (pure; tested).
 */
export function effectiveGenerations(plan: PlannedCa[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of plan) out[p.name] = generationOf(p) + (p.parent ? out[p.parent]! - 1 : 0);
  return out;
}

/**
 * The resource name of generation `g` of CA `ca`: `<hierarchy>-<ca>` for the first (so a CA that
 * is rolled over keeps its resource), `<hierarchy>-<ca>-g<g>` for a successor.
 */
export const resourceName = (hierarchy: string, ca: string, g: number): string =>
  g <= 1 ? `${hierarchy}-${ca}` : `${hierarchy}-${ca}-g${g}`;

/** A bad declaration: a RunError, so the program stops with the message alone (no stack trace). */
export class CaHierarchyError extends pulumi.RunError {
  constructor(readonly problems: string[]) {
    super(`CaHierarchy: ${problems.length} problem(s):\n  - ${problems.join("\n  - ")}`);
    this.name = "CaHierarchyError";
  }
}

/**
 * Order and check the declared tree: unique names, parents that exist and come first,
 * validity that does not outlive the parent, pathLen that the parent allows.
 * Pure: throws CaHierarchyError listing every problem at once.
 */
export function planHierarchy(args: CaHierarchyArgs): PlannedCa[] {
  const problems: string[] = [];
  const byName = new Map<string, PlannedCa>();
  const plan: PlannedCa[] = [];
  const add = (p: PlannedCa) => {
    if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(p.name ?? "")) {
      problems.push(
        `${p.field}.name: got ${JSON.stringify(p.name)}, want lowercase letters, digits and dashes`,
      );
    }
    if (byName.has(p.name))
      problems.push(`${p.field}.name: got ${JSON.stringify(p.name)}, want a name not used by another CA`);
    byName.set(p.name, p);
    plan.push(p);
  };
  if (!args?.root)
    throw new CaHierarchyError(["root: got nothing, want a root CA (a spec or existing PEMs)"]);
  add({ name: args.root.name, role: "root", field: "root", spec: args.root });
  const inters = args.intermediates ?? [];
  inters.forEach((s, i) => {
    add({
      name: s.name,
      role: "intermediate",
      parent: s.parent ?? args.root.name,
      field: `intermediates[${i}]`,
      spec: s,
    });
  });
  if (!args.issuing?.length) problems.push("issuing: got no issuing CA, want at least one");
  (args.issuing ?? []).forEach((s, i) => {
    const dflt = inters.length === 1 ? inters[0]!.name : inters.length === 0 ? args.root.name : undefined;
    const parent = s.parent ?? dflt;
    if (!parent)
      problems.push(
        `issuing[${i}].parent: got nothing, want one of ${inters.map((x) => x.name).join(", ")} (there are several intermediates)`,
      );
    add({ name: s.name, role: "issuing", parent, field: `issuing[${i}]`, spec: s });
  });

  const seen = new Set<string>();
  for (const p of plan) {
    if (p.parent !== undefined) {
      const parent = byName.get(p.parent);
      if (!parent || parent.role === "issuing" || !seen.has(p.parent)) {
        const allowed = [
          ...new Set(plan.filter((x) => x.role !== "issuing" && seen.has(x.name)).map((x) => x.name)),
        ];
        problems.push(
          `${p.field}.parent: got ${JSON.stringify(p.parent)}, want one of ${allowed.join(", ")} (a root or intermediate declared before it)`,
        );
      } else if (!isExisting(parent.spec) && !isExisting(p.spec)) {
        const ps = parent.spec;
        const cs = p.spec;
        if (cs.validityDays > ps.validityDays) {
          problems.push(
            `${p.field}.validityDays: got ${cs.validityDays}, want at most ${ps.validityDays} so it does not outlive its issuer '${parent.name}'`,
          );
        }
        if (ps.pathLen !== undefined) {
          if (ps.pathLen === 0)
            problems.push(
              `${p.field}.parent: got '${parent.name}' whose pathLen is 0, want an issuer allowed to sign a CA`,
            );
          else if (cs.pathLen !== undefined && cs.pathLen > ps.pathLen - 1) {
            problems.push(
              `${p.field}.pathLen: got ${cs.pathLen}, want at most ${ps.pathLen - 1} (issuer '${parent.name}' has pathLen ${ps.pathLen})`,
            );
          }
        }
      }
    }
    if (!isExisting(p.spec)) {
      const s = p.spec;
      const custody = s.custody ?? args.custody;
      try {
        const c = validateCustody(custody, s.custody ? `${p.field}.custody` : "custody");
        if (c.kind === "pkcs11" && s.algorithm === "ed25519")
          problems.push(
            `${p.field}.algorithm: got "ed25519", want ecdsa-p256, ecdsa-p384 or rsa-3072 with a PKCS#11 custody`,
          );
      } catch (e) {
        problems.push((e as Error).message);
      }
      if (s.algorithm !== undefined && !KEY_ALGORITHMS.includes(s.algorithm)) {
        problems.push(
          `${p.field}.algorithm: got ${JSON.stringify(s.algorithm)}, want one of ${KEY_ALGORITHMS.join(", ")}`,
        );
      }
      if (!Number.isInteger(s.validityDays) || s.validityDays < 1) {
        problems.push(
          `${p.field}.validityDays: got ${JSON.stringify(s.validityDays)}, want a positive whole number of days`,
        );
      }
      if (s.revoked !== undefined) {
        if (p.role === "root")
          problems.push(
            `${p.field}.revoked: got a revocation of the root, want it only on an intermediate or issuing CA (a root is on no CRL: remove it from every trust store instead)`,
          );
        else if (!s.revoked || !(String(s.revoked.reason) in REVOCATION_REASONS))
          problems.push(
            `${p.field}.revoked.reason: got ${JSON.stringify(s.revoked?.reason)}, want an RFC 5280 reason: one of ${Object.keys(REVOCATION_REASONS).join(", ")}`,
          );
        else if (s.revoked.at !== undefined && !Number.isFinite(Date.parse(s.revoked.at)))
          problems.push(
            `${p.field}.revoked.at: got ${JSON.stringify(s.revoked.at)}, want an ISO 8601 date and time`,
          );
      }
      const g = s.generation;
      if (g !== undefined && (!Number.isInteger(g) || g < 1))
        problems.push(`${p.field}.generation: got ${JSON.stringify(g)}, want a whole number >= 1`);
      if (p.role === "issuing" && s.pathLen !== undefined && s.pathLen !== 0) {
        problems.push(
          `${p.field}.pathLen: got ${s.pathLen}, want 0 or absent (an issuing CA signs only devices)`,
        );
      }
    }
    seen.add(p.name);
  }
  if (problems.length) throw new CaHierarchyError(problems);
  return plan;
}

export interface CaSummary {
  role: string;
  /** an issuing CA that was rolled over: its generation */
  generation?: number;
  fingerprintSha256: string;
  subjectKeyId: string;
  notAfter: string;
  chainPem: string;
  certificatePem: string;
  crlPem: string;
  crlNextUpdate: string;
}

/** What a consumer (a DeviceIdentityBatch, a hub registration) needs from one CA. */
export interface CaOutputs {
  certificatePem: pulumi.Output<string>;
  chainPem: pulumi.Output<string>;
  /** where the CA key is (a provider opens it itself); never the key */
  keyRef: pulumi.Output<KeyRef>;
  /** only for the pulumi-secret custody: the key itself, a secret */
  keyPem: pulumi.Output<string | undefined>;
  fingerprintSha256: pulumi.Output<string>;
  subjectKeyId: pulumi.Output<string>;
  notAfter: pulumi.Output<string>;
  name: string;
  /** the CA's generation (1 unless rolled over) */
  generation?: number;
  /** during a rollover: the predecessor, still trusted while devices hold its certificates */
  previous?: CaOutputs;
  /**
   * After a root rollover: this CA, the CAs above it up to the new root's cross certificate, and
   * the old root (PEM). A device that trusts only the old root checks commands signed under it.
   */
  crossChainPem?: pulumi.Output<string | undefined>;
  /** this CA or one above it is declared revoked: everything it issued is revoked too */
  revokedAbove?: { ca: string; reason: RevocationReason; at?: string };
  /**
   * The current CRLs of the CAs above this one, its issuer's first (a hub that checks the CRL of
   * every CA of the chain needs them; this CA's own CRL of its devices is the batch's, published
   * from the registry). Absent for a CA that is not from a CaHierarchy.
   */
  ancestorCrlPems?: pulumi.Output<string[]>;
}

/**
 * Digest of everything in a CA's declaration that would replace it, chained with its issuer's
 * digest: equal digests mean the same key and certificate lineage. Descriptions are left out.
 */
export { canonicalJson };

export function declarationDigest(
  spec: CaSpec,
  role: string,
  parentDigest: string,
  custody?: CustodySpec,
): string {
  // a revocation changes no key or certificate: the CA is updated in place, its children stay
  const { description: _d, custody: _c, revoked: _r, ...rest } = spec;
  // a key moves in place between the Pulumi secret and key stores; an HSM's key is another key
  const c = validateCustody(custody ?? spec.custody);
  const decl = c.kind === "pkcs11" ? { ...rest, custody: c } : rest;
  return crypto
    .createHash("sha256")
    .update(`${role}\n${canonicalJson(decl)}\n${parentDigest}`)
    .digest("hex");
}

/** The declaration as the policy engine sees it (brought-your-own roots are checked once deployed). */
export function declaredCas(plan: PlannedCa[]): DeclaredCa[] {
  return plan.flatMap((p) => {
    if (isExisting(p.spec)) return [];
    const s = p.spec;
    const nc = s.nameConstraints;
    return [
      {
        name: p.name,
        role: p.role,
        ...(p.parent ? { parent: p.parent } : {}),
        subject: subjectString(s.subject),
        algorithm: s.algorithm ?? "ecdsa-p256",
        validityDays: s.validityDays,
        ...(s.pathLen !== undefined ? { pathLen: s.pathLen } : p.role === "issuing" ? { pathLen: 0 } : {}),
        ...(s.keyUsage
          ? { keyUsage: s.keyUsage }
          : { keyUsage: ["digitalSignature", "keyCertSign", "cRLSign"] }),
        ...(nc?.permittedDNS?.length || nc?.excludedDNS?.length
          ? {
              nameConstraints: {
                ...(nc.permittedDNS ? { permitted: nc.permittedDNS } : {}),
                ...(nc.excludedDNS ? { excluded: nc.excludedDNS } : {}),
              },
            }
          : {}),
        crlIntervalHours: s.crlIntervalHours ?? 168,
      } as DeclaredCa,
    ];
  });
}

/**
 * The custody a CA resource gets. The embedded store defaults to a folder per project and stack
 * under `.fleetguard/keys`: each stack seals its keys with its own passphrase, so two stacks of
 * one program never share (or fight over) a store.
 */
export function effectiveCustody(c: CustodySpec | undefined): CustodySpec {
  const v = validateCustody(c);
  if (v.kind !== "embedded" || v.store) return v;
  return { kind: "embedded", store: `${DEFAULT_KEY_STORE}/${pulumi.getProject()}.${pulumi.getStack()}` };
}

export class CaHierarchy extends pulumi.ComponentResource {
  /** every CA by name (an issuing CA's current generation) */
  readonly cas: Record<string, CertificateAuthority>;
  /** during a rollover: the predecessor of an issuing CA, by name */
  readonly previous: Record<string, CertificateAuthority> = {};
  readonly rootCertificatePem: pulumi.Output<string>;
  /** name -> { certificate, chain, fingerprint, keyId } without keys, for stack outputs */
  readonly summary: pulumi.Output<Record<string, CaSummary>>;
  /** name -> its issuer's name (absent for the root) */
  private readonly parents: Record<string, string | undefined> = {};
  /** name -> its generation (issuing CAs that were rolled over) */
  private readonly generations: Record<string, number> = {};
  /** name -> its declared revocation */
  private readonly revocations: Record<string, { reason: RevocationReason; at?: string }> = {};

  constructor(name: string, args: CaHierarchyArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fleetguard:pki:CaHierarchy", name, {}, opts);
    // a bad declaration stops the program with the field named, no stack trace (a RunError)
    const plan = declared("CaHierarchy", name, () => {
      const p = planHierarchy(args);
      if (args.policy) enforceAtConstruction(args.policy, { cas: declaredCas(p) });
      return p;
    });
    this.cas = {};
    const crlUrls = crlUrlsByCa(plan);
    const crlDir = args.crlDir ?? ".fleetguard/crl";
    const digests: Record<string, pulumi.Output<string>> = {};
    const eff = effectiveGenerations(plan);
    const below = (ca: string): string[] =>
      plan.filter((x) => x.parent === ca).flatMap((x) => [x.name, ...below(x.name)]);
    for (const p of plan) {
      this.parents[p.name] = p.parent;
      this.generations[p.name] = eff[p.name]!;
      if (!isExisting(p.spec) && p.spec.revoked) this.revocations[p.name] = { ...p.spec.revoked };
      const parentDigest = p.parent ? digests[p.parent]! : pulumi.output("");
      digests[p.name] = isExisting(p.spec)
        ? pulumi
            .output(p.spec.existing.certificatePem)
            .apply((pem) => crypto.createHash("sha256").update(`existing\n${pem}`).digest("hex"))
        : parentDigest.apply((pd) =>
            declarationDigest(p.spec as CaSpec, p.role, pd, (p.spec as CaSpec).custody ?? args.custody),
          );
      const E = eff[p.name]!;
      // the CA at effective generation `e` under `parent` (at `parentE`): its CRL is named by what
      // it issues (`-g<e>` past the first generation), its own certificate names its issuer's
      const argsFor = (e: number, parent: CertificateAuthority | undefined, parentE: number) => {
        const common = {
          name: p.name,
          role: p.role,
          description: p.spec.description,
          crlDir,
          ...(crlUrls[p.name]!.length ? { crlUrls: crlUrlsFor(crlUrls[p.name]!, e) } : {}),
          ...(e > 1 ? { generation: e } : {}),
        };
        if (isExisting(p.spec))
          return {
            ...common,
            existing: pulumi.secret({
              certificatePem: p.spec.existing.certificatePem,
              privateKeyPem: p.spec.existing.privateKeyPem,
            }),
          };
        const cdp = p.spec.crlDistributionPoint;
        return {
          ...common,
          algorithm: p.spec.algorithm ?? "ecdsa-p256",
          subject: p.spec.subject,
          validityDays: p.spec.validityDays,
          pathLen: p.spec.pathLen,
          keyUsage: p.spec.keyUsage,
          nameConstraints: p.spec.nameConstraints,
          crlDistributionPoint: cdp === undefined ? undefined : crlUrlsFor([cdp], parentE)[0],
          crlIntervalHours: p.spec.crlIntervalHours,
          ...(p.spec.revoked ? { revocation: { ...p.spec.revoked } } : {}),
          custody: effectiveCustody(p.spec.custody ?? args.custody),
          // the issuer's key is named, not passed: this CA's provider opens it from its custody
          issuer: parent
            ? {
                name: p.parent!,
                certificatePem: parent.certificatePem,
                chainPem: parent.chainPem,
                keyRef: parent.keyRef,
                keyPem: parent.keyPem,
              }
            : undefined,
          issuerDeclaration: p.parent ? digests[p.parent] : undefined,
        };
      };
      const parent = p.parent ? this.cas[p.parent]! : undefined;
      const parentE = p.parent ? eff[p.parent]! : 1;
      if (E > 1) {
        // a rollover of this CA or of one above it: the predecessor keeps its resource name and
        // is kept as its state holds it (`retained`: never replaced, never created afresh); the
        // successor is a new CA with a new key, the same subject, under the current issuer
        const own = generationOf(p);
        const parentPrev = p.parent ? this.previous[p.parent] : undefined;
        // its issuer then: the parent's predecessor when the rollover came from above (a guess
        // only the provider's state settles; a retained CA does not depend on it)
        const prevParent = own === 1 && parentPrev ? parentPrev : parent;
        const prevParentE = own === 1 && parentPrev ? parentE - 1 : parentE;
        this.previous[p.name] = new CertificateAuthority(
          resourceName(name, p.name, E - 1),
          { ...argsFor(E - 1, prevParent, prevParentE), retained: true } as never,
          { parent: this },
        );
        const prevRoot = p.role === "root" ? this.previous[p.name]! : undefined;
        this.cas[p.name] = new CertificateAuthority(
          resourceName(name, p.name, E),
          {
            ...argsFor(E, parent, parentE),
            // a root rollover: the old root cross-signs the new one
            ...(prevRoot
              ? {
                  crossFrom: {
                    name: p.name,
                    certificatePem: prevRoot.certificatePem,
                    keyRef: prevRoot.keyRef,
                    keyPem: pulumi.secret(prevRoot.keyPem),
                  },
                }
              : {}),
          } as never,
          { parent: this },
        );
        if (own > 1 || p.role === "root")
          pulumi.log.info(
            p.role === "issuing"
              ? `CA rollover of '${p.name}': generation ${E - 1} -> ${E}; generation ${E - 1} stays trusted (hubs, CRL) until the RotationSchedule has re-issued every device under generation ${E}`
              : `CA rollover of ${p.role} '${p.name}': generation ${E - 1} -> ${E}${p.role === "root" ? `, cross-signed by generation ${E - 1}` : ""}; every CA below it gets a successor (${below(p.name).join(", ")}); devices move to the new chain in the RotationSchedule's waves, given the new trust anchor under the old one`,
            this,
          );
      } else
        this.cas[p.name] = new CertificateAuthority(
          resourceName(name, p.name, 1),
          argsFor(1, parent, 1) as never,
          {
            parent: this,
          },
        );
    }
    this.rootCertificatePem = this.cas[plan[0]!.name]!.certificatePem;
    // every CA by name; during a rollover the predecessor too, as `<name>@g<generation>`
    const entries: [string, CertificateAuthority, PlannedCa, number][] = plan.flatMap((p) => {
      const g = this.generations[p.name]!;
      const prev = this.previous[p.name];
      return [
        [p.name, this.cas[p.name]!, p, g] as [string, CertificateAuthority, PlannedCa, number],
        ...(prev
          ? [[`${p.name}@g${g - 1}`, prev, p, g - 1] as [string, CertificateAuthority, PlannedCa, number]]
          : []),
      ];
    });
    this.summary = pulumi.all(
      Object.fromEntries(
        entries.map(([key, c, p, g]) => [
          key,
          pulumi
            .all([
              c.fingerprintSha256,
              c.subjectKeyId,
              c.notAfter,
              c.chainPem,
              c.certificatePem,
              c.crlPem,
              c.crlNextUpdate,
            ])
            .apply(([f, k, n, ch, ce, crl, next]) => ({
              role: p.role,
              ...(g > 1 || this.previous[p.name] ? { generation: g } : {}),
              fingerprintSha256: f,
              subjectKeyId: k,
              notAfter: n,
              chainPem: ch,
              certificatePem: ce,
              crlPem: crl,
              crlNextUpdate: next,
            })),
        ]),
      ),
    ) as never;
    this.registerOutputs({ rootCertificatePem: this.rootCertificatePem, summary: this.summary });
  }

  /** The outputs a device batch needs from issuing CA `name` (its key stays a secret). */
  issuingCa(name: string): CaOutputs {
    const c = this.cas[name];
    if (!c)
      throw new CaHierarchyError([
        `issuingCa: got ${JSON.stringify(name)}, want one of ${Object.keys(this.cas).join(", ")}`,
      ]);
    const g = this.generations[name] ?? 1;
    const prev = this.previous[name];
    const root = this.ancestors(name).pop();
    const outputs = (
      x: CertificateAuthority,
      generation: number,
      crls: pulumi.Output<string[]>,
    ): CaOutputs => ({
      name,
      generation,
      certificatePem: x.certificatePem,
      chainPem: x.chainPem,
      keyRef: x.keyRef,
      keyPem: x.keyPem,
      fingerprintSha256: x.fingerprintSha256,
      subjectKeyId: x.subjectKeyId,
      notAfter: x.notAfter,
      ancestorCrlPems: crls,
    });
    const current = outputs(c, g, pulumi.all(this.ancestors(name).map((a) => this.cas[a]!.crlPem)));
    // a root rollover: the signer chain through the cross certificate, for a device that trusts
    // only the old root (its new anchor is set under it: core/enroll/authorize.ts)
    const prevRoot = root ? this.previous[root] : undefined;
    if (root && prevRoot)
      current.crossChainPem = pulumi
        .all([c.chainPem, this.cas[root]!.crossCertificatePem, prevRoot.certificatePem])
        .apply(([chain, cross, old]) => {
          if (!cross) return undefined;
          const above = pemBlocks(chain, "CERTIFICATE", "chainPem").slice(0, -1);
          return [...above.map((der) => toPem("CERTIFICATE", der)), cross, old].join("");
        });
    const revoked = [name, ...this.ancestors(name)].find((a) => this.revocations[a]);
    return {
      ...current,
      ...(prev ? { previous: outputs(prev, g - 1, this.crlsAbove(prev)) } : {}),
      ...(revoked ? { revokedAbove: { ca: revoked, ...this.revocations[revoked]! } } : {}),
    };
  }

  /**
   * The CRLs of the CAs above `ca` as its own chain names them: a predecessor's issuers may be
   * predecessors too (a root rollover), so they are found by certificate among every CA here.
   */
  private crlsAbove(ca: CertificateAuthority): pulumi.Output<string[]> {
    const all = [...Object.values(this.cas), ...Object.values(this.previous)];
    return pulumi
      .all([ca.chainPem, pulumi.all(all.map((x) => pulumi.all([x.fingerprintSha256, x.crlPem])))])
      .apply(([chain, cas]) => {
        const byFingerprint = new Map(cas);
        return pemBlocks(chain, "CERTIFICATE", "chainPem")
          .slice(1)
          .map((der) => byFingerprint.get(crypto.createHash("sha256").update(der).digest("hex")))
          .filter((x): x is string => typeof x === "string");
      });
  }

  /** The names of the CAs above `name`, its issuer first. */
  private ancestors(name: string): string[] {
    const out: string[] = [];
    for (let p = this.parents[name]; p; p = this.parents[p]) out.push(p);
    return out;
  }
}
