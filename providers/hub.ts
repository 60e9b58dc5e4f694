/**
 * Dynamic provider for one HubRegistration of one batch. Thin and stateless like providers/batch.ts:
 * the closure Pulumi serializes captures only the path of the runtime entry; the sync, the registry
 * and the hub's client (local files, AWS SDK, DPS REST) are loaded inside the provider process
 * (brief, rule 3).
 */
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import type { HubInputs } from "./runtime/hub";
import { loadRuntime } from "./runtime-entry";

const RUNTIME_AT_DEPLOY = path.join(__dirname, "runtime", "index.js");

const runtime = () => loadRuntime(RUNTIME_AT_DEPLOY);

export const hubProvider: pulumi.dynamic.ResourceProvider = {
  async check(olds, news) {
    return runtime()
      .hub()
      .check(olds, news as HubInputs);
  },
  async diff(id, olds, news) {
    return runtime()
      .hub()
      .diff(id, olds, news as HubInputs);
  },
  async create(inputs) {
    return runtime()
      .hub()
      .create(inputs as HubInputs);
  },
  async update(id, olds, news) {
    return runtime()
      .hub()
      .update(id, olds, news as HubInputs);
  },
  async read(id, props) {
    return runtime()
      .hub()
      .read(id, props as Record<string, unknown>);
  },
  async delete(id, props) {
    return runtime()
      .hub()
      .del(id, props as Record<string, unknown>);
  },
};

export type HubResourceArgs = { [K in keyof HubInputs]: pulumi.Input<HubInputs[K]> };

/**
 * One hub registration of one batch as one Pulumi resource; per-device registration state lives in
 * the registry. The hub settings (an Azure SAS key) and the registry location (a postgres:// URL
 * may carry a password) are secret outputs.
 */
export class HubRegistrationResource extends pulumi.dynamic.Resource {
  declare readonly registered: pulumi.Output<number>;
  declare readonly active: pulumi.Output<number>;
  declare readonly disabled: pulumi.Output<number>;
  declare readonly failed: pulumi.Output<number>;
  declare readonly pending: pulumi.Output<number>;
  declare readonly endpoint: pulumi.Output<string>;
  declare readonly caIds: pulumi.Output<string[]>;
  declare readonly drift: pulumi.Output<{
    deactivated: number;
    reactivated: number;
    unknown: number;
    checkedAt: string | null;
  }>;

  constructor(name: string, args: HubResourceArgs, opts?: pulumi.CustomResourceOptions) {
    const outputs = {
      registered: undefined,
      active: undefined,
      disabled: undefined,
      failed: undefined,
      pending: undefined,
      endpoint: undefined,
      caIds: undefined,
      trustDigest: undefined,
      hubDigest: undefined,
      lastRun: undefined,
      drift: undefined,
    };
    super(
      hubProvider,
      name,
      { ...outputs, ...args },
      {
        ...opts,
        additionalSecretOutputs: ["hub", "registry", ...(opts?.additionalSecretOutputs ?? [])],
      },
    );
  }
}
