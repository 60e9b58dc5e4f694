/**
 * Dynamic provider for one certificate authority. Thin and stateless: Pulumi serializes this
 * object into the state (closure serialization), so it captures nothing but the path of the
 * runtime entry; each method loads core lazily in the provider process (brief.md rule 3).
 */
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import type { CaInputs } from "./runtime/ca";
import { loadRuntime } from "./runtime-entry";

const RUNTIME_AT_DEPLOY = path.join(__dirname, "runtime", "index.js");

const runtime = () => loadRuntime(RUNTIME_AT_DEPLOY);

export const caProvider: pulumi.dynamic.ResourceProvider = {
  async check(olds, news) {
    return runtime()
      .ca()
      .check(olds, news as CaInputs);
  },
  async diff(id, olds, news) {
    return runtime()
      .ca()
      .diff(id, olds, news as CaInputs);
  },
  async create(inputs) {
    return runtime()
      .ca()
      .create(inputs as CaInputs);
  },
  async update(id, olds, news) {
    return runtime()
      .ca()
      .update(id, olds, news as CaInputs);
  },
  async read(id, props) {
    return runtime()
      .ca()
      .read(id, props as Record<string, unknown>);
  },
  async delete() {
    // a CA exists only in the state: nothing outside to remove
  },
};

export type CaResourceArgs = { [K in keyof CaInputs]: pulumi.Input<CaInputs[K]> };

/** One CA as a Pulumi resource; its key stays in its custody (`keyRef`); `keyPem`, if any, is a secret output. */
export class CertificateAuthority extends pulumi.dynamic.Resource {
  declare readonly kind: pulumi.Output<string>;
  declare readonly name: pulumi.Output<string>;
  declare readonly role: pulumi.Output<string>;
  declare readonly algorithm: pulumi.Output<string>;
  declare readonly certificatePem: pulumi.Output<string>;
  declare readonly chainPem: pulumi.Output<string>;
  /** only for the pulumi-secret custody (and bring-your-own PEMs); other custodies keep the key */
  declare readonly keyPem: pulumi.Output<string | undefined>;
  /** where the key is: a reference a provider opens itself (core/custody), never the key */
  declare readonly keyRef: pulumi.Output<import("../core/custody").KeyRef>;
  declare readonly fingerprintSha256: pulumi.Output<string>;
  declare readonly subjectKeyId: pulumi.Output<string>;
  declare readonly authorityKeyId: pulumi.Output<string>;
  declare readonly serialNumber: pulumi.Output<string>;
  declare readonly notBefore: pulumi.Output<string>;
  declare readonly notAfter: pulumi.Output<string>;
  declare readonly pathLen: pulumi.Output<number | null>;
  declare readonly subjectDn: pulumi.Output<string>;
  declare readonly crlPem: pulumi.Output<string>;
  declare readonly crlNumber: pulumi.Output<number>;
  declare readonly crlNextUpdate: pulumi.Output<string>;
  /** the published CRL (PEM) in the CRL folder: `<crlDir>/<fingerprint>.crl.pem`, DER beside it */
  declare readonly crlPath: pulumi.Output<string>;
  /** a root's successor in a root rollover: its cross certificate, issued by the old root (else null) */
  declare readonly crossCertificatePem: pulumi.Output<string | null>;

  constructor(name: string, args: CaResourceArgs, opts?: pulumi.CustomResourceOptions) {
    const outputs = {
      crlPem: undefined,
      crlNumber: undefined,
      crlNextUpdate: undefined,
      crlPath: undefined,
      certificatePem: undefined,
      chainPem: undefined,
      keyPem: undefined,
      keyRef: undefined,
      fingerprintSha256: undefined,
      subjectKeyId: undefined,
      authorityKeyId: undefined,
      serialNumber: undefined,
      notBefore: undefined,
      notAfter: undefined,
      subjectDn: undefined,
      crossCertificatePem: undefined,
    };
    super(
      caProvider,
      name,
      { ...outputs, ...args },
      {
        ...opts,
        additionalSecretOutputs: ["keyPem", ...(opts?.additionalSecretOutputs ?? [])],
      },
    );
  }
}
