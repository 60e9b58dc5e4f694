/**
 * Source-located YAML and schema validation for policy and fleet files. A file is parsed with the yaml
 * package's parseDocument + LineCounter so that every diagnostic can point at file:line:column: the key
 * for an unknown key (a typo must never silently weaken a policy), the value for a wrong type. The JSON
 * Schemas in policies/schema/ (draft 2020-12, validated with ajv, allErrors) are the single source of
 * truth; this module only turns ajv's errors into messages of the form "<path>: got X, want Y".
 *
 * A file named as a policy may be anything (an `extends` can point at /etc/passwd or a .env), so no
 * message quotes a file that is not one of ours: YAML syntax errors are described by their error code,
 * never with the source text yaml puts in its own messages, and a document that is not a map of the
 * expected kind gets one diagnostic without its content. Size and alias expansion are bounded, so a
 * hostile file is an input error (exit 2), not a crash.
 */
import { closeSync, constants, fstatSync, openSync, readFileSync, readSync } from "node:fs";
import { join } from "node:path";
import Ajv2020, { type ErrorObject, type ValidateFunction } from "ajv/dist/2020";
import { isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument, visit } from "yaml";

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

/** Largest policy or fleet file read (1 MiB): a real one is a few KiB. Documented in docs/policy.md. */
export const MAX_SOURCE_BYTES = 1024 * 1024;
/** yaml's bound on alias resolutions (count x nested aliases per anchor): an alias bomb stops here. */
export const MAX_ALIAS_COUNT = 100;

/** Why a source file could not be read, as a short phrase that never contains its content. */
export class SourceReadError extends Error {}

const errnoPhrases: Record<string, string> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EISDIR: "a directory, not a file",
  ENOTDIR: "a path through something that is not a directory",
  ELOOP: "a symlink loop",
  ENAMETOOLONG: "a name too long",
};

/** Describe a failed read for a message: the errno as words, never the file's content. */
export function readProblem(err: unknown): string {
  if (err instanceof SourceReadError) return err.message;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (code && errnoPhrases[code]) ?? (code ? `unreadable (${code})` : "unreadable");
}

/**
 * Read a policy or fleet file from disk: a regular file of at most MAX_SOURCE_BYTES, checked on the
 * open descriptor before reading (so /dev/zero or a FIFO is refused instead of read forever).
 */
export function readSourceText(path: string, maxBytes = MAX_SOURCE_BYTES): string {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer; a regular file ignores the flag
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw new SourceReadError(errnoPhrases.EISDIR!);
    if (!st.isFile()) throw new SourceReadError("not a regular file");
    if (st.size > maxBytes) throw new SourceReadError(tooLarge(st.size, maxBytes));
    // st.size + 1: a file that grows while it is read is noticed without a buffer of maxBytes
    const buf = Buffer.alloc(Math.min(maxBytes, st.size) + 1);
    let n = 0;
    for (let r = 1; r > 0 && n < buf.length; n += r) r = readSync(fd, buf, n, buf.length - n, null);
    if (n > st.size) throw new SourceReadError("got a file that grew while it was read, want a stable file");
    return buf.subarray(0, n).toString("utf8");
  } finally {
    closeSync(fd);
  }
}

function tooLarge(bytes: number, maxBytes = MAX_SOURCE_BYTES): string {
  const mib = maxBytes % (1024 * 1024) === 0 ? ` (${maxBytes / (1024 * 1024)} MiB)` : "";
  return `got ${bytes} bytes, want at most ${maxBytes}${mib}`;
}

/**
 * yaml's own messages quote the source ("Not a YAML token: <text>", "Unresolved tag: <tag>"), so a syntax
 * error is described by its code alone; the position says where.
 */
const yamlMessages: Record<string, string> = {
  ALIAS_PROPS: "got an alias with an anchor or a tag, want a bare alias",
  BAD_ALIAS: "got an alias that names no anchor before it, want an anchor first",
  BAD_DIRECTIVE: "got a malformed % directive, want valid YAML",
  BAD_DQ_ESCAPE: "got an invalid escape sequence in a double-quoted string, want a YAML escape",
  BAD_INDENT: "got wrong indentation, want the items of a map or list to start at the same column",
  BAD_PROP_ORDER: "got an anchor or tag in the wrong place, want it before the value",
  BAD_SCALAR_START: "got a plain value that starts with a reserved character, want it quoted",
  BLOCK_AS_IMPLICIT_KEY: "got a block value used as a key, want a plain key",
  BLOCK_IN_FLOW: "got a block value inside [ ] or { }, want flow values there",
  DUPLICATE_KEY: "got the same key twice in one map, want unique keys",
  IMPOSSIBLE: "got unparseable YAML, want valid YAML",
  KEY_OVER_1024_CHARS: "got a key longer than 1024 characters, want a short key",
  MISSING_CHAR: "got a missing character (a quote, bracket, comma or ': '), want valid YAML",
  MULTILINE_IMPLICIT_KEY: "got a key that spans lines (a missing ': ' or quote?), want a key on one line",
  MULTIPLE_ANCHORS: "got two anchors on one node, want at most one",
  MULTIPLE_DOCS: "got more than one YAML document, want one",
  MULTIPLE_TAGS: "got two tags on one node, want at most one",
  NON_STRING_KEY: "got a key that is not a string, want string keys",
  RESOURCE_EXHAUSTION: "got nesting too deep to read, want a policy-shaped document",
  TAB_AS_INDENT: "got a tab used as indentation, want spaces",
  TAG_RESOLVE_FAILED: "got an unknown or invalid tag, want no tags",
  UNEXPECTED_TOKEN: "got unexpected text, want valid YAML",
  BAD_COLLECTION_TYPE: "got a tag that does not fit its map or list, want no tags",
};

/** At most this many syntax errors per file: a binary or a long non-YAML file gives hundreds. */
const MAX_YAML_ERRORS = 10;

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
    const bytes = Buffer.byteLength(text, "utf8");
    if (bytes > MAX_SOURCE_BYTES) {
      // Not parsed at all: parsing is what an oversized file would make expensive.
      this.doc = parseDocument("");
      this.parseDiagnostics.push(this.at(1, 1, "(file)", tooLarge(bytes)));
      this.data = undefined;
      return;
    }
    let doc: ReturnType<typeof parseDocument>;
    try {
      doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: false, uniqueKeys: true });
    } catch {
      // yaml turns most failures into errors; a deep enough nesting can still overflow the stack.
      this.doc = parseDocument("");
      this.parseDiagnostics.push(this.at(1, 1, "(yaml)", yamlMessages.RESOURCE_EXHAUSTION!));
      this.data = undefined;
      return;
    }
    this.doc = doc;
    const problems = [...doc.errors, ...doc.warnings];
    for (const e of problems.slice(0, MAX_YAML_ERRORS)) {
      const at = this.lines.linePos(e.pos[0]);
      this.parseDiagnostics.push(
        this.at(at.line, at.col, "(yaml)", yamlMessages[e.code] ?? "got invalid YAML, want valid YAML"),
      );
    }
    if (problems.length > MAX_YAML_ERRORS)
      this.parseDiagnostics.push(
        this.at(1, 1, "(yaml)", `got ${problems.length} YAML errors, showing the first ${MAX_YAML_ERRORS}`),
      );
    let data: unknown;
    if (doc.errors.length === 0) {
      try {
        data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
      } catch {
        // ReferenceError "Excessive alias count" (an alias bomb); anything else toJS throws is no better.
        const first = this.firstAlias();
        this.parseDiagnostics.push(
          this.at(
            first.line,
            first.col,
            "(yaml)",
            `got aliases that expand more than ${MAX_ALIAS_COUNT} times (an alias bomb), want at most ${MAX_ALIAS_COUNT} alias expansions`,
          ),
        );
      }
    }
    this.data = data;
  }

  private at(line: number, column: number, path: string, message: string): Diagnostic {
    return { kind: "input", file: this.file, line, column, path, message };
  }

  /** Where the first alias is (or 1:1): the place to start looking when the aliases blow up. */
  private firstAlias(): { line: number; col: number } {
    let offset: number | undefined;
    visit(this.doc, {
      Alias: (_k, node) => {
        offset = node.range?.[0];
        return visit.BREAK;
      },
    });
    return offset === undefined ? { line: 1, col: 1 } : this.lines.linePos(offset);
  }

  static read(file: string, displayName = file): SourceFile {
    return new SourceFile(displayName, readSourceText(file));
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

const kinds = { "fleet-policy": "FleetPolicy", fleet: "Fleet" } as const;

/**
 * Validate a parsed file against one of our schemas; all errors at once, each located in the source.
 * A document that is not a map of the schema's kind is not one of our files (a typo in `extends`, or
 * a path at /etc/passwd): it gets one diagnostic that names the file and never quotes it.
 */
export function validateAgainstSchema(src: SourceFile, name: "fleet-policy" | "fleet"): Diagnostic[] {
  if (src.parseDiagnostics.length) return [...src.parseDiagnostics];
  const kind = kinds[name];
  const data = src.data;
  const isMapDoc = typeof data === "object" && data !== null && !Array.isArray(data);
  if (!isMapDoc || (data as Record<string, unknown>).kind !== kind) {
    const hasKind = isMapDoc && "kind" in (data as Record<string, unknown>);
    return [
      src.diagnostic(
        "input",
        hasKind ? ["kind"] : [],
        `got a file that is not a ${kind} (content not shown), want a YAML map with apiVersion: fleetguard.io/v1 and kind: ${kind}`,
      ),
    ];
  }
  const v = validator(name);
  let ok: boolean;
  try {
    ok = v(data) as boolean;
  } catch {
    // Within the size and alias bounds only an absurd nesting can get here (stack overflow).
    return [src.diagnostic("input", [], yamlMessages.RESOURCE_EXHAUSTION!)];
  }
  if (ok) return [];
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
