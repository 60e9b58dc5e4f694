/**
 * Child process of policies/declared.ts: run a Pulumi program under Pulumi's mocks
 * (pulumi.runtime.setMocks; no engine, no provider, nothing created) and write what every fleetguard
 * component declared, as the policy engine sees it, to $FLEETGUARD_DECLARED_OUT (JSON). The program's
 * own stdout stays its own. argv[2] is the program's entry file.
 *
 * How declarations are seen without a change to the components: this process hooks Node's module
 * loader so that the CaHierarchy, DeviceIdentityBatch and HubRegistration classes the program imports (from this
 * checkout or from node_modules/fleetguard) are subclasses that first record the declaration with the
 * component module's own mapping (declaredCas(planHierarchy(args)), declaredBatch(name, args)), and
 * so that enforceAtConstruction records a refusal instead of throwing: a review must see every batch
 * a policy refuses, not only the first one (at `up` the first refusal stops the program).
 */
import { writeFileSync } from "node:fs";
import Module, { createRequire } from "node:module";
import { resolve } from "node:path";

interface Record_ {
  component: "CaHierarchy" | "DeviceIdentityBatch" | "HubRegistration";
  name: string;
  policy?: { file: string } | { inline: { name: string; spec: unknown; waivers?: unknown[] } };
  declared: { cas?: unknown[]; batches?: unknown[]; hubs?: unknown };
  error?: string;
}

const out = {
  components: [] as Record_[],
  refusals: [] as Array<{ component: string; name: string; message: string }>,
  resources: [] as Array<{ type: string; name: string; inputs: Record<string, unknown> }>,
  errors: [] as string[],
};

const main = process.argv[2];
const outFile = process.env.FLEETGUARD_DECLARED_OUT;
if (!main || !outFile) {
  process.stderr.write("declared-run: want the program's entry file and FLEETGUARD_DECLARED_OUT\n");
  process.exit(2);
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));
const policyOf = (p: unknown): Record_["policy"] =>
  typeof p === "string"
    ? { file: resolve(p) }
    : p && typeof p === "object"
      ? { inline: p as { name: string; spec: unknown } }
      : undefined;

let current: { component: string; name: string } | undefined;

type Exports = Record<string, unknown>;
type Ctor = new (...a: unknown[]) => object;
const wrapped = new WeakMap<object, Exports>();

function wrap(file: string, exp: Exports): Exports {
  if (!exp || typeof exp !== "object") return exp;
  const done = wrapped.get(exp);
  if (done) return done;
  let w: Exports | undefined;
  if (/[\\/]components[\\/]CaHierarchy\.[cm]?[jt]s$/.test(file) && typeof exp.CaHierarchy === "function") {
    const Orig = exp.CaHierarchy as Ctor;
    const plan = exp.planHierarchy as (a: unknown) => unknown;
    const map = exp.declaredCas as (p: unknown) => unknown[];
    w = {
      ...exp,
      CaHierarchy: class extends Orig {
        constructor(...a: unknown[]) {
          const [name, args] = a as [string, { policy?: unknown }];
          const r: Record_ = { component: "CaHierarchy", name, policy: policyOf(args?.policy), declared: {} };
          try {
            r.declared.cas = map(plan(args));
          } catch (e) {
            r.error = message(e); // the constructor below fails with the field named
          }
          out.components.push(r);
          const prev = current;
          current = { component: "CaHierarchy", name };
          try {
            super(...a);
          } finally {
            current = prev;
          }
        }
      },
    };
  } else if (
    /[\\/]components[\\/]DeviceIdentityBatch\.[cm]?[jt]s$/.test(file) &&
    typeof exp.DeviceIdentityBatch === "function"
  ) {
    const Orig = exp.DeviceIdentityBatch as Ctor;
    const map = exp.declaredBatch as (n: string, a: unknown) => unknown;
    w = {
      ...exp,
      DeviceIdentityBatch: class extends Orig {
        constructor(...a: unknown[]) {
          const [name, args] = a as [string, { name?: string; policy?: unknown }];
          const r: Record_ = {
            component: "DeviceIdentityBatch",
            name,
            policy: policyOf(args?.policy),
            declared: {},
          };
          try {
            r.declared.batches = [map(args?.name ?? name, args)];
          } catch (e) {
            r.error = message(e);
          }
          out.components.push(r);
          const prev = current;
          current = { component: "DeviceIdentityBatch", name };
          try {
            super(...a);
          } finally {
            current = prev;
          }
        }
      },
    };
  } else if (
    /[\\/]components[\\/]HubRegistration\.[cm]?[jt]s$/.test(file) &&
    typeof exp.HubRegistration === "function"
  ) {
    const Orig = exp.HubRegistration as Ctor;
    const map = exp.declaredHubs as (n: string, a: unknown) => unknown;
    w = {
      ...exp,
      HubRegistration: class extends Orig {
        constructor(...a: unknown[]) {
          const [name, args] = a as [string, { name?: string; policy?: unknown }];
          const r: Record_ = {
            component: "HubRegistration",
            name,
            policy: policyOf(args?.policy),
            declared: {},
          };
          try {
            r.declared.hubs = map(args?.name ?? name, args);
          } catch (e) {
            r.error = message(e);
          }
          out.components.push(r);
          const prev = current;
          current = { component: "HubRegistration", name };
          try {
            super(...a);
          } finally {
            current = prev;
          }
        }
      },
    };
  } else if (
    /[\\/]policies[\\/]engine\.[cm]?[jt]s$/.test(file) &&
    typeof exp.enforceAtConstruction === "function"
  ) {
    const real = exp.enforceAtConstruction as (p: unknown, d: unknown, o?: unknown) => unknown;
    const evaluate = exp.evaluate as (p: unknown, f: unknown, o?: unknown) => unknown;
    const load = exp.loadPolicyFile as (f: string, o?: unknown) => unknown;
    w = {
      ...exp,
      enforceAtConstruction(policy: unknown, declared: unknown, opts?: unknown) {
        try {
          return real(policy, declared, opts);
        } catch (e) {
          // a refusal of the declaration (not a broken policy file): record it and go on
          if (
            (e as { code?: string }).code !== "POLICY_VIOLATION" ||
            !/refuses this declaration/.test(message(e))
          )
            throw e;
          out.refusals.push({ ...(current ?? { component: "?", name: "?" }), message: message(e) });
          return evaluate(typeof policy === "string" ? load(policy, opts) : policy, { declared }, opts);
        }
      },
    };
  }
  if (!w) return exp;
  wrapped.set(exp, w);
  return w;
}

const loader = Module as unknown as {
  _load(request: string, parent: unknown, isMain: boolean): unknown;
  _resolveFilename(request: string, parent: unknown, isMain: boolean): string;
};
const load = loader._load;
loader._load = function (request: string, parent: unknown, isMain: boolean) {
  const exp = load.call(this, request, parent, isMain) as Exports;
  if (
    !request.includes("CaHierarchy") &&
    !request.includes("DeviceIdentityBatch") &&
    !request.includes("HubRegistration") &&
    !request.includes("engine")
  )
    return exp;
  let file: string;
  try {
    file = loader._resolveFilename(request, parent, isMain);
  } catch {
    return exp;
  }
  return wrap(file, exp);
};

function finish(): void {
  writeFileSync(outFile!, JSON.stringify(out));
}

process.on("unhandledRejection", (e) => {
  out.errors.push(message(e));
});

async function run(): Promise<void> {
  // the program's own @pulumi/pulumi: mocks must be set on the instance its components use
  const req = createRequire(resolve(main!));
  const pulumi = req("@pulumi/pulumi") as typeof import("@pulumi/pulumi");
  await pulumi.runtime.setMocks(
    {
      newResource(a) {
        out.resources.push({ type: a.type, name: a.name, inputs: a.inputs as Record<string, unknown> });
        return { id: `${a.name}-id`, state: a.inputs };
      },
      call(a) {
        return a.inputs;
      },
    },
    process.env.FLEETGUARD_REVIEW_PROJECT ?? "project",
    process.env.FLEETGUARD_REVIEW_STACK ?? "review",
    true,
  );
  try {
    const exp = req(resolve(main!)) as unknown;
    if (typeof exp === "function") await (exp as () => unknown)();
  } catch (e) {
    out.errors.push(message(e));
  }
  // let the registrations the constructors started settle (mocks answer at once)
  for (let n = -1, same = 0; same < 3; ) {
    await new Promise((r) => setImmediate(r));
    same = out.resources.length === n ? same + 1 : 0;
    n = out.resources.length;
  }
}

run()
  .then(finish, (e) => {
    out.errors.push(message(e));
    finish();
  })
  .then(() => process.exit(0));
