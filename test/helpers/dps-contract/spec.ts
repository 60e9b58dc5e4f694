/**
 * The vendored DPS service OpenAPI document (test/fixtures/azure-dps/service.json, Swagger 2.0,
 * api-version 2021-10-01) turned into one request validator and one response validator per
 * operation, with openapi-request-validator / openapi-response-validator 12.1.3 (Ajv underneath).
 * Those libraries take Swagger parameter objects and a `definitions` map; they do not follow
 * `#/parameters/...` references, so this module inlines them. One erratum is applied in memory
 * (see SOURCE.md): the published registrationId pattern matches two characters only.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import OpenAPIRequestValidator from "openapi-request-validator";
import OpenAPIResponseValidator from "openapi-response-validator";

export const SPEC_PATH = path.join(__dirname, "..", "..", "fixtures", "azure-dps", "service.json");

export const PUBLISHED_ID_PATTERN = "^([a-z0-9-._:][a-z0-9-])$";
export const CORRECTED_ID_PATTERN = "^[a-z0-9-._:]*[a-z0-9-]$";

// biome-ignore lint/suspicious/noExplicitAny: a Swagger document is untyped JSON
type Json = any;

export interface Violation {
  /** request or response */
  where: "request" | "response";
  operationId: string;
  method: string;
  path: string;
  status?: number;
  errors: unknown[];
}

export interface Operation {
  operationId: string;
  method: string;
  /** the path template, e.g. /enrollments/{id} */
  template: string;
  match: RegExp;
  pathParams: string[];
  hasBody: boolean;
  request: OpenAPIRequestValidator;
  response: OpenAPIResponseValidator;
  /** response headers the document declares, per status ("default" included) */
  responseHeaders: Map<string, OpenAPIRequestValidator>;
  /** the body schema (for the readOnly check) */
  bodySchema?: Json;
  /** declared types of the request headers (lowercase names), to read integers from header text */
  headerTypes: Map<string, string>;
  /** the same for each response's headers, per status */
  responseHeaderTypes: Map<string, Map<string, string>>;
}

/**
 * Header values arrive as text; the document types some as integers. Read a header as a number
 * when it is declared an integer and looks like one, so a header like "abc" still fails.
 */
export function coerceHeaders(
  types: Map<string, string>,
  headers: Record<string, string | string[] | undefined>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    const name = k.toLowerCase();
    const text = Array.isArray(v) ? v.join(", ") : v;
    out[name] = types.get(name) === "integer" && /^-?\d+$/.test(text) ? Number(text) : text;
  }
  return out;
}

/** The document as loaded: the erratum applied, nothing else. Returns how many patterns changed. */
export function loadSpec(): { doc: Json; patched: number } {
  const text = fs.readFileSync(SPEC_PATH, "utf8");
  let patched = 0;
  const doc = JSON.parse(text, (key, value) => {
    if (key === "pattern" && value === PUBLISHED_ID_PATTERN) {
      patched++;
      return CORRECTED_ID_PATTERN;
    }
    return value;
  });
  return { doc, patched };
}

const formats = {
  int32: (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31,
  int64: (v: unknown) => typeof v === "number" && Number.isInteger(v),
  "date-time": (v: unknown) =>
    typeof v === "string" &&
    /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(v) &&
    !Number.isNaN(Date.parse(v)),
};

function resolveParam(doc: Json, p: Json): Json {
  if (p.$ref) {
    const m = /^#\/parameters\/(.+)$/.exec(p.$ref);
    if (!m || !doc.parameters?.[m[1]]) throw new Error(`unresolvable parameter $ref ${p.$ref}`);
    return structuredClone(doc.parameters[m[1]]);
  }
  return structuredClone(p);
}

/** Every operation of the document with its validators. */
export function operations(doc: Json = loadSpec().doc): Operation[] {
  const out: Operation[] = [];
  const definitions = doc.definitions;
  for (const [template, item] of Object.entries<Json>(doc.paths)) {
    for (const [method, op] of Object.entries<Json>(item)) {
      const parameters = (op.parameters ?? []).map((p: Json) => resolveParam(doc, p));
      const pathParams: string[] = [];
      const source = template.replace(/\{([^}]+)\}/g, (_m, name: string) => {
        pathParams.push(name);
        return "([^/]+)";
      });
      const request = new OpenAPIRequestValidator({
        parameters,
        schemas: structuredClone(definitions),
        customFormats: formats,
        additionalQueryProperties: false,
      });
      const responses: Record<string, { schema: Json }> = {};
      const responseHeaders = new Map<string, OpenAPIRequestValidator>();
      const responseHeaderTypes = new Map<string, Map<string, string>>();
      for (const [status, r] of Object.entries<Json>(op.responses)) {
        responses[status] = { schema: r.schema ?? { type: "null" } };
        const headers = Object.entries<Json>(r.headers ?? {}).map(([name, h]) => ({
          ...h,
          name,
          in: "header",
          required: false,
        }));
        responseHeaders.set(
          status,
          new OpenAPIRequestValidator({ parameters: headers, customFormats: formats }),
        );
        responseHeaderTypes.set(status, new Map(headers.map((h) => [h.name.toLowerCase(), h.type])));
      }
      const response = new OpenAPIResponseValidator({
        responses,
        definitions: structuredClone(definitions),
        customFormats: formats,
      });
      const body = parameters.find((p: Json) => p.in === "body");
      out.push({
        operationId: op.operationId,
        method: method.toUpperCase(),
        template,
        match: new RegExp(`^${source}$`),
        pathParams,
        hasBody: body !== undefined,
        request,
        response,
        responseHeaders,
        bodySchema: body?.schema,
        headerTypes: new Map(
          parameters.filter((p: Json) => p.in === "header").map((p: Json) => [p.name.toLowerCase(), p.type]),
        ),
        responseHeaderTypes,
      });
    }
  }
  // literal segments before parameters: /enrollments/query must win over /enrollments/{id}
  return out.sort((a, b) => a.pathParams.length - b.pathParams.length);
}

/**
 * Swagger 2.0 readOnly: "SHOULD NOT be sent as part of the request". Ajv ignores the keyword, so
 * walk the body against its schema and list the read-only properties a request carries.
 */
export function readOnlyInRequest(doc: Json, schema: Json, value: unknown, at = "body"): string[] {
  if (!schema || value === null || typeof value !== "object") return [];
  let s = schema;
  while (s.$ref) s = doc.definitions[(/^#\/definitions\/(.+)$/.exec(s.$ref) as RegExpExecArray)[1]];
  const found: string[] = [];
  if (Array.isArray(value)) {
    if (s.items)
      for (const [i, v] of value.entries()) found.push(...readOnlyInRequest(doc, s.items, v, `${at}[${i}]`));
    return found;
  }
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const p = s.properties?.[k];
    if (!p) continue;
    if (p.readOnly === true) found.push(`${at}.${k}`);
    else found.push(...readOnlyInRequest(doc, p, v, `${at}.${k}`));
  }
  return found;
}
