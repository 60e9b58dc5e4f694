import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { batchCommand, formatDuration, progressBar } from "../../cli/batch";
import { FleetError } from "../../core/errors";
import { openRegistry } from "../../core/registry";
import { LATEST_VERSION } from "../../core/registry/schema";
import type { Registry } from "../../core/registry/types";
import { type PostgresServer, startPostgres } from "../helpers/postgres";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-cli-batch-"));
let pg: PostgresServer | undefined;
beforeAll(async () => {
  pg = await startPostgres();
}, 180_000);
afterAll(async () => {
  await pg?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

let n = 0;
async function seeded(location?: string): Promise<{ reg: Registry; loc: string }> {
  const loc = location ?? path.join(dir, `r${++n}.db`);
  const reg = await openRegistry(loc);
  await reg.putBatch({ name: "lot-a", model: "fg100", source: "puf", spec: "{}" });
  await reg.putBatch({ name: "lot-b", model: "fg200", source: "injected", spec: "{}" });
  const ids = Array.from({ length: 10 }, (_, i) => `a-${i}`);
  await reg.addDevices("lot-a", ids);
  await reg.addDevices("lot-b", ["b-0", "b-1"]);
  await reg.apply([
    ...ids.slice(0, 3).flatMap((deviceId) => [
      { deviceId, batch: "lot-a", from: "pending" as const, to: "attested" as const },
      { deviceId, batch: "lot-a", from: "attested" as const, to: "quarantined" as const, reason: "clone" },
    ]),
    { deviceId: "a-3", batch: "lot-a", from: "pending", to: "attested", detail: { station: "s1" } },
  ]);
  return { reg, loc };
}

function capture() {
  const lines: string[] = [];
  let clock = Date.parse("2026-05-01T00:00:00Z");
  const io = {
    out: (l: string) => lines.push(l),
    sleep: async (ms: number) => {
      clock += ms;
    },
    now: () => clock,
  };
  return { lines, io };
}

async function refused(p: Promise<unknown>, code: string, re: RegExp) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FleetError);
  expect((err as FleetError).code).toBe(code);
  expect((err as FleetError).message).toMatch(re);
}

describe("fleet batch", () => {
  it("progress bar and durations", () => {
    expect(progressBar(0, 10, 10)).toBe("[..........]   0.0%");
    expect(progressBar(5, 10, 10)).toBe("[#####.....]  50.0%");
    expect(progressBar(10, 10, 10)).toBe("[##########] 100.0%");
    expect(progressBar(0, 0, 4)).toBe("[....]   0.0%");
    expect(formatDuration(59.6)).toBe("1m00s");
    expect(formatDuration(3725)).toBe("1h02m");
    expect(formatDuration(Number.POSITIVE_INFINITY)).toBe("-");
  });

  it("status prints every state of every batch and the done bar", async () => {
    const { reg, loc } = await seeded();
    await reg.close();
    const { lines, io } = capture();
    expect(await batchCommand(["status", "--registry", loc], io)).toBe(0);
    const text = lines.join("\n");
    expect(lines[0]).toBe(`registry ${path.resolve(loc)} (sqlite, schema ${LATEST_VERSION})`);
    expect(text).toContain("batch lot-a (model fg100, puf): 10 devices");
    expect(text).toContain(
      "  pending 6  attested 1  issued 0  installed 0  active 0  quarantined 3  revoked 0  decommissioned 0",
    );
    expect(text).toContain(`  ${progressBar(3, 10)}  3/10 done`);
    expect(text).toContain("batch lot-b (model fg200, injected): 2 devices");
    expect(text).not.toContain("rate");
    const one = capture();
    await batchCommand(["status", "--registry", `sqlite:${loc}`, "--batch", "lot-b"], one.io);
    expect(one.lines.join("\n")).not.toContain("lot-a");
    expect(one.lines.join("\n")).toContain("0/2 done");
  });

  it("--watch samples until every batch is done, with rate and ETA from successive samples", async () => {
    const { reg, loc } = await seeded();
    const { lines, io } = capture();
    const states = ["pending", "attested", "issued", "installed", "active"] as const;
    let wave = 0;
    // each sleep (2 s of fake time) the "enrollment" moves lot-a's pending devices one state on
    io.sleep = async (ms: number) => {
      const clock = io.now() + ms;
      io.now = () => clock;
      wave++;
      const from = states[wave - 1]!;
      const to = states[wave]!;
      const ds = (await reg.listDevices("lot-a", { states: [from] })).filter((d) => d.deviceId !== "a-3");
      const ts = ds.map((d) => ({ deviceId: d.deviceId, batch: "lot-a", from, to }));
      if (from === "pending") ts.push({ deviceId: "a-3", batch: "lot-a", from: "attested", to: "issued" });
      if (from === "attested") ts.push({ deviceId: "a-3", batch: "lot-a", from: "issued", to: "installed" });
      if (from === "issued") ts.push({ deviceId: "a-3", batch: "lot-a", from: "installed", to: "active" });
      await reg.apply(ts);
      if (wave === 4)
        await reg.apply(
          ["b-0", "b-1"].map((deviceId) => ({
            deviceId,
            batch: "lot-b",
            from: "pending",
            to: "decommissioned",
          })),
        );
    };
    expect(await batchCommand(["status", "--registry", loc, "--batch", "lot-a", "--watch", "2"], io)).toBe(0);
    const bars = lines.filter((l) => l.includes(" done"));
    // samples: 3 done (first, no rate), 4 (a-3 active), 4, 4, 10 (six actives at once)
    expect(bars[0]).toBe(`  ${progressBar(3, 10)}  3/10 done`);
    expect(bars[1]).toBe(`  ${progressBar(3, 10)}  3/10 done  rate 0.0/s  ETA -`);
    expect(bars.at(-1)).toBe(`  ${progressBar(10, 10)}  10/10 done  rate 3.0/s  ETA done`);
    expect(bars.some((l) => /4\/10 done {2}rate 0\.5\/s {2}ETA 12s$/.test(l))).toBe(true);
    expect(lines.filter((l) => l.startsWith("-- 2026-05-01T00:00:")).length).toBe(bars.length - 1);
    await reg.close();
  });

  it("audit prints the device's trail, oldest first", async () => {
    const { reg, loc } = await seeded();
    await reg.close();
    const { lines, io } = capture();
    expect(await batchCommand(["audit", "--registry", loc, "--device", "a-0"], io)).toBe(0);
    expect(lines[0]).toBe("device a-0 of batch lot-a: quarantined (clone)");
    expect(lines.slice(1).map((l) => l.replace(/^\s*\d+ {2}\S+ {2}/, ""))).toEqual([
      "lot-a  (declared) -> pending",
      "lot-a  pending -> attested",
      "lot-a  attested -> quarantined  reason: clone",
    ]);
    const three = capture();
    await batchCommand(["audit", "--registry", loc, "--device=a-3"], three.io);
    expect(three.lines.at(-1)).toMatch(/pending -> attested {2}\{"station":"s1"\}$/);
    await refused(
      batchCommand(["audit", "--registry", loc, "--device", "zz"], io),
      "NOT_FOUND",
      /^--device: got "zz", want a device recorded in /,
    );
  });

  it("bad arguments name the flag, what it got and what was wanted", async () => {
    const { reg, loc } = await seeded();
    await reg.close();
    const { io } = capture();
    await refused(
      batchCommand(["status"], io),
      "INVALID_INPUT",
      /^--registry: got undefined, want a registry file/,
    );
    await refused(
      batchCommand(["status", "--registry", path.join(dir, "missing", "x.db")], io),
      "INVALID_INPUT",
      /^--registry: got ".*x\.db", want an existing registry file/,
    );
    expect(fs.existsSync(path.join(dir, "missing"))).toBe(false);
    await refused(
      batchCommand(["status", "--registry", "mysql://u:pw123@h/db"], io),
      "INVALID_INPUT",
      /^--registry: got "mysql:\/\/u:\*\*\*@h\/db", want a file path/,
    );
    await refused(
      batchCommand(["status", "--registry", loc, "--watch", "soon"], io),
      "INVALID_INPUT",
      /^--watch: got "soon", want a number of seconds in 0\.1\.\.3600$/,
    );
    await refused(
      batchCommand(["status", "--registry", loc, "--watch", "0"], io),
      "INVALID_INPUT",
      /^--watch: got "0"/,
    );
    await refused(
      batchCommand(["status", "--registry", loc, "--batch", "lot-z"], io),
      "NOT_FOUND",
      /^--batch: got "lot-z", want one of lot-a, lot-b$/,
    );
    await refused(
      batchCommand(["status", "--registry", loc, "--bogus", "1"], io),
      "INVALID_INPUT",
      /^option: got "--bogus"/,
    );
    await refused(
      batchCommand(["status", "--registry"], io),
      "INVALID_INPUT",
      /^--registry: got undefined, want a value/,
    );
    await refused(
      batchCommand(["audit", "--registry", loc], io),
      "INVALID_INPUT",
      /^--device: got undefined/,
    );
    await refused(
      batchCommand(["frobnicate"], io),
      "INVALID_INPUT",
      /^command: got "frobnicate", want status or audit/,
    );
    const help = capture();
    expect(await batchCommand([], help.io)).toBe(2);
    expect(help.lines[0]).toMatch(/^usage:/);
  });

  it("works against PostgreSQL and never prints its password", async () => {
    const url = await pg!.createDatabase("cli_batch");
    const { reg } = await seeded(url);
    await reg.close();
    const { lines, io } = capture();
    expect(await batchCommand(["status", "--registry", url], io)).toBe(0);
    const password = new URL(url).password;
    expect(lines.join("\n")).not.toContain(password);
    expect(lines[0]).toMatch(
      new RegExp(
        `^registry postgres://fleet:\\*\\*\\*@127\\.0\\.0\\.1:\\d+/cli_batch \\(postgres, schema ${LATEST_VERSION}\\)$`,
      ),
    );
    expect(lines.join("\n")).toContain(`  ${progressBar(3, 10)}  3/10 done`);
  });
});
