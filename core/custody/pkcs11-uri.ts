/**
 * PKCS#11 URIs (RFC 7512): the reference a CA key's custody keeps in place of the key. Parsing is
 * strict: unknown attributes, repeated ones, characters that must be %-encoded and a PIN in the
 * URI are refused, since a lenient parse would widen what the URI matches or store a PIN in the
 * Pulumi state. Errors never quote the URI, which may hold a PIN.
 */
import * as path from "node:path";
import { invalid, phrase } from "../errors";

export const PKCS11_URI_FIELD = "custody.pkcs11.uri";
/** The token's user PIN when the URI has no pin-source. */
export const PIN_ENV = "FLEETGUARD_PKCS11_PIN";

const PATH_ATTRS = [
  "token",
  "manufacturer",
  "serial",
  "model",
  "library-manufacturer",
  "library-description",
  "library-version",
  "slot-description",
  "slot-manufacturer",
  "slot-id",
  "object",
  "type",
  "id",
] as const;
const QUERY_ATTRS = ["module-path", "pin-source", "pin-value"] as const;
const OBJECT_TYPES = ["public", "private", "cert", "secret-key", "data"] as const;

export interface Pkcs11Uri {
  token?: string;
  manufacturer?: string;
  serial?: string;
  model?: string;
  libraryManufacturer?: string;
  libraryDescription?: string;
  /** "M" or "M.m" */
  libraryVersion?: string;
  slotDescription?: string;
  slotManufacturer?: string;
  slotId?: number;
  /** CKA_LABEL of the key */
  object?: string;
  /** CKA_ID of the key (bytes) */
  id?: Buffer;
  type?: (typeof OBJECT_TYPES)[number];
  /** absolute path of the PKCS#11 library */
  modulePath?: string;
  /** where the user PIN is read from: a `file:` URI (or an absolute path) */
  pinSource?: string;
  /** only when parsed with allowPinValue; never formatted */
  pinValue?: string;
}

export interface ParseOptions {
  field?: string;
  /**
   * Accept `pin-value` in the URI. Off by default: a custody URI is a reference that sits in the
   * Pulumi state and logs, and a PIN in it would sit there too.
   */
  allowPinValue?: boolean;
}

const PATH_CHAR = /^[A-Za-z0-9\-._~:[\]@!$'()*+,=&]$/;
const QUERY_CHAR = /^[A-Za-z0-9\-._~:[\]@!$'()*+,=/?|]$/;

function pctDecode(raw: string, allowed: RegExp, field: string, name: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === "%") {
      const hex = raw.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex))
        throw invalid(field, phrase(`${name} with a broken %-escape`), "%XX escapes of two hex digits");
      out.push(Number.parseInt(hex, 16));
      i += 2;
    } else if (allowed.test(c)) {
      out.push(c.charCodeAt(0));
    } else {
      throw invalid(
        field,
        phrase(`${name} with the character ${JSON.stringify(c)}`),
        "that character %-encoded (RFC 7512)",
      );
    }
  }
  return Buffer.from(out);
}

const utf8Strict = new TextDecoder("utf-8", { fatal: true });

function text(bytes: Buffer, field: string, name: string): string {
  try {
    return utf8Strict.decode(bytes);
  } catch {
    throw invalid(field, phrase(`${name} that is not UTF-8`), "a UTF-8 value (RFC 7512)");
  }
}

/** Parse a `pkcs11:` URI (RFC 7512). The error never quotes the URI: it may hold a PIN. */
export function parsePkcs11Uri(uri: unknown, opts: ParseOptions = {}): Pkcs11Uri {
  const field = opts.field ?? PKCS11_URI_FIELD;
  if (typeof uri !== "string" || !/^pkcs11:/i.test(uri))
    throw invalid(
      field,
      typeof uri === "string" ? phrase("a string that is not a pkcs11: URI") : uri,
      "a pkcs11: URI (RFC 7512) like pkcs11:token=fleet;object=root-ca?module-path=/usr/lib/softhsm/libsofthsm2.so",
    );
  if (uri.length > 4096) throw invalid(field, phrase(`a URI of ${uri.length} characters`), "at most 4096");
  if (uri.includes("#")) throw invalid(field, phrase("a URI with a fragment (#)"), "no fragment (RFC 7512)");
  const rest = uri.slice("pkcs11:".length);
  const q = rest.indexOf("?");
  const pathPart = q < 0 ? rest : rest.slice(0, q);
  const queryPart = q < 0 ? undefined : rest.slice(q + 1);
  const out: Pkcs11Uri = {};
  const seen = new Set<string>();
  const split = (part: string, sep: string, known: readonly string[], allowed: RegExp, where: string) => {
    if (part === "") return [];
    return part.split(sep).map((attr) => {
      const eq = attr.indexOf("=");
      const name = eq < 0 ? attr : attr.slice(0, eq);
      if (eq < 0 || !known.includes(name)) {
        throw invalid(
          field,
          phrase(`the ${where} attribute ${JSON.stringify(name.slice(0, 40))}`),
          `one of ${known.join(", ")}`,
        );
      }
      if (seen.has(name)) throw invalid(field, phrase(`${name} twice`), `each attribute at most once`);
      seen.add(name);
      return [name, pctDecode(attr.slice(eq + 1), allowed, field, name)] as const;
    });
  };
  for (const [name, bytes] of split(pathPart, ";", PATH_ATTRS, PATH_CHAR, "path")) {
    const v = () => text(bytes, field, name);
    switch (name) {
      case "token":
        out.token = v();
        break;
      case "manufacturer":
        out.manufacturer = v();
        break;
      case "serial":
        out.serial = v();
        break;
      case "model":
        out.model = v();
        break;
      case "library-manufacturer":
        out.libraryManufacturer = v();
        break;
      case "library-description":
        out.libraryDescription = v();
        break;
      case "library-version": {
        const s = v();
        if (!/^\d{1,3}(\.\d{1,3})?$/.test(s))
          throw invalid(field, phrase(`library-version ${s}`), "M or M.m");
        out.libraryVersion = s;
        break;
      }
      case "slot-description":
        out.slotDescription = v();
        break;
      case "slot-manufacturer":
        out.slotManufacturer = v();
        break;
      case "slot-id": {
        const s = v();
        if (!/^\d{1,20}$/.test(s) || !Number.isSafeInteger(Number(s)))
          throw invalid(field, phrase(`slot-id ${JSON.stringify(s.slice(0, 20))}`), "a decimal slot number");
        out.slotId = Number(s);
        break;
      }
      case "object":
        out.object = v();
        break;
      case "type": {
        const s = v();
        if (!(OBJECT_TYPES as readonly string[]).includes(s))
          throw invalid(
            field,
            phrase(`type ${JSON.stringify(s.slice(0, 20))}`),
            `one of ${OBJECT_TYPES.join(", ")}`,
          );
        out.type = s as Pkcs11Uri["type"];
        break;
      }
      case "id":
        if (bytes.length === 0) throw invalid(field, phrase("an empty id"), "a non-empty %-encoded CKA_ID");
        out.id = bytes;
        break;
    }
  }
  if (queryPart !== undefined) {
    for (const [name, bytes] of split(queryPart, "&", QUERY_ATTRS, QUERY_CHAR, "query")) {
      if (name === "pin-value") {
        if (!opts.allowPinValue)
          throw invalid(
            field,
            phrase("a URI with pin-value"),
            `the PIN from pin-source=file:<path> or ${PIN_ENV} (a PIN in the URI would be stored in the Pulumi state)`,
          );
        out.pinValue = text(bytes, field, name);
      } else if (name === "module-path") {
        const s = text(bytes, field, name);
        if (!path.isAbsolute(s))
          throw invalid(field, phrase(`module-path ${JSON.stringify(s.slice(0, 60))}`), "an absolute path");
        out.modulePath = s;
      } else {
        out.pinSource = text(bytes, field, name);
        pinFilePath(out.pinSource, field);
      }
    }
  }
  return out;
}

const enc = (s: string | Buffer, keep: RegExp): string =>
  [...Buffer.from(s)]
    .map((b) => {
      const c = String.fromCharCode(b);
      return b < 0x80 && keep.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
    })
    .join("");

const PATH_KEEP = /^[A-Za-z0-9\-._~:@!$'()*+,]$/;
const QUERY_KEEP = /^[A-Za-z0-9\-._~:@!$'()*+,/]$/;

/** Format a `pkcs11:` URI in a fixed attribute order. A PIN value is never written. */
export function formatPkcs11Uri(u: Pkcs11Uri): string {
  const p: string[] = [];
  const add = (name: string, v: string | undefined) => {
    if (v !== undefined) p.push(`${name}=${enc(v, PATH_KEEP)}`);
  };
  add("token", u.token);
  add("manufacturer", u.manufacturer);
  add("serial", u.serial);
  add("model", u.model);
  add("library-manufacturer", u.libraryManufacturer);
  add("library-description", u.libraryDescription);
  add("library-version", u.libraryVersion);
  add("slot-description", u.slotDescription);
  add("slot-manufacturer", u.slotManufacturer);
  add("slot-id", u.slotId === undefined ? undefined : String(u.slotId));
  add("object", u.object);
  add("type", u.type);
  // every id byte escaped, as p11-kit and RFC 7512's examples write it
  if (u.id !== undefined)
    p.push(`id=${[...u.id].map((b) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`).join("")}`);
  const q: string[] = [];
  if (u.modulePath !== undefined) q.push(`module-path=${enc(u.modulePath, QUERY_KEEP)}`);
  if (u.pinSource !== undefined) q.push(`pin-source=${enc(u.pinSource, QUERY_KEEP)}`);
  return `pkcs11:${p.join(";")}${q.length ? `?${q.join("&")}` : ""}`;
}

export function pinFilePath(source: string, field: string): string {
  // the path as is after the pkcs11: URI's own %-decoding: a second decoding would make `%` in a
  // file name mean two things
  let file: string | undefined;
  if (source.startsWith("file://")) file = /^file:\/\/(?:localhost)?(\/.*)$/.exec(source)?.[1];
  else if (source.startsWith("file:")) file = source.slice(5);
  else if (path.isAbsolute(source)) file = source;
  if (!file || !path.isAbsolute(file))
    throw invalid(
      field,
      phrase(`pin-source ${JSON.stringify(source.slice(0, 60))}`),
      "a file: URI of an absolute path, like pin-source=file:/run/secrets/hsm-pin",
    );
  return file;
}
