/**
 * The replay's view of what the real engine wrote: `pulumi stack export --show-secrets` read back
 * into fleetguard's dynamic resources (one per batch, per schedule and batch, per hub and batch),
 * each with the inputs the engine last sent to its provider and the outputs it got back. The nightly
 * replay (test/integration/replay.test.ts) calls the providers with exactly these, as `pulumi up`
 * would on a night without a program change.
 */
import type { PulumiStack } from "../pulumi";

/** Pulumi's marker of a secret value in a deployment (sdk/go/common/resource/sig). */
const SECRET_SIG = "4dabf18193072939515e22adb298388d";

export type ResourceKind = "fleetguard:batch" | "fleetguard:rotation" | "fleetguard:hub";
export const KINDS: readonly ResourceKind[] = ["fleetguard:batch", "fleetguard:rotation", "fleetguard:hub"];

export interface EngineResource {
  urn: string;
  /** the logical name (`lot-a-lot`, `nightly-lot-a`, `hub-lot-a`) */
  name: string;
  id: string;
  kind: ResourceKind;
  /** what the engine sent to the provider (without the serialized provider) */
  inputs: Record<string, unknown>;
  /** what the provider returned (the provider's `olds` of the next run) */
  outputs: Record<string, unknown>;
  dependencies: string[];
}

/** A deployment's value with every secret replaced by its plaintext (export --show-secrets). */
export function unwrapSecrets(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(unwrapSecrets);
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (o[SECRET_SIG] !== undefined) {
      if (typeof o.plaintext !== "string")
        throw new Error("stack export: a secret without plaintext (run it with --show-secrets)");
      return unwrapSecrets(JSON.parse(o.plaintext));
    }
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, unwrapSecrets(x)]));
  }
  return v;
}

interface ExportedResource {
  urn: string;
  type: string;
  id?: string;
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
  dependencies?: string[];
}

/** The fleetguard dynamic resources of a deployment, in the engine's order (dependencies first). */
export function resourcesOf(deployment: unknown): EngineResource[] {
  const d = deployment as { deployment?: { resources?: ExportedResource[] } };
  const out: EngineResource[] = [];
  for (const r of d.deployment?.resources ?? []) {
    if (r.type !== "pulumi-nodejs:dynamic:Resource") continue;
    const inputs = unwrapSecrets(r.inputs ?? {}) as Record<string, unknown>;
    const kind = inputs.kind as ResourceKind;
    if (!KINDS.includes(kind)) continue; // the CAs
    delete inputs.__provider;
    const outputs = unwrapSecrets(r.outputs ?? {}) as Record<string, unknown>;
    delete outputs.__provider;
    out.push({
      urn: r.urn,
      name: r.urn.split("::").pop()!,
      id: r.id ?? "",
      kind,
      inputs,
      outputs,
      dependencies: r.dependencies ?? [],
    });
  }
  return out;
}

/** `pulumi stack export --show-secrets`, parsed. */
export async function exportStack(stack: PulumiStack): Promise<EngineResource[]> {
  const r = await stack.run(["stack", "export", "--show-secrets"]);
  return resourcesOf(JSON.parse(r.stdout));
}
