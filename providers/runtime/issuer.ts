/**
 * What a dynamic provider that talks to a batch's devices needs besides the registry
 * (registry.ts): the issuing CA as core/enroll takes it (certificate, chain, and its key opened
 * in this process from its custody: the key never crosses Pulumi's RPC), and a station client
 * closed after use. Shared by the rotation provider (rotation.ts); providers/runtime/batch.ts has
 * the same three helpers inline and can import these instead (left to the lead while CRL
 * publication in batch.ts is being changed).
 */
import * as crypto from "node:crypto";
import { type KeyRef, openCaKey } from "../../core/custody";
import type { IssuerMaterial } from "../../core/enroll/profile";
import { invalid } from "../../core/errors";
import { StationClient } from "../../core/station/client";
import { loadPrivateKey, type SigningKey } from "../../core/x509/keys";
import { pemBlocks } from "../../core/x509/pem";
import { isUnknown } from "./ca";

export interface IssuerInputs {
  issuer: { name: string; certificatePem: string; chainPem: string };
  issuerKeyRef?: KeyRef;
  issuerKeyPem?: string;
}

/** The issuing CA's key, opened in this process from its custody (a state from before custody: the PEM). */
export function issuerKey(i: IssuerInputs): SigningKey {
  if (i.issuerKeyRef && !isUnknown(i.issuerKeyRef))
    return openCaKey(i.issuerKeyRef, { keyPem: i.issuerKeyPem, field: "issuingCa.keyRef" });
  return loadPrivateKey(i.issuerKeyPem, "issuerKeyPem");
}

export function issuerOf(i: IssuerInputs, needKey: boolean): IssuerMaterial {
  const chain = pemBlocks(i.issuer.chainPem, "CERTIFICATE", "issuer.chainPem");
  const certificate = pemBlocks(i.issuer.certificatePem, "CERTIFICATE", "issuer.certificatePem")[0]!;
  if (!chain[0]?.equals(certificate))
    throw invalid(
      "issuer.chainPem",
      "a chain that does not start with the issuing CA",
      "the issuing CA first, up to its root",
    );
  return {
    certificate,
    chain: chain.slice(1),
    key: needKey ? issuerKey(i) : undefined,
    fingerprint: crypto.createHash("sha256").update(certificate).digest("hex"),
  };
}

export async function withStation<T>(
  i: { station: { host: string; port: number } },
  f: (s: StationClient) => Promise<T>,
): Promise<T> {
  const s = new StationClient({
    host: i.station.host,
    port: i.station.port,
    poolSize: 2,
    maxInFlight: 64,
    timeoutMs: 60_000,
    retries: 3,
  });
  try {
    return await f(s);
  } finally {
    await s.close();
  }
}
