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

export function signCommand(
  issuer: IssuerMaterial,
  device: string,
  payload: CommandPayload,
  nonce: Uint8Array,
): CommandAuth {
  if (!issuer.key)
    throw invalid(
      "issuer.keyPem",
      undefined,
      "the issuing CA's private key to sign commands to closed devices",
    );
  const msg = commandMessage(device, payload.op, commandDigest(payload), nonce);
  return {
    signer: [issuer.certificate, ...issuer.chain],
    nonce: Buffer.from(nonce),
    signature: signWith(algorithmOf(issuer.key, "issuer.key"), issuer.key, msg),
  };
}
