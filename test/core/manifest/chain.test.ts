import * as crypto from "node:crypto";
import { describe, expect, it } from "vitest";
import { readCert, readLeaf, TrustAnchors } from "../../../core/manifest/chain";
import { randomSerial } from "../../../core/x509/cert";
import { spkiDer } from "../../../core/x509/keys";
import { derOf, makePki, templateFor } from "./fixtures";

// The per-device path check reads leaves with core's DER walker (readLeaf + leafDerProblem);
// the signer goes through crypto.X509Certificate (leafProblem). Both must answer alike.
describe("leaf checks: DER walker agrees with X509Certificate", () => {
  const pki = makePki();
  const other = makePki("Other");
  const devCa = readCert(derOf(pki.devices.certificatePem), "devices");
  const newLeaf = (ca = pki.devices, days = 365) =>
    templateFor(ca, { days }).issue(
      randomSerial(),
      "dev",
      spkiDer(crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey),
    );

  // issuer null: look for the issuer among the anchors
  const both = (anchors: TrustAnchors, der: Buffer, issuer: typeof devCa | null = devCa) => {
    const fast = anchors.leafDerProblem(readLeaf(der, "leaf"), issuer ?? undefined, "leaf");
    const slow = anchors.leafProblem(new crypto.X509Certificate(der), issuer ?? undefined, "leaf");
    expect(fast).toBe(slow);
    return fast;
  };
  const now = new TrustAnchors([pki.root.certificatePem], new Date());

  it("a good leaf", () => {
    expect(both(now, newLeaf())).toBeUndefined();
  });
  it("a leaf whose signature was altered", () => {
    const der = Buffer.from(newLeaf());
    der[der.length - 5]! ^= 0x01; // inside s of the ECDSA-Sig-Value: structure intact
    expect(both(now, der)).toMatch(/not issued by the next certificate/);
  });
  it("a leaf of another CA", () => {
    expect(both(now, newLeaf(other.devices))).toMatch(/not issued by the next certificate/);
  });
  it("a CA certificate as a leaf", () => {
    expect(both(now, derOf(pki.manifests.certificatePem), null)).toMatch(/is a CA certificate/);
  });
  it("expired and not yet valid", () => {
    const later = new TrustAnchors([pki.root.certificatePem], new Date(Date.now() + 400 * 86_400_000));
    expect(both(later, newLeaf())).toMatch(/expired/);
    const earlier = new TrustAnchors([pki.root.certificatePem], new Date(Date.now() - 86_400_000));
    expect(both(earlier, newLeaf())).toMatch(/not valid before/);
  });
  it("a leaf directly under an anchor, and under none", () => {
    const der = newLeaf(pki.root);
    expect(both(now, der, null)).toBeUndefined();
    expect(both(new TrustAnchors([other.root.certificatePem], new Date()), der, null)).toMatch(
      /not issued by any trust anchor/,
    );
  });
  it("GeneralizedTime validity (after 2049) is read like OpenSSL reads it", () => {
    const der = newLeaf(pki.root, 30_000);
    const leaf = readLeaf(der, "leaf");
    expect(leaf.notAfter.getUTCFullYear()).toBeGreaterThan(2049);
    expect(leaf.notAfter.toISOString()).toBe(new Date(new crypto.X509Certificate(der).validTo).toISOString());
    expect(leaf.notBefore.toISOString()).toBe(
      new Date(new crypto.X509Certificate(der).validFrom).toISOString(),
    );
    expect(both(now, der, null)).toBeUndefined();
  });
});
