/**
 * A separate process for the registry tests. `open`: open the registry (applying migrations) and
 * exit, to race several openers. `churn`: drive every device of a batch around the lifecycle,
 * one `apply` of the whole batch per step, printing "begin N" before and "done N" after each
 * step, until killed (the SIGKILL test) or the step limit. The location comes from
 * $REGISTRY_LOCATION so a Postgres password never appears in a process list.
 */
import * as crypto from "node:crypto";
import { openRegistry } from "../../../core/registry";
import type { DeviceState, Transition } from "../../../core/registry/types";

export const CHURN_CYCLE: ReadonlyArray<[DeviceState, DeviceState]> = [
  ["pending", "attested"],
  ["attested", "issued"],
  ["issued", "installed"],
  ["installed", "active"],
  ["active", "issued"],
  ["issued", "installed"],
  ["installed", "active"],
];

/** the (from, to) of step s (1-based): the first four steps, then the re-issue loop forever */
export function churnStep(s: number): [DeviceState, DeviceState] {
  return s <= 4 ? CHURN_CYCLE[s - 1]! : CHURN_CYCLE[4 + ((s - 5) % 3)]!;
}

async function main(): Promise<void> {
  const [mode, batch, maxSteps] = process.argv.slice(2);
  const location = process.env.REGISTRY_LOCATION;
  if (!location) throw new Error("REGISTRY_LOCATION is not set");
  const reg = await openRegistry(location);
  if (mode === "open") {
    process.stdout.write(`version ${await reg.schemaVersion()}\n`);
    await reg.close();
    return;
  }
  if (mode !== "churn" || !batch) throw new Error(`usage: child.ts open | churn BATCH [MAX_STEPS]`);
  const ids = (await reg.listDevices(batch)).map((d) => d.deviceId);
  const der = crypto.randomBytes(600);
  const issuer = "ab".repeat(32);
  const limit = Number(maxSteps ?? 1000);
  for (let s = 1; s <= limit; s++) {
    const [from, to] = churnStep(s);
    const ts: Transition[] = ids.map((deviceId, i) => {
      const t: Transition = { deviceId, batch, from, to, detail: { step: s } };
      if (to === "attested") t.publicKey = der.subarray(0, 91);
      if (to === "issued") {
        const now = new Date();
        t.certificate = {
          serial: (s * 1_000_000 + i + 1).toString(16),
          deviceId,
          batch,
          issuer,
          der,
          notBefore: now,
          notAfter: now,
          issuedAt: now,
        };
      }
      return t;
    });
    process.stdout.write(`begin ${s}\n`);
    await reg.apply(ts);
    process.stdout.write(`done ${s}\n`);
  }
  await reg.close();
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`child: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
