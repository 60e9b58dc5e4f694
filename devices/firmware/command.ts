/**
 * The device side of signed commands (core/station/command.ts): what makes a closed device keep
 * its owner. Once closed, a device executes a change of what it trusts or holds (SET_TRUST of an
 * anchor it lacks, INSTALL of another chain, ROTATE, DECOMMISSION) only if the request carries an
 * authorization signed by a CA whose certificate chains to one of its fused trust anchors, for
 * this device, this operation and payload, and its current challenge. Repeats of what the device
 * already holds are answered without one (nothing changes), as are devices not yet closed (the
 * production line) and the first anchor of a device closed without one (key injection closes a
 * chip on the line before it trusts any root). The challenge is HMAC-SHA256 under the device's secret of a counter it
 * advances with every command it executes, so it needs no storage of its own, cannot be predicted
 * from outside, and a command, once run, cannot be replayed.
 *
 * Costs: one signature verification per command; the signer's chain checks are memoized in the
 * CA cache. In a farm with worker threads this runs in the device's worker, beside its keys.
 */
import { createHmac, verify } from "node:crypto";
import {
  type CommandOp,
  type CommandPayload,
  commandDigest,
  commandMessage,
} from "../../core/station/command";
import { StationError } from "../../core/station/frame";
import { type CommandAuth, UNAUTHORIZED } from "../../core/station/messages";
import { algInfo, algorithmOf } from "../../core/x509/keys";
import { type CaCache, verifySignerChain } from "./chain";

const CHALLENGE_DOMAIN = Buffer.from("fleetguard/challenge/v1\0", "latin1");

/** The device's current challenge: HMAC(secret, domain | device ID | u32 commands executed). */
export function challengeOf(secret: Uint8Array, device: string, commands: number): Buffer {
  const n = Buffer.alloc(4);
  n.writeUInt32BE(commands >>> 0, 0);
  return createHmac("sha256", secret).update(CHALLENGE_DOMAIN).update(device, "utf8").update(n).digest();
}

const refuse = (message: string) => new StationError(UNAUTHORIZED, message);

export interface CommandCheck {
  device: string;
  payload: CommandPayload;
  auth: CommandAuth | undefined;
  anchors: readonly Buffer[];
  /** the device's current challenge (challengeOf) */
  challenge: Buffer;
  now: Date;
  cache: CaCache;
}

/** Throws StationError UNAUTHORIZED unless `auth` authorizes the command. */
export function checkCommand(c: CommandCheck): void {
  const op: CommandOp = c.payload.op;
  if (!c.auth)
    throw refuse(
      `auth: got none, want ${op} signed by a CA under this device's trust anchor (the device is closed: it has an owner)`,
    );
  if (!c.auth.nonce.equals(c.challenge))
    throw refuse(
      "auth.nonce: got a stale or foreign challenge, want the device's current one (STATUS or ATTEST)",
    );
  const signer = verifySignerChain(c.auth.signer, c.anchors, c.now, c.cache, refuse);
  let hash: string | null;
  try {
    hash = algInfo(algorithmOf(signer.publicKey, "auth.signer[0]")).hash;
  } catch {
    throw refuse("auth.signer[0]: got a key of an algorithm this device does not verify");
  }
  const msg = commandMessage(c.device, op, commandDigest(c.payload), c.auth.nonce);
  let ok = false;
  try {
    ok = verify(hash, msg, signer.publicKey, c.auth.signature);
  } catch {
    ok = false; // a malformed signature
  }
  if (!ok)
    throw refuse(
      `auth.signature: got one that does not verify under auth.signer[0], want ${op} of this device signed`,
    );
}
