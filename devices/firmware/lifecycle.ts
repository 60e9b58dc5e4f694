/**
 * Device lifecycle, kept where real chips keep it: in fuses. The lifecycle OTP word is a
 * thermometer code (blank 0b000, provisioned 0b001, closed 0b011, decommissioned 0b111), so
 * the state can only move forward even if firmware were wrong; the transition table below is
 * the firmware's own, stricter rule (no skipping from blank to closed, nothing after
 * decommissioned). Pattern after the life-cycle states of secure MCUs (e.g. STM32 product
 * states, PSA Security Lifecycle): a closed device accepts no new provisioning secrets.
 */
import { FleetError } from "../../core/errors";
import type { Lifecycle } from "../../core/station/messages";
import type { Otp } from "./otp";

const CODE: Record<Lifecycle, number> = { blank: 0, provisioned: 1, closed: 3, decommissioned: 7 };

const LEGAL: Record<Lifecycle, readonly Lifecycle[]> = {
  blank: ["provisioned", "decommissioned"],
  provisioned: ["closed", "decommissioned"],
  closed: ["decommissioned"],
  decommissioned: [],
};

export function lifecycleOf(otp: Otp): Lifecycle {
  switch (otp.words[0]! & 7) {
    case 0:
      return "blank";
    case 1:
      return "provisioned";
    case 3:
      return "closed";
    case 7:
      return "decommissioned";
    default:
      // a half-blown thermometer: treat as the most restrictive state
      return "decommissioned";
  }
}

export function canTransition(from: Lifecycle, to: Lifecycle): boolean {
  return LEGAL[from].includes(to);
}

/** Burn the fuses of the next state; throws CONFLICT on an illegal transition. */
export function transition(otp: Otp, to: Lifecycle): void {
  const from = lifecycleOf(otp);
  if (!canTransition(from, to))
    throw new FleetError(
      "CONFLICT",
      `lifecycle: got ${from} -> ${to}, want one of ${from} -> ${LEGAL[from].join(", ") || "(none)"}`,
    );
  const word = Buffer.alloc(4);
  word.writeUInt32BE(CODE[to], 0);
  otp.program("lifecycle", word);
}
