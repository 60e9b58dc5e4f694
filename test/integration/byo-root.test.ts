/**
 * Bring your own root under the real engine: a root CA made by OpenSSL (certificate and key
 * as PEMs, the key given as secret config), issuing CAs signed by it, no key in plaintext.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openssl, tmpdir, verifyChain } from "../helpers/openssl";
import { PulumiStack, REPO } from "../helpers/pulumi";

describe("bring-your-own root with the real Pulumi engine", () => {
  const stack = new PulumiStack(path.join(REPO, "test", "integration", "fixtures", "ca-program"), "it-byo");
  const dir = tmpdir();
  afterAll(() => {
    stack.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("signs issuing CAs under an OpenSSL-made root and keeps its key encrypted", async () => {
    const key = path.join(dir, "root.key");
    const cert = path.join(dir, "root.pem");
    expect(
      openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", key]).status,
    ).toBe(0);
    const r = openssl([
      "req",
      "-x509",
      "-new",
      "-key",
      key,
      "-out",
      cert,
      "-days",
      "3650",
      "-subj",
      "/O=BYO Ltd/CN=BYO Root",
      "-addext",
      "basicConstraints=critical,CA:TRUE,pathlen:1",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    expect(r.status, r.out).toBe(0);
    const rootPem = fs.readFileSync(cert, "utf8");
    await stack.init();
    await stack.run([
      "config",
      "set",
      "--secret",
      "fleetguard:hierarchy",
      JSON.stringify({
        root: {
          name: "root",
          existing: { certificatePem: rootPem, privateKeyPem: fs.readFileSync(key, "utf8") },
        },
        issuing: [{ name: "line-a", subject: { commonName: "BYO Line A" }, validityDays: 730 }],
      }),
    ]);
    await stack.run(["up", "--yes", "--skip-preview"]);
    const cas = (await stack.outputs()).cas as Record<string, { certificatePem: string; role: string }>;
    expect(cas.root!.certificatePem.trim()).toBe(rootPem.trim());
    expect(verifyChain(rootPem, rootPem, cas["line-a"]!.certificatePem).ok).toBe(true);
    expect(stack.stateText().match(/PRIVATE KEY/g)).toBeNull();
    const again = await stack.run(["preview", "--expect-no-changes"], { allowFail: true });
    expect(again.status, again.stdout).toBe(0);
  });
});
