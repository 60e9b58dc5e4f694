/**
 * Does a recorded certificate conform to the batch's declaration? It does when it is exactly the
 * certificate the declared profile and issuing CA would issue today for the same device, key,
 * serial and validity start: the to-be-signed bytes are rebuilt with the batch's own template
 * (profile.ts compileTemplate, so there is one definition of what a profile issues) and compared
 * with the recorded ones. This is what re-issue and plan converge on (issue 9, finding 4): the
 * registry's certificates against the declaration, whatever an earlier run recorded as its intent.
 * Nothing is signed: the template's signer only captures the bytes it is given.
 */
import { X509Certificate } from "node:crypto";
import type { CertificateRecord } from "../registry/types";
import { children, content, read, whole } from "../x509/der";
import { algorithmOf, type ExternalSigner } from "../x509/keys";
import {
  type CompiledTemplate,
  compileTemplate,
  deviceNames,
  type IssuerMaterial,
  type NameRules,
  type ResolvedProfile,
} from "./profile";

// compileTemplate starts the validity one minute before the instant it is given
const BACKDATE_MS = 60_000;

/**
 * The parts of a DER certificate the comparison needs: its to-be-signed bytes, serial and SPKI,
 * read as strictly as parseCertificate (x509/parse.ts) reads them (minimal lengths, no trailing
 * bytes, the TBS fields in their order) but without decoding the extensions: a certificate whose
 * TBS is byte for byte the template's has the template's extensions, and any other does not match.
 */
function tbsParts(der: Buffer): { tbs: Buffer; serialBytes: Buffer; spki: Buffer } {
  const root = read(der);
  if (root.end !== der.length) throw new Error("trailing bytes");
  const [tbsN] = children(der, root);
  const t = children(der, tbsN!);
  let i = t[0]!.tag === 0xa0 ? 1 : 0; // version
  const serialN = t[i]!;
  i += 4; // serial, signature algorithm, issuer, validity
  if (!t[i] || !t[i + 1]) throw new Error("no subject or SPKI");
  return { tbs: whole(der, tbsN!), serialBytes: content(der, serialN), spki: whole(der, t[i + 1]!) };
}

export class Conformance {
  private readonly templates = new Map<number, CompiledTemplate | null>();
  private captured: Buffer | undefined;
  private readonly signer: ExternalSigner;

  constructor(
    private readonly profile: ResolvedProfile,
    private readonly issuer: IssuerMaterial,
    private readonly batch: string,
    private readonly model: string,
    private readonly rules?: NameRules,
  ) {
    const publicKey = new X509Certificate(issuer.certificate).publicKey;
    this.signer = {
      algorithm: algorithmOf(publicKey, "issuer.certificatePem"),
      publicKey,
      sign: (data) => {
        this.captured = Buffer.from(data);
        return Buffer.alloc(0);
      },
    };
  }

  /** True if `c` is what the declaration issues for its device (same issuer, profile and validity length). */
  matches(c: CertificateRecord): boolean {
    if (c.issuer !== this.issuer.fingerprint) return false;
    const t = this.template(c.notBefore);
    if (!t || t.notAfter.getTime() !== c.notAfter.getTime()) return false;
    try {
      const p = tbsParts(c.der);
      const n = deviceNames(this.profile, c.deviceId, this.batch, this.model, this.rules);
      this.captured = undefined;
      t.issue(p.serialBytes, n.commonName, p.spki, n.san.uri.length || n.san.dns.length ? n.san : undefined);
      return this.captured !== undefined && (this.captured as Buffer).equals(p.tbs);
    } catch {
      return false; // unreadable, or a name the declaration refuses: not what it issues
    }
  }

  private template(notBefore: Date): CompiledTemplate | null {
    const k = notBefore.getTime();
    let t = this.templates.get(k);
    if (t === undefined) {
      try {
        t = compileTemplate(
          this.profile,
          { ...this.issuer, key: this.signer },
          new Date(k + BACKDATE_MS),
          this.rules,
        );
        if (t.notBefore.getTime() !== k) t = null;
      } catch {
        t = null;
      }
      this.templates.set(k, t);
    }
    return t;
  }
}
