/** FG-CA-003: mbedTLS devices cannot load a chain with a critical nameConstraints extension. */
import { OID } from "../../../core/x509/ext";
import { parseCertificate } from "../../../core/x509/parse";
import { type Check, notApplicable, result, type Violation } from "../../check";
import type { DeclaredCa } from "../../context";
import { casByName, issuerOf } from "../../helpers";
import type { CertInfo } from "../../x509";

/** The declared CA and its parents, nearest first (cycles are reported by the fleet loader). */
function declaredChain(name: string, byName: Map<string, DeclaredCa>): DeclaredCa[] {
  const out: DeclaredCa[] = [];
  for (let ca = byName.get(name); ca && !out.includes(ca); ca = ca.parent ? byName.get(ca.parent) : undefined)
    out.push(ca);
  return out;
}

const criticalNc = (c: CertInfo): boolean =>
  parseCertificate(c.x509.raw, `cert:${c.id}`).extensions.get(OID.nameConstraints)?.critical === true;

export const check: Check = {
  id: "FG-CA-003",
  title: "mbedTLS device models get a chain without critical name constraints",
  severity: "low",
  standards: {
    etsiEn303645: ["5.5-1"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.8"],
  },
  rationale:
    "mbedTLS does not parse the nameConstraints extension, and a certificate with an unparsed critical extension fails to load (Mbed-TLS/mbedtls#8759): a device model whose firmware uses mbedTLS cannot load its own chain or its trust anchor when any CA of it has critical name constraints, which is how fleetguard always writes them (RFC 5280 4.2.1.10). Advisory: the hub still enforces the constraints; the fix is a chain without them for that model, or firmware that accepts the extension (mbedtls_x509_crt_parse_der_with_ext_cb). See docs/pki-interop.md.",
  appliesTo: ["declared.batches"],
  check(ctx) {
    const batches = (ctx.fleet.declared.batches ?? []).filter((b) => b.tlsStack === "mbedtls");
    if (batches.length === 0) return notApplicable("no batch declares tlsStack: mbedtls");
    const byName = casByName(ctx);
    const certs = ctx.certificates();
    const cas = certs.filter((c) => c.role !== "device");
    const v: Violation[] = [];
    for (const b of batches) {
      const found = new Set<string>();
      const chain = declaredChain(b.issuingCa, byName);
      // fleetguard writes name constraints critical whenever a CA declares them (core/x509/ext)
      for (const ca of chain)
        if (ca.nameConstraints?.permitted?.length || ca.nameConstraints?.excluded?.length)
          found.add(`ca:${ca.name} (declared)`);
      // deployed: the chain's CA certificates by id, and the chains above the batch's devices
      const deployed = new Set(cas.filter((c) => chain.some((ca) => ca.name === c.id)));
      for (const d of certs.filter((c) => c.role === "device" && c.batch === b.id))
        for (let up = issuerOf(certs, d); up && !deployed.has(up); up = issuerOf(certs, up)) deployed.add(up);
      for (const c of deployed) if (criticalNc(c)) found.add(`cert:${c.id}`);
      if (found.size)
        v.push({
          subject: `batch:${b.id}`,
          message: `tlsStack: got mbedtls under critical nameConstraints in ${[...found].join(", ")}, want a chain without critical nameConstraints for this device model (mbedTLS refuses such certificates, Mbed-TLS/mbedtls#8759; docs/pki-interop.md)`,
        });
    }
    return result(v, `${batches.length} mbedTLS batch(es), no critical nameConstraints in their chains`);
  },
};
