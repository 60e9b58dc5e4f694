// A farm killed with SIGKILL in the middle of provisioning restarts with every acknowledged
// write intact. The farm runs as a child process (`fleet devices serve`), as in production.
import type { ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { StationClient } from "../../../core/station/client";
import { deviceId } from "../../../core/station/ids";
import { startFarmProcess } from "../../../devices/farm/process";
import { makeCa, SEED, tempDir } from "./helpers";

const startFarm = (state: string) => startFarmProcess({ count: 10_000, state, seed: SEED });

interface Acked {
  publicKey?: Buffer;
  trusted?: boolean;
  chain?: Buffer[];
}

describe("crash safety", () => {
  const dir = tempDir("fg-crash-");
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    dir.remove();
  });

  it("kill -9 during provisioning loses no acknowledged write", async () => {
    const ca = makeCa();
    const first = await startFarm(dir.path);
    children.push(first.child);
    const client = new StationClient({ port: first.port, retries: 0, timeoutMs: 20_000, maxInFlight: 512 });
    const acked = new Map<string, Acked>();
    let closed = 0;
    let killed = false;
    let lost = 0;

    const provision = async (d: string) => {
      const a: Acked = {};
      const { publicKey } = await client.identify(d);
      a.publicKey = publicKey;
      acked.set(d, a);
      await client.setTrustAnchor(d, ca.root);
      a.trusted = true;
      const chain = ca.chainFor(publicKey!, d);
      await client.install(d, chain);
      a.chain = chain;
      closed++;
      if (closed === 60) {
        // responses come in group-commit bursts; a few ms later the farm is busy again
        setTimeout(() => {
          killed = true;
          first.child.kill("SIGKILL");
        }, 5);
      }
    };
    // 48 devices in flight at a time, each walking identify -> trust -> install
    const queue = Array.from({ length: 2000 }, (_, i) => deviceId("fg100", i));
    const workers = Array.from({ length: 48 }, async () => {
      while (queue.length && !killed) {
        try {
          await provision(queue.shift()!);
        } catch {
          lost++; // the farm died under this request
          return;
        }
      }
    });
    await Promise.all(workers);
    await new Promise<void>((r) =>
      first.child.exitCode !== null || first.child.signalCode ? r() : first.child.once("exit", () => r()),
    );
    expect(first.child.signalCode).toBe("SIGKILL");
    await client.close();
    expect(closed).toBeGreaterThanOrEqual(60);
    expect(lost).toBeGreaterThan(0); // the kill did land mid-provisioning

    const second = await startFarm(dir.path);
    children.push(second.child);
    const c2 = new StationClient({ port: second.port });
    const rootHash = createHash("sha256").update(ca.root).digest();
    let checked = 0;
    for (const [d, a] of acked) {
      const st = await c2.status(d);
      const ident = await c2.identify(d);
      expect(ident.publicKey!.equals(a.publicKey!), `${d} key`).toBe(true);
      if (a.trusted)
        expect(
          st.trustAnchors.some((h) => h.equals(rootHash)),
          `${d} anchor`,
        ).toBe(true);
      if (a.chain) {
        expect(st.lifecycle, d).toBe("closed");
        expect(
          st.chain.map((c) => c.toString("hex")),
          d,
        ).toEqual(a.chain.map((c) => c.toString("hex")));
      }
      checked++;
    }
    expect(checked).toBe(acked.size);
    // and the farm goes on provisioning after the restart
    const d = deviceId("fg100", 9999);
    const k = (await c2.identify(d)).publicKey!;
    await c2.setTrustAnchor(d, ca.root);
    expect((await c2.install(d, ca.chainFor(k, d))).lifecycle).toBe("closed");
    expect((await c2.attest(d, randomBytes(16))).epoch).toBe(0);
    await c2.close();
    second.child.kill("SIGTERM");
    await new Promise((r) => second.child.once("exit", r));
    expect(second.child.exitCode).toBe(0);
  });
});
