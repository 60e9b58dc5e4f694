/**
 * Files fleetguard creates are private (issue 9, finding 10): 0600 files in 0700 folders, the
 * mode given explicitly (so a permissive umask cannot widen it), checked with fs.stat on the
 * durable-write helpers themselves, the SQLite registry (database, -wal, -shm), the farm's
 * state store (logs, snapshots) and a whole farm's state folder (the seed in farm.json).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  commitFile,
  createPrivateFile,
  ensurePrivateDir,
  PUBLIC_FILE,
  writeFileDurably,
} from "../../core/durable";
import { openRegistry } from "../../core/registry";
import { startFarm } from "../../devices/farm/serve";
import { StateStore } from "../../devices/farm/store";
import { blankState } from "../../devices/firmware/state";

const modeOf = (p: string) => (fs.statSync(p).mode & 0o777).toString(8);

let root: string;
let umask: number;
beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "fg-durable-"));
  // the most permissive umask: whatever is private below is so because fleetguard said so
  umask = process.umask(0);
});
afterEach(() => {
  process.umask(umask);
  fs.rmSync(root, { recursive: true, force: true });
});

describe("durable writes", () => {
  it("writeFileDurably creates a private file by default and a public one on request", () => {
    const secret = path.join(root, "farm.json");
    writeFileDurably(secret, "{}");
    expect(modeOf(secret)).toBe("600");
    const crl = path.join(root, "x.crl.pem");
    writeFileDurably(crl, "crl", { mode: PUBLIC_FILE });
    expect(modeOf(crl)).toBe("644");
    expect(fs.readdirSync(root).sort()).toEqual(["farm.json", "x.crl.pem"]);
  });

  it("a temporary file a crash left with another mode does not pass that mode on", () => {
    const file = path.join(root, "hsm.json");
    fs.writeFileSync(`${file}.tmp`, "half", { mode: 0o666 });
    expect(modeOf(`${file}.tmp`)).toBe("666");
    writeFileDurably(file, "whole");
    expect(modeOf(file)).toBe("600");
    expect(fs.readFileSync(file, "utf8")).toBe("whole");
    expect(fs.existsSync(`${file}.tmp`)).toBe(false);
  });

  it("replacing a world-readable file leaves a private one", () => {
    const file = path.join(root, "state.json");
    fs.writeFileSync(file, "old", { mode: 0o644 });
    writeFileDurably(file, "new");
    expect(modeOf(file)).toBe("600");
  });

  it("commitFile sets the mode of a file written by a stream", async () => {
    const tmp = path.join(root, "m.json.tmp");
    const out = fs.createWriteStream(tmp, { mode: 0o666 });
    await new Promise<void>((resolve, reject) =>
      out.end("manifest", (e?: Error | null) => (e ? reject(e) : resolve())),
    );
    expect(modeOf(tmp)).toBe("666");
    commitFile(tmp, path.join(root, "m.json"));
    expect(modeOf(path.join(root, "m.json"))).toBe("600");
    commitFile(path.join(root, "m.json"), path.join(root, "public.json"), PUBLIC_FILE);
    expect(modeOf(path.join(root, "public.json"))).toBe("644");
  });
});

describe("private folders and files", () => {
  it("ensurePrivateDir creates every missing level 0700 and leaves an existing folder's mode", () => {
    fs.mkdirSync(path.join(root, "mine"), { mode: 0o755 });
    ensurePrivateDir(path.join(root, "mine", "a", "b"));
    expect(modeOf(path.join(root, "mine"))).toBe("755");
    expect(modeOf(path.join(root, "mine", "a"))).toBe("700");
    expect(modeOf(path.join(root, "mine", "a", "b"))).toBe("700");
    ensurePrivateDir(path.join(root, "mine", "a", "b")); // again: a no-op
    expect(modeOf(path.join(root, "mine", "a", "b"))).toBe("700");
  });

  it("createPrivateFile creates an empty 0600 file once and never touches what is there", () => {
    const file = path.join(root, "state", "registry.db");
    expect(createPrivateFile(file)).toBe(true);
    expect(modeOf(file)).toBe("600");
    expect(modeOf(path.dirname(file))).toBe("700");
    expect(fs.statSync(file).size).toBe(0);
    fs.writeFileSync(file, "data");
    fs.chmodSync(file, 0o640);
    expect(createPrivateFile(file)).toBe(false);
    expect(fs.readFileSync(file, "utf8")).toBe("data");
    expect(modeOf(file)).toBe("640");
    // a folder in the way, or a parent that is a file: left for the caller's open to report
    expect(createPrivateFile(path.dirname(file))).toBe(false);
    expect(createPrivateFile(path.join(file, "below"))).toBe(false);
  });
});

describe("what fleetguard keeps in the state folder is private", () => {
  it("the SQLite registry: database, -wal and -shm 0600 in 0700 folders", async () => {
    const file = path.join(root, ".state", "reg", "registry.db");
    const r = await openRegistry(file);
    try {
      await r.putBatch({ name: "lot", model: "fg100", source: "puf", spec: "{}" });
      await r.addDevices("lot", ["fg100-0000000", "fg100-0000001"]);
      for (const f of [file, `${file}-wal`, `${file}-shm`]) expect([f, modeOf(f)]).toEqual([f, "600"]);
      expect(modeOf(path.join(root, ".state"))).toBe("700");
      expect(modeOf(path.dirname(file))).toBe("700");
    } finally {
      await r.close();
    }
  });

  it("the farm's state store: folder 0700, logs and snapshots 0600", async () => {
    const dir = path.join(root, "farm", "state");
    const s = await StateStore.open(dir, { compactBytes: 4096 });
    for (let i = 0; i < 200; i++) s.put(i, blankState());
    while (s.stats.compactions === 0) {
      await s.durable(s.put(0, blankState()));
      await new Promise((r) => setTimeout(r, 5));
    }
    await s.close();
    expect(modeOf(dir)).toBe("700");
    expect(modeOf(path.dirname(dir))).toBe("700");
    const files = fs.readdirSync(dir);
    expect(files.some((f) => f.startsWith("snapshot-"))).toBe(true);
    expect(files.some((f) => f.startsWith("wal-"))).toBe(true);
    for (const f of files) expect([f, modeOf(path.join(dir, f))]).toEqual([f, "600"]);
  });

  it("a farm's state folder: the seed (farm.json), the vendor CA and the device log are 0600", async () => {
    const dir = path.join(root, "farm-state");
    const farm = await startFarm({
      stateDir: dir,
      count: 4,
      seed: "c3".repeat(32),
      workers: 0,
      log: () => {},
    });
    await farm.close();
    const files = fs.readdirSync(dir);
    expect(files).toContain("farm.json");
    expect(JSON.parse(fs.readFileSync(path.join(dir, "farm.json"), "utf8")).seed).toBe("c3".repeat(32));
    for (const f of files) expect([f, modeOf(path.join(dir, f))]).toEqual([f, "600"]);
  });
});
