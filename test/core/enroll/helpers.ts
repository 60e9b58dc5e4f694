// Shared pieces of the enrollment engine tests: a CA hierarchy (core/ca issueCa), its issuer
// material, a batch declaration, and an engine over a real farm and a SQLite registry.
import * as crypto from "node:crypto";
import { issueCa } from "../../../core/ca";
import { BatchEngine, type BatchSpec, type EngineContext } from "../../../core/enroll/engine";
import { type IssuerMaterial, resolveProfile } from "../../../core/enroll/profile";
import type { Registry } from "../../../core/registry/types";
import type { StationClient } from "../../../core/station/client";
import { loadPrivateKey } from "../../../core/x509/keys";
import { pemBlocks } from "../../../core/x509/pem";

export interface Hierarchy {
  rootPem: string;
  issuingPem: string;
  material: IssuerMaterial;
}

/** root -> issuing, both ECDSA P-256, named after `name`. */
export function hierarchy(name: string): Hierarchy {
  const root = issueCa({
    name: "root",
    role: "root",
    algorithm: "ecdsa-p256",
    subject: { commonName: `${name} Root` },
    validityDays: 3650,
    pathLen: 1,
  });
  const issuing = issueCa(
    {
      name: "iss",
      role: "issuing",
      algorithm: "ecdsa-p256",
      subject: { commonName: `${name} Issuing` },
      validityDays: 730,
    },
    { name: "root", ...root },
  );
  const chain = pemBlocks(issuing.chainPem, "CERTIFICATE", "chain");
  return {
    rootPem: root.certificatePem,
    issuingPem: issuing.certificatePem,
    material: {
      certificate: chain[0]!,
      chain: chain.slice(1),
      key: loadPrivateKey(issuing.keyPem!, "key"),
      fingerprint: crypto.createHash("sha256").update(chain[0]!).digest("hex"),
    },
  };
}

export const batchSpec = (over: Partial<BatchSpec> = {}): BatchSpec => ({
  name: "lot",
  model: "fg100",
  source: "puf",
  firstSerial: 0,
  count: 10,
  profile: resolveProfile({ subject: { organization: "Acme" }, validityDays: 365 }),
  maxQuarantinedFraction: 0.1,
  maxWaveFraction: 1,
  ...over,
});

export function engineOf(
  registry: Registry,
  station: StationClient,
  issuer: IssuerMaterial,
  spec: BatchSpec,
  over: Partial<EngineContext> = {},
): BatchEngine {
  return new BatchEngine(
    { registry, station, issuer, waveSize: 8, concurrency: 2, deviceTimeoutMs: 5000, ...over },
    spec,
  );
}
