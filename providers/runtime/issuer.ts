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
import { crlUrlsFor, type IssuerMaterial } from "../../core/enroll/profile";
import { invalid } from "../../core/errors";
import { StationClient } from "../../core/station/client";
import { loadPrivateKey, type SigningKey } from "../../core/x509/keys";
import { pemBlocks } from "../../core/x509/pem";
import { isUnknown } from "./ca";

export interface IssuerInputs {
  issuer: {
    name: string;
    certificatePem: string;
    chainPem: string;
    generation?: number;
    /** after a root rollover: the issuing CA up through the new root's cross certificate to the old root */
    crossChainPem?: string;
  };
  issuerKeyRef?: KeyRef;
  issuerKeyPem?: string;
  /**
   * During a CA rollover (CaHierarchy `generation`), the issuing CA's predecessor: its certificates
   * stay valid and on its own CRL until the rotation has re-issued every device under `issuer`
   */
  previousIssuer?: { name: string; certificatePem: string; chainPem: string; generation?: number };
  previousIssuerKeyRef?: KeyRef;
  previousIssuerKeyPem?: string;
}

/** The issuing CA's key, opened in this process from its custody (a state from before custody: the PEM). */
export function issuerKey(i: IssuerInputs): SigningKey {
  if (i.issuerKeyRef && !isUnknown(i.issuerKeyRef))
    return openCaKey(i.issuerKeyRef, { keyPem: i.issuerKeyPem, field: "issuingCa.keyRef" });
  return loadPrivateKey(i.issuerKeyPem, "issuerKeyPem");
}

export function issuerOf(i: IssuerInputs, needKey: boolean): IssuerMaterial {
  return materialOf(i.issuer, "issuer", needKey ? () => issuerKey(i) : undefined);
}

/** The predecessor of the issuing CA during a rollover (undefined when there is none). */
export function previousIssuerOf(i: IssuerInputs, needKey: boolean): IssuerMaterial | undefined {
  const p = i.previousIssuer;
  if (!p || isUnknown(p)) return undefined;
  return materialOf(
    p,
    "previousIssuer",
    needKey
      ? () =>
          i.previousIssuerKeyRef && !isUnknown(i.previousIssuerKeyRef)
            ? openCaKey(i.previousIssuerKeyRef, {
                keyPem: i.previousIssuerKeyPem,
                field: "previousIssuer.keyRef",
              })
            : loadPrivateKey(i.previousIssuerKeyPem, "previousIssuerKeyPem")
      : undefined,
  );
}

/** The issuing CA, and its predecessor during a rollover: an engine context's `issuer` and `previous`. */
export function issuersOf(
  i: IssuerInputs,
  needKey: boolean,
): { issuer: IssuerMaterial; previous?: IssuerMaterial } {
  const issuer = issuerOf(i, needKey);
  const previous = previousIssuerOf(i, needKey);
  return { issuer, ...(previous ? { previous } : {}) };
}

/**
 * The CRLs a batch feeds: the predecessor's during a rollover, then the issuing CA's; each with
 * its certificate and the distribution points of what it issues (the profile's, by generation).
 */
export function issuerCrls(
  i: IssuerInputs,
  cas: { issuer: IssuerMaterial; previous?: IssuerMaterial },
  profileUrls: readonly string[],
): { ca: IssuerMaterial; name: string; certificatePem: string; urls: string[] }[] {
  const one = (ca: IssuerMaterial, pems: { name: string; certificatePem: string }) => ({
    ca,
    name: pems.name,
    certificatePem: pems.certificatePem,
    urls: crlUrlsFor(profileUrls, ca.generation),
  });
  return [
    ...(cas.previous && i.previousIssuer ? [one(cas.previous, i.previousIssuer)] : []),
    one(cas.issuer, i.issuer),
  ];
}

function materialOf(
  ca: NonNullable<IssuerInputs["previousIssuer"]> & { crossChainPem?: string },
  field: string,
  key: (() => SigningKey) | undefined,
): IssuerMaterial {
  const chain = pemBlocks(ca.chainPem, "CERTIFICATE", `${field}.chainPem`);
  const certificate = pemBlocks(ca.certificatePem, "CERTIFICATE", `${field}.certificatePem`)[0]!;
  if (!chain[0]?.equals(certificate))
    throw invalid(
      `${field}.chainPem`,
      "a chain that does not start with the issuing CA",
      "the issuing CA first, up to its root",
    );
  let cross: Buffer[] | undefined;
  if (ca.crossChainPem && !isUnknown(ca.crossChainPem)) {
    const c = pemBlocks(ca.crossChainPem, "CERTIFICATE", `${field}.crossChainPem`);
    if (!c[0]?.equals(certificate) || c.length < 3)
      throw invalid(
        `${field}.crossChainPem`,
        "a chain that does not start with the issuing CA",
        "the issuing CA first, then the CAs above it, the cross certificate and the old root",
      );
    cross = c.slice(1);
  }
  return {
    certificate,
    chain: chain.slice(1),
    ...(cross ? { cross } : {}),
    key: key?.(),
    fingerprint: crypto.createHash("sha256").update(certificate).digest("hex"),
    ...(ca.generation !== undefined && ca.generation > 1 ? { generation: ca.generation } : {}),
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
