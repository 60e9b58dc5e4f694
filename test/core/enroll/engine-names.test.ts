// The enrollment engine with profiles whose names are bad for the batch, against a real device
// farm (in process, over TCP) and a real SQLite registry: the run fails naming the profile field,
// and no certificate is signed, recorded or installed. A good profile under a name-constrained
// CA enrolls, and OpenSSL verifies every certificate against the constraints. The policy's name
// rules (spec.names) reach issuance: a wildcard the strict default refuses is issued when the
// policy allows wildcards, and re-issue conformance reads it as what the declaration issues.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { issueCa } from "../../../core/ca";
import { BatchEngine, type BatchSpec } from "../../../core/enroll/engine";
import { type IssuerMaterial, type NameRules, resolveProfile } from "../../../core/enroll/profile";
import { FleetError } from "../../../core/errors";
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
  dir = tmpdir("fg-engine-names-");
  farm = await startFarm({ stateDir: path.join(dir, "farm"), count: 9, workers: 0 });
  station = new StationClient({ port: farm.port, poolSize: 1, timeoutMs: 20_000 });
  registry = await openRegistry(path.join(dir, "registry.db"));
}, 60_000);

afterAll(async () => {
  await station?.close();
  await farm?.close();
  await registry?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const spec = (name: string, firstSerial: number, profile: unknown, names?: NameRules): BatchSpec => ({
  name,
  model: "fg100",
  source: "puf",
  firstSerial,
  count: 3,
  profile: resolveProfile(profile, "profile", names),
  maxQuarantinedFraction: 0,
  maxWaveFraction: 1,
  ...(names ? { names } : {}),
});

const run = (s: BatchSpec) =>
  new BatchEngine(
    { registry, station, issuer: issuerMaterial(), waveSize: 8, deviceTimeoutMs: 5000 },
    s,
  ).converge();

describe("the engine with names the issuer's constraints refuse", () => {
  it("fails the run naming the field; no certificate is signed, recorded or installed", async () => {
    const err = await run(spec("bad-lot", 0, { sans: { dns: ["{deviceId}.elsewhere.example"] } })).catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(FleetError);
    expect(err.code).toBe("INVALID_INPUT");
    expect(err.message).toMatch(
      /^profile\.sans\.dns\[0\]: got "fg100-000000\d\.elsewhere\.example", want a name within issuer 'Engine Names Root' permitted subtrees \[devices\.example\.com\]/,
    );
    expect(await registry.certificates({ batch: "bad-lot" })).toHaveLength(0);
    const counts = await registry.counts("bad-lot");
    expect(counts.issued + counts.installed + counts.active).toBe(0);
    expect((await station.status("fg100-0000000")).chain).toHaveLength(0);
  }, 60_000);

  it("a good profile enrolls the next devices, and OpenSSL verifies them under the constraints", async () => {
    const s = await run(
      spec("good-lot", 3, {
        sans: { dns: ["{deviceId}.Devices.example.com"], uri: ["urn:acme:device:{deviceId}"] },
      }),
    );
    expect(s.counts.active).toBe(3);
    const live = await registry.certificates({ batch: "good-lot", status: ["live"] });
    expect(live.map((c) => new crypto.X509Certificate(c.der).subjectAltName).sort()).toEqual(
      [3, 4, 5].map((i) => `DNS:fg100-000000${i}.devices.example.com, URI:urn:acme:device:fg100-000000${i}`),
    );
    const v = verifyLeaves(
      root.certificatePem,
      issuing.certificatePem,
      live.map((c) => c.der),
    );
    expect(v.ok, v.out).toBe(3);
  }, 60_000);
});

describe("the engine under the policy's name rules", () => {
  const WILD = { sans: { dns: ["*.{deviceId}.devices.example.com"] } };
  it("refuses a wildcard without the rule, and issues it when the policy allows wildcards", async () => {
    expect(() => spec("wild-lot", 6, WILD)).toThrow(/wildcards are not allowed by policy/);
    const wild = spec("wild-lot", 6, WILD, { allowWildcardDns: true });
    const s = await run(wild);
    expect(s.counts.active).toBe(3);
    const live = await registry.certificates({ batch: "wild-lot", status: ["live"] });
    expect(live.map((c) => new crypto.X509Certificate(c.der).subjectAltName).sort()).toEqual(
      [6, 7, 8].map((i) => `DNS:*.fg100-000000${i}.devices.example.com`),
    );
    const v = verifyLeaves(
      root.certificatePem,
      issuing.certificatePem,
      live.map((c) => c.der),
    );
    expect(v.ok, v.out).toBe(3);
    // the same declaration again: conformance reads the wildcard certificates as what it issues
    const again = await new BatchEngine({ registry, station, issuer: issuerMaterial() }, wild).plan();
    expect(again.reissue).toBe(0);
  }, 60_000);
});
