/**
 * kill -9 in the middle of `pulumi up` (the whole process group: engine, language host,
 * provider host), then the documented recovery (scripts/recover-stack) and `pulumi up` again:
 * the stack converges to exactly the declared CAs, no duplicates, no pending operations.
 */
import { spawn } from "node:child_process";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { verifyChain } from "../helpers/openssl";
import { runCommand } from "../helpers/proc";
import { PulumiStack, REPO } from "../helpers/pulumi";

const hierarchy = {
  // RSA-3072 key generation is slow enough (~0.5 s a key) to be caught mid-create
  root: { name: "root", algorithm: "rsa-3072", subject: { commonName: "K9 Root" }, validityDays: 3650 },
  intermediates: [
    { name: "plant", algorithm: "rsa-3072", subject: { commonName: "K9 Plant" }, validityDays: 1825 },
  ],
  issuing: [{ name: "line", algorithm: "rsa-3072", subject: { commonName: "K9 Line" }, validityDays: 730 }],
};

describe("an interrupted pulumi up is safe to run again", () => {
  const stack = new PulumiStack(path.join(REPO, "test", "integration", "fixtures", "ca-program"), "it-k9");
  afterAll(() => stack.cleanup());

  it("kill -9 mid-create, recover-stack, up: converges", async () => {
    await stack.init();
    await stack.setConfig("fleetguard:hierarchy", hierarchy);
    const child = spawn(
      "pulumi",
      [
        "up",
        "--yes",
        "--skip-preview",
        "--non-interactive",
        "--stack",
        stack.stack,
        "--cwd",
        stack.programDir,
      ],
      { env: stack.env, detached: true, stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    const killed = new Promise<string>((resolve) => {
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        // the first CA is being created: the engine has written its pending operation
        if (/pki-(root|plant) creating/.test(out) && child.exitCode === null && !child.killed) {
          process.kill(-child.pid!, "SIGKILL");
          resolve(out);
        }
      });
      child.on("close", () => resolve(out));
    });
    const seen = await killed;
    expect(seen).toMatch(/creating/);
    expect(seen).not.toMatch(/Resources:/); // it did not finish

    // without recovery the next run is refused (a stale lock)
    const blocked = await stack.run(["up", "--yes", "--skip-preview"], { allowFail: true });
    expect(blocked.status).not.toBe(0);
    expect(`${blocked.stdout}${blocked.stderr}`).toMatch(/locked/);

    const rec = await runCommand(
      "bash",
      [path.join(REPO, "scripts", "recover-stack"), stack.stack, "--cwd", stack.programDir],
      { env: stack.env },
    );
    expect(rec.status, rec.stderr).toBe(0);
    expect(rec.stderr).toMatch(/stale lock/);

    await stack.run(["up", "--yes", "--skip-preview"]);
    const exported = JSON.parse((await stack.run(["stack", "export"])).stdout) as {
      deployment: { resources: { type: string; urn: string }[]; pending_operations?: unknown[] };
    };
    expect(exported.deployment.pending_operations ?? []).toHaveLength(0);
    const cas = exported.deployment.resources
      .filter((r) => r.type === "pulumi-nodejs:dynamic:Resource")
      .map((r) => r.urn.split("::").pop());
    expect(cas.sort()).toEqual(["pki-line", "pki-plant", "pki-root"]);
    const summary = (await stack.outputs()).cas as Record<string, { certificatePem: string }>;
    expect(
      verifyChain(summary.root!.certificatePem, summary.plant!.certificatePem, summary.line!.certificatePem)
        .ok,
    ).toBe(true);
    const again = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(again.status, again.stdout).toBe(0);
  });
});
