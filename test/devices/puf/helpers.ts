import { createHash } from "node:crypto";

/** Deterministic byte source for reproducible reads and enrollments (SHA-256 in counter mode). */
export function seededRng(label: string): (n: number) => Uint8Array {
  let counter = 0;
  return (n: number) => {
    const out = new Uint8Array(n);
    for (let off = 0; off < n; off += 32) {
      const block = createHash("sha256").update(`${label}/${counter++}`).digest();
      out.set(block.subarray(0, Math.min(32, n - off)), off);
    }
    return out;
  };
}

export function expectFleetError(f: () => unknown, code: string): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  if (err === undefined) throw new Error(`expected FleetError ${code}, nothing was thrown`);
  const fe = err as { name?: string; code?: string; message?: string };
  if (fe.name !== "FleetError" || fe.code !== code)
    throw new Error(`expected FleetError ${code}, got ${fe.name} ${fe.code}: ${fe.message}`);
}
