/**
 * OpenSSL as the independent verifier: one entry's JWS signature checked with `openssl dgst`
 * after converting raw r||s (RFC 7518 3.4) to a DER ECDSA-Sig-Value by hand, and the signer
 * certificate and the entry's x5c path checked with `openssl verify` against the root.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { buildManifest, createManifestSigner, MANIFEST_SIGNER_EKU } from "../../../core/manifest";
import { openssl, tmpdir, verifyChain, x509Text } from "../../helpers/openssl";
import { makeDevices, makePki } from "./fixtures";

/** ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } from r||s, written out byte by byte. */
function rawToDer(raw: Buffer): Buffer {
  const int = (b: Buffer) => {
    let i = 0;
    while (i < b.length - 1 && b[i] === 0) i++; // minimal: no leading zeros
    let v = b.subarray(i);
    if (v[0]! & 0x80) v = Buffer.concat([Buffer.from([0]), v]); // positive: pad a set top bit
    return Buffer.concat([Buffer.from([0x02, v.length]), v]);
  };
  const half = raw.length / 2;
  const body = Buffer.concat([int(raw.subarray(0, half)), int(raw.subarray(half))]);
  // at most 2 * (2 + 49) = 102 bytes for P-384: the short length form suffices
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

const pem = (b64: string) =>
  `-----BEGIN CERTIFICATE-----\n${b64.match(/.{1,64}/g)!.join("\n")}\n-----END CERTIFICATE-----\n`;

describe("OpenSSL verifies what the manifest signer produced", () => {
  const pki = makePki();
  const dir = tmpdir("manifest-");
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const w = (name: string, data: string | Buffer) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, data);
    return p;
  };

  it.each([
    ["ecdsa-p256", "-sha256"],
    ["ecdsa-p384", "-sha384"],
  ] as const)("%s: the JWS signature of one entry (openssl dgst -verify)", (algorithm, digest) => {
    const signer = createManifestSigner(pki.manifests, { algorithm });
    const [, e] = buildManifest(makeDevices(pki.devices, 2), signer);
    const certFile = w(`signer-${algorithm}.pem`, signer.signerCertificatePem);
    const pub = openssl(["x509", "-in", certFile, "-pubkey", "-noout"]);
    expect(pub.status).toBe(0);
    const pubFile = w(`signer-pub-${algorithm}.pem`, pub.out);
    const sig = Buffer.from(e!.signature, "base64url");
    expect(sig.length).toBe(algorithm === "ecdsa-p256" ? 64 : 96);
    const sigFile = w(`sig-${algorithm}.der`, rawToDer(sig));
    // JWS signing input: ASCII(BASE64URL(protected) || '.' || BASE64URL(payload))
    const dataFile = w(`input-${algorithm}.txt`, `${e!.protected}.${e!.payload}`);
    const ok = openssl(["dgst", digest, "-verify", pubFile, "-signature", sigFile, dataFile]);
    expect(ok.out).toContain("Verified OK");
    expect(ok.status).toBe(0);
    // the same signature over a changed payload fails: OpenSSL is really checking
    const badFile = w(`bad-${algorithm}.txt`, `${e!.protected}.${e!.payload}x`);
    const bad = openssl(["dgst", digest, "-verify", pubFile, "-signature", sigFile, badFile]);
    expect(bad.status).not.toBe(0);
    expect(bad.out).toContain("Verification failure");
  });

  it("the Ed25519 signature of one entry (openssl pkeyutl -verify -rawin)", () => {
    const signer = createManifestSigner(pki.manifests, { algorithm: "ed25519" });
    const [e] = buildManifest(makeDevices(pki.devices, 1), signer);
    const pub = openssl([
      "x509",
      "-in",
      w("signer-ed.pem", signer.signerCertificatePem),
      "-pubkey",
      "-noout",
    ]);
    const args = (data: string) => [
      "pkeyutl",
      "-verify",
      "-pubin",
      "-inkey",
      w("signer-ed-pub.pem", pub.out),
      "-rawin",
      "-in",
      data,
      "-sigfile",
      w("sig-ed.bin", Buffer.from(e!.signature, "base64url")),
    ];
    const ok = openssl(args(w("input-ed.txt", `${e!.protected}.${e!.payload}`)));
    expect(ok.out).toContain("Signature Verified Successfully");
    const bad = openssl(args(w("bad-ed.txt", `${e!.protected}.${e!.payload}A`)));
    expect(bad.status).not.toBe(0);
  });

  it("the signer certificate and the entry's x5c path verify against the root (openssl verify)", () => {
    const signer = createManifestSigner(pki.manifests);
    const [e] = buildManifest(makeDevices(pki.devices, 1), signer);
    const v = verifyChain(pki.root.certificatePem, pki.manifests.certificatePem, signer.signerCertificatePem);
    expect(v.out).toContain("OK");
    expect(v.ok).toBe(true);
    const text = x509Text(signer.signerCertificatePem);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    expect(text).toMatch(new RegExp(`Extended Key Usage:\\s+${MANIFEST_SIGNER_EKU.replace(/\./g, "\\.")}`));
    expect(text).toMatch(/CA:FALSE/);

    const payload = JSON.parse(Buffer.from(e!.payload, "base64url").toString());
    const x5c: string[] = payload.publicKeySet.keys[0].x5c;
    expect(x5c).toHaveLength(2);
    const leaf = verifyChain(pki.root.certificatePem, x5c.slice(1).map(pem).join(""), pem(x5c[0]!));
    expect(leaf.out).toContain("OK");
    expect(leaf.ok).toBe(true);
    // and the chain does not verify against another root
    const other = makePki("Other");
    expect(verifyChain(other.root.certificatePem, x5c.slice(1).map(pem).join(""), pem(x5c[0]!)).ok).toBe(
      false,
    );
  });
});
