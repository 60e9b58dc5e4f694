/**
 * PEM (RFC 7468) encoding and strict decoding. Decoding errors name the field and never
 * echo the content, since a PEM may carry a private key.
 */
import { invalid, phrase } from "../errors";

export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString("base64");
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]*?)\r?\n?-----END \1-----/g;

/** All PEM blocks with the given label, in order. Throws INVALID_INPUT naming `field`. */
export function pemBlocks(pem: unknown, label: string, field: string): Buffer[] {
  if (typeof pem !== "string" || pem.trim() === "") throw invalid(field, pem, `a PEM with ${label} blocks`);
  const out: Buffer[] = [];
  for (const m of pem.matchAll(BLOCK)) {
    if (m[1] !== label) continue;
    const body = m[2]!.replace(/\s+/g, "");
    const der = Buffer.from(body, "base64");
    if (der.length === 0 || der.toString("base64") !== body) {
      throw invalid(
        field,
        phrase("a block whose base64 does not decode cleanly"),
        `valid base64 inside -----BEGIN ${label}-----`,
      );
    }
    out.push(der);
  }
  if (out.length === 0) {
    const what = /-----BEGIN /.test(pem)
      ? `PEM without a well-formed ${label} block`
      : "text that is not PEM";
    throw invalid(field, phrase(what), `a PEM with -----BEGIN ${label}----- ... -----END ${label}-----`);
  }
  return out;
}

export function pemOne(pem: unknown, label: string, field: string): Buffer {
  const blocks = pemBlocks(pem, label, field);
  if (blocks.length !== 1) throw invalid(field, phrase(`${blocks.length} ${label} blocks`), "exactly one");
  return blocks[0]!;
}
