/**
 * CaHierarchy's resource graph with Pulumi mocks: names, parents, secrets, and a root brought
 * from @pulumi/tls. The mocks run our real provider runtime for the CA resources and OpenSSL
 * for the tls ones, so outputs are real certificates.
 */
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it } from "vitest";
import {
  type CaHierarchyArgs,
  CaHierarchyError,
  canonicalJson,
  declarationDigest,
  effectiveGenerations,
  planHierarchy,
} from "../../components/CaHierarchy";
import { tmpdir, verifyChain } from "../helpers/openssl";

/** Mocks see secrets as {<sig>: ..., value}; the engine hands providers plain values. */
const SECRET_SIG = "4dabf18193072939515e22adb298388d";
function unwrap(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(unwrap);
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (SECRET_SIG in o) return unwrap(o.value);
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, unwrap(x)]));
  }
  return v;
}

const registered: { type: string; name: string; inputs: Record<string, unknown>; parent?: string }[] = [];

beforeAll(async () => {
  const runtime = await import("../../providers/runtime/ca");
  pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        if (args.type === "pulumi-nodejs:dynamic:Resource") {
          const created = runtime.create(unwrap(args.inputs) as never);
          return { id: created.id, state: { ...args.inputs, ...created.outs } };
        }
        if (args.type === "tls:index/privateKey:PrivateKey") {
          const k = crypto.generateKeyPairSync("ec", { namedCurve: "secp384r1" });
          return {
            id: "key",
            state: { ...args.inputs, privateKeyPem: k.privateKey.export({ type: "pkcs8", format: "pem" }) },
          };
        }
        if (args.type === "tls:index/selfSignedCert:SelfSignedCert") {
          const dir = tmpdir();
          fs.writeFileSync(path.join(dir, "k.pem"), String(unwrap(args.inputs.privateKeyPem)));
          const certPem = execFileSync(
            "openssl",
            [
              "req",
              "-x509",
              "-new",
              "-key",
              path.join(dir, "k.pem"),
              "-subj",
              "/CN=TLS Root",
              "-days",
              "3650",
              "-addext",
              "basicConstraints=critical,CA:TRUE",
              "-addext",
              "keyUsage=critical,keyCertSign,cRLSign",
            ],
            { encoding: "utf8" },
          );
          return { id: "cert", state: { ...args.inputs, certPem } };
        }
        return { id: `${args.name}-id`, state: args.inputs };
      },
      call: (args) => args.inputs,
    },
    "fleet",
    "unit",
    false,
  );
});

// CA keys go to an embedded key store of this test, sealed with a passphrase of this test
process.env.FLEETGUARD_KEK = `test-kek-${crypto.randomBytes(8).toString("hex")}`;
const STORE = path.join(tmpdir(), "keys");

const spec: CaHierarchyArgs = {
  custody: { kind: "embedded", store: STORE },
  root: {
    name: "root",
    algorithm: "ecdsa-p384",
    subject: { commonName: "Root" },
    validityDays: 3650,
    pathLen: 2,
  },
  intermediates: [{ name: "manufacturing", subject: { commonName: "Manufacturing" }, validityDays: 1825 }],
  issuing: [{ name: "line-a", subject: { commonName: "Line A" }, validityDays: 730 }],
};

describe("planHierarchy (pure)", () => {
  it("orders the tree and fills default parents", () => {
    expect(planHierarchy(spec).map((p) => [p.name, p.role, p.parent])).toEqual([
      ["root", "root", undefined],
      ["manufacturing", "intermediate", "root"],
      ["line-a", "issuing", "manufacturing"],
    ]);
  });
  it("reports every problem at once, naming the field, got and want", () => {
    const bad: CaHierarchyArgs = {
      root: { ...spec.root, pathLen: 1 } as never,
      intermediates: [
        { name: "a", subject: { commonName: "A" }, validityDays: 4000, pathLen: 3 },
        { name: "a", subject: { commonName: "A2" }, validityDays: 10 },
      ],
      issuing: [
        {
          name: "Bad_Name",
          parent: "nope",
          subject: { commonName: "X" },
          validityDays: 10,
          algorithm: "dsa" as never,
        },
      ],
    };
    try {
      planHierarchy(bad);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(CaHierarchyError);
      expect((e as CaHierarchyError).problems).toEqual([
        'intermediates[1].name: got "a", want a name not used by another CA',
        'issuing[0].name: got "Bad_Name", want lowercase letters, digits and dashes',
        "intermediates[0].validityDays: got 4000, want at most 3650 so it does not outlive its issuer 'root'",
        "intermediates[0].pathLen: got 3, want at most 0 (issuer 'root' has pathLen 1)",
        'issuing[0].parent: got "nope", want one of root, a (a root or intermediate declared before it)',
        'issuing[0].algorithm: got "dsa", want one of ecdsa-p256, ecdsa-p384, ed25519, rsa-3072',
      ]);
    }
  });
  it("needs an explicit parent when there are several intermediates", () => {
    expect(() =>
      planHierarchy({
        ...spec,
        intermediates: [
          ...spec.intermediates!,
          { name: "m2", subject: { commonName: "M2" }, validityDays: 100 },
        ],
      }),
    ).toThrow(
      "issuing[0].parent: got nothing, want one of manufacturing, m2 (there are several intermediates)",
    );
  });
});

describe("declaration digests", () => {
  it("ignore descriptions, follow everything that replaces a CA, and chain through the issuer", () => {
    const s = spec.intermediates![0]!;
    const d = declarationDigest(s, "intermediate", "p");
    expect(declarationDigest({ ...s, description: "x" }, "intermediate", "p")).toBe(d);
    expect(declarationDigest({ ...s, subject: { commonName: "Other" } }, "intermediate", "p")).not.toBe(d);
    expect(declarationDigest({ ...s, algorithm: "ecdsa-p384" }, "intermediate", "p")).not.toBe(d);
    expect(declarationDigest(s, "intermediate", "q")).not.toBe(d);
    expect(canonicalJson({ b: 1, a: [1, { d: null, c: 2 }] })).toBe('{"a":[1,{"c":2}],"b":1}');
  });
});

const outputOf = <T>(o: pulumi.Output<T>): Promise<T> => new Promise((resolve) => o.apply((v) => resolve(v)));

describe("CaHierarchy rollover: an issuing CA's generation (mocks)", () => {
  const rolled = (g: number): CaHierarchyArgs => ({
    ...spec,
    issuing: [{ ...spec.issuing[0]!, generation: g }],
  });
  it("generation 2 keeps the predecessor's resource and inputs and adds a successor with the same subject and another key", async () => {
    const { CaHierarchy } = await import("../../components/CaHierarchy");
    registered.length = 0;
    await outputOf(new CaHierarchy("g0", spec).summary);
    const first = registered.find((r) => r.name === "g0-line-a")!.inputs;
    registered.length = 0;
    const pki = new CaHierarchy("g1", rolled(2));
    const summary = await outputOf(pki.summary);
    expect(
      registered
        .map((r) => r.name)
        .filter((n) => n.startsWith("g1"))
        .sort(),
    ).toEqual(["g1", "g1-line-a", "g1-line-a-g2", "g1-manufacturing", "g1-root"]);
    // the predecessor is declared as before the rollover, marked `retained` (its provider then
    // never replaces it, nor creates it: test/providers ca-retained): Pulumi sees no change to it
    const { issuer: _a, ...before } = first as Record<string, unknown>;
    const { issuer: _b, ...after } = registered.find((r) => r.name === "g1-line-a")!.inputs as Record<
      string,
      unknown
    >;
    expect(after).toEqual({ ...before, retained: true });
    expect(registered.find((r) => r.name === "g1-line-a-g2")!.inputs).toMatchObject({
      name: "line-a",
      generation: 2,
    });
    const prev = summary["line-a@g1"]!;
    const cur = summary["line-a"]!;
    expect(cur.generation).toBe(2);
    expect(prev.generation).toBe(1);
    const a = new crypto.X509Certificate(prev.certificatePem);
    const b = new crypto.X509Certificate(cur.certificatePem);
    expect(b.subject).toBe(a.subject);
    expect(b.publicKey.equals(a.publicKey)).toBe(false);
    expect(
      verifyChain(summary.root!.certificatePem, summary.manufacturing!.certificatePem, cur.certificatePem).ok,
    ).toBe(true);
    const out = pki.issuingCa("line-a");
    expect(out.generation).toBe(2);
    expect(await outputOf(out.previous!.fingerprintSha256)).toBe(prev.fingerprintSha256);
  });
  it("generation 3 retires generation 1: generations 2 and 3 are declared", async () => {
    const { CaHierarchy } = await import("../../components/CaHierarchy");
    registered.length = 0;
    const pki = new CaHierarchy("g3", rolled(3));
    await outputOf(pki.summary);
    expect(
      registered
        .map((r) => r.name)
        .filter((n) => n.startsWith("g3"))
        .sort(),
    ).toEqual(["g3", "g3-line-a-g2", "g3-line-a-g3", "g3-manufacturing", "g3-root"]);
    expect(registered.find((r) => r.name === "g3-line-a-g2")!.inputs).toMatchObject({ generation: 2 });
  });
  it("revokes a subordinate CA (never the root) with an RFC 5280 reason; what it issued inherits the revocation", async () => {
    expect(() =>
      planHierarchy({ ...spec, root: { ...spec.root, revoked: { reason: "keyCompromise" } } as never }),
    ).toThrow(/root\.revoked: got a revocation of the root, want it only on an intermediate or issuing CA/);
    expect(() =>
      planHierarchy({
        ...spec,
        intermediates: [{ ...spec.intermediates![0]!, revoked: { reason: "oops" as never } }],
      }),
    ).toThrow(/intermediates\[0\]\.revoked\.reason: got "oops", want an RFC 5280 reason/);
    const { CaHierarchy } = await import("../../components/CaHierarchy");
    const pki = new CaHierarchy("rv", {
      ...spec,
      intermediates: [
        { ...spec.intermediates![0]!, revoked: { reason: "cACompromise", at: "2026-12-01T00:00:00Z" } },
      ],
    });
    expect(pki.issuingCa("line-a").revokedAbove).toEqual({
      ca: "manufacturing",
      reason: "cACompromise",
      at: "2026-12-01T00:00:00Z",
    });
    await outputOf(pki.summary);
    expect(registered.find((r) => r.name === "rv-manufacturing")!.inputs).toMatchObject({
      revocation: { reason: "cACompromise" },
    });
  });
  it("refuses a generation that is not a whole number >= 1", () => {
    expect(() => planHierarchy(rolled(0))).toThrow("issuing[0].generation: got 0, want a whole number >= 1");
    expect(() => planHierarchy(rolled(1.5))).toThrow(
      "issuing[0].generation: got 1.5, want a whole number >= 1",
    );
    expect(() => planHierarchy({ ...spec, root: { ...spec.root, generation: -1 } as never })).toThrow(
      "root.generation: got -1, want a whole number >= 1",
    );
  });
  it("effective generations: a CA's own plus the rollovers above it", () => {
    const at = (root: number, inter: number, line: number) =>
      effectiveGenerations(
        planHierarchy({
          ...spec,
          root: { ...spec.root, generation: root } as never,
          intermediates: [{ ...spec.intermediates![0]!, generation: inter }],
          issuing: [{ ...spec.issuing[0]!, generation: line }],
        }),
      );
    expect(at(1, 1, 1)).toEqual({ root: 1, manufacturing: 1, "line-a": 1 });
    expect(at(1, 1, 2)).toEqual({ root: 1, manufacturing: 1, "line-a": 2 });
    expect(at(2, 1, 1)).toEqual({ root: 2, manufacturing: 2, "line-a": 2 });
    // an issuing rollover after a root rollover (or before it): each raise is one step below
    expect(at(2, 1, 2)).toEqual({ root: 2, manufacturing: 2, "line-a": 3 });
    expect(at(1, 2, 1)).toEqual({ root: 1, manufacturing: 2, "line-a": 2 });
  });
  it("root generation 2: a new root cross-signed by the old, a successor for every CA below, the old tree kept", async () => {
    const { CaHierarchy } = await import("../../components/CaHierarchy");
    registered.length = 0;
    const pki = new CaHierarchy("rr", { ...spec, root: { ...spec.root, generation: 2 } as never });
    const summary = await outputOf(pki.summary);
    expect(
      registered
        .map((r) => r.name)
        .filter((n) => n.startsWith("rr"))
        .sort(),
    ).toEqual([
      "rr",
      "rr-line-a",
      "rr-line-a-g2",
      "rr-manufacturing",
      "rr-manufacturing-g2",
      "rr-root",
      "rr-root-g2",
    ]);
    for (const n of ["rr-root", "rr-manufacturing", "rr-line-a"])
      expect(registered.find((r) => r.name === n)!.inputs, n).toMatchObject({ retained: true });
    const newRoot = registered.find((r) => r.name === "rr-root-g2")!.inputs;
    expect(unwrap(newRoot)).toMatchObject({ generation: 2, crossFrom: { name: "root" } });
    expect(JSON.stringify(newRoot)).not.toMatch(/PRIVATE KEY/);
    // each successor names its issuer's CRL: the new root's is root-g2.crl
    const cross = await outputOf(pki.cas.root!.crossCertificatePem);
    const old = summary["root@g1"]!;
    const cur = summary["line-a"]!;
    expect(cur.generation).toBe(2);
    expect(summary["manufacturing@g1"]!.generation).toBe(1);
    // OpenSSL, trusting only the old root, accepts the new issuing CA through the cross certificate
    expect(
      verifyChain(old.certificatePem, `${summary.manufacturing!.certificatePem}${cross}`, cur.certificatePem)
        .ok,
    ).toBe(true);
    expect(
      verifyChain(old.certificatePem, summary.manufacturing!.certificatePem, cur.certificatePem).ok,
    ).toBe(false);
    expect(
      verifyChain(summary.root!.certificatePem, summary.manufacturing!.certificatePem, cur.certificatePem).ok,
    ).toBe(true);
    // what a batch gets: the successor, its predecessor (under the old tree) and the cross chain
    const out = pki.issuingCa("line-a");
    expect(out.generation).toBe(2);
    expect(await outputOf(out.previous!.chainPem)).toBe(summary["line-a@g1"]!.chainPem);
    const crossChain = (await outputOf(out.crossChainPem!))!;
    const blocks = crossChain.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)!;
    expect(blocks).toHaveLength(4);
    expect(blocks[2]!.replace(/\s+/g, "")).toBe(cross!.trim().replace(/\s+/g, ""));
    expect(blocks[3]!.replace(/\s+/g, "")).toBe(old.certificatePem.trim().replace(/\s+/g, ""));
    // the predecessor's CRLs above it are the old tree's
    const prevCrls = await outputOf(out.previous!.ancestorCrlPems!);
    expect(prevCrls).toEqual([summary["manufacturing@g1"]!.crlPem, old.crlPem]);
    const curCrls = await outputOf(out.ancestorCrlPems!);
    expect(curCrls).toEqual([summary.manufacturing!.crlPem, summary.root!.crlPem]);
  });
});

describe("CaHierarchy resource graph (mocks)", () => {
  it("pins logical names and types, parents children on the component, keeps keys secret", async () => {
    registered.length = 0;
    const { CaHierarchy } = await import("../../components/CaHierarchy");
    const pki = new CaHierarchy("fleet", spec);
    const summary = await outputOf(pki.summary);
    expect(registered.map((r) => `${r.type}::${r.name}`)).toEqual([
      "fleetguard:pki:CaHierarchy::fleet",
      "pulumi-nodejs:dynamic:Resource::fleet-root",
      "pulumi-nodejs:dynamic:Resource::fleet-manufacturing",
      "pulumi-nodejs:dynamic:Resource::fleet-line-a",
    ]);
    expect(
      verifyChain(
        summary.root!.certificatePem,
        summary.manufacturing!.certificatePem,
        summary["line-a"]!.certificatePem,
      ).ok,
    ).toBe(true);
    expect(pulumi.Output.isInstance(pki.cas.root!.keyPem)).toBe(true);
    expect(JSON.stringify(summary)).not.toMatch(/PRIVATE KEY/);
    // key custody: what crosses to the engine (every resource's inputs) names keys, never holds them
    expect(JSON.stringify(registered.map((r) => r.inputs))).not.toMatch(/PRIVATE KEY/);
    const lineA = registered.find((r) => r.name === "fleet-line-a")!.inputs as {
      issuer: { keyRef: unknown };
    };
    expect(lineA.issuer.keyRef).toMatchObject({ custody: "embedded", location: STORE });
  });

  it("serializes a provider that captures nothing heavy and no secret (brief rule 3)", () => {
    const dyn = registered.find((r) => r.name === "fleet-manufacturing")!;
    const serialized = String(dyn.inputs.__provider);
    expect(serialized.length).toBeGreaterThan(100);
    expect(serialized.length).toBeLessThan(20_000);
    expect(serialized).not.toMatch(/PRIVATE KEY|generateKeyPairSync|BEGIN CERTIFICATE/);
    expect(serialized).toMatch(/runtime/);
  });

  it("accepts a root from @pulumi/tls resources (bring your own root)", async () => {
    registered.length = 0;
    const tls = await import("@pulumi/tls");
    const { CaHierarchy } = await import("../../components/CaHierarchy");
    const key = new tls.PrivateKey("byo-root-key", { algorithm: "ECDSA", ecdsaCurve: "P384" });
    const cert = new tls.SelfSignedCert("byo-root", {
      privateKeyPem: key.privateKeyPem,
      subject: { commonName: "TLS Root" },
      validityPeriodHours: 87600,
      isCaCertificate: true,
      allowedUses: ["cert_signing", "crl_signing"],
    });
    const pki = new CaHierarchy("byo", {
      custody: { kind: "embedded", store: STORE },
      root: { name: "root", existing: { certificatePem: cert.certPem, privateKeyPem: key.privateKeyPem } },
      issuing: [{ name: "line-a", subject: { commonName: "Line A" }, validityDays: 365 }],
    });
    const summary = await outputOf(pki.summary);
    const tlsCert = await outputOf(cert.certPem);
    expect(summary.root!.certificatePem).toBe(tlsCert);
    expect(verifyChain(tlsCert, tlsCert, summary["line-a"]!.certificatePem).ok).toBe(true);
    const rootInputs = registered.find(
      (r) => r.name === "byo-root" && r.type.startsWith("pulumi-nodejs"),
    )!.inputs;
    expect(rootInputs.existing).toBeDefined();
    expect(JSON.stringify(rootInputs.existing)).toContain("4dabf18193072939515e22adb298388d"); // passed as a secret
  });
});
