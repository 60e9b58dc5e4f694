/**
 * Source-located YAML and schema validation for policy and fleet files. A file is parsed with the yaml
 * package's parseDocument + LineCounter so that every diagnostic can point at file:line:column: the key
 * for an unknown key (a typo must never silently weaken a policy), the value for a wrong type. The JSON
 * Schemas in policies/schema/ (draft 2020-12, validated with ajv, allErrors) are the single source of
 * truth; this module only turns ajv's errors into messages of the form "<path>: got X, want Y".
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Ajv2020, { type ErrorObject, type ValidateFunction } from "ajv/dist/2020";
import { isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml";

/** input: the file is malformed (exit 2). violation: well-formed but breaks the rules (exit 1). */
export type DiagnosticKind = "input" | "violation";

export interface Diagnostic {
  kind: DiagnosticKind;
  file: string;
  line: number;
  column: number;
  /** Dotted path into the document, e.g. spec.keys.device.rsa.minBits or spec.waivers[0].expires. */
  path: string;
  message: string;
}

export type PathSegment = string | number;

export function formatPath(path: readonly PathSegment[]): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += out === "" ? seg : `.${seg}`;
  }
  return out === "" ? "(document)" : out;
}

export function formatDiagnostic(d: Diagnostic): string {
  return `${d.file}:${d.line}:${d.column}: ${d.path}: ${d.message}`;
}

/** Sort by file, then position, so a run reads top to bottom. */
export function sortDiagnostics(ds: Diagnostic[]): Diagnostic[] {
  return [...ds].sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line || a.column - b.column);
}

/** A parsed YAML file that can answer "where is this path?". */
export class SourceFile {
  readonly data: unknown;
  readonly parseDiagnostics: Diagnostic[] = [];
  private readonly doc: ReturnType<typeof parseDocument>;
  private readonly lines = new LineCounter();

  constructor(
    readonly file: string,
    readonly text: string,
  ) {
    this.doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: false, uniqueKeys: true });
    for (const e of [...this.doc.errors, ...this.doc.warnings]) {
      const at = this.lines.linePos(e.pos[0]);
      this.parseDiagnostics.push({
        kind: "input",
        file,
        line: at.line,
        column: at.col,
        path: "(yaml)",
        message: e.message.split("\n")[0] ?? e.code,
      });
    }
    this.data = this.doc.errors.length === 0 ? this.doc.toJS({ maxAliasCount: 100 }) : undefined;
  }

  static read(file: string, displayName = file): SourceFile {
    return new SourceFile(displayName, readFileSync(file, "utf8"));
  }

  /** Line/column of a path: at the key when `at` is "key" (and the key exists), else at the value. */
  position(path: readonly PathSegment[], at: "key" | "value" = "value"): { line: number; column: number } {
    let node: unknown = this.doc.contents;
    let offset = (node as Node | null)?.range?.[0] ?? 0;
    for (let i = 0; i < path.length; i++) {
      const seg = path[i]!;
      const last = i === path.length - 1;
      if (isMap(node)) {
        const pair = node.items.find(
          (p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg),
        );
        if (!pair) break;
        const keyNode = pair.key as Node;
        if (last && at === "key") {
          offset = keyNode.range?.[0] ?? offset;
          break;
        }
        const value = pair.value as Node | null;
        if (!value?.range) {
          offset = keyNode.range?.[0] ?? offset;
          break;
        }
        node = value;
        offset = value.range[0];
      } else if (isSeq(node)) {
        const item = node.items[Number(seg)] as Node | undefined;
        if (!item?.range) break;
        node = item;
        offset = item.range[0];
      } else break;
    }
    const lp = this.lines.linePos(offset);
    return { line: lp.line, column: lp.col };
  }

  diagnostic(
    kind: DiagnosticKind,
    path: readonly PathSegment[],
    message: string,
    at: "key" | "value" = "value",
  ): Diagnostic {
    const pos = this.position(path, at);
    return { kind, file: this.file, ...pos, path: formatPath(path), message };
  }
}

const schemaDir = join(__dirname, "schema");
let ajv: Ajv2020 | undefined;
const validators = new Map<string, ValidateFunction>();

/** Our annotation keywords: metadata only, declared so that ajv's strict mode accepts them. */
const annotationKeywords = ["x-tighten", "x-check", "x-merge", "x-order"];

export function loadSchema(name: "fleet-policy" | "fleet"): Record<string, unknown> {
  return JSON.parse(readFileSync(join(schemaDir, `${name}.schema.json`), "utf8"));
}

function validator(name: "fleet-policy" | "fleet"): ValidateFunction {
  let v = validators.get(name);
  if (!v) {
    if (!ajv) {
      ajv = new Ajv2020({ allErrors: true, verbose: true, strict: true, allowUnionTypes: true });
      for (const keyword of annotationKeywords) ajv.addKeyword({ keyword });
    }
    v = ajv.compile(loadSchema(name));
    validators.set(name, v);
  }
  return v;
}

function pointerToPath(pointer: string): PathSegment[] {
  if (pointer === "") return [];
  return pointer
    .slice(1)
    .split("/")
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"))
    .map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : s));
}

/** "got" half of a message: the value with its type, never more than a short excerpt. */
export function got(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (typeof value === "string") {
    if (/PRIVATE KEY/.test(value)) return "string <redacted key material>";
    return `string ${JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value)}`;
  }
  if (typeof value === "number") return Number.isInteger(value) ? `integer ${value}` : `number ${value}`;
  if (typeof value === "boolean") return `boolean ${value}`;
  if (Array.isArray(value)) return `a list of ${value.length}`;
  return "a map";
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!;
      dp[j] = Math.min(
        dp[j]! + 1,
        dp[j - 1]! + 1,
        prev + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1),
      );
      prev = tmp;
    }
  }
  return dp[b.length]!;
}

export function suggest(word: string, options: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Number.POSITIVE_INFINITY;
  for (const o of options) {
    const d = editDistance(word, o);
    if (d < bestD) {
      bestD = d;
      best = o;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

const patternNames: Record<string, string> = {
  "^FG-[A-Z]+-[0-9]{3}$": "a check id like FG-KEY-001",
  "^[0-9]{4}-[0-9]{2}-[0-9]{2}$": "a date YYYY-MM-DD",
  "^[0-9]{4}-[0-9]{2}-[0-9]{2}": "a date YYYY-MM-DD",
  "^[a-z0-9][a-z0-9-]{0,62}$": "a lower-case name (a-z, 0-9, -)",
  "^[a-z0-9][a-z0-9._-]{0,127}$": "a lower-case name (a-z, 0-9, ., _, -)",
  "^(ecdsa-p(256|384|521)|rsa-[0-9]{4,5}|ed25519)$":
    "a key algorithm: ecdsa-p256, ecdsa-p384, ecdsa-p521, rsa-<bits>, ed25519",
};

function ajvToDiagnostic(src: SourceFile, e: ErrorObject): Diagnostic | undefined {
  const path = pointerToPath(e.instancePath);
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case "additionalProperties": {
      const key = String(p.additionalProperty);
      const props = Object.keys(((e.parentSchema as Record<string, unknown>)?.properties as object) ?? {});
      const hint = suggest(key, props);
      const want = props.length ? `one of ${props.join(", ")}` : "no keys here";
      return src.diagnostic(
        "input",
        [...path, key],
        `unknown key ${JSON.stringify(key)}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ""}, want ${want}`,
        "key",
      );
    }
    case "required":
      return src.diagnostic(
        "input",
        [...path, String(p.missingProperty)],
        `missing required key ${JSON.stringify(p.missingProperty)}`,
      );
    case "type":
      return src.diagnostic("input", path, `got ${got(e.data)}, want ${String(p.type).replace(",", " or ")}`);
    case "enum":
      return src.diagnostic(
        "input",
        path,
        `got ${got(e.data)}, want one of ${(p.allowedValues as unknown[]).map((v) => String(v)).join(", ")}`,
      );
    case "const":
      return src.diagnostic("input", path, `got ${got(e.data)}, want ${JSON.stringify(p.allowedValue)}`);
    case "minimum":
    case "maximum":
    case "exclusiveMinimum":
    case "exclusiveMaximum":
      return src.diagnostic(
        "input",
        path,
        `got ${got(e.data)}, want ${String(p.comparison)} ${String(p.limit)}`,
      );
    case "pattern": {
      if (e.propertyName !== undefined) {
        return src.diagnostic(
          "input",
          [...path, e.propertyName],
          `key ${JSON.stringify(e.propertyName)}: want ${patternNames[String(p.pattern)] ?? `a key matching ${String(p.pattern)}`}`,
          "key",
        );
      }
      return src.diagnostic(
        "input",
        path,
        `got ${got(e.data)}, want ${patternNames[String(p.pattern)] ?? `a string matching ${String(p.pattern)}`}`,
      );
    }
    case "propertyNames":
      return undefined; // reported by the nested pattern error, which names the key
    case "minLength":
      return src.diagnostic("input", path, `got ${got(e.data)}, want at least ${String(p.limit)} characters`);
    case "minItems":
      return src.diagnostic("input", path, `got ${got(e.data)}, want at least ${String(p.limit)} items`);
    case "minProperties":
      return src.diagnostic("input", path, `got an empty map, want at least ${String(p.limit)} key`);
    case "uniqueItems":
      return src.diagnostic(
        "input",
        [...path, Number(p.i)],
        `duplicate item (also at index ${String(p.j)}), want unique items`,
      );
    default:
      return src.diagnostic("input", path, `${e.message ?? e.keyword}`);
  }
}

/** Validate a parsed file against one of our schemas; all errors at once, each located in the source. */
export function validateAgainstSchema(src: SourceFile, name: "fleet-policy" | "fleet"): Diagnostic[] {
  if (src.parseDiagnostics.length) return [...src.parseDiagnostics];
  const v = validator(name);
  if (v(src.data)) return [];
  const out: Diagnostic[] = [];
  const seen = new Set<string>();
  for (const e of v.errors ?? []) {
    const d = ajvToDiagnostic(src, e);
    if (!d) continue;
    const key = `${d.line}:${d.column}:${d.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(d);
  }
  return sortDiagnostics(out);
}
