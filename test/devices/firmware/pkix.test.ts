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
});
