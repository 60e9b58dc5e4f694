/**
 * bench/lib/procmem.ts against real processes: a grandchild that holds ~100 MiB must show a
 * peak of at least that, under its readable name, with its parent shell in the same tree.
 */
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { processName, start } from "../../bench/lib/procmem";
import { FleetError } from "../../core/errors";

const MIB = 1024;

describe("procmem sampler", () => {
  it("sees the peak RSS of a grandchild that allocates 100 MiB", async () => {
    // sh stays the parent (a second command after node prevents exec), node is the grandchild
    const code =
      "const b = Buffer.alloc(100 * 1024 * 1024); b.fill(7); process.stdout.write('ready\\n');" +
      "process.stdin.on('data', () => {}); process.stdin.on('end', () => process.exit(b[12345] === 7 ? 0 : 1));";
    const child = spawn("sh", ["-c", `${JSON.stringify(process.execPath)} -e "${code}"; true`], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    const sampler = start(child.pid!, { intervalMs: 50 });
    await new Promise<void>((resolve, reject) => {
      let out = "";
      child.stdout!.on("data", (d) => {
        out += d;
        if (out.includes("ready")) resolve();
      });
      child.on("exit", (c) => reject(new Error(`child exited early with ${c}`)));
    });
    sampler.sample(); // the memory is held now: this sample must see it
    const exited = new Promise<number | null>((r) => child.on("exit", r));
    child.stdin!.end();
    expect(await exited).toBe(0);
    sampler.sample(); // the tree is gone: tolerated
    const report = sampler.stop();

    const node = report.processes.find((p) => p.name === "node -e");
    expect(node, JSON.stringify(report.processes)).toBeDefined();
    expect(node!.peakKb).toBeGreaterThanOrEqual(100 * MIB);
    expect(node!.hwmKb).toBeGreaterThanOrEqual(100 * MIB);
    expect(node!.ppid).toBe(child.pid);
    expect(report.byName["node -e"]!.peakKb).toBe(node!.peakKb);
    expect(report.processes.some((p) => p.pid === child.pid && p.name.startsWith("sh"))).toBe(true);
    expect(report.treePeakKb).toBeGreaterThanOrEqual(100 * MIB);
    expect(report.samples).toBeGreaterThanOrEqual(3);
    // stopping twice gives the same report; sampling after stop is a no-op
    sampler.sample();
    expect(sampler.stop()).toBe(report);
  });

  it("reports nothing (and does not throw) for a root that has already exited", async () => {
    const child = spawn(process.execPath, ["-e", "0"], { stdio: "ignore" });
    const pid = child.pid!;
    await new Promise((r) => child.on("exit", r));
    const s = start(pid, { intervalMs: 10 });
    s.sample();
    const r = s.stop();
    expect(r.processes).toEqual([]);
    expect(r.treePeakKb).toBe(0);
  });

  it("names the processes of a Pulumi run and a farm", () => {
    expect(processName(["/x/bin/pulumi", "up", "--yes"])).toBe("pulumi");
    expect(processName(["/x/bin/pulumi-language-nodejs", "-root=/p", "127.0.0.1:1"])).toBe(
      "pulumi-language-nodejs",
    );
    expect(
      processName(["node", "/p/node_modules/@pulumi/pulumi/cmd/dynamic-provider/index.js", "127.0.0.1:3"]),
    ).toBe("node dynamic provider");
    expect(
      processName(["/usr/bin/node", "--require", "x", "/p/node_modules/@pulumi/pulumi/cmd/run", "--x"]),
    ).toBe("node program");
    expect(processName(["node", "--import", "tsx", "cli/fleet.ts", "devices", "serve", "--count", "3"])).toBe(
      "farm",
    );
    expect(processName(["node", "--import", "tsx", "bench/naive-resources.ts"])).toBe(
      "node naive-resources.ts",
    );
    expect(processName(["/bin/sh", "/x/bin/pulumi-resource-pulumi-nodejs", "1"])).toBe(
      "sh pulumi-resource-pulumi-nodejs",
    );
    expect(processName(["node", "-p", "require.resolve('@pulumi/pulumi/cmd/dynamic-provider')"])).toBe(
      "node -p",
    );
    expect(processName([])).toBe("?");
  });

  it("refuses a PID that is not one", () => {
    expect(() => start(0)).toThrow(FleetError);
    expect(() => start(1.5)).toThrow(/rootPid/);
  });
});
