/**
 * The one error type of the core. Every failure carries a `code` the CLI maps to an exit
 * code and the dynamic providers map to check failures, plus a message of the form
 * "<field>: got <X>, want <Y>". Messages never contain key material or passphrases.
 */
export type FleetErrorCode =
  | "INVALID_INPUT"
  | "POLICY_VIOLATION"
  | "INTEGRITY"
  | "UNAVAILABLE"
  | "NOT_FOUND"
  | "CONFLICT"
  | "INTERNAL";

export class FleetError extends Error {
  readonly code: FleetErrorCode;
  readonly field?: string;

  constructor(code: FleetErrorCode, message: string, field?: string) {
    super(message);
    this.name = "FleetError";
    this.code = code;
    this.field = field;
  }
}

/** A description of what was got, printed as is (not quoted): `invalid(f, phrase("a key that does not match"), ...)`. */
export class Phrase {
  constructor(readonly text: string) {}
}
export const phrase = (text: string): Phrase => new Phrase(text);

/** Describe a value for an error message without echoing long or secret-looking content. */
export function describe(value: unknown): string {
  if (value === undefined) return "undefined";
  if (value === null) return "null";
  if (value instanceof Phrase) return value.text;
  if (typeof value === "string") {
    if (/PRIVATE KEY/.test(value)) return "<redacted key material>";
    return value.length > 60 ? `${JSON.stringify(value.slice(0, 57))}...` : JSON.stringify(value);
  }
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint")
    return String(value);
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  if (Array.isArray(value)) return `array(${value.length})`;
  return typeof value;
}

/** Build an INVALID_INPUT error: "<field>: got <got>, want <want>". */
export function invalid(field: string, got: unknown, want: string): FleetError {
  return new FleetError("INVALID_INPUT", `${field}: got ${describe(got)}, want ${want}`, field);
}
