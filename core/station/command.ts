/**
 * Signed commands to closed devices (station protocol version 2). A closed device belongs to the
 * trust anchor fused into it; it accepts a change of what it trusts or holds (a new trust anchor,
 * a certificate install, a re-key, a decommission) only with an authorization signed by a CA key
 * whose certificate chains to that anchor. The signed bytes are domain separated (so nothing else
 * the CA key signs, a certificate or a CRL, can be replayed as a command) and bind the device ID,
 * the operation, a digest of the operation's payload, and the device's current challenge, a
 * nonce the device derives from a counter it advances on every command it executes, so that a
 * command runs once:
 *
 *   "fleetguard/command/v1" 0x00 | u8 len | device ID | u8 len | op name | SHA-256(payload) | u8 len | nonce
 *
 * The payload digests (commandDigest) cover what the operation would write: the anchor
 * certificate, the chain (each certificate length-prefixed), the CSR subject, the confirmation.
 */
import { createHash } from "node:crypto";
import { invalid } from "../errors";
import { encode } from "./cbor";
import { DEVICE_ID_MAX, NONCE_MAX, NONCE_MIN, type Subject, subjectValue } from "./messages";

export const COMMAND_DOMAIN = Buffer.from("fleetguard/command/v1\0", "latin1");

/** The operations a closed device takes only as signed commands. */
export const COMMAND_OPS = ["SET_TRUST", "INSTALL", "ROTATE", "DECOMMISSION"] as const;
export type CommandOp = (typeof COMMAND_OPS)[number];

export type CommandPayload =
  | { op: "SET_TRUST"; anchor: Uint8Array }
  | { op: "INSTALL"; chain: readonly Uint8Array[] }
  | { op: "ROTATE"; subject: Subject }
  | { op: "DECOMMISSION"; confirm: string };

/** SHA-256 of what the operation would write. */
export function commandDigest(p: CommandPayload): Buffer {
  const h = createHash("sha256");
  switch (p.op) {
    case "SET_TRUST":
      h.update(p.anchor);
      break;
    case "INSTALL": {
      const len = Buffer.alloc(4);
      for (const c of p.chain) {
        len.writeUInt32BE(c.length, 0);
        h.update(len).update(c);
      }
      break;
    }
    case "ROTATE":
      h.update(encode(subjectValue(p.subject)));
      break;
    case "DECOMMISSION":
      h.update(Buffer.from(p.confirm, "utf8"));
      break;
  }
  return h.digest();
}

/** The bytes a command's signer signs. */
export function commandMessage(device: string, op: CommandOp, digest: Uint8Array, nonce: Uint8Array): Buffer {
  const id = Buffer.from(device, "utf8");
  if (id.length === 0 || id.length > DEVICE_ID_MAX)
    throw invalid("device", device, `1..${DEVICE_ID_MAX} bytes`);
  if (!COMMAND_OPS.includes(op)) throw invalid("op", op, COMMAND_OPS.join(", "));
  if (digest.length !== 32) throw invalid("digest", digest, "32 bytes (SHA-256)");
  if (nonce.length < NONCE_MIN || nonce.length > NONCE_MAX)
    throw invalid("nonce", nonce, `${NONCE_MIN}..${NONCE_MAX} bytes`);
  const name = Buffer.from(op, "latin1");
  return Buffer.concat([
    COMMAND_DOMAIN,
    Buffer.from([id.length]),
    id,
    Buffer.from([name.length]),
    name,
    digest,
    Buffer.from([nonce.length]),
    nonce,
  ]);
}
