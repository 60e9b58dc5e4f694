/**
 * Dynamic provider for one DeviceIdentityBatch. Thin and stateless like providers/ca.ts: the
 * closure Pulumi serializes captures only the path of the runtime entry; the enrollment engine,
 * the registry and the station client are loaded inside the provider process (brief, rule 3).
 */
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import type { BatchInputs } from "./runtime/batch";
import { loadRuntime } from "./runtime-entry";

const RUNTIME_AT_DEPLOY = path.join(__dirname, "runtime", "index.js");

const runtime = () => loadRuntime(RUNTIME_AT_DEPLOY);

export const batchProvider: pulumi.dynamic.ResourceProvider = {
  async check(olds, news) {
    return runtime()
      .batch()
      .check(olds, news as BatchInputs);
  },
  async diff(id, olds, news) {
    return runtime()
      .batch()
      .diff(id, olds, news as BatchInputs);
  },
  async create(inputs) {
    return runtime()
      .batch()
      .create(inputs as BatchInputs);
  },
  async update(id, olds, news) {
    return runtime()
      .batch()
      .update(id, olds, news as BatchInputs);
  },
  async read(id, props) {
    return runtime()
      .batch()
      .read(id, props as Record<string, unknown>);
  },
  async delete(id, props) {
    return runtime()
      .batch()
      .del(id, props as Record<string, unknown>);
  },
};

export type BatchResourceArgs = { [K in keyof BatchInputs]: pulumi.Input<BatchInputs[K]> };

/**
 * One production lot as one Pulumi resource; per-device records live in the registry. The issuing
 * CA key and the registry location (a postgres:// URL may carry a password) are secret outputs.
 */
export class DeviceBatchResource extends pulumi.dynamic.Resource {
  declare readonly total: pulumi.Output<number>;
  declare readonly counts: pulumi.Output<Record<string, number>>;
  declare readonly quarantineReasons: pulumi.Output<Record<string, number>>;
  declare readonly manifestDigest: pulumi.Output<string>;
  declare readonly issuerFingerprint: pulumi.Output<string>;
  declare readonly profileDigest: pulumi.Output<string>;
  declare readonly policyDigest: pulumi.Output<string>;
  /** the registry's audit head after the last run (SEQ:HASH), anchored here in the state */
  declare readonly auditHead: pulumi.Output<string>;
  /** the registry location (an input that rides along; a secret output) */
  declare readonly registry: pulumi.Output<string>;
  declare readonly drift: pulumi.Output<{
    lostCertificate: number;
    missingDevice: number;
    attested?: number;
    attestationPopulation?: number;
    attestationFailed?: number;
    checkedAt: string | null;
  }>;
  declare readonly crl: pulumi.Output<{ path: string; crlNumber: number; revoked: number } | null>;
  declare readonly manifest: pulumi.Output<{
    path: string;
    signerPath: string;
    entries: number;
    digest: string;
  } | null>;

  constructor(name: string, args: BatchResourceArgs, opts?: pulumi.CustomResourceOptions) {
    const outputs = {
      total: undefined,
      counts: undefined,
      quarantineReasons: undefined,
      manifestDigest: undefined,
      issuerFingerprint: undefined,
      profileDigest: undefined,
      policyDigest: undefined,
      declarationDigest: undefined,
      lastRun: undefined,
      auditHead: undefined,
      drift: undefined,
      crl: undefined,
      manifest: undefined,
    };
    super(
      batchProvider,
      name,
      { ...outputs, ...args },
      {
        ...opts,
        additionalSecretOutputs: [
          "issuerKeyPem",
          "previousIssuerKeyPem",
          "registry",
          ...(opts?.additionalSecretOutputs ?? []),
        ],
      },
    );
  }
}
