/**
 * The batch provider's check(): what fails a preview before any device is touched (issue 9,
 * findings 3 and 7): registry locations that are neither a file nor a postgres:// URL, folders
 * and unwritable files, and device names outside the issuing chain's name constraints.
 */
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { issueCa } from "../../core/ca";
import { check, registryLocation } from "../../providers/runtime/batch";
import { tmpdir } from "../helpers/openssl";

const root = issueCa({
  name: "root",
  role: "root",
  algorithm: "ecdsa-p256",
  subject: { commonName: "Root" },
  validityDays: 3650,
  nameConstraints: { permittedDNS: ["devices.example.com"] },
});
const line = issueCa(
  {
    name: "line",
    role: "issuing",
    algorithm: "ecdsa-p256",
    subject: { commonName: "Line" },
    validityDays: 700,
  },
  { name: "root", ...root },
);

const dir = tmpdir();
const inputs = {
  kind: "fleetguard:batch" as const,
  name: "lot",
  model: "fg100",
  source: "puf" as const,
  firstSerial: 0,
  count: 20,
  profile: { sans: { dns: ["{deviceId}.devices.example.com"] } },
  issuer: { name: "line", certificatePem: line.certificatePem, chainPem: line.chainPem },
  station: { host: "127.0.0.1", port: 7300 },
  registry: path.join(dir, "registry.db"),
  crlDir: path.join(dir, "crl"),
  policy: { name: "p", digest: "d", maxQuarantinedFraction: 0.01, maxWaveFraction: 1 },
};

describe("batch provider check", () => {
  it("accepts a declaration inside the chain's name constraints", () => {
    expect(check({}, inputs).failures).toEqual([]);
  });

  it("refuses device names outside the issuer's name constraints before anything is signed", () => {
    const r = check({}, { ...inputs, profile: { sans: { dns: ["{deviceId}.evil.example.net"] } } });
    expect(r.failures.map((f) => f.property)).toEqual(["profile"]);
    expect(r.failures[0]!.reason).toMatch(/evil\.example\.net/);
  });

  it("refuses registry locations that are not a file path or a postgres:// URL, naming the field, never the password", () => {
    for (const bad of ["mysql://u:s3cretpw@host/db", "redis://h:1/0", "file:x.db", "", "a\0b"]) {
      const r = check({}, { ...inputs, registry: bad });
      expect(
        r.failures.map((f) => f.property),
        bad,
      ).toEqual(["registry"]);
      expect(r.failures[0]!.reason).toMatch(/^registry: got .*, want a SQLite file path or a postgres:\/\//);
      expect(r.failures[0]!.reason).not.toContain("s3cretpw");
    }
    expect(registryLocation("sqlite:rel.db")).toBe(path.resolve("rel.db"));
    expect(registryLocation("postgres://u@h:5432/db")).toBe("postgres://u@h:5432/db");
  });

  it("refuses a folder", () => {
    expect(() => registryLocation(dir)).toThrow(/registry: got the folder/);
  });
});

describe("batch check under the policy's name rules (policy `names`)", () => {
  const wild = { sans: { dns: ["*.{deviceId}.devices.example.com"] } };
  const withNames = (names: object) => ({ ...inputs, profile: wild, policy: { ...inputs.policy, names } });

  it("refuses a wildcard DNS name unless the policy allows it", () => {
    const refused = check({}, { ...inputs, profile: wild });
    expect(refused.failures[0]!.reason).toMatch(/wildcards are not allowed by policy/);
    expect(check({}, withNames({ allowWildcardDns: false })).failures).toHaveLength(1);
    expect(check({}, withNames({ allowWildcardDns: true })).failures).toEqual([]);
  });

  it("allows only the policy's URI schemes", () => {
    const profile = { sans: { uri: ["https://devices.example.com/{deviceId}"] } };
    expect(check({}, { ...inputs, profile }).failures).toEqual([]);
    const r = check(
      {},
      { ...inputs, profile, policy: { ...inputs.policy, names: { allowedUriSchemes: ["urn"] } } },
    );
    expect(r.failures.map((f) => f.property)).toEqual(["profile"]);
    expect(r.failures[0]!.reason).toMatch(/https/);
  });
});
