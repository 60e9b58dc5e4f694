import { spawnSync } from "node:child_process";
import { createPublicKey, generateKeyPairSync, X509Certificate } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { verifyCsr } from "../../../core/station/csr";
import type { Subject } from "../../../core/station/messages";
import { sha256, verifyChain } from "../../../devices/firmware/chain";
import { buildCsr, toPem } from "../../../devices/firmware/pkix";
import { makeCa, tempDir } from "../farm/helpers";

const dir = tempDir("fg-pkix-");
afterAll(() => dir.remove());

function openssl(args: string[]): { status: number; out: string } {
  const r = spawnSync("openssl", args, { encoding: "utf8" });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

function key() {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { privateKey, spki: createPublicKey(privateKey).export({ type: "spki", format: "der" }) };
}

describe("PKCS#10 requests", () => {
  const subject: Subject = [
    ["C", "DE"],
    ["O", "Acme Gmbh"],
    ["OU", "Sensors"],
    ["CN", "fg100-0000001"],
    ["serialNumber", "0000001"],
  ];
  it("are accepted by openssl req -verify, with the subject given", () => {
    const k = key();
    const path = join(dir.path, "req.pem");
    writeFileSync(path, toPem(buildCsr(subject, k.spki, k.privateKey), "CERTIFICATE REQUEST"));
    const v = openssl(["req", "-in", path, "-verify", "-noout"]);
    expect(v.out).toMatch(/verif(y|ication) OK/i);
    expect(v.status).toBe(0);
    const s = openssl(["req", "-in", path, "-noout", "-subject", "-nameopt", "RFC2253"]);
    expect(s.out.trim()).toBe("subject=serialNumber=0000001,CN=fg100-0000001,OU=Sensors,O=Acme Gmbh,C=DE");
  });
  it("are parsed and verified by the station side; a flipped bit fails", () => {
    const k = key();
    const der = buildCsr(subject, k.spki, k.privateKey);
    const p = verifyCsr(der, k.spki);
    expect(p.subject).toEqual(subject);
    expect(() => verifyCsr(der, key().spki)).toThrow(/different key/);
    const bad = Buffer.from(der);
    bad[20]! ^= 1; // inside the signed info
    expect(() => verifyCsr(bad)).toThrow(FleetError);
    const path = join(dir.path, "bad.der");
    writeFileSync(path, bad);
    // OpenSSL 3.0 exits 0 here but says so: check the words
    const v = openssl(["req", "-inform", "DER", "-in", path, "-verify", "-noout"]);
    expect(v.out).toMatch(/verify failure/);
    expect(v.out).not.toMatch(/verify OK/);
  });
  it("UTF-8 subjects survive", () => {
    const k = key();
    const der = buildCsr([["O", "Müller & Söhne"]], k.spki, k.privateKey);
    expect(verifyCsr(der).subject).toEqual([["O", "Müller & Söhne"]]);
  });
});

describe("certificates and chain checks", () => {
  const ca = makeCa();
  it("test CA chains verify with openssl", () => {
    const k = key();
    const leaf = ca.issue(k.spki, "dev");
    writeFileSync(join(dir.path, "root.pem"), toPem(ca.root));
    writeFileSync(join(dir.path, "inter.pem"), toPem(ca.issuing));
    writeFileSync(join(dir.path, "leaf.pem"), toPem(leaf));
    const r = openssl([
      "verify",
      "-x509_strict",
      "-CAfile",
      join(dir.path, "root.pem"),
      "-untrusted",
      join(dir.path, "inter.pem"),
      join(dir.path, "leaf.pem"),
    ]);
    expect(r.out).toContain(": OK");
    expect(new X509Certificate(leaf).ca).toBe(false);
  });
  it("verifyChain accepts a good chain and names what is wrong with a bad one", () => {
    const k = key();
    const chain = ca.chainFor(k.spki, "dev");
    const anchors = [sha256(ca.root)];
    const now = new Date();
    expect(() => verifyChain(chain, anchors, k.spki, now)).not.toThrow();
    expect(() => verifyChain(chain, [], k.spki, now)).toThrow(/untrusted root/);
    expect(() => verifyChain(chain, anchors, key().spki, now)).toThrow(/another key/);
    expect(() => verifyChain([chain[0]!, chain[2]!], anchors, k.spki, now)).toThrow(/do not chain/);
    expect(() => verifyChain([chain[1]!, chain[2]!], anchors, k.spki, now)).toThrow(/got a CA/);
    expect(() => verifyChain(chain, anchors, k.spki, new Date(Date.now() + 20 * 365 * 86400_000))).toThrow(
      /validity/,
    );
    expect(() => verifyChain([Buffer.from("junk"), chain[1]!, chain[2]!], anchors, k.spki, now)).toThrow(
      /parse/,
    );
  });

  it("verifyChain enforces the issuers' pathLen and keyCertSign (chains made by OpenSSL)", () => {
    const f = (n: string) => join(dir.path, n);
    const ok = (args: string[]) => {
      const r = openssl(args);
      expect(r.status, r.out).toBe(0);
    };
    const ca = (name: string, ext: string, issuer?: string) => {
      ok(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f(`${name}.key`)]);
      writeFileSync(f(`${name}.ext`), `[v3]\n${ext}\n`);
      if (!issuer) {
        ok([
          "req",
          "-x509",
          "-new",
          "-key",
          f(`${name}.key`),
          "-subj",
          `/CN=${name}`,
          "-days",
          "30",
          "-addext",
          ext.split("\n")[0]!,
          "-addext",
          ext.split("\n")[1]!,
          "-out",
          f(`${name}.pem`),
        ]);
        return;
      }
      ok(["req", "-new", "-key", f(`${name}.key`), "-subj", `/CN=${name}`, "-out", f(`${name}.csr`)]);
      ok([
        "x509",
        "-req",
        "-in",
        f(`${name}.csr`),
        "-CA",
        f(`${issuer}.pem`),
        "-CAkey",
        f(`${issuer}.key`),
        "-set_serial",
        "7",
        "-days",
        "20",
        "-extfile",
        f(`${name}.ext`),
        "-extensions",
        "v3",
        "-out",
        f(`${name}.pem`),
      ]);
    };
    const der = (name: string) => new X509Certificate(require("node:fs").readFileSync(f(`${name}.pem`))).raw;
    const spkiOf = (name: string) =>
      createPublicKey(require("node:fs").readFileSync(f(`${name}.key`))).export({
        type: "spki",
        format: "der",
      });
    const now = new Date(Date.now() + 60_000); // the certificates below start "now", to the second

    ca("r0", "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign");
    ca("i1", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign", "r0");
    ca("leaf1", "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature", "i1");
    const anchors0 = [sha256(der("r0"))];
    expect(() => verifyChain([der("leaf1"), der("i1"), der("r0")], anchors0, spkiOf("leaf1"), now)).toThrow(
      "chain[2].pathLen: got 1 CA(s) below a CA with pathLen 0, want at most 0",
    );
    expect(
      openssl(["verify", "-CAfile", f("r0.pem"), "-untrusted", f("i1.pem"), f("leaf1.pem")]).out,
    ).toMatch(/path length/i);

    ca("r1", "basicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign");
    ca("i2", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature", "r1");
    ca("leaf2", "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature", "i2");
    const anchors1 = [sha256(der("r1"))];
    expect(() => verifyChain([der("leaf2"), der("i2"), der("r1")], anchors1, spkiOf("leaf2"), now)).toThrow(
      "chain[1].keyUsage: got a CA without keyCertSign, want keyCertSign",
    );

    ca("i3", "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign", "r1");
    ca("leaf3", "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature", "i3");
    expect(() =>
      verifyChain([der("leaf3"), der("i3"), der("r1")], anchors1, spkiOf("leaf3"), now),
    ).not.toThrow();
  });
});
