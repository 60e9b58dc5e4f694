// The policy's name rules (spec.names) reach issuance: a wildcard DNS name the strict default
// refuses is issued when the policy allows wildcards, and OpenSSL verifies it under the chain's
// name constraints; the engine's re-issue conformance reads it as what the declaration issues.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { issueCa } from "../../../core/ca";
import { BatchEngine, type BatchSpec } from "../../../core/enroll/engine";
import { type IssuerMaterial, type NameRules, resolveProfile } from "../../../core/enroll/profile";
import { openRegistry } from "../../../core/registry";
import type { Registry } from "../../../core/registry/types";
import { StationClient } from "../../../core/station/client";
import { loadPrivateKey } from "../../../core/x509/keys";
import { pemBlocks } from "../../../core/x509/pem";
import { type RunningFarm, startFarm } from "../../../devices/farm/serve";
import { tmpdir, verifyLeaves } from "../../helpers/openssl";

const root = issueCa({
  name: "root",
  role: "root",
  algorithm: "ecdsa-p256",
  subject: { commonName: "Engine Names Root" },
  validityDays: 60,
  nameConstraints: { permittedDNS: ["devices.example.com"] },
});
const issuing = issueCa(
  {
    name: "iss",
    role: "issuing",
    algorithm: "ecdsa-p256",
    subject: { commonName: "Engine Names Issuing" },
    validityDays: 30,
  },
  { name: "root", ...root },
);

function issuerMaterial(): IssuerMaterial {
  const chain = pemBlocks(issuing.chainPem, "CERTIFICATE", "chain");
  return {
    certificate: chain[0]!,
    chain: chain.slice(1),
    key: loadPrivateKey(issuing.keyPem, "key"),
    fingerprint: crypto.createHash("sha256").update(chain[0]!).digest("hex"),
  };
}

let dir: string;
let farm: RunningFarm;
let station: StationClient;
let registry: Registry;

beforeAll(async () => {
  dir = tmpdir("fg-engine-name-rules-");
  farm = await startFarm({ stateDir: path.join(dir, "farm"), count: 3, workers: 0 });
  station = new StationClient({ port: farm.port, poolSize: 1, timeoutMs: 20_000 });
  registry = await openRegistry(path.join(dir, "registry.db"));
}, 60_000);

afterAll(async () => {
  await station?.close();
  await farm?.close();
  await registry?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const WILD = { sans: { dns: ["*.{deviceId}.devices.example.com"] } };
const spec = (names?: NameRules): BatchSpec => ({
  name: "wild-lot",
  model: "fg100",
  source: "puf",
  firstSerial: 0,
  count: 3,
  profile: resolveProfile(WILD, "profile", names),
  maxQuarantinedFraction: 0,
  maxWaveFraction: 1,
  ...(names ? { names } : {}),
});

const run = (s: BatchSpec) =>
  new BatchEngine(
    { registry, station, issuer: issuerMaterial(), waveSize: 8, deviceTimeoutMs: 5000 },
    s,
  ).converge();

describe("the engine under the policy's name rules", () => {
  it("refuses a wildcard without the rule, and issues it when the policy allows wildcards", async () => {
    expect(() => spec()).toThrow(/wildcards are not allowed by policy/);
    const s = await run(spec({ allowWildcardDns: true }));
    expect(s.counts.active).toBe(3);
    const live = await registry.certificates({ batch: "wild-lot", status: ["live"] });
    expect(live.map((c) => new crypto.X509Certificate(c.der).subjectAltName).sort()).toEqual(
      [0, 1, 2].map((i) => `DNS:*.fg100-000000${i}.devices.example.com`),
    );
    const v = verifyLeaves(
      root.certificatePem,
      issuing.certificatePem,
      live.map((c) => c.der),
    );
    expect(v.ok, v.out).toBe(3);
    // the same declaration again: conformance reads the wildcard certificates as what it issues
    const again = await new BatchEngine(
      { registry, station, issuer: issuerMaterial() },
      spec({ allowWildcardDns: true }),
    ).plan();
    expect(again.reissue).toBe(0);
  }, 60_000);
});
