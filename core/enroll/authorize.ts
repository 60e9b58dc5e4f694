/**
 * The station side of signed commands (core/station/command.ts): the issuing CA's key signs each
 * command to a closed device for that device's current challenge, and the request carries the
 * signer's chain (the issuing CA up to its root) for the device to check against the trust anchor
 * fused into it. The key may be in memory or in an HSM: it is only ever used through signWith.
 */
import { invalid } from "../errors";
import { type CommandPayload, commandDigest, commandMessage } from "../station/command";
import type { CommandAuth } from "../station/messages";
import { algorithmOf, signWith } from "../x509/keys";
import type { IssuerMaterial } from "./profile";
import { sha } from "./run";

/**
 * The signer chain a device with trust anchors `anchors` (SHA-256 of its fused roots, from its
 * STATUS) accepts: the issuing CA's own, unless after a root rollover the device trusts only the
 * old root; then the chain through the new root's cross certificate (crossSigner).
 */
export function signerChain(issuer: IssuerMaterial, anchors?: readonly Uint8Array[]): Buffer[] {
  const own = [issuer.certificate, ...issuer.chain];
  if (!issuer.cross || !anchors) return own;
  const root = sha(own[own.length - 1]!);
  return anchors.some((a) => root.equals(Buffer.from(a))) ? own : crossSigner(issuer);
}

/**
 * The signer chain for setting the new root as a device's anchor after a root rollover: through
 * the cross certificate, so a device that trusts only the old root checks it (a device that
 * trusts the new root already takes the anchor without a check). The own chain otherwise.
 */
export const crossSigner = (issuer: IssuerMaterial): Buffer[] =>
  issuer.cross ? [issuer.certificate, ...issuer.cross] : [issuer.certificate, ...issuer.chain];

export function signCommand(
  issuer: IssuerMaterial,
  device: string,
  payload: CommandPayload,
  nonce: Uint8Array,
  signer: Buffer[] = signerChain(issuer),
): CommandAuth {
  if (!issuer.key)
    throw invalid(
      "issuer.keyPem",
      undefined,
      "the issuing CA's private key to sign commands to closed devices",
    );
  const msg = commandMessage(device, payload.op, commandDigest(payload), nonce);
  return {
    signer,
    nonce: Buffer.from(nonce),
    signature: signWith(algorithmOf(issuer.key, "issuer.key"), issuer.key, msg),
  };
}
