/**
 * Small shared helpers for the checks: looking CAs and issuers up, matching keys against the
 * per-role rules, and which certificates a valid CRL revokes. Kept out of policies/checks/ so that
 * folder holds exactly one check per file.
 */
import { formatKey, type KeySpec, parseAlgorithm } from "./algorithms";
import type { CheckContext } from "./check";
import type { CertRole, DeclaredCa } from "./context";
import type { AlgorithmRule } from "./schema/fleet-policy.gen";
import type { CertInfo } from "./x509";

export function policyRef(ctx: CheckContext): string {
  return `policy '${ctx.policy.name}'`;
}

export function describeRule(rule: AlgorithmRule): string {
  const parts: string[] = [];
  if (rule.ecdsa) parts.push(`ecdsa >= ${rule.ecdsa.minBits}`);
  if (rule.rsa) parts.push(`rsa >= ${rule.rsa.minBits}`);
  if (rule.ed25519) parts.push("ed25519");
  return parts.join(", ");
}

/** Why a key breaks the role's rule, or undefined when it is allowed. */
export function keyProblem(key: KeySpec, rule: AlgorithmRule): string | undefined {
  const r = rule[key.family];
  if (!r) return `${formatKey(key)} is not an allowed algorithm`;
  if ("minBits" in r && key.bits < r.minBits)
    return `${formatKey(key)} is below ${key.family} >= ${r.minBits}`;
  return undefined;
}

export function parseKeyName(name: string): KeySpec | undefined {
  return parseAlgorithm(name);
}

export function casByName(ctx: CheckContext): Map<string, DeclaredCa> {
  return new Map((ctx.fleet.declared.cas ?? []).map((c) => [c.name, c]));
}

export const isCaRole = (role: CertRole): boolean => role !== "device";

// issuerOf per certificate list: several checks walk every device's chain, and a signature check per
// link per check dominated an audit of a large fleet (a P-384 root verified once per device per check)
const issuers = new WeakMap<CertInfo[], WeakMap<CertInfo, CertInfo | null>>();

/** The inventory certificate that issued `c` (by Name and signature), if the inventory holds it. */
export function issuerOf(certs: CertInfo[], c: CertInfo): CertInfo | undefined {
  if (c.issuerDer === c.subjectDer && c.role === "root") return undefined;
  let memo = issuers.get(certs);
  if (!memo) {
    memo = new WeakMap();
    issuers.set(certs, memo);
  }
  const known = memo.get(c);
  if (known !== undefined) return known ?? undefined;
  const found = certs.find(
    (p) => p !== c && p.subjectDer === c.issuerDer && isCaRole(p.role) && c.x509.verify(p.publicKey),
  );
  memo.set(c, found ?? null);
  return found;
}

/** Keys "issuerDer/serial" of every certificate revoked by a CRL whose signature verified. */
export function revokedKeys(ctx: CheckContext): Set<string> {
  const out = new Set<string>();
  for (const crl of ctx.crls()) {
    if (crl.signatureValid !== true) continue;
    for (const s of crl.revokedSerials) out.add(`${crl.issuerDer}/${s}`);
  }
  return out;
}

export function isRevoked(revoked: Set<string>, c: CertInfo): boolean {
  return revoked.has(`${c.issuerDer}/${c.serial}`);
}

export function isoDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

export function plural(n: number, word: string): string {
  return `${n.toLocaleString("en-US")} ${word}${n === 1 ? "" : "s"}`;
}

import type { DeclaredAwsHub, DeclaredAzureHub } from "./context";
import type { IotPolicyStatement } from "./schema/fleet.gen";

/** The AWS hub settings to audit: declared, and deployed when the inventory has them. */
export function awsHubs(ctx: CheckContext): Array<{ where: string; hub: DeclaredAwsHub }> {
  const out: Array<{ where: string; hub: DeclaredAwsHub }> = [];
  if (ctx.fleet.declared.hubs?.aws) out.push({ where: "declared", hub: ctx.fleet.declared.hubs.aws });
  if (ctx.fleet.deployed?.hubs?.aws) out.push({ where: "deployed", hub: ctx.fleet.deployed.hubs.aws });
  return out;
}

export function azureHubs(ctx: CheckContext): Array<{ where: string; hub: DeclaredAzureHub }> {
  const out: Array<{ where: string; hub: DeclaredAzureHub }> = [];
  if (ctx.fleet.declared.hubs?.azure) out.push({ where: "declared", hub: ctx.fleet.declared.hubs.azure });
  if (ctx.fleet.deployed?.hubs?.azure) out.push({ where: "deployed", hub: ctx.fleet.deployed.hubs.azure });
  return out;
}

export function list(v: string | string[] | undefined): string[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** Actions a statement covers (NotAction covers everything else, so it counts as a wildcard). */
export function statementActions(s: IotPolicyStatement): string[] {
  return s.NotAction !== undefined ? ["*"] : list(s.Action);
}

export function statementResources(s: IotPolicyStatement): string[] {
  return s.NotResource !== undefined ? ["*"] : list(s.Resource);
}
