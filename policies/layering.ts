/**
 * Policy layering: an organisation baseline plus product-line policies (metadata.extends) that may only
 * tighten it. Which direction is tighter for each field is written in the JSON Schema itself (x-tighten,
 * x-order, x-merge) and so is the check a field feeds (x-check); this module walks the schema beside the
 * two documents. A loosening is an error unless the loosening policy carries an unexpired, unscoped waiver
 * for that check (id, written reason, expiry); an expired waiver is an error. The clock is injected.
 *
 * `extends` is a path written in a file that may come from a pull request, so it is confined to the
 * policy root (after symlinks are resolved): otherwise a policy could make the CLI or a preview read
 * any file the runner can read. See rootFor() and docs/policy.md.
 */
import { existsSync, realpathSync } from "node:fs";
import { dirname, isAbsolute, join, normalize, relative, resolve as resolvePath, sep } from "node:path";
import { checkIds } from "./checks/index";
import type { PolicySpec, Waiver } from "./schema/fleet-policy.gen";
import {
  type Diagnostic,
  loadSchema,
  type PathSegment,
  readProblem,
  readSourceText,
  SourceFile,
  sortDiagnostics,
  validateAgainstSchema,
} from "./source";

export interface ActiveWaiver extends Waiver {
  /** Name of the policy that grants it. */
  policy: string;
}

export interface EffectivePolicy {
  /** Name of the leaf policy (the one the fleet names). */
  name: string;
  /** Policies from the baseline down to the leaf. */
  chain: Array<{ name: string; file: string }>;
  /** The merged spec: baseline values overridden by tighter product-line values. */
  spec: PolicySpec;
  /** Unexpired waivers from every level. */
  waivers: ActiveWaiver[];
}

/** A loosening that a waiver allowed: shown in reports, never silent. */
export interface GrantedLoosening {
  file: string;
  path: string;
  check: string;
  message: string;
  reason: string;
  expires: string;
}

export interface PolicyLoad {
  /** Undefined when any file in the chain has input errors. */
  policy?: EffectivePolicy;
  diagnostics: Diagnostic[];
  granted: GrantedLoosening[];
}

export interface LoadOptions {
  /** The clock for waiver expiry (default: now). */
  now?: Date;
  /** Read a file (default: the disk). `fleet policy review` reads from git. */
  readFile?: (path: string) => string;
  /**
   * The directory every `extends` must stay inside (default: $FLEETGUARD_POLICY_ROOT, else the git
   * work tree holding the top policy file, else that file's directory).
   */
  root?: string;
}

/** Deeper than any real layering (baseline <- platform <- product): a bound, not a design limit. */
export const MAX_EXTENDS_DEPTH = 16;

/**
 * The policy root of a top policy file: the configured root, else the nearest ancestor directory with
 * a .git entry (a repository keeps its baseline and product lines together, as policies/ does), else
 * the file's own directory.
 */
export function rootFor(file: string, configured = process.env.FLEETGUARD_POLICY_ROOT): string {
  if (configured) return resolvePath(configured);
  const start = dirname(resolvePath(file));
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, ".git"))) return dir;
    if (dirname(dir) === dir) return start;
  }
}

const inside = (root: string, p: string) => {
  const r = relative(root, p);
  return r === "" || (!r.startsWith(`..${sep}`) && r !== ".." && !isAbsolute(r));
};

/** The real path, or undefined when it does not exist (the read reports that). */
function real(p: string): string | undefined {
  try {
    return realpathSync(p);
  } catch {
    return undefined;
  }
}

type SchemaNode = Record<string, unknown>;
const policySchema = loadSchema("fleet-policy") as SchemaNode;
const defs = policySchema.$defs as Record<string, SchemaNode>;

/** Resolve a local $ref, keeping sibling annotations (they win over the definition's). */
function resolve(node: SchemaNode | undefined): SchemaNode | undefined {
  if (!node) return undefined;
  const ref = node.$ref;
  if (typeof ref !== "string") return node;
  const target = resolve(defs[ref.replace("#/$defs/", "")]);
  const { $ref: _ignored, ...rest } = node;
  return { ...target, ...rest };
}

function childSchema(node: SchemaNode | undefined, key: string): SchemaNode | undefined {
  const props = node?.properties as Record<string, SchemaNode> | undefined;
  if (props?.[key]) return resolve(props[key]);
  if (node && typeof node.additionalProperties === "object")
    return resolve(node.additionalProperties as SchemaNode);
  return undefined;
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Today's date (UTC) as YYYY-MM-DD. */
export function utcDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

export function isValidDay(s: string): boolean {
  const d = new Date(`${s}T00:00:00Z`);
  return !Number.isNaN(d.getTime()) && utcDay(d) === s;
}

/** A waiver holds through its expiry day (UTC). */
export function waiverExpired(expires: string, now: Date): boolean {
  return expires < utcDay(now);
}

interface Loosening {
  path: PathSegment[];
  check: string;
  message: string;
}

function show(v: unknown): string {
  return Array.isArray(v) ? `[${v.join(", ")}]` : String(v);
}

/** Walk schema, base and child together; report every place the child is looser than the base. */
function compare(
  node: SchemaNode | undefined,
  base: unknown,
  child: unknown,
  path: PathSegment[],
  check: string | undefined,
  baseName: string,
  out: Loosening[],
): void {
  if (!node || child === undefined || base === undefined) return;
  const id = (node["x-check"] as string | undefined) ?? check;
  const tighten = node["x-tighten"] as string | undefined;
  const push = (message: string, at: PathSegment[] = path) => {
    // Enforcement levels are keyed by check id: the key names the check that a waiver must cover.
    const which = path[0] === "enforcement" && typeof path[1] === "string" ? path[1] : id;
    if (which) out.push({ path: at, check: which, message });
  };
  switch (tighten) {
    case "none":
      return;
    case "max":
      if (typeof base === "number" && typeof child === "number" && child > base)
        push(`got ${child}, loosens '${baseName}' (at most ${base})`);
      return;
    case "min":
      if (typeof base === "number" && typeof child === "number" && child < base)
        push(`got ${child}, loosens '${baseName}' (at least ${base})`);
      return;
    case "true":
      if (base === true && child === false) push(`got false, loosens '${baseName}' (requires true)`);
      return;
    case "false":
      if (base === false && child === true) push(`got true, loosens '${baseName}' (requires false)`);
      return;
    case "order": {
      const order = node["x-order"] as string[];
      const b = order.indexOf(String(base));
      const c = order.indexOf(String(child));
      if (b >= 0 && c >= 0 && c < b)
        push(`got ${String(child)}, loosens '${baseName}' (at least ${String(base)})`);
      return;
    }
    case "subset":
      if (Array.isArray(base) && Array.isArray(child)) {
        const extra = child.filter((x) => !base.includes(x));
        if (extra.length) push(`adds ${show(extra)}, loosens '${baseName}' (allows only ${show(base)})`);
      }
      return;
    case "keys-subset":
      if (isObj(base) && isObj(child)) {
        for (const k of Object.keys(child)) {
          if (!(k in base))
            push(`adds ${k}, loosens '${baseName}' (allows only ${Object.keys(base).join(", ")})`, [
              ...path,
              k,
            ]);
          else compare(childSchema(node, k), base[k], child[k], [...path, k], id, baseName, out);
        }
      }
      return;
    default:
      if (isObj(base) && isObj(child))
        for (const k of Object.keys(child))
          compare(childSchema(node, k), base[k], child[k], [...path, k], id, baseName, out);
  }
}

/** Merge a child spec over its parent: child values win; x-merge replace objects are taken whole; waivers add up. */
function merge(node: SchemaNode | undefined, base: unknown, child: unknown, key?: string): unknown {
  if (child === undefined) return base;
  if (base === undefined) return child;
  if (key === "waivers" && Array.isArray(base) && Array.isArray(child)) return [...base, ...child];
  if (node?.["x-merge"] === "replace") return child;
  if (isObj(base) && isObj(child)) {
    const out: Record<string, unknown> = { ...base };
    for (const [k, v] of Object.entries(child)) out[k] = merge(childSchema(node, k), base[k], v, k);
    return out;
  }
  return child;
}

interface Loaded {
  file: string;
  name: string;
  spec?: Record<string, unknown>;
  waivers: ActiveWaiver[];
  inputErrors: boolean;
}

/** Load a policy file, resolve its extends chain, and check that every level only tightens its parent. */
export function loadPolicy(file: string, opts: LoadOptions = {}): PolicyLoad {
  const now = opts.now ?? new Date();
  const fromDisk = opts.readFile === undefined;
  const read = opts.readFile ?? readSourceText;
  const root = rootFor(file, opts.root ?? process.env.FLEETGUARD_POLICY_ROOT);
  const realRoot = fromDisk ? (real(root) ?? root) : root;
  const diagnostics: Diagnostic[] = [];
  const granted: GrantedLoosening[] = [];
  const chain: Array<{ name: string; file: string }> = [];

  const load = (path: string, stack: string[]): Loaded | string => {
    let text: string;
    try {
      text = read(path);
    } catch (err) {
      return readProblem(err);
    }
    const src = new SourceFile(path, text);
    const schemaErrors = validateAgainstSchema(src, "fleet-policy");
    diagnostics.push(...schemaErrors);
    let inputErrors = schemaErrors.length > 0;
    const data = isObj(src.data) ? src.data : {};
    const meta = isObj(data.metadata) ? data.metadata : {};
    const name = typeof meta.name === "string" ? meta.name : path;
    const spec = isObj(data.spec) ? data.spec : {};

    // Waivers: known check, real date, not expired.
    const waivers: ActiveWaiver[] = [];
    (Array.isArray(spec.waivers) ? spec.waivers : []).forEach((w, i) => {
      if (!isObj(w)) return;
      const at: PathSegment[] = ["spec", "waivers", i];
      if (typeof w.check === "string" && /^FG-[A-Z]+-[0-9]{3}$/.test(w.check) && !checkIds.has(w.check)) {
        diagnostics.push(
          src.diagnostic(
            "input",
            [...at, "check"],
            `got ${w.check}, want a check id from the catalog (fleet policy list)`,
          ),
        );
        inputErrors = true;
      }
      if (typeof w.expires === "string" && /^[0-9]{4}-[0-9]{2}-[0-9]{2}$/.test(w.expires)) {
        if (!isValidDay(w.expires)) {
          diagnostics.push(
            src.diagnostic("input", [...at, "expires"], `got ${w.expires}, want a real calendar date`),
          );
          inputErrors = true;
        } else if (waiverExpired(w.expires, now)) {
          diagnostics.push(
            src.diagnostic(
              "violation",
              [...at, "expires"],
              `waiver for ${String(w.check)} expired on ${w.expires} (today is ${utcDay(now)}); renew it with a new reason or remove it`,
            ),
          );
        } else if (typeof w.check === "string" && typeof w.reason === "string") {
          waivers.push({ ...(w as unknown as Waiver), policy: name });
        }
      }
    });
    if (isObj(spec.enforcement))
      for (const id of Object.keys(spec.enforcement))
        if (/^FG-[A-Z]+-[0-9]{3}$/.test(id) && !checkIds.has(id)) {
          diagnostics.push(
            src.diagnostic(
              "input",
              ["spec", "enforcement", id],
              `got ${id}, want a check id from the catalog`,
              "key",
            ),
          );
          inputErrors = true;
        }

    let effective: Record<string, unknown> = spec;
    let allWaivers = waivers;
    if (typeof meta.extends === "string") {
      const refuse = (why: string): Loaded => {
        diagnostics.push(src.diagnostic("input", ["metadata", "extends"], `got ${meta.extends}, ${why}`));
        return { file: path, name, spec, waivers, inputErrors: true };
      };
      if (isAbsolute(meta.extends)) return refuse("want a path relative to this file");
      const parentPath = normalize(join(dirname(path), meta.extends));
      const outside = `want a policy file inside the policy root ${root} (set FLEETGUARD_POLICY_ROOT to widen it)`;
      if (!inside(root, resolvePath(parentPath)))
        return refuse(`which is outside the policy root; ${outside}`);
      // A symlink inside the root may point anywhere: what counts is where the file really is.
      const realParent = fromDisk ? real(parentPath) : undefined;
      if (realParent !== undefined && !inside(realRoot, realParent))
        return refuse(`which resolves (through a symlink) outside the policy root; ${outside}`);
      if ([...stack, path].includes(parentPath)) {
        diagnostics.push(
          src.diagnostic(
            "input",
            ["metadata", "extends"],
            `got ${meta.extends}, which extends this policy again (cycle: ${[...stack, path, parentPath].join(" -> ")})`,
          ),
        );
        return { file: path, name, spec, waivers, inputErrors: true };
      }
      if (stack.length + 1 >= MAX_EXTENDS_DEPTH)
        return refuse(`a chain deeper than ${MAX_EXTENDS_DEPTH} policies, want at most ${MAX_EXTENDS_DEPTH}`);
      const parent = load(parentPath, [...stack, path]);
      if (typeof parent === "string") return refuse(`want a readable policy file (${parentPath}: ${parent})`);
      inputErrors ||= parent.inputErrors;
      const loosenings: Loosening[] = [];
      compare(resolve(defs.PolicySpec), parent.spec ?? {}, spec, [], undefined, parent.name, loosenings);
      for (const l of loosenings) {
        const full: PathSegment[] = ["spec", ...l.path];
        const w = waivers.find((x) => x.check === l.check && !x.scope);
        if (w) {
          granted.push({
            file: path,
            path: full.join("."),
            check: l.check,
            message: l.message,
            reason: w.reason,
            expires: w.expires,
          });
        } else {
          const scoped = waivers.some((x) => x.check === l.check);
          diagnostics.push(
            src.diagnostic(
              "violation",
              full,
              `${l.message}; a product-line policy may only tighten its baseline unless an unscoped waiver for ${l.check} (reason, expiry) allows it${scoped ? " (a scoped waiver covers findings, not loosenings)" : ""}`,
            ),
          );
        }
      }
      effective = merge(resolve(defs.PolicySpec), parent.spec ?? {}, spec) as Record<string, unknown>;
      allWaivers = [...parent.waivers, ...waivers];
    }
    chain.push({ name, file: path });
    // Expired waivers stay in the file but grant nothing.
    effective = { ...effective, waivers: allWaivers.map(({ policy: _p, ...w }) => w) };
    return { file: path, name, spec: effective, waivers: allWaivers, inputErrors };
  };

  const top = load(file, []);
  if (typeof top === "string") {
    diagnostics.push({
      kind: "input",
      file,
      line: 1,
      column: 1,
      path: "(file)",
      message: `cannot read the policy file: ${top}`,
    });
    return { diagnostics, granted };
  }
  const sorted = sortDiagnostics(diagnostics);
  if (top.inputErrors) return { diagnostics: sorted, granted };
  return {
    policy: { name: top.name, chain, spec: top.spec as PolicySpec, waivers: top.waivers },
    diagnostics: sorted,
    granted,
  };
}

/** True when a waiver covers a finding on `subject` for `check`. */
export function waiverFor(
  policy: EffectivePolicy,
  check: string,
  subject: string,
  now: Date,
): ActiveWaiver | undefined {
  return policy.waivers.find(
    (w) => w.check === check && !waiverExpired(w.expires, now) && (!w.scope || w.scope.includes(subject)),
  );
}

export interface PolicyChange {
  path: string;
  base: unknown;
  head: unknown;
  /** tightened/loosened per the schema's x-tighten; changed when the field has no direction. */
  direction: "tightened" | "loosened" | "changed";
  check?: string;
}

function flatten(
  node: SchemaNode | undefined,
  v: unknown,
  path: string[],
  check: string | undefined,
  out: Map<string, { value: unknown; node?: SchemaNode; check?: string }>,
): void {
  const id = (node?.["x-check"] as string | undefined) ?? check;
  const leafLike = node?.["x-tighten"] !== undefined && node?.["x-tighten"] !== "keys-subset";
  if (isObj(v) && !leafLike) {
    if (node?.["x-tighten"] === "keys-subset")
      out.set([...path, "(algorithms)"].join("."), {
        value: Object.keys(v).sort(),
        node: { "x-tighten": "subset" },
        check: id,
      });
    for (const [k, x] of Object.entries(v))
      flatten(childSchema(node, k), x, [...path, k], path[0] === "enforcement" ? k : id, out);
    return;
  }
  out.set(path.join("."), { value: v, node, check: path[0] === "enforcement" ? path[1] : id });
}

/** Field-by-field difference of two effective specs (waivers excluded), each classified by direction. */
export function diffPolicies(base: PolicySpec | undefined, head: PolicySpec | undefined): PolicyChange[] {
  const strip = (s: PolicySpec | undefined) => {
    const { waivers: _w, ...rest } = (s ?? {}) as PolicySpec;
    return rest;
  };
  const root = resolve(defs.PolicySpec);
  const a = new Map<string, { value: unknown; node?: SchemaNode; check?: string }>();
  const b = new Map<string, { value: unknown; node?: SchemaNode; check?: string }>();
  flatten(root, strip(base), [], undefined, a);
  flatten(root, strip(head), [], undefined, b);
  const loose = new Set<string>();
  const ls: Loosening[] = [];
  compare(root, strip(base), strip(head), [], undefined, "base", ls);
  for (const l of ls) loose.add(l.path.join("."));
  const out: PolicyChange[] = [];
  for (const path of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    const x = a.get(path);
    const y = b.get(path);
    if (JSON.stringify(x?.value) === JSON.stringify(y?.value)) continue;
    const meta = y ?? x!;
    const directed = meta.node?.["x-tighten"] !== undefined && meta.node["x-tighten"] !== "none";
    let direction: PolicyChange["direction"] = "changed";
    if (directed) {
      const t = meta.node?.["x-tighten"];
      // a new constraint tightens, unless it is the permissive value of a flag (e.g. requireX: false)
      if (x === undefined)
        direction =
          (t === "true" && y!.value === false) || (t === "false" && y!.value === true)
            ? "changed"
            : "tightened";
      else if (y === undefined) direction = "loosened";
      else if (path.endsWith("(algorithms)")) {
        const added = (y.value as string[]).some((k) => !(x.value as string[]).includes(k));
        direction = added ? "loosened" : "tightened";
      } else direction = loose.has(path) ? "loosened" : "tightened";
    }
    out.push({ path: `spec.${path}`, base: x?.value, head: y?.value, direction, check: meta.check });
  }
  return out;
}
