/**
 * Builds test/interop/go/ (stdlib only, offline: GOTOOLCHAIN=local, GOPROXY=off) once per source
 * and Go version into .cache/go-interop/<hash>/x509interop, and runs it on a JSON request. The
 * hash covers main.go, go.mod and `go version`, so CI rebuilds only when one of them changes.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { runCommand } from "../helpers/proc";

const SRC = path.join(__dirname, "go");
const ROOT = path.join(__dirname, "..", "..");
const CACHE = path.join(ROOT, ".cache", "go-interop");

export interface GoCase {
  name: string;
  kind: "cert" | "crl";
  pem: string;
  roots?: string[];
  intermediates?: string[];
  usages?: Array<"clientAuth" | "serverAuth" | "any">;
  wantEkuOids?: string[];
  wantCA?: boolean;
  wantMaxPathLen?: number;
  wantPermittedDNS?: string[];
  wantCrlDistributionPoints?: string[];
  issuer?: string;
  wantRevoked?: string[];
  wantNumber?: number;
}

export interface GoResult {
  name: string;
  ok: boolean;
  error?: string;
}

const goEnv = (): NodeJS.ProcessEnv => ({
  ...process.env,
  GOTOOLCHAIN: "local",
  GOPROXY: "off",
  GOFLAGS: "",
  GOCACHE: process.env.GOCACHE ?? path.join(ROOT, ".cache", "go-build"),
});

let built: Promise<string> | undefined;

async function build(): Promise<string> {
  const version = await runCommand("go", ["version"], { env: goEnv() }).catch((e: Error) => {
    throw new Error(`go: ${e.message} (Go 1.26 is required: .ci/run installs it)`);
  });
  if (version.status !== 0) throw new Error(`go version: ${version.stderr}`);
  const h = crypto.createHash("sha256").update(version.stdout);
  for (const f of ["go.mod", "main.go"]) h.update(f).update(fs.readFileSync(path.join(SRC, f)));
  const dir = path.join(CACHE, h.digest("hex").slice(0, 16));
  const bin = path.join(dir, "x509interop");
  if (fs.existsSync(bin)) return bin;
  fs.mkdirSync(dir, { recursive: true });
  const tmp = `${bin}.tmp-${process.pid}`;
  const r = await runCommand("go", ["build", "-trimpath", "-o", tmp, "."], { cwd: SRC, env: goEnv() });
  if (r.status !== 0) throw new Error(`go build in ${SRC} failed:\n${r.stderr}`);
  fs.renameSync(tmp, bin); // atomic: a parallel run sees either no binary or a whole one
  return bin;
}

export async function runGoInterop(req: { now: string; cases: GoCase[] }): Promise<GoResult[]> {
  built ??= build();
  const bin = await built;
  const r = await runCommand(bin, [], { input: JSON.stringify(req), timeoutMs: 60_000 });
  if (r.status !== 0) throw new Error(`x509interop exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as GoResult[];
}
