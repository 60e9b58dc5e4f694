/**
 * What a Pulumi program declares, as the policy engine sees it: run the program in a child process
 * under Pulumi's mocks (policies/declared-run.ts; no engine, no provider, nothing is created) and
 * collect every fleetguard component's declaration (CAs of each CaHierarchy, each DeviceIdentityBatch),
 * the policy each component names, the refusals its construction would raise at `pulumi up`, and the
 * program's own errors. Stack configuration reaches the program as the engine passes it: PULUMI_CONFIG.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
import { parse } from "yaml";
import { FleetError } from "../core/errors";
import type { DeclaredBatch, DeclaredCa, DeclaredFleet } from "./context";

export interface ComponentDeclaration {
  component: "CaHierarchy" | "DeviceIdentityBatch" | "HubRegistration";
  name: string;
  /** The policy the component names: an absolute file, or a policy passed inline. */
  policy?:
    | { file: string }
    | { inline: { name: string; spec: Record<string, unknown>; waivers?: unknown[] } };
  declared: DeclaredFleet;
  /** The component's declaration could not be mapped (its constructor fails with the field named). */
  error?: string;
}

export interface ProgramDeclarations {
  /** The program's project (Pulumi.yaml name). */
  project: string;
  components: ComponentDeclaration[];
  /** Mandatory violations the components' construction raises: each one stops `pulumi up`. */
  refusals: Array<{ component: string; name: string; message: string }>;
  /** Errors the program stops with under mocks (other than refusals): `pulumi up` stops with them too. */
  errors: string[];
  /** Every resource the program registered (type and logical name). */
  resources: Array<{ type: string; name: string }>;
  declared: DeclaredFleet;
}

export interface RunProgramOptions {
  /** Directory holding Pulumi.yaml. */
  dir: string;
  /** Stack name the program sees (pulumi.getStack()); its Pulumi.<stack>.yaml config is passed. */
  stack?: string;
  /** Extra environment for the program (on top of this process's, minus Pulumi passphrases). */
  env?: Record<string, string>;
  timeoutMs?: number;
}

const RUNNER = ["declared-run.js", "declared-run.ts"].map((f) => join(__dirname, f)).find(existsSync)!;

/** The program's entry: Pulumi.yaml's `main` (a file or a directory with index.ts/index.js). */
export function programEntry(dir: string): { project: string; main: string } {
  const file = ["Pulumi.yaml", "Pulumi.yml"].map((f) => join(dir, f)).find(existsSync);
  if (!file)
    throw new FleetError("INVALID_INPUT", `--program: got ${dir}, want a directory with a Pulumi.yaml`);
  const doc = (parse(readFileSync(file, "utf8")) ?? {}) as { name?: string; main?: string };
  let main = resolve(dir, doc.main ?? ".");
  if (!/\.[cm]?[jt]s$/.test(main)) {
    const idx = ["index.ts", "index.js"].map((f) => join(main, f)).find(existsSync);
    if (!idx)
      throw new FleetError(
        "INVALID_INPUT",
        `${file}: main: got ${doc.main ?? "."}, want a file or a directory with index.ts`,
      );
    main = idx;
  }
  return { project: String(doc.name ?? "project"), main };
}

/** Stack config as the engine hands it to a program: PULUMI_CONFIG, keys namespaced, secrets left out. */
export function stackConfig(dir: string, project: string, stack: string): Record<string, string> {
  const file = join(dir, `Pulumi.${stack}.yaml`);
  if (!existsSync(file)) return {};
  const doc = (parse(readFileSync(file, "utf8")) ?? {}) as { config?: Record<string, unknown> };
  const config: Record<string, string> = {};
  for (const [k, v] of Object.entries(doc.config ?? {})) {
    if (v && typeof v === "object" && "secure" in v) continue; // a review has no passphrase
    config[k.includes(":") ? k : `${project}:${k}`] = typeof v === "string" ? v : JSON.stringify(v);
  }
  return config;
}

function resolveTsx(): string {
  try {
    return require.resolve("tsx/cjs");
  } catch {
    throw new FleetError(
      "UNAVAILABLE",
      "tsx: got none installed, want tsx to run a TypeScript Pulumi program",
    );
  }
}

/** Run the program under mocks and collect what its fleetguard components declare. */
export function runProgramWithMocks(opts: RunProgramOptions): ProgramDeclarations {
  const { project, main } = programEntry(opts.dir);
  const stack = opts.stack ?? "review";
  const tmp = mkdtempSync(join(tmpdir(), "fleet-declared-"));
  const outFile = join(tmp, "declared.json");
  const env: Record<string, string | undefined> = { ...process.env };
  // the program needs no secret to declare itself: do not hand it one
  delete env.PULUMI_CONFIG_PASSPHRASE;
  delete env.PULUMI_CONFIG_PASSPHRASE_FILE;
  // a program in a repository without node_modules (a fresh worktree) still finds @pulumi/pulumi
  const ownModules = join(dirname(require.resolve("@pulumi/pulumi/package.json")), "..", "..");
  env.NODE_PATH = [env.NODE_PATH, ownModules].filter(Boolean).join(delimiter);
  Object.assign(env, {
    PULUMI_CONFIG: JSON.stringify({
      ...stackConfig(opts.dir, project, stack),
      ...JSON.parse(env.PULUMI_CONFIG ?? "{}"),
    }),
    PULUMI_NODEJS_PROJECT: project,
    PULUMI_NODEJS_STACK: stack,
    FLEETGUARD_REVIEW_PROJECT: project,
    FLEETGUARD_REVIEW_STACK: stack,
    // nothing connects under mocks, but programs check they were given a port
    FLEETGUARD_STATION_PORT: env.FLEETGUARD_STATION_PORT ?? "1",
    FLEETGUARD_DECLARED_OUT: outFile,
    ...opts.env,
  });
  try {
    const r = spawnSync(process.execPath, ["--require", resolveTsx(), RUNNER, main], {
      cwd: opts.dir,
      env,
      encoding: "utf8",
      timeout: opts.timeoutMs ?? 120_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    if (!existsSync(outFile))
      throw new FleetError(
        "UNAVAILABLE",
        `program ${main}: got no declarations (exit ${r.status ?? r.signal}), want a program that runs under mocks: ${(r.stderr || r.error?.message || "").trim().split("\n").slice(-5).join(" / ")}`,
      );
    const raw = JSON.parse(readFileSync(outFile, "utf8")) as Omit<
      ProgramDeclarations,
      "project" | "declared"
    > & {
      resources: Array<{ type: string; name: string; inputs: Record<string, unknown> }>;
    };
    return {
      project,
      components: raw.components,
      refusals: raw.refusals,
      errors: raw.errors,
      resources: raw.resources.map(({ type, name }) => ({ type, name })),
      declared: mergeDeclared(raw.components, raw.resources),
    };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * The declared fleet: each component's declaration; a CA or batch resource registered by no recorded
 * component (a program built on an older fleetguard) is taken from its resource inputs, which lack
 * a batch's puf, hsmCounter and tlsStack.
 */
export function mergeDeclared(
  components: ComponentDeclaration[],
  resources: Array<{ type: string; inputs: Record<string, unknown> }> = [],
): DeclaredFleet {
  const cas = new Map<string, DeclaredCa>();
  const batches = new Map<string, DeclaredBatch>();
  const hubs: NonNullable<DeclaredFleet["hubs"]> = {};
  for (const c of components) {
    for (const ca of c.declared.cas ?? []) cas.set(ca.name, ca);
    for (const b of c.declared.batches ?? []) batches.set(b.id, b);
    // several registrations of one kind: their policies and enrollment groups side by side
    const h = c.declared.hubs;
    if (h?.aws)
      hubs.aws = {
        ...hubs.aws,
        ...h.aws,
        policies: [...(hubs.aws?.policies ?? []), ...(h.aws.policies ?? [])],
      };
    if (h?.azure)
      hubs.azure = {
        enrollmentGroups: [...(hubs.azure?.enrollmentGroups ?? []), ...(h.azure.enrollmentGroups ?? [])],
      };
  }
  for (const r of resources) {
    const i = r.inputs;
    if (i.kind === "fleetguard:ca" && typeof i.name === "string" && !cas.has(i.name) && i.validityDays)
      cas.set(i.name, {
        name: i.name,
        role: i.role,
        ...(i.issuer && typeof i.issuer === "object" ? { parent: (i.issuer as { name?: string }).name } : {}),
        subject: JSON.stringify(i.subject),
        algorithm: i.algorithm ?? "ecdsa-p256",
        validityDays: i.validityDays,
        keyUsage: i.keyUsage ?? ["digitalSignature", "keyCertSign", "cRLSign"],
        crlIntervalHours: i.crlIntervalHours ?? 168,
      } as DeclaredCa);
    if (i.kind === "fleetguard:batch" && typeof i.name === "string" && !batches.has(i.name)) {
      const p = (i.profile ?? {}) as { validityDays?: number; keyUsage?: string[]; extKeyUsage?: string[] };
      batches.set(i.name, {
        id: i.name,
        deviceModel: String(i.model),
        issuingCa: String((i.issuer as { name?: string } | undefined)?.name),
        identitySource: i.source,
        count: Number(i.count),
        profile: {
          algorithm: "ecdsa-p256",
          validityDays: p.validityDays ?? 365,
          keyUsage: p.keyUsage,
          extKeyUsage: p.extKeyUsage,
        },
      } as DeclaredBatch);
    }
  }
  const out: DeclaredFleet = {};
  if (cas.size) out.cas = [...cas.values()];
  if (batches.size) out.batches = [...batches.values()];
  if (hubs.aws || hubs.azure) out.hubs = hubs;
  return out;
}
