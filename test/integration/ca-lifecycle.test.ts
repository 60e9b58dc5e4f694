/**
 * CaHierarchy under the real Pulumi engine (CLI + Node language host + dynamic provider
 * host) on a file:// backend with passphrase secrets: up, no-change preview, adding an
 * intermediate, an in-place update, a replacement that cascades, bad input, refresh, destroy.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openssl, tmpdir, verifyChain } from "../helpers/openssl";
import { runCommand } from "../helpers/proc";
import { PulumiStack, REPO } from "../helpers/pulumi";

type Summary = Record<
  string,
  { role: string; fingerprintSha256: string; certificatePem: string; chainPem: string; crlPem: string }
>;

function verifyCrl(caPem: string, crlPem: string): string {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, "ca.pem"), caPem);
  fs.writeFileSync(path.join(dir, "crl.pem"), crlPem);
  const r = openssl(["crl", "-in", path.join(dir, "crl.pem"), "-CAfile", path.join(dir, "ca.pem"), "-noout"]);
  fs.rmSync(dir, { recursive: true, force: true });
  return r.out;
}

const base = {
  root: {
    name: "root",
    algorithm: "ecdsa-p384",
    subject: { commonName: "IT Root", organization: "Acme" },
    validityDays: 3650,
    pathLen: 2,
    nameConstraints: { permittedDNS: ["devices.acme.example"] },
  },
  intermediates: [
    {
      name: "plant-1",
      algorithm: "ecdsa-p256",
      subject: { commonName: "IT Plant 1" },
      validityDays: 1825,
      description: "first plant",
    },
  ],
  issuing: [
    {
      name: "line-a",
      parent: "plant-1",
      algorithm: "ecdsa-p256",
      subject: { commonName: "IT Line A" },
      validityDays: 730,
    },
  ],
};
const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v));

describe("CaHierarchy with the real Pulumi engine", () => {
  const stack = new PulumiStack(path.join(REPO, "test", "integration", "fixtures", "ca-program"), "it");
  let first: Summary;

  beforeAll(async () => {
    await stack.init();
    await stack.setConfig("fleetguard:hierarchy", base);
  });
  afterAll(() => stack.cleanup());

  const cas = async (): Promise<Summary> => (await stack.outputs()).cas as Summary;
  // `preview --json` lists the steps that change something; a CA it does not list stays the same
  const opsFor = (steps: { op: string; urn: string }[]) =>
    Object.fromEntries(
      steps.filter((s) => s.urn.includes("dynamic:Resource")).map((s) => [s.urn.split("::").pop(), s.op]),
    );

  it("up creates root, intermediate and issuing CA whose chains OpenSSL verifies", async () => {
    await stack.run(["up", "--yes", "--skip-preview"]);
    first = await cas();
    expect(Object.keys(first).sort()).toEqual(["line-a", "plant-1", "root"]);
    const v = verifyChain(
      first.root!.certificatePem,
      first["plant-1"]!.certificatePem,
      first["line-a"]!.certificatePem,
    );
    expect(v.out).toContain("OK");
    expect(first["line-a"]!.chainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(3);
    for (const ca of Object.values(first))
      expect(verifyCrl(ca.certificatePem, ca.crlPem)).toMatch(/verify OK/);
  });

  it("fleet ca summary lists every CA with its OpenSSL verdict and writes the PEMs", async () => {
    const out = tmpdir();
    const r = await runCommand(
      "npx",
      [
        "--no-install",
        "tsx",
        path.join(REPO, "cli", "fleet.ts"),
        "ca",
        "summary",
        "--stack",
        stack.stack,
        "--cwd",
        stack.programDir,
        "--out",
        out,
      ],
      { env: stack.env, cwd: REPO },
    );
    expect(r.status, r.stderr).toBe(0);
    for (const name of ["root", "plant-1", "line-a"]) {
      expect(r.stdout).toMatch(new RegExp(`^${name}\\s.*\\sOK\\s*$`, "m"));
      expect(fs.existsSync(path.join(out, `${name}.pem`))).toBe(true);
    }
    fs.rmSync(out, { recursive: true, force: true });
  });

  it("keeps private keys out of the state in plaintext", async () => {
    const text = stack.stateText();
    // key custody (embedded store by default): the state names each key, it does not hold it
    expect(text).toMatch(/"keyRef":\{"algorithm":"ecdsa-p\d+","custody":"embedded"/);
    expect(text.match(/PRIVATE KEY/g)).toBeNull();
    // not even encrypted: decrypted, the state has no key either
    expect((await stack.run(["stack", "export", "--show-secrets"])).stdout).not.toMatch(/PRIVATE KEY/);
  });

  it("a second preview reports no changes", async () => {
    const r = await stack.run(["preview", "--expect-no-changes"]);
    expect(r.status).toBe(0);
    expect(opsFor(await stack.previewSteps())).toEqual({});
  });

  it("adding an intermediate (with an issuing CA) touches nothing else", async () => {
    const spec = clone(base);
    spec.intermediates.push({
      name: "plant-2",
      algorithm: "ecdsa-p256",
      subject: { commonName: "IT Plant 2" },
      validityDays: 1825,
      description: "",
    });
    spec.issuing.push({
      name: "line-b",
      parent: "plant-2",
      algorithm: "ecdsa-p256",
      subject: { commonName: "IT Line B" },
      validityDays: 730,
    });
    await stack.setConfig("fleetguard:hierarchy", spec);
    expect(opsFor(await stack.previewSteps())).toEqual({ "pki-plant-2": "create", "pki-line-b": "create" });
    await stack.run(["up", "--yes", "--skip-preview"]);
    const now = await cas();
    for (const k of ["root", "plant-1", "line-a"])
      expect(now[k]!.fingerprintSha256).toBe(first[k]!.fingerprintSha256);
    expect(
      verifyChain(now.root!.certificatePem, now["plant-2"]!.certificatePem, now["line-b"]!.certificatePem).ok,
    ).toBe(true);
  });

  it("changing only a description updates in place", async () => {
    const spec = clone(base);
    spec.intermediates[0]!.description = "first plant, renamed site";
    await stack.setConfig("fleetguard:hierarchy", spec);
    // plant-2 and line-b are no longer declared: they go
    expect(opsFor(await stack.previewSteps())).toEqual({
      "pki-plant-1": "update",
      "pki-plant-2": "delete",
      "pki-line-b": "delete",
    });
    await stack.run(["up", "--yes", "--skip-preview"]);
    expect((await cas())["plant-1"]!.fingerprintSha256).toBe(first["plant-1"]!.fingerprintSha256);
  });

  it("changing a subject replaces that CA and what it signed, nothing else", async () => {
    const spec = clone(base);
    spec.intermediates[0]!.description = "first plant, renamed site";
    spec.intermediates[0]!.subject.commonName = "IT Plant 1 (2026)";
    await stack.setConfig("fleetguard:hierarchy", spec);
    expect(opsFor(await stack.previewSteps())).toEqual({ "pki-plant-1": "replace", "pki-line-a": "replace" });
    await stack.run(["up", "--yes", "--skip-preview"]);
    const now = await cas();
    expect(now.root!.fingerprintSha256).toBe(first.root!.fingerprintSha256);
    expect(now["plant-1"]!.fingerprintSha256).not.toBe(first["plant-1"]!.fingerprintSha256);
    expect(now["line-a"]!.fingerprintSha256).not.toBe(first["line-a"]!.fingerprintSha256);
    expect(
      verifyChain(now.root!.certificatePem, now["plant-1"]!.certificatePem, now["line-a"]!.certificatePem).ok,
    ).toBe(true);
  });

  it("changing the root's key algorithm replaces the whole tree", async () => {
    const spec = clone(base);
    spec.intermediates[0]!.description = "first plant, renamed site";
    spec.intermediates[0]!.subject.commonName = "IT Plant 1 (2026)";
    spec.root.algorithm = "ecdsa-p256";
    await stack.setConfig("fleetguard:hierarchy", spec);
    expect(opsFor(await stack.previewSteps())).toEqual({
      "pki-root": "replace",
      "pki-plant-1": "replace",
      "pki-line-a": "replace",
    });
    await stack.run(["up", "--yes", "--skip-preview"]);
    first = await cas();
  });

  it("bad input fails preview with the field, got and want, and leaves the state untouched", async () => {
    const before = crypto.createHash("sha256").update(fs.readFileSync(stack.checkpointFile())).digest("hex");
    const goodSpec = (await stack.run(["config", "get", "fleetguard:hierarchy"])).stdout.trim();
    // mutate what is deployed, so the parents stay known and the provider can check against them
    const cur = JSON.parse(goodSpec) as typeof base;
    const cases: [unknown, RegExp][] = [
      // caught by the component's plan (declared tree)
      [
        { ...clone(cur), issuing: [{ ...cur.issuing[0], validityDays: 4000 }] },
        /issuing\[0\]\.validityDays: got 4000, want at most 1825 so it does not outlive its issuer 'plant-1'/,
      ],
      [
        { ...clone(cur), root: { ...cur.root, algorithm: "dsa-1024" } },
        /root\.algorithm: got "dsa-1024", want one of ecdsa-p256, ecdsa-p384, ed25519, rsa-3072/,
      ],
      [
        { ...clone(cur), root: { ...cur.root, pathLen: 0 } },
        /intermediates\[0\]\.parent: got 'root' whose pathLen is 0, want an issuer allowed to sign a CA/,
      ],
      // caught by the provider's check() against the parent certificate
      [
        {
          ...clone(cur),
          intermediates: [{ ...cur.intermediates[0], subject: { commonName: "ca.elsewhere.example" } }],
        },
        /subject\.commonName: got "ca\.elsewhere\.example", want a name within issuer 'root' permitted subtrees \[devices\.acme\.example\]/,
      ],
      [
        {
          ...clone(cur),
          root: {
            name: "root",
            existing: {
              certificatePem: "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----",
              privateKeyPem: "x",
            },
          },
        },
        /existing\.certificatePem: got text that is not PEM|existing\.certificatePem: got PEM without a well-formed CERTIFICATE block/,
      ],
    ];
    for (const [spec, message] of cases) {
      await stack.setConfig("fleetguard:hierarchy", spec);
      const r = await stack.run(["preview"], { allowFail: true });
      expect(r.status, `${message}`).not.toBe(0);
      expect(`${r.stdout}${r.stderr}`).toMatch(message);
      expect(`${r.stdout}${r.stderr}`).not.toMatch(/PRIVATE KEY/);
    }
    await stack.setConfig("fleetguard:hierarchy", JSON.parse(goodSpec));
    const after = crypto.createHash("sha256").update(fs.readFileSync(stack.checkpointFile())).digest("hex");
    expect(after).toBe(before);
  });

  it("a mandatory policy violation fails preview with the check id, state untouched", async () => {
    const before = crypto.createHash("sha256").update(fs.readFileSync(stack.checkpointFile())).digest("hex");
    await stack.setConfig("fleetguard:policy", path.join(REPO, "policies", "baseline.yaml"));
    const r = await stack.run(["preview"], { allowFail: true });
    await stack.run(["config", "rm", "fleetguard:policy"]);
    expect(r.status).not.toBe(0);
    // the deployed tree has a P-256 root: the baseline wants ECDSA >= 384 bits for roots
    expect(`${r.stdout}${r.stderr}`).toMatch(/policy 'baseline' refuses this declaration/);
    expect(`${r.stdout}${r.stderr}`).toMatch(/FG-KEY-001 ca:root: algorithm: got ecdsa-p256/);
    const after = crypto.createHash("sha256").update(fs.readFileSync(stack.checkpointFile())).digest("hex");
    expect(after).toBe(before);
  });

  it("refresh detects nothing on an unchanged stack", async () => {
    const r = await stack.run(["refresh", "--yes", "--expect-no-changes"]);
    expect(r.stdout).toMatch(/unchanged/);
    expect((await cas()).root!.fingerprintSha256).toBe(first.root!.fingerprintSha256);
  });

  it("destroy removes everything", async () => {
    await stack.run(["destroy", "--yes", "--skip-preview"]);
    const exported = JSON.parse((await stack.run(["stack", "export"])).stdout) as {
      deployment: { resources?: unknown[] };
    };
    expect(exported.deployment.resources ?? []).toHaveLength(0);
  });
});
