/**
 * One night of `pulumi up` without a program change, run in this process: the same provider code the
 * engine calls (providers/runtime/batch.ts, rotation.ts, hub.ts: check, diff, and update when the diff
 * reports a change), with the inputs the engine last sent (from `pulumi stack export`, state.ts) and
 * the outputs of the previous run as `olds`, in the engine's order: the batches, the schedule's
 * resources (they depend on their batch), the hub's (they depend on the schedule). What changes from
 * night to night is what the engine would change too: the schedule's clock (`now`, from stack config
 * `fleetguard:now`) and the hub's `trust.batchCrl` (an output of the batch).
 *
 * After the up, `converged` is the workflow's "Confirm convergence" step (`pulumi preview
 * --expect-no-changes`) in process: every resource's check and diff again, with the inputs the engine
 * would send now and the outputs the up just wrote; any resource whose diff still finds a change is a
 * failed night, as the workflow's step fails.
 *
 * The providers' messages to the engine (their plan in words) go to stderr outside an engine; they are
 * captured here, per resource, instead of flooding the test's output.
 */
import * as batchProvider from "../../../providers/runtime/batch";
import * as hubProvider from "../../../providers/runtime/hub";
import * as rotationProvider from "../../../providers/runtime/rotation";
import type { EngineResource, ResourceKind } from "./state";

interface Provider {
  check(
    olds: Record<string, unknown>,
    news: never,
  ): { inputs: unknown; failures: { property: string; reason: string }[] };
  diff(
    id: string,
    olds: Record<string, unknown>,
    news: never,
  ): Promise<{ changes: boolean; replaces?: string[] }>;
  update(id: string, olds: Record<string, unknown>, news: never): Promise<{ outs: Record<string, unknown> }>;
}

const PROVIDERS: Record<ResourceKind, Provider> = {
  "fleetguard:batch": batchProvider as unknown as Provider,
  "fleetguard:rotation": rotationProvider as unknown as Provider,
  "fleetguard:hub": hubProvider as unknown as Provider,
};

const ORDER: Record<ResourceKind, number> = {
  "fleetguard:batch": 0,
  "fleetguard:rotation": 1,
  "fleetguard:hub": 2,
};

export interface StepResult {
  name: string;
  kind: ResourceKind;
  changed: boolean;
  /** the provider's messages (diff's plan in words, update's outcome) */
  words: string[];
  ms: { check: number; diff: number; update: number };
  outs: Record<string, unknown>;
}

/** Run f with stderr captured (the providers' engine log outside an engine). */
async function captured<T>(f: () => Promise<T>): Promise<{ value: T; lines: string[] }> {
  const lines: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => {
    lines.push(...String(chunk).split("\n").filter(Boolean));
    return true;
  }) as typeof process.stderr.write;
  try {
    return { value: await f(), lines };
  } finally {
    process.stderr.write = write;
  }
}

export class ProviderFleet {
  /** per resource name: the engine's inputs and the last outputs */
  readonly resources: EngineResource[];

  constructor(fromEngine: EngineResource[]) {
    this.resources = [...fromEngine]
      .map((r) => ({ ...r, inputs: structuredClone(r.inputs), outputs: structuredClone(r.outputs) }))
      .sort((a, b) => ORDER[a.kind] - ORDER[b.kind]);
  }

  byKind(kind: ResourceKind): EngineResource[] {
    return this.resources.filter((r) => r.kind === kind);
  }

  /** The inputs the engine would send tonight. */
  private news(r: EngineResource, now: string): Record<string, unknown> {
    const i = structuredClone(r.inputs);
    if (r.kind === "fleetguard:rotation" && i.now !== undefined) i.now = now;
    if (r.kind === "fleetguard:hub") {
      const batch = this.resources.find((b) => b.kind === "fleetguard:batch" && b.inputs.name === i.batch);
      const crl = batch?.outputs.crl as { path: string; crlNumber: number } | null | undefined;
      (i.trust as Record<string, unknown>).batchCrl = crl
        ? { path: crl.path, crlNumber: crl.crlNumber }
        : null;
    }
    return i;
  }

  /**
   * The batches' diff verifies the registry's audit chain for the batch (providers/runtime/batch.ts
   * checkIntegrity), which costs O(audit log) at every run. It reads no clock but the wall clock
   * (CRL freshness, at half the CRL's interval: days, while the whole replay takes minutes), so on
   * a night when the registry's audit head, the CRL folder and the batch's inputs are what they
   * were at the batch's last diff that found nothing to do, its answer is the same: `skipSame`
   * says whether the caller may skip it then (the replay does; counted in `skipped`).
   */
  private lastQuiet = new Map<string, string>();
  skipped = 0;

  /** No work due at `now` for the resources of these kinds (their diffs, which only read). */
  async quiet(
    now: string,
    kinds: ResourceKind[] = ["fleetguard:rotation", "fleetguard:hub"],
  ): Promise<boolean> {
    for (const r of this.resources) {
      if (!kinds.includes(r.kind)) continue;
      const d = await captured(() => PROVIDERS[r.kind].diff(r.id, r.outputs, this.news(r, now) as never));
      if (d.value.changes) return false;
    }
    return true;
  }

  /**
   * The convergence check after a night's up (`pulumi preview --expect-no-changes`): check and diff
   * of every resource, nothing updated. Returns the resources whose diff still reports a change,
   * with their words (empty: converged).
   */
  async converged(now: string): Promise<Array<{ name: string; words: string[] }>> {
    const left: Array<{ name: string; words: string[] }> = [];
    for (const r of this.resources) {
      const p = PROVIDERS[r.kind];
      const checked = p.check(r.outputs, this.news(r, now) as never);
      if (checked.failures.length)
        throw new Error(`${r.name}: check failed: ${JSON.stringify(checked.failures)}`);
      const d = await captured(() => p.diff(r.id, r.outputs, checked.inputs as never));
      if (d.value.changes) left.push({ name: r.name, words: d.lines });
    }
    return left;
  }

  /** One night: check, diff, and update what the diff says changed, in the engine's order. */
  async night(now: string, same?: () => Promise<string>): Promise<StepResult[]> {
    const steps: StepResult[] = [];
    for (const r of this.resources) {
      const p = PROVIDERS[r.kind];
      const news = this.news(r, now);
      let token: string | undefined;
      if (r.kind === "fleetguard:batch" && same) {
        token = `${await same()}|${JSON.stringify(news)}|${JSON.stringify(r.outputs.auditHead)}`;
        if (this.lastQuiet.get(r.name) === token) {
          this.skipped++;
          continue;
        }
      }
      const t0 = performance.now();
      const checked = p.check(r.outputs, news as never);
      if (checked.failures.length)
        throw new Error(`${r.name}: check failed: ${JSON.stringify(checked.failures)}`);
      const t1 = performance.now();
      const d = await captured(() => p.diff(r.id, r.outputs, checked.inputs as never));
      if (d.value.replaces?.length)
        throw new Error(`${r.name}: the diff asks for a replacement of ${d.value.replaces}`);
      const t2 = performance.now();
      let words = d.lines;
      if (token !== undefined) {
        if (d.value.changes) this.lastQuiet.delete(r.name);
        else this.lastQuiet.set(r.name, token);
      }
      if (d.value.changes) {
        const u = await captured(() => p.update(r.id, r.outputs, checked.inputs as never));
        r.outputs = u.value.outs;
        r.inputs = news;
        words = [...words, ...u.lines];
      }
      const t3 = performance.now();
      steps.push({
        name: r.name,
        kind: r.kind,
        changed: d.value.changes,
        words,
        ms: { check: t1 - t0, diff: t2 - t1, update: t3 - t2 },
        outs: r.outputs,
      });
    }
    return steps;
  }
}
