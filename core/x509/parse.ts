/**
 * Just enough X.509 parsing (RFC 5280 4.1) to check what Node's X509Certificate does not
 * expose: raw issuer/subject names, extensions with their criticality, basicConstraints,
 * key identifiers and name constraints. Used for bring-your-own roots and for tests.
 */
import { invalid, phrase } from "../errors";
import { children, content, decodeOid, decodeUint, type Node, read, whole } from "./der";
import { OID } from "./ext";

export interface Extension {
  critical: boolean;
  value: Buffer;
}

export interface ParsedCertificate {
  der: Buffer;
  tbs: Buffer;
  serial: bigint;
  serialBytes: Buffer;
  issuer: Buffer;
  subject: Buffer;
  spki: Buffer;
  extensions: Map<string, Extension>;
}

export function parseCertificate(der: Uint8Array, field = "certificate"): ParsedCertificate {
  try {
    const root = read(der);
    if (root.end !== der.length) throw new Error("trailing bytes");
    const [tbsN] = children(der, root);
    const t = children(der, tbsN!);
    let i = 0;
    if (t[0]!.tag === 0xa0) i++; // version
    const serialN = t[i++]!;
    i++; // signature algorithm
    const issuer = whole(der, t[i++]!);
    i++; // validity
    const subject = whole(der, t[i++]!);
    const spki = whole(der, t[i++]!);
    const extensions = new Map<string, Extension>();
    for (; i < t.length; i++) {
      if (t[i]!.tag !== 0xa3) continue;
      const list = children(der, children(der, t[i]!)[0]!);
      for (const e of list) {
        const parts = children(der, e);
        const id = decodeOid(content(der, parts[0]!));
        const critical = parts.length === 3 && content(der, parts[1]!)[0] === 0xff;
        extensions.set(id, { critical, value: content(der, parts[parts.length - 1]!) });
      }
    }
    const serialBytes = content(der, serialN);
    return {
      der: Buffer.from(der),
      tbs: whole(der, tbsN!),
      serial: decodeUint(serialBytes),
      serialBytes,
      issuer,
      subject,
      spki,
      extensions,
    };
  } catch {
    throw invalid(
      field,
      phrase("bytes that are not a DER X.509 certificate"),
      "a DER-encoded X.509 certificate",
    );
  }
}

export function basicConstraintsOf(c: ParsedCertificate): { ca: boolean; pathLen?: number } | undefined {
  const e = c.extensions.get(OID.basicConstraints);
  if (!e) return undefined;
  const v = e.value;
  const parts = children(v, read(v));
  let ca = false;
  let pathLen: number | undefined;
  for (const p of parts) {
    if (p.tag === 0x01) ca = v[p.contentStart] === 0xff;
    if (p.tag === 0x02) pathLen = Number(decodeUint(content(v, p)));
  }
  return { ca, pathLen };
}

export function subjectKeyIdOf(c: ParsedCertificate): Buffer | undefined {
  const e = c.extensions.get(OID.subjectKeyIdentifier);
  return e ? content(e.value, read(e.value)) : undefined;
}

/** AuthorityKeyIdentifier keyIdentifier ([0] of the AKI SEQUENCE), if present. */
export function authorityKeyIdOf(c: ParsedCertificate): Buffer | undefined {
  const e = c.extensions.get(OID.authorityKeyIdentifier);
  if (!e) return undefined;
  const kid = children(e.value, read(e.value)).find((n) => n.tag === 0x80);
  return kid ? content(e.value, kid) : undefined;
}

export interface ParsedNameConstraints {
  permittedDNS: string[];
  excludedDNS: string[];
  permittedEmail: string[];
  excludedEmail: string[];
  permittedURI: string[];
  excludedURI: string[];
}

export function nameConstraintsOf(c: ParsedCertificate): ParsedNameConstraints | undefined {
  const e = c.extensions.get(OID.nameConstraints);
  if (!e) return undefined;
  const v = e.value;
  const out: ParsedNameConstraints = {
    permittedDNS: [],
    excludedDNS: [],
    permittedEmail: [],
    excludedEmail: [],
    permittedURI: [],
    excludedURI: [],
  };
  for (const group of children(v, read(v))) {
    const kind = group.tag === 0xa0 ? "permitted" : "excluded";
    for (const subtree of children(v, group)) {
      const base: Node = children(v, subtree)[0]!;
      const text = content(v, base).toString("ascii");
      if (base.tag === 0x82) out[`${kind}DNS`].push(text);
      if (base.tag === 0x81) out[`${kind}Email`].push(text);
      if (base.tag === 0x86) out[`${kind}URI`].push(text);
    }
  }
  return out;
}
