/**
 * fleetguard as a platform team uses it (issue 10, points 1 and 2), with the real engine: the
 * checkout is packed (`npm pack`, which builds dist/), a copy of examples/platform-repo installs
 * the tarball with npm, and there `pulumi preview`, `pulumi up` with a device farm started from
 * the installed package, the package's CrossGuard pack, and `npx fleet ...` run. Nothing in that
 * repository reaches the checkout: it imports "fleetguard" only, the package holds no path of the
 * checkout, and the state's serialized providers load the runtime under its node_modules.
 *
 * npm builds better-sqlite3 and pkcs11js from source (about two minutes here), so the installed
 * third-party modules are kept between runs, keyed by everything that decides them (the
 * dependency declarations, Node's version, the platform); only fleetguard is installed afresh.
 */
import type { ChildProcess } from "node:child_process";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCommand } from "../helpers/proc";
import { PulumiStack, REPO } from "../helpers/pulumi";

const EXAMPLE = path.join(REPO, "examples", "platform-repo");
const LOT = 20;
const CACHE = path.join(
  process.env.FLEETGUARD_TEST_CACHE ?? path.join(os.homedir(), ".cache", "fleetguard"),
  "platform-repo-modules",
);

const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "fg-platform-")));
const repo = path.join(base, "acme-fleet");
const cleanups: Array<() => void | Promise<void>> = [() => fs.rmSync(base, { recursive: true, force: true })];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

let stack: PulumiStack;
let tarball: string;

interface PackResult {
  filename: string;
  size: number;
  entryCount: number;
  files: { path: string }[];
}

const readJson = (f: string) => JSON.parse(fs.readFileSync(f, "utf8"));

async function run(cmd: string, args: string[], cwd: string, env?: NodeJS.ProcessEnv) {
  const r = await runCommand(cmd, args, { cwd, env: env ?? process.env });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}\n${r.stdout}${r.stderr}`);
  return r;
}

/** Every file under dir, node_modules and state left out. */
function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (["node_modules", ".fleetguard", ".state"].includes(e.name)) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else out.push(p);
  }
  return out;
}

/**
 * `npm install` of the example with the tarball; the third-party modules come from the cache
 * when it has them for these exact declarations and this Node.
 */
async function install(): Promise<"cached" | "full"> {
  const app = readJson(path.join(repo, "package.json"));
  const fg = readJson(path.join(REPO, "package.json"));
  const key = createHash("sha256")
    .update(
      JSON.stringify({
        node: process.version,
        platform: process.platform,
        arch: process.arch,
        app: { dependencies: { ...app.dependencies, fleetguard: undefined }, dev: app.devDependencies },
        fleetguard: fg.dependencies,
      }),
    )
    .digest("hex")
    .slice(0, 24);
  const cached = path.join(CACHE, key);
  const hit = fs.existsSync(path.join(cached, "package-lock.json"));
  if (hit) {
    await run("cp", ["-a", path.join(cached, "node_modules"), path.join(repo, "node_modules")], repo);
    fs.copyFileSync(path.join(cached, "package-lock.json"), path.join(repo, "package-lock.json"));
  }
  await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund"], repo);
  if (!hit) {
    // everything but fleetguard, which changes with every pack
    const tmp = `${cached}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(tmp, { recursive: true });
    await run("cp", ["-a", path.join(repo, "node_modules"), path.join(tmp, "node_modules")], repo);
    for (const p of ["fleetguard", ".bin/fleet", ".package-lock.json"])
      fs.rmSync(path.join(tmp, "node_modules", p), { recursive: true, force: true });
    const lock = readJson(path.join(repo, "package-lock.json"));
    delete lock.packages["node_modules/fleetguard"];
    fs.writeFileSync(path.join(tmp, "package-lock.json"), JSON.stringify(lock, null, 2));
    try {
      fs.renameSync(tmp, cached);
    } catch {
      // another run stored the same modules first
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  return hit ? "cached" : "full";
}

/** `fleet devices serve` of the installed package (node_modules/.bin/fleet), on a free port. */
function startFarm(state: string): Promise<{ child: ChildProcess; port: number }> {
  const bin = path.join(repo, "node_modules", ".bin", "fleet");
  const args = [bin, "devices", "serve", "--count", String(LOT), "--port", "0", "--state", state];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: repo, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    const t = setTimeout(() => reject(new Error(`farm did not start: ${err}`)), 60_000);
    child.stdout!.on("data", (c) => {
      out += c;
      const m = /on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve({ child, port: Number(m[1]) });
      }
    });
    child.stderr!.on("data", (c) => {
      err += c;
    });
    child.on("exit", (code) => {
      clearTimeout(t);
      reject(new Error(`farm exited with ${code}: ${err}`));
    });
  });
}

describe("a platform repository that installs the packed fleetguard", () => {
  it("npm pack: a tarball of the build, without tests, fixtures or state", async () => {
    const t0 = Date.now();
    const r = await run("npm", ["pack", "--json", "--pack-destination", base], REPO);
    const pack = (JSON.parse(r.stdout.slice(r.stdout.indexOf("["))) as PackResult[])[0]!;
    tarball = path.join(base, pack.filename);
    const files = pack.files.map((f) => f.path);
    console.log(
      `npm pack: ${pack.filename}, ${pack.size} bytes, ${pack.entryCount} files, ${Date.now() - t0} ms (build included)`,
    );
    for (const f of [
      "package.json",
      "bin/fleet.js",
      "dist/fleetguard.js",
      "dist/fleetguard.d.ts",
      "dist/policies/pack/index.js",
      "dist/policies/pack/PulumiPolicy.yaml",
      "dist/policies/baseline.yaml",
      "dist/policies/schema/fleet-policy.schema.json",
      "dist/providers/runtime/index.js",
      "dist/providers/runtime/ca.js",
      "dist/devices/farm/worker-entry.js",
      "dist/core/registry/verify-worker-entry.js",
      "dist/cli/fleet.js",
    ])
      expect(files, f).toContain(f);
    const stray = files.filter(
      (f) =>
        /^(test|bench|scripts|examples|\.state|\.cache|node_modules)\//.test(f) ||
        /^dist\/(test|bench|index\.)/.test(f) ||
        /(^|\/)fixtures\/|\.map$|\.db$/.test(f) ||
        (f.endsWith(".ts") && !f.endsWith(".d.ts")),
    );
    expect(stray).toEqual([]);
  });

  it("the example installs the tarball with npm; it imports fleetguard by name only", async () => {
    fs.cpSync(EXAMPLE, repo, {
      recursive: true,
      filter: (src) => !/(^|\/)(node_modules|\.fleetguard|\.state)(\/|$)|Pulumi\.[^/]+\.yaml$/.test(src),
    });
    const pkgFile = path.join(repo, "package.json");
    const pkg = readJson(pkgFile);
    expect(pkg.dependencies.fleetguard).toMatch(/^file:.*\.tgz$/);
    pkg.dependencies.fleetguard = `file:${tarball}`;
    fs.writeFileSync(pkgFile, JSON.stringify(pkg, null, 2));
    const t0 = Date.now();
    const how = await install();
    console.log(`npm install (${how} third-party modules): ${Date.now() - t0} ms`);

    const installed = path.join(repo, "node_modules", "fleetguard");
    expect(fs.lstatSync(installed).isSymbolicLink(), "a copy, not a link to the checkout").toBe(false);
    expect(readJson(path.join(installed, "package.json")).version).toBe(
      readJson(path.join(REPO, "package.json")).version,
    );
    // the package names no path of the checkout it was built in
    const inPackage = sources(installed).filter((f) => fs.readFileSync(f, "utf8").includes(`${REPO}/`));
    expect(inPackage).toEqual([]);

    // every import of the repository's own code is a package or a builtin, never a path
    const specifiers: string[] = [];
    for (const f of sources(repo).filter((f) => /\.[cm]?[jt]s$/.test(f))) {
      const text = fs.readFileSync(f, "utf8");
      for (const m of text.matchAll(/(?:from\s+|require\(\s*|import\(\s*)["']([^"']+)["']/g))
        specifiers.push(m[1]!);
    }
    expect(specifiers).toContain("fleetguard");
    expect(specifiers.filter((s) => s.startsWith(".") || s.startsWith("/"))).toEqual([]);
  });

  it("pulumi preview and up with a device farm; the providers load the runtime under node_modules", async () => {
    const farm = await startFarm(path.join(base, "farm"));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          if (farm.child.exitCode !== null) return r();
          farm.child.once("exit", () => r());
          farm.child.kill("SIGTERM");
        }),
    );
    stack = new PulumiStack(repo, "it-platform");
    cleanups.push(() => stack.cleanup());
    await stack.init();
    await stack.setConfig("stationPort", String(farm.port));

    const steps = await stack.previewSteps();
    expect(steps.filter((s) => s.op === "create").map((s) => s.urn.split("::").pop())).toEqual(
      expect.arrayContaining(["acme", "acme-root", "acme-plant-1", "plant-1-lot-1"]),
    );
    await stack.run(["up", "--yes", "--skip-preview"]);
    const out = await stack.outputs();
    const batch = out.batch as { total: number; counts: Record<string, number> };
    expect(batch.total).toBe(LOT);
    expect(batch.counts.active).toBe(LOT);
    expect(Object.keys(out.cas as object).sort()).toEqual(["plant-1", "root"]);
    await stack.run(["preview", "--expect-no-changes"]);

    const state = stack.stateText();
    // the engine's update history records which node ran the program (runtime.executable): the
    // pinned Node of scripts/ensure-node lives in this checkout's .cache/node, fleetguard does not
    expect(state.replace(/"runtime\.executable":"[^"]*"/g, "")).not.toContain(`${REPO}/`);
    // the serialized providers require the package's runtime entry, which finds the compiled
    // runtime of the package the program's directory resolves
    expect(state).toContain('require(\\"fleetguard/providers/runtime-entry\\")');
    expect(state).toContain(
      path.join(repo, "node_modules", "fleetguard", "dist", "providers", "runtime", "index.js"),
    );
    expect(state).not.toMatch(/PRIVATE KEY/);
  });

  it("the package's CrossGuard pack checks the stack against the repository's policy", async () => {
    const packDir = path.join("node_modules", "fleetguard", "dist", "policies", "pack");
    const preview = (policy: string) =>
      runCommand(
        "pulumi",
        ["preview", "--non-interactive", "--stack", stack.stack, "--cwd", repo, "--policy-pack", packDir],
        { cwd: repo, env: { ...stack.env, FLEETGUARD_POLICY: path.join(repo, "policies", policy) } },
      );
    const ok = await preview("sensors.yaml");
    expect(ok.status, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/fleetguard@v[\d.]+ \(local: node_modules\/fleetguard\/dist\/policies\/pack\)/);
    // a product line that tightens the root key beyond what is deployed: the pack refuses it
    fs.writeFileSync(
      path.join(repo, "policies", "strict.yaml"),
      "apiVersion: fleetguard.io/v1\nkind: FleetPolicy\nmetadata:\n  name: acme-strict\n  extends: ./sensors.yaml\nspec:\n  keys:\n    root:\n      ecdsa: { minBits: 521 }\n",
    );
    const strict = await preview("strict.yaml");
    expect(strict.status).not.toBe(0);
    expect(strict.stdout).toMatch(/\[mandatory\]\s+FG-KEY-001/);
    expect(strict.stdout).toContain("policy 'acme-strict' allows ecdsa >= 521 for root");
  });

  it("npx fleet in the platform repository: ca summary, batch status, registry verify", async () => {
    const registry = path.join(repo, ".fleetguard", "registry.db");
    const fleet = (args: string[]) => run("npx", ["--no-install", "fleet", ...args], repo, stack.env);

    const ca = await fleet(["ca", "summary", "--stack", stack.stack, "--registry", registry]);
    expect(ca.stdout).toMatch(/^plant-1\s+issuing\s.*\sOK\s*$/m);
    expect(ca.stdout).toMatch(/^root\s+root\s.*\sOK\s*$/m);
    expect(ca.stdout).toContain(`${LOT} live device certificates; openssl verify: ${LOT} OK`);

    const status = JSON.parse(
      (await fleet(["batch", "status", "--registry", registry, "--json"])).stdout,
    ) as {
      batches: { name: string; devices: number; counts: Record<string, number> }[];
    };
    expect(status.batches.map((b) => [b.name, b.devices, b.counts.active])).toEqual([
      ["plant-1-lot-1", LOT, LOT],
    ]);

    const verify = JSON.parse(
      (await fleet(["registry", "verify", "--registry", registry, "--json"])).stdout,
    ) as {
      ok: boolean;
      devices: number;
    };
    expect(verify).toMatchObject({ ok: true, devices: LOT });
  });
});
