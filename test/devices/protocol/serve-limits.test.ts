// The station protocol limits as `fleet devices serve` flags and startFarm options.
import { describe, expect, it } from "vitest";
import { LIMIT_FLAGS, limitOptions, limitUsage } from "../../../devices/farm/serve";
import { DEFAULT_LIMITS } from "../../../devices/protocol/server";
import { farmFor, tempDir } from "../farm/helpers";

describe("protocol limit flags", () => {
  it("map flags in their units to options", () => {
    expect(
      limitOptions({
        "max-in-flight": "512",
        "max-connections": "8",
        "idle-timeout-s": "0",
        "write-buffer-kb": "256",
        "max-body-kb": "1024",
        count: "10", // not a limit flag: left to the CLI
      }),
    ).toEqual({
      maxInFlight: 512,
      maxConnections: 8,
      idleTimeoutMs: 0,
      writeHighWater: 256 * 1024,
      maxBody: 1024 * 1024,
    });
    expect(limitOptions({})).toEqual({});
  });

  it("refuse a bad value naming the flag and its range", () => {
    expect(() => limitOptions({ "max-connections": "0" })).toThrow(
      '--max-connections: got "0", want an integer in 1..65536',
    );
    expect(() => limitOptions({ "idle-timeout-s": "1.5" })).toThrow(
      '--idle-timeout-s: got "1.5", want an integer in 0..86400',
    );
    expect(() => limitOptions({ "write-buffer-kb": "lots" })).toThrow(/--write-buffer-kb: got "lots"/);
    expect(() => limitOptions({ "max-body-kb": "0" })).toThrow(
      '--max-body-kb: got "0", want an integer in 1..262144',
    );
  });

  it("usage shows every flag with its default in the flag's unit", () => {
    const u = limitUsage();
    for (const f of LIMIT_FLAGS) expect(u).toContain(`--${f.flag} N`);
    expect(u).toMatch(/--idle-timeout-s N\s+.*\(default 120; 0 = never\)/);
    expect(u).toMatch(/--write-buffer-kb N\s+.*\(default 1024\)/);
    expect(u).toMatch(/--max-body-kb N\s+.*\(default 4096\)/);
    expect(u).toMatch(/--max-connections N\s+.*\(default 64\)/);
    expect(u).toMatch(/--max-in-flight N\s+.*\(default 4096\)/);
  });

  it("startFarm passes the limits to the station server", async () => {
    const dir = tempDir();
    const farm = await farmFor(dir.path, { maxConnections: 3, idleTimeoutMs: 5000, writeHighWater: 4096 });
    try {
      expect(farm.server.limits).toEqual({
        ...DEFAULT_LIMITS,
        maxConnections: 3,
        idleTimeoutMs: 5000,
        writeHighWater: 4096,
      });
    } finally {
      await farm.close();
      dir.remove();
    }
    await expect(farmFor(tempDir().path, { maxConnections: 0 })).rejects.toThrow(/maxConnections: got 0/);
  });
});
