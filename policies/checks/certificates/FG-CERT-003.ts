/** FG-CERT-003: device certificate names a device can be held to (no wildcard, allowed URI schemes). */
import { type Check, result, type Violation } from "../../check";
import { policyRef } from "../../helpers";

/** The schemes a URI SAN may use when the policy names none (core/x509/validate-names DEFAULT_URI_SCHEMES). */
const DEFAULT_SCHEMES = ["urn", "https", "spiffe"];

/** The DNS and URI names of a certificate's subjectAltName (Node's rendering: "DNS:a, URI:b"). */
function sans(text: string | undefined): { dns: string[]; uri: string[] } {
  const out = { dns: [] as string[], uri: [] as string[] };
  for (const part of (text ?? "").split(/,\s*/)) {
    if (part.startsWith("DNS:")) out.dns.push(part.slice(4));
    else if (part.startsWith("URI:")) out.uri.push(part.slice(4));
  }
  return out;
}

export const check: Check = {
  id: "FG-CERT-003",
  title: "Device certificate names identify one device (no wildcard, allowed URI schemes)",
  severity: "medium",
  standards: {
    etsiEn303645: ["5.1-1"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.2"],
  },
  rationale:
    "A device certificate is the device's identity: a wildcard DNS name lets one key speak for every name under it, and a URI with an unexpected scheme (http:, javascript:, file:) is read differently by every hub that parses it. fleetguard refuses both when it issues (RFC 5280 name rules); this check finds them among certificates issued elsewhere or before.",
  appliesTo: ["deployed.certificates"],
  check(ctx) {
    const rules = ctx.policy.spec.names ?? {};
    const schemes = rules.allowedUriSchemes ?? DEFAULT_SCHEMES;
    const v: Violation[] = [];
    let devices = 0;
    for (const c of ctx.certificates()) {
      if (c.role !== "device") continue;
      devices++;
      const n = sans(c.x509.subjectAltName);
      for (const d of n.dns)
        if (d.includes("*") && !rules.allowWildcardDns)
          v.push({
            subject: `cert:${c.id}`,
            message: `subjectAltName DNS: got ${JSON.stringify(d)}, want a name of one device (${policyRef(ctx)} allows no wildcard)`,
          });
      for (const u of n.uri) {
        const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(u)?.[1]?.toLowerCase();
        if (!scheme || !schemes.includes(scheme))
          v.push({
            subject: `cert:${c.id}`,
            message: `subjectAltName URI: got ${JSON.stringify(u)}, want one of the schemes ${schemes.join(", ")} (${policyRef(ctx)})`,
          });
      }
    }
    if (!devices) return { status: "not-applicable", details: "no deployed device certificate to check" };
    return result(v);
  },
};
