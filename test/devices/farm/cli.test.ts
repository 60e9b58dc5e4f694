import { afterAll, describe, expect, it, vi } from "vitest";
import { run } from "../../../cli/devices";
import { main } from "../../../cli/fleet";
import { FleetError } from "../../../core/errors";
import { deviceId } from "../../../core/station/ids";
import { farmFor, SEED, tempDir } from "./helpers";

describe("fleet devices", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());

  it("refuses bad options with INVALID_INPUT (exit code 2 through fleet)", async () => {
    const bad: string[][] = [
      ["serve", "--count", "10", "--port", "0"], // no --state
      ["serve", "--count", "0", "--port", "0", "--state", dir.path],
      ["serve", "--count", "ten", "--port", "0", "--state", dir.path],
      ["serve", "--count", "10", "--port", "70000", "--state", dir.path],
      ["serve", "--count", "10", "--port", "0", "--state", dir.path, "--host", "0.0.0.0"],
      ["serve", "--count", "10", "--port", "0", "--state", dir.path, "--bogus", "1"],
      ["serve", "--count", "10", "--port", "0", "--state", dir.path, "--noisy-ber", "0.9"],
      ["serve", "--count", "10", "--port", "0", "--state", dir.path, "--drop", "fg100-0000001:x"],
      ["status", "--port", "1"],
    ];
    for (const argv of bad) {
      const e = await run(argv).catch((x) => x);
      expect(e, argv.join(" ")).toBeInstanceOf(FleetError);
      expect(e.code, argv.join(" ")).toBe("INVALID_INPUT");
    }
    const err = vi.spyOn(console, "error").mockImplementation(() => {});
    expect(await main(["devices", "serve", "--count", "x"])).toBe(2);
    expect(await main(["devices", "frobnicate"])).toBe(2);
    err.mockRestore();
  });

  it("prints a device's status and identity as JSON, bytes in hex", async () => {
    const farm = await farmFor(dir.path);
    const lines: string[] = [];
    const log = vi.spyOn(console, "log").mockImplementation((l: string) => lines.push(l));
    try {
      expect(await run(["identify", "--port", String(farm.port), deviceId("fg100", 4)])).toBe(0);
      expect(await run(["status", "--port", String(farm.port), deviceId("fg100", 4)])).toBe(0);
      expect(await run(["ping", "--port", String(farm.port)])).toBe(0);
    } finally {
      log.mockRestore();
    }
    const ident = JSON.parse(lines[0]!);
    expect(ident).toMatchObject({ device: deviceId("fg100", 4), lifecycle: "provisioned" });
    expect(ident.publicKey).toMatch(/^3059301306072a8648ce3d0201/);
    expect(JSON.parse(lines[1]!).lifecycle).toBe("provisioned");
    expect(JSON.parse(lines[2]!).count).toBe(1000);
    // a second farm on the same state directory is refused while the first runs
    await expect(farmFor(dir.path)).rejects.toThrow(/in use/);
    await farm.close();
    // the seed is pinned by the first start
    await expect(farmFor(dir.path, { seed: SEED.replace(/^00/, "01") })).rejects.toThrow(/seed/);
    await expect(farmFor(dir.path, { model: "other" })).rejects.toThrow(/model/);
  });
});
