/**
 * Turns the resources a Pulumi program declares (as the CrossGuard engine hands them to a stack policy)
 * into the fleet context the checks evaluate. Every fleetguard dynamic resource shares one Pulumi type
 * (pulumi-nodejs:dynamic:Resource), so resources are recognised by a `kind` property:
 *   fleetguard:ca                       role, algorithm, validityDays, pathLen, keyUsage, nameConstraints,
 *                                       subject, issuerName (or the CA it depends on), certificatePem
 *   fleetguard:batch                    a DeclaredBatch, as `declared` or as flat properties
 *   fleetguard:rotation                 a DeclaredRotation
 *   fleetguard:aws-iot-policy           { name, document }
 *   fleetguard:aws-logging              { enabled, level }
 *   fleetguard:azure-enrollment-group   a DeclaredEnrollmentGroup
 * During a preview, outputs a provider has not computed yet are unknown and @pulumi/policy throws when
 * they are read; every read here is guarded, and a CA whose `kind` is still unknown is recognised by
 * its declared role, algorithm and validity. Pure functions over plain objects: unit-tested without
 * the engine.
 */
import type { DeclaredBatch, DeclaredCa, DeployedCertificate, FleetContext } from "../context";

/** The subset of @pulumi/policy's PolicyResource this module reads. */
export interface ResourceLike {
  type: string;
  urn: string;
  name: string;
  props: Record<string, unknown>;
  dependencies?: ResourceLike[];
}

export interface PackContext {
  fleet: FleetContext;
  /** Finding subject (ca:<name>, batch:<id>, cert:<name>, ...) -> URN of the resource it is about. */
  urns: Map<string, string>;
}

/** Read a property that may be unknown during preview (the policy proxy throws): undefined instead. */
export function safe(obj: unknown, key: string): unknown {
  try {
    if (obj === null || typeof obj !== "object") return undefined;
    const v = (obj as Record<string, unknown>)[key];
    return v === null ? undefined : v;
  } catch {
    return undefined;
  }
}

const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
const strs = (v: unknown): string[] | undefined => {
  try {
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : undefined;
  } catch {
    return undefined;
  }
};

const CA_ROLES = new Set(["root", "intermediate", "issuing"]);

/** Plain copy of a (possibly proxied) value, leaving out whatever is unknown. */
function plain(v: unknown, depth = 0): unknown {
  if (depth > 8) return undefined;
  try {
    if (Array.isArray(v)) return v.map((x) => plain(x, depth + 1)).filter((x) => x !== undefined);
    if (v && typeof v === "object") {
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(v)) {
        const x = plain(safe(v, k), depth + 1);
        if (x !== undefined) out[k] = x;
      }
      return out;
    }
    return v === null ? undefined : v;
  } catch {
    return undefined;
  }
}

function kindOf(r: ResourceLike): string | undefined {
  const k = str(safe(r.props, "kind"));
  if (k) return k;
  // preview of a create: the provider has not returned `kind` yet; a CA still declares its shape
  const role = str(safe(r.props, "role"));
  if (
    role &&
    CA_ROLES.has(role) &&
    str(safe(r.props, "algorithm")) &&
    num(safe(r.props, "validityDays")) !== undefined
  )
    return "fleetguard:ca";
  return undefined;
}

function subjectString(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  const p = plain(v);
  if (p && typeof p === "object") {
    return Object.entries(p as Record<string, unknown>)
      .map(([k, x]) => `${k}=${String(x)}`)
      .join(",");
  }
  return undefined;
}

function toCa(r: ResourceLike, byUrn: Map<string, ResourceLike>): DeclaredCa | undefined {
  const p = r.props;
  const declared = plain(safe(p, "declared")) as Partial<DeclaredCa> | undefined;
  const role = str(safe(p, "role")) ?? declared?.role;
  const algorithm = str(safe(p, "algorithm")) ?? declared?.algorithm;
  const validityDays = num(safe(p, "validityDays")) ?? declared?.validityDays;
  const name = str(safe(p, "name")) ?? r.name;
  if (!role || !CA_ROLES.has(role) || !algorithm || validityDays === undefined) return undefined;
  let parent = str(safe(p, "issuerName")) ?? str(safe(p, "parent")) ?? str(safe(safe(p, "issuer"), "name"));
  if (!parent && role !== "root") {
    const dep = (r.dependencies ?? [])
      .map((d) => byUrn.get(d.urn) ?? d)
      .find((d) => kindOf(d) === "fleetguard:ca");
    parent = dep ? (str(safe(dep.props, "name")) ?? dep.name) : undefined;
  }
  const ca: DeclaredCa = { name, role: role as DeclaredCa["role"], algorithm, validityDays };
  if (parent) ca.parent = parent;
  const pathLen = num(safe(p, "pathLen"));
  if (pathLen !== undefined) ca.pathLen = pathLen;
  const keyUsage = strs(safe(p, "keyUsage"));
  if (keyUsage) ca.keyUsage = keyUsage as DeclaredCa["keyUsage"];
  const subject = subjectString(safe(p, "subject"));
  if (subject) ca.subject = subject;
  const crl = num(safe(p, "crlIntervalHours"));
  if (crl !== undefined) ca.crlIntervalHours = crl;
  const nc = plain(safe(p, "nameConstraints")) as Record<string, unknown> | undefined;
  if (nc && typeof nc === "object") {
    const pick = (re: RegExp) =>
      Object.entries(nc)
        .filter(([k]) => re.test(k))
        .flatMap(([, v]) => (Array.isArray(v) ? v.map(String) : []));
    const permitted = pick(/^permitted/i);
    const excluded = pick(/^excluded/i);
    if (permitted.length || excluded.length)
      ca.nameConstraints = {
        ...(permitted.length ? { permitted } : {}),
        ...(excluded.length ? { excluded } : {}),
      };
  }
  return ca;
}

function toBatch(r: ResourceLike, byUrn: Map<string, ResourceLike>): DeclaredBatch | undefined {
  const p = r.props;
  const d = (plain(safe(p, "declared")) ?? {}) as Partial<DeclaredBatch>;
  const flat = plain(p) as Partial<DeclaredBatch> & { batchId?: string; issuingCaName?: string };
  const b = { ...flat, ...d } as Partial<DeclaredBatch> & { batchId?: string; issuingCaName?: string };
  let issuingCa = str(b.issuingCaName) ?? str(b.issuingCa);
  if (!issuingCa) {
    const dep = (r.dependencies ?? [])
      .map((x) => byUrn.get(x.urn) ?? x)
      .find((x) => kindOf(x) === "fleetguard:ca");
    issuingCa = dep ? (str(safe(dep.props, "name")) ?? dep.name) : undefined;
  }
  const profile = b.profile;
  if (!issuingCa || !profile || !str(profile.algorithm) || num(profile.validityDays) === undefined)
    return undefined;
  const out: DeclaredBatch = {
    id: str(b.batchId) ?? str(d.id) ?? r.name,
    issuingCa,
    identitySource: b.identitySource === "injected" ? "injected" : "puf",
    count: num(b.count) ?? 0,
    profile: {
      algorithm: profile.algorithm,
      validityDays: profile.validityDays,
      ...(profile.keyUsage ? { keyUsage: profile.keyUsage } : {}),
    },
  };
  if (b.deviceModel) out.deviceModel = b.deviceModel;
  if (b.hsmCounter) out.hsmCounter = b.hsmCounter;
  if (b.puf) out.puf = b.puf;
  return out;
}

/** Build the fleet context (and the subject -> URN map) from the stack's resources. */
export function contextFromResources(resources: readonly ResourceLike[]): PackContext {
  const byUrn = new Map(resources.map((r) => [r.urn, r]));
  const urns = new Map<string, string>();
  const fleet: FleetContext = {
    declared: { cas: [], batches: [], rotation: [] },
    deployed: { certificates: [] },
  };
  const certs: DeployedCertificate[] = fleet.deployed!.certificates!;
  for (const r of resources) {
    const kind = kindOf(r);
    if (!kind?.startsWith("fleetguard:")) continue;
    const p = r.props;
    switch (kind) {
      case "fleetguard:ca": {
        const ca = toCa(r, byUrn);
        if (!ca) break;
        fleet.declared.cas!.push(ca);
        urns.set(`ca:${ca.name}`, r.urn);
        const pem = str(safe(p, "certificatePem"));
        if (pem?.includes("BEGIN CERTIFICATE")) {
          certs.push({ id: ca.name, role: ca.role, pem });
          urns.set(`cert:${ca.name}`, r.urn);
        }
        break;
      }
      case "fleetguard:batch": {
        const b = toBatch(r, byUrn);
        if (!b) break;
        fleet.declared.batches!.push(b);
        urns.set(`batch:${b.id}`, r.urn);
        break;
      }
      case "fleetguard:rotation": {
        const d = (plain(safe(p, "declared")) ?? plain(p)) as Record<string, unknown>;
        const batches = strs(d.batches);
        const waveFraction = num(d.waveFraction);
        if (!batches?.length || waveFraction === undefined) break;
        const name = str(d.name) ?? r.name;
        fleet.declared.rotation!.push({
          name,
          batches,
          waveFraction,
          ...(num(d.renewBeforeDays) !== undefined ? { renewBeforeDays: num(d.renewBeforeDays) } : {}),
          ...(num(d.rekeyAfterDays) !== undefined ? { rekeyAfterDays: num(d.rekeyAfterDays) } : {}),
        });
        urns.set(`rotation:${name}`, r.urn);
        break;
      }
      case "fleetguard:aws-iot-policy": {
        const document = plain(safe(p, "document"));
        const doc = typeof document === "string" ? (JSON.parse(document) as unknown) : document;
        if (!doc || typeof doc !== "object" || !Array.isArray((doc as { Statement?: unknown }).Statement))
          break;
        const name = str(safe(p, "name")) ?? r.name;
        fleet.declared.hubs ??= {};
        fleet.declared.hubs.aws ??= {};
        fleet.declared.hubs.aws.policies ??= [];
        fleet.declared.hubs.aws.policies.push({ name, document: doc as never });
        urns.set(`aws-policy:${name}`, r.urn);
        break;
      }
      case "fleetguard:aws-logging": {
        const enabled = safe(p, "enabled");
        if (typeof enabled !== "boolean") break;
        fleet.declared.hubs ??= {};
        fleet.declared.hubs.aws ??= {};
        const level = str(safe(p, "level"));
        fleet.declared.hubs.aws.logging = { enabled, ...(level ? { level: level as "INFO" } : {}) };
        urns.set("aws-logging", r.urn);
        break;
      }
      case "fleetguard:azure-enrollment-group": {
        const attestation = str(safe(p, "attestation"));
        if (!attestation) break;
        const name = str(safe(p, "name")) ?? r.name;
        const caVerified = safe(p, "caVerified");
        fleet.declared.hubs ??= {};
        fleet.declared.hubs.azure ??= {};
        fleet.declared.hubs.azure.enrollmentGroups ??= [];
        fleet.declared.hubs.azure.enrollmentGroups.push({
          name,
          attestation: attestation as "x509-ca",
          ...(typeof caVerified === "boolean" ? { caVerified } : {}),
        });
        urns.set(`azure-group:${name}`, r.urn);
        break;
      }
    }
  }
  return { fleet, urns };
}
