// A root rollover seen from a device (devices/firmware/chain.ts): a device that trusts only the
// old root accepts a chain under the new root through the new root's cross certificate, because
// the cross certificate is self-issued (same name as the old root) and RFC 5280 6.1.4 (l) does not
// count a self-issued certificate against a pathLen. The same link with another name counts, and
// the old root's pathLen refuses it: the exemption is exactly the RFC's.
import { createPublicKey, generateKeyPairSync, type KeyObject, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { StationError } from "../../../core/station/frame";
import type { Subject } from "../../../core/station/messages";
import { CaCache, sha256, verifyChain, verifySignerChain } from "../../../devices/firmware/chain";
import { buildCertificate } from "../../../devices/firmware/pkix";

interface Key {
  privateKey: KeyObject;
  spki: Buffer;
}
const key = (): Key => {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { privateKey, spki: createPublicKey(privateKey).export({ type: "spki", format: "der" }) };
};
const name = (cn: string): Subject => [["CN", cn]];
const DAY = 86400_000;
const now = new Date();
const cert = (subject: string, k: Key, issuer: string, signer: Key, ca: boolean, pathLen?: number) =>
  buildCertificate({
    serial: randomBytes(8),
    issuer: name(issuer),
    subject: name(subject),
    notBefore: new Date(now.getTime() - DAY),
    notAfter: new Date(now.getTime() + 365 * DAY),
    spki: k.spki,
    issuerSpki: signer.spki,
    ca,
    pathLen,
    signer: signer.privateKey,
  });

// old root R1 (pathLen 2: an intermediate and an issuing CA below), new root R2 with the same name
const r1k = key();
const r2k = key();
const r1 = cert("Root", r1k, "Root", r1k, true, 2);
const r2 = cert("Root", r2k, "Root", r2k, true, 2);
const cross = cert("Root", r2k, "Root", r1k, true, 2); // R2's key, issued by R1: self-issued
const renamed = cert("Root G2", r2k, "Root", r1k, true, 2); // the same link under another name
const ik = key();
const lk = key();
const inter = cert("Inter", ik, "Root", r2k, true, 1);
const line = cert("Line", lk, "Inter", ik, true, 0);
const dev = key();
const leaf = cert("dev", dev, "Line", lk, false);

const outcome = (f: () => unknown): string => {
  try {
    f();
    return "ok";
  } catch (e) {
    if (e instanceof StationError) return e.detail;
    return (e as Error).message;
  }
};

describe("a device's chain check after a root rollover", () => {
  it("trusting only the old root, it accepts the new chain through the self-issued cross certificate", () => {
    expect(
      outcome(() => verifyChain([leaf, line, inter, cross, r1], [sha256(r1)], dev.spki, now, new CaCache())),
    ).toBe("ok");
    // and the new chain directly once the new root is an anchor
    expect(
      outcome(() =>
        verifyChain([leaf, line, inter, r2], [sha256(r1), sha256(r2)], dev.spki, now, new CaCache()),
      ),
    ).toBe("ok");
  });
  it("counts a cross link that is not self-issued: the old root's pathLen 2 refuses three CAs below it", () => {
    const inter2 = cert("Inter", ik, "Root G2", r2k, true, 1);
    const line2 = cert("Line", lk, "Inter", ik, true, 0);
    const leaf2 = cert("dev", dev, "Line", lk, false);
    expect(
      outcome(() =>
        verifyChain([leaf2, line2, inter2, renamed, r1], [sha256(r1)], dev.spki, now, new CaCache()),
      ),
    ).toBe("chain[4].pathLen: got 3 CA(s) below a CA with pathLen 2, want at most 2");
  });
  it("without the cross certificate the new chain does not reach the old root", () => {
    expect(
      outcome(() => verifyChain([leaf, line, inter, r2], [sha256(r1)], dev.spki, now, new CaCache())),
    ).toBe("chain root: got an untrusted root, want a fused trust anchor");
  });
  it("a command signed under the new tree passes through the cross certificate, and is refused without it", () => {
    const refuse = (m: string) => new Error(m);
    expect(
      outcome(() => verifySignerChain([line, inter, cross, r1], [sha256(r1)], now, new CaCache(), refuse)),
    ).toBe("ok");
    expect(
      outcome(() => verifySignerChain([line, inter, r2], [sha256(r1)], now, new CaCache(), refuse)),
    ).toMatch(/^auth\.signer: got a chain to a root this device does not trust/);
  });
});
