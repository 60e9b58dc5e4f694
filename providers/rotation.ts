/**
 * Dynamic provider for one batch governed by a RotationSchedule. Thin and stateless like
 * providers/batch.ts: the closure Pulumi serializes captures only the path of the runtime entry;
 * the renewal engine, the registry and the station client are loaded inside the provider process.
 */
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import type { RotationInputs } from "./runtime/rotation";
import { loadRuntime } from "./runtime-entry";

const RUNTIME_AT_DEPLOY = path.join(__dirname, "runtime", "index.js");

const runtime = () => loadRuntime(RUNTIME_AT_DEPLOY);

export const rotationProvider: pulumi.dynamic.ResourceProvider = {
  async check(olds, news) {
    return runtime()
      .rotation()
      .check(olds, news as RotationInputs);
  },
  async diff(id, olds, news) {
    return runtime()
      .rotation()
      .diff(id, olds, news as RotationInputs);
  },
  async create(inputs) {
    return runtime()
      .rotation()
      .create(inputs as RotationInputs);
  },
  async update(id, olds, news) {
    return runtime()
      .rotation()
      .update(id, olds, news as RotationInputs);
  },
  async read(id, props) {
    return runtime()
      .rotation()
      .read(id, props as Record<string, unknown>);
  },
  async delete(id, props) {
    return runtime()
      .rotation()
      .del(id, props as Record<string, unknown>);
  },
};

export type RotationResourceArgs = { [K in keyof RotationInputs]: pulumi.Input<RotationInputs[K]> };

/** One governed batch's rotation as one Pulumi resource; the batch's CA key and registry ride along as secrets. */
export class RotationResource extends pulumi.dynamic.Resource {
  declare readonly plan: pulumi.Output<{
    batch: string;
    renew: number;
    rekey: number;
    resume: number;
    waves: number;
    waveSize: number;
    nextDue?: string;
  }>;
  declare readonly lastRun: pulumi.Output<{
    renewed: number;
    rekeyed: number;
    resumed: number;
    failed: number;
    waves: number;
    remaining: number;
    at: string;
  } | null>;
  declare readonly auditHead: pulumi.Output<string>;

  constructor(name: string, args: RotationResourceArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      rotationProvider,
      name,
      { plan: undefined, lastRun: undefined, auditHead: undefined, crl: undefined, ...args },
      { ...opts, additionalSecretOutputs: ["batch", ...(opts?.additionalSecretOutputs ?? [])] },
    );
  }
}
