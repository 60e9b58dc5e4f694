// Errors a person reads (issue 9, finding 9): the real `fleet` CLI in a child process, fed the inputs a
// careless user or a hostile pull request gives it. Every answer must be one clean message with the
// right exit code: no stack trace, no ANSI escapes, no internal error, and never the content of a file
// that is not a policy.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT } from "./policy-helpers";

const TSX = join(ROOT, "node_modules/.bin/tsx");
const CLI = join(ROOT, "cli/fleet.ts");

// Outside any git work tree, so the policy root of a policy in `root` is `root` itself.
const work = realpathSync(mkdtempSync(join(tmpdir(), "fleet-hostile-")));
const root = join(work, "root");
mkdirSync(root);
afterAll(() => rmSync(work, { recursive: true, force: true }));

function fleet(args: string[], opts: { cwd?: string; path?: string; timeoutMs?: number } = {}) {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1" };
  delete env.FLEETGUARD_POLICY_ROOT;
  delete env.FORCE_COLOR;
  if (opts.path !== undefined) env.PATH = opts.path;
  const r = spawnSync(TSX, [CLI, ...args], {
    cwd: opts.cwd ?? root,
    encoding: "utf8",
    env,
    // only a read that never ends takes this long; the test then fails on the exit code
    timeout: opts.timeoutMs ?? 60_000,
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** What every message a person reads must be: one clean line per problem, no stack, no colour. */
function clean(out: string): void {
  expect(out).not.toMatch(/^\s+at /m);
  expect(out).not.toContain("\x1b");
  expect(out).not.toContain("internal error");
}

function write(path: string, text: string): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  return path;
}

const policy = (name: string, extra = "", spec = "{}") =>
  `apiVersion: fleetguard.io/v1\nkind: FleetPolicy\nmetadata:\n  name: ${name}\n${extra}spec: ${spec}\n`;

const PASSPHRASE = "correct-horse-battery-staple-42";

describe("fleet policy check on hostile and careless input", () => {
  it("names the file, line, column and field of a typo (no stack, no colour), exit 2", () => {
    write(join(root, "typo.yaml"), policy("typo", "", "\n  keys:\n    devce: {}"));
    const r = fleet(["policy", "check", "--policy", "typo.yaml"]);
    expect(r.code).toBe(2);
    expect(r.out).toContain('typo.yaml:7:5: spec.keys.devce: unknown key "devce" (did you mean "device"?)');
    clean(r.out);
  });

  it("refuses an extends outside the policy root and never prints the file it points at", () => {
    write(join(work, "outside", "secret.txt"), `root:x:0:0:${PASSPHRASE}:/root:/bin/bash\n`);
    write(join(root, "escape.yaml"), policy("escape", "  extends: ../outside/secret.txt\n"));
    const r = fleet(["policy", "check", "--policy", "escape.yaml"]);
    expect(r.out).not.toContain(PASSPHRASE);
    expect(r.code).toBe(2);
    expect(r.out).toContain(
      `escape.yaml:5:12: metadata.extends: got ../outside/secret.txt, which is outside the policy root; want a policy file inside the policy root ${root}`,
    );
    clean(r.out);

    // the issue's own example: a relative path up to the system's password file
    write(join(root, "passwd.yaml"), policy("passwd", "  extends: ../../../../../../../../etc/passwd\n"));
    const p = fleet(["policy", "check", "--policy", "passwd.yaml"]);
    expect(p.out).not.toMatch(/root:x:0:0|daemon:/);
    expect(p.code).toBe(2);
    expect(p.out).toContain("passwd.yaml:5:12: metadata.extends:");
    expect(p.out).toContain("outside the policy root");
    clean(p.out);
  });

  it("refuses a symlink inside the root that resolves outside it", () => {
    const target = write(join(work, "outside", "id.env"), `FLEET_PASSPHRASE=${PASSPHRASE}\n`);
    symlinkSync(target, join(root, "linked.yaml"));
    write(join(root, "via-link.yaml"), policy("via-link", "  extends: linked.yaml\n"));
    const r = fleet(["policy", "check", "--policy", "via-link.yaml"]);
    expect(r.out).not.toContain(PASSPHRASE);
    expect(r.code).toBe(2);
    expect(r.out).toContain("via-link.yaml:5:12: metadata.extends: got linked.yaml, which resolves");
    expect(r.out).toContain("outside the policy root");
    clean(r.out);
  });

  it("names a .env inside the root and its line, never its passphrase (extends or --policy)", () => {
    write(join(root, ".env"), `# stack secrets\nFLEET_PASSPHRASE=${PASSPHRASE}\n`);
    write(join(root, "dotenv.yaml"), policy("dotenv", "  extends: .env\n"));
    for (const args of [
      ["policy", "check", "--policy", "dotenv.yaml"],
      ["policy", "check", "--policy", ".env"],
    ]) {
      const r = fleet(args);
      expect(r.out).not.toContain(PASSPHRASE);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.out).toMatch(
        /^\.env:\d+:\d+: \(document\): got a file that is not a FleetPolicy \(content not shown\)/m,
      );
      expect(r.out).not.toContain("FLEET_PASSPHRASE");
      clean(r.out);
    }
  });

  it("describes a YAML syntax error in a non-policy file by its kind, not with the file's text", () => {
    // yaml's own message for this line is "Not a YAML token: <the rest of the line>"
    write(join(root, "secrets.yaml"), `api_token: |x ${PASSPHRASE}\n`);
    const r = fleet(["policy", "check", "--policy", "secrets.yaml"]);
    expect(r.out).not.toContain(PASSPHRASE);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/^secrets\.yaml:1:\d+: \(yaml\): got /m);
    clean(r.out);
  });

  it("refuses a billion-laughs policy (alias bomb) as bad input naming the file and line, exit 2", () => {
    const levels = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    const lines = [`  description: &a [${Array(9).fill('"lol"').join(", ")}]`];
    const spec = levels
      .slice(1)
      .map((l, i) => `  ${l}: &${l} [${Array(9).fill(`*${levels[i]}`).join(", ")}]`)
      .join("\n");
    write(
      join(root, "bomb.yaml"),
      `apiVersion: fleetguard.io/v1\nkind: FleetPolicy\nmetadata:\n  name: lol\n${lines[0]}\nspec:\n${spec}\n`,
    );
    const r = fleet(["policy", "check", "--policy", "bomb.yaml"]);
    expect(r.code).toBe(2);
    expect(r.out).toContain(
      "bomb.yaml:7:10: (yaml): got aliases that expand more than 100 times (an alias bomb), want at most 100 alias expansions",
    );
    clean(r.out);
  });

  it("refuses a policy file over 1 MiB, even a valid one, exit 2", () => {
    const pad = "# padding\n".repeat(110_000); // 1.1 MB of comments around a valid policy
    const text = policy("huge") + pad;
    write(join(root, "huge.yaml"), text);
    const r = fleet(["policy", "check", "--policy", "huge.yaml"]);
    expect(r.code).toBe(2);
    expect(r.out).toContain(
      `huge.yaml:1:1: (file): cannot read the policy file: got ${Buffer.byteLength(text)} bytes, want at most 1048576 (1 MiB)`,
    );
    clean(r.out);
  });
});

describe("fleet files and command-line files that are not files", () => {
  it("a fleet file that is a FIFO is refused instead of read forever, exit 2", () => {
    const fifo = join(work, "fleet.fifo");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    const r = fleet(["policy", "check", "--fleet", fifo], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(r.out).toContain(`${fifo}:1:1: (file): cannot read the fleet file`);
    clean(r.out);
  });

  it("a directory where a file is wanted is bad input, exit 2", () => {
    const r = fleet(["manifest", "verify", "--manifest", work, "--signer", work, "--root", work]);
    expect(r.code).toBe(2);
    expect(r.out).toContain("fleet manifest: file argument: got a directory, not a file");
    clean(r.out);
  });

  it("fleet ca summary --cwd at a missing directory is bad input naming --cwd, exit 2", () => {
    const r = fleet(["ca", "summary", "--cwd", join(work, "no-such-program")]);
    expect(r.code).toBe(2);
    expect(r.out).toContain(
      `fleet ca: --cwd: got "${join(work, "no-such-program")}", want the directory of a Pulumi program`,
    );
    clean(r.out);
  });
});

describe("fleet commands whose tools or station are missing", () => {
  it("fleet ca summary without pulumi on PATH says so and what to do, exit 3 (UNAVAILABLE)", () => {
    // PATH holds node (tsx needs it) and nothing else
    const bin = join(work, "bin");
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, "node"));
    const r = fleet(["ca", "summary", "--stack", "demo"], { path: bin });
    expect(r.code).toBe(3);
    expect(r.out).toContain("fleet ca: pulumi: not found on PATH, want the Pulumi CLI on PATH");
    expect(r.out).toContain("scripts/setup-pulumi");
    expect(r.out).not.toContain("trim");
    clean(r.out);
  });

  it("a station that is not there: names host:port and says to run again, no raw errno, exit 3", async () => {
    // a port that was just free: nothing listens on it
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const r = fleet(["devices", "ping", "--port", String(port)]);
    expect(r.code).toBe(3);
    expect(r.out).toContain(`station 127.0.0.1:${port} could not be reached: got connection refused`);
    expect(r.out).toContain("run again");
    expect(r.out).not.toContain("ECONNREFUSED");
    clean(r.out);
  });

  it("a file named on the command line that does not exist is bad input naming it, exit 2", () => {
    const missing = join(work, "no-such-root.pem");
    write(join(work, "m.json"), "[]");
    write(join(work, "s.pem"), "x");
    const r = fleet([
      "manifest",
      "verify",
      "--manifest",
      join(work, "m.json"),
      "--signer",
      join(work, "s.pem"),
      "--root",
      missing,
    ]);
    expect(r.code).toBe(2);
    expect(r.out).toContain(`${missing}: got no such file or directory`);
    clean(r.out);
  });
});
