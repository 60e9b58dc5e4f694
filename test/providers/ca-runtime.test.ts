/** The CA provider's CRUD logic, without the engine: diff semantics, CRL re-signing, key custody. */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import type { KeyRef } from "../../core/custody";
import { crlEntriesOf, crlFilesOf } from "../../core/enroll/crl";
import { check, create, crlDue, diff, read, UNKNOWN, update } from "../../providers/runtime/ca";
import { tmpdir } from "../helpers/openssl";

// the embedded key store, in a folder of this test, sealed with a passphrase of this test
process.env.FLEETGUARD_KEK = `test-kek-${crypto.randomBytes(8).toString("hex")}`;
const STORE = path.join(tmpdir(), "keys");

const inputs = {
  custody: { kind: "embedded" as const, store: STORE },
  name: "root",
  role: "root" as const,
  algorithm: "ecdsa-p256" as const,
  subject: { commonName: "Root" },
  validityDays: 365,
  crlIntervalHours: 24,
};

describe("CA provider runtime", () => {
  const { outs } = create(inputs);

  it("reports no change for the same declaration, update for a description, replace for a subject", () => {
    expect(diff("id", outs, inputs)).toMatchObject({ changes: false, replaces: [] });
    expect(diff("id", outs, { ...inputs, description: "d" })).toMatchObject({ changes: true, replaces: [] });
    expect(diff("id", outs, { ...inputs, subject: { commonName: "Other" } }).replaces).toEqual(["subject"]);
    expect(diff("id", outs, { ...inputs, algorithm: "ecdsa-p384" }).replaces).toEqual(["algorithm"]);
  });

  it("keeps a child when its issuer is only updated (unknown cert, same declaration digest)", () => {
    const parent = create({ ...inputs, pathLen: 1 }).outs;
    const issuer = {
      name: "root",
      certificatePem: parent.certificatePem,
      chainPem: parent.chainPem,
      keyRef: parent.keyRef,
    };
    const child = {
      ...inputs,
      name: "iss",
      role: "issuing" as const,
      validityDays: 100,
      issuer,
      issuerDeclaration: "d1",
    };
    const c = create(child).outs;
    const unknownIssuer = { ...issuer, certificatePem: UNKNOWN };
    expect(diff("id", c, { ...child, issuer: unknownIssuer }).replaces).toEqual([]);
    expect(diff("id", c, { ...child, issuer: unknownIssuer, issuerDeclaration: "d2" }).replaces).toEqual([
      "issuer",
    ]);
    const other = create({ ...inputs, pathLen: 1 }).outs;
    expect(
      diff("id", c, { ...child, issuer: { ...issuer, certificatePem: other.certificatePem } }).replaces,
    ).toEqual(["issuer"]);
  });

  it("a subordinate declared revoked goes on its issuer's CRL once, keeps its time, and is never reinstated", () => {
    const crlDir = tmpdir("fg-ca-revoke-");
    const parent = create({ ...inputs, pathLen: 1, crlDir }).outs;
    const issuer = {
      name: "root",
      certificatePem: parent.certificatePem,
      chainPem: parent.chainPem,
      keyRef: parent.keyRef,
    };
    const child = { ...inputs, name: "iss", role: "issuing" as const, validityDays: 100, issuer, crlDir };
    const c = create(child).outs as Record<string, unknown>;
    const serial = String(c.serialNumber).replace(/^0+/, "");
    const listed = () =>
      crlEntriesOf(fs.readFileSync(crlFilesOf(crlDir, String(parent.fingerprintSha256)).der)).filter(
        (e) => e.serial.replace(/^0+/, "") === serial,
      );
    expect(listed()).toHaveLength(0);
    const revoked = { ...child, revocation: { reason: "cACompromise" as const } };
    expect(check(c, revoked).failures).toEqual([]);
    expect(diff("id", c, revoked)).toMatchObject({ changes: true, replaces: [] });
    const u = update("id", c, revoked).outs as Record<string, unknown>;
    expect(listed()).toEqual([expect.objectContaining({ reason: "cACompromise" })]);
    const at = (u.revocation as { at: string }).at;
    expect(diff("id", u, revoked).changes).toBe(false);
    // the issuer re-signs its own CRL: the subordinate's entry stays on it, with its time
    update("id", { ...parent, crlNextUpdate: new Date(0).toISOString() }, { ...inputs, pathLen: 1, crlDir });
    expect(listed()).toEqual([expect.objectContaining({ reason: "cACompromise", revokedAt: at })]);
    expect(
      check(u, child)
        .failures.map((f) => f.reason)
        .join(),
    ).toMatch(/revoked: got none for CA 'iss', which is revoked, want it kept/);
    expect(check({}, { ...inputs, revocation: { reason: "keyCompromise" } }).failures[0]?.reason).toMatch(
      /revoked: got a revocation of root 'root', want it only on a subordinate CA/,
    );
    expect(check({}, { ...revoked, revocation: { reason: "lost" as never } }).failures[0]?.reason).toMatch(
      /revoked.reason: got "lost", want an RFC 5280 reason/,
    );
  });

  it("returns check failures for bad input instead of throwing", () => {
    const r = check({}, { ...inputs, validityDays: -1, algorithm: "nope" as never });
    expect(r.failures.map((f) => f.property)).toEqual(["algorithm", "validityDays"]);
    expect(r.failures[0]!.reason).toMatch(/^algorithm: got "nope", want one of/);
  });

  it("re-signs the CRL with a higher number once half its interval has passed, keeping the key", () => {
    expect(crlDue(outs)).toBe(false);
    const later = new Date(Date.now() + 13 * 3600_000);
    expect(crlDue(outs, later)).toBe(true);
    const stale = { ...outs, crlNextUpdate: new Date(Date.now() + 3600_000).toISOString() };
    expect(diff("id", stale, inputs)).toMatchObject({ changes: true, replaces: [] });
    const u = update("id", stale, inputs).outs as typeof outs;
    expect(u.crlNumber).toBe(outs.crlNumber + 1);
    expect(u.keyRef).toEqual(outs.keyRef);
    expect(u.certificatePem).toBe(outs.certificatePem);
    expect(Date.parse(u.crlNextUpdate)).toBeGreaterThan(Date.parse(stale.crlNextUpdate));
  });

  it("refresh returns the state unchanged and refuses a tampered certificate", () => {
    expect(read("id", outs).props).toBe(outs);
    expect(() => read("id", { ...outs, fingerprintSha256: "00" })).toThrow(
      /does not match fingerprintSha256/,
    );
  });
});

describe("CA key custody in the provider (issue 9, finding 1)", () => {
  it("keeps the key out of the outputs: a reference and the public key, the key sealed 0600 in a 0700 store", () => {
    const { outs } = create(inputs);
    const text = JSON.stringify(outs);
    expect(text).not.toMatch(/PRIVATE KEY/);
    expect(outs.keyPem).toBeNull();
    const ref = outs.keyRef as KeyRef;
    expect(ref).toMatchObject({ custody: "embedded", location: STORE, algorithm: "ecdsa-p256" });
    const cert = new crypto.X509Certificate(outs.certificatePem);
    const spki = cert.publicKey.export({ type: "spki", format: "der" });
    expect(ref.publicKeySha256).toBe(crypto.createHash("sha256").update(spki).digest("hex"));
    const file = path.join(STORE, `${ref.id}.key.json`);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(STORE).mode & 0o777).toBe(0o700);
    // the sealed file holds no key in the clear
    const raw = fs.readFileSync(file, "utf8");
    expect(raw).not.toMatch(/PRIVATE KEY/);
    expect(() =>
      crypto.createPrivateKey({
        key: Buffer.from(JSON.parse(raw).sealed.ct, "base64"),
        format: "der",
        type: "pkcs8",
      }),
    ).toThrow();
  });

  it("signs children and CRLs with the key opened from the store by reference", () => {
    const root = create({ ...inputs, pathLen: 1 }).outs;
    const child = create({
      ...inputs,
      name: "iss",
      role: "issuing" as const,
      validityDays: 100,
      issuer: {
        name: "root",
        certificatePem: root.certificatePem,
        chainPem: root.chainPem,
        keyRef: root.keyRef,
      },
    }).outs;
    const c = new crypto.X509Certificate(child.certificatePem);
    expect(c.verify(new crypto.X509Certificate(root.certificatePem).publicKey)).toBe(true);
    expect(child.keyRef.id).not.toBe(root.keyRef.id);
  });

  it("gives the key as a Pulumi secret only when that custody is chosen", () => {
    const { outs } = create({ ...inputs, custody: { kind: "pulumi-secret" } });
    expect(outs.keyPem).toMatch(/BEGIN PRIVATE KEY/);
    expect(outs.keyRef).toMatchObject({ custody: "pulumi-secret", location: "", id: "" });
  });

  it("moves a key from the Pulumi secret into the store in place (same certificate), and replaces on any other custody change", () => {
    const secret = create({ ...inputs, custody: { kind: "pulumi-secret" } }).outs;
    // a state from before key custody has keyPem and no keyRef
    const legacy = { ...secret, keyRef: undefined, declaredCustody: undefined } as Record<string, unknown>;
    const d = diff("id", legacy, inputs);
    expect(d).toMatchObject({ changes: true, replaces: [] });
    expect(d.stables).not.toContain("keyRef");
    const moved = update("id", legacy, inputs).outs as typeof secret;
    expect(moved.certificatePem).toBe(secret.certificatePem);
    expect(moved.keyPem).toBeNull();
    expect(JSON.stringify(moved)).not.toMatch(/PRIVATE KEY/);
    expect(moved.keyRef).toMatchObject({ custody: "embedded", location: STORE });
    expect(diff("id", moved, inputs)).toMatchObject({ changes: false });
    expect(read("id", moved).props).toBe(moved);
    // another key store takes the same key in place; an HSM means a new key, so the CA is replaced
    const store2 = `${STORE}-2`;
    const other = { ...inputs, custody: { kind: "embedded" as const, store: store2 } };
    expect(diff("id", moved, other)).toMatchObject({ changes: true, replaces: [] });
    const again = update("id", moved, other).outs as typeof secret;
    expect(again.certificatePem).toBe(secret.certificatePem);
    expect(again.keyRef).toMatchObject({ custody: "embedded", location: store2 });
    expect(diff("id", again, other)).toMatchObject({ changes: false });
    expect(
      diff("id", moved, { ...inputs, custody: { kind: "pkcs11", uri: "pkcs11:token=t?module-path=/x.so" } })
        .replaces,
    ).toEqual(["custody"]);
  });

  it("refuses a key store sealed with another passphrase, naming where the passphrase came from but never its value", () => {
    const { outs } = create(inputs);
    const good = process.env.FLEETGUARD_KEK!;
    const other = "another-passphrase-xyz";
    process.env.FLEETGUARD_KEK = other;
    try {
      const store2 = path.join(tmpdir(), "keys"); // a fresh process cache key: a new store
      fs.cpSync(STORE, store2, { recursive: true });
      const ref = { ...(outs.keyRef as KeyRef), location: store2 };
      let msg = "";
      try {
        read("id", { ...outs, keyRef: ref });
      } catch (e) {
        msg = (e as Error).message;
      }
      expect(msg).toMatch(/sealed with another passphrase than FLEETGUARD_KEK holds/);
      expect(msg).not.toContain(other);
      expect(msg).not.toContain(good);
    } finally {
      process.env.FLEETGUARD_KEK = good;
    }
  });

  it("refuses a key file whose key was swapped for another (INTEGRITY), and a custody that is not declared right (check failure)", () => {
    const a = create(inputs).outs;
    const b = create(inputs).outs;
    const store2 = path.join(tmpdir(), "keys");
    fs.cpSync(STORE, store2, { recursive: true });
    // the attacker puts b's sealed key under a's id
    fs.copyFileSync(
      path.join(store2, `${b.keyRef.id}.key.json`),
      path.join(store2, `${a.keyRef.id}.key.json`),
    );
    expect(() => read("id", { ...a, keyRef: { ...a.keyRef, location: store2 } })).toThrow(
      /does not hold key|does not match|integrity/,
    );
    const r = check({}, { ...inputs, custody: { kind: "vault" } as never });
    expect(r.failures).toEqual([
      {
        property: "custody",
        reason: expect.stringMatching(
          /^custody.kind: got "vault", want one of embedded, pkcs11, pulumi-secret/,
        ),
      },
    ]);
    const pin = check({}, { ...inputs, custody: { kind: "pkcs11", uri: "pkcs11:token=t;pin-value=1234" } });
    expect(pin.failures[0]!.reason).toMatch(/pin-value/);
    expect(pin.failures[0]!.reason).not.toContain("1234");
  });
});

describe("a CA kept by a rollover (retained) and a root's cross certificate", () => {
  const old = create(inputs).outs;
  it("a retained CA is never replaced, whatever its issuer or fields now say; its CRL still follows", () => {
    const parent = create({ ...inputs, name: "p", pathLen: 1 }).outs;
    const other = create({ ...inputs, name: "p", pathLen: 1 }).outs;
    const issuer = (o: typeof parent) => ({
      name: "p",
      certificatePem: o.certificatePem,
      chainPem: o.chainPem,
      keyRef: o.keyRef,
    });
    const child = {
      ...inputs,
      name: "iss",
      role: "issuing" as const,
      validityDays: 100,
      issuer: issuer(parent),
    };
    const c = create(child).outs;
    const moved = { ...child, issuer: issuer(other), subject: { commonName: "Other" } };
    expect(diff("id", c, moved).replaces).toEqual(["subject", "issuer"]);
    expect(diff("id", c, { ...moved, retained: true })).toMatchObject({ replaces: [] });
    expect(diff("id", c, { ...child, retained: true })).toMatchObject({ changes: false, replaces: [] });
    expect(diff("id", c, { ...child, retained: true, description: "kept" }).changes).toBe(true);
  });
  it("refuses to create a retained CA (a generation raised by more than one, or above 1 on a new stack)", () => {
    const r = check({}, { ...inputs, retained: true, generation: 2 } as never);
    expect(r.failures).toEqual([
      {
        property: "generation",
        reason: expect.stringMatching(
          /^generation: got CA 'root' generation 2 kept as a predecessor, but it is not in this stack's state; want a generation raised by one/,
        ),
      },
    ]);
    expect(check(inputs as never, { ...inputs, retained: true } as never).failures).toEqual([]);
  });
  it("a new root with crossFrom carries the cross certificate: its key and subject, issued and signed by the old root", () => {
    const next = create({
      ...inputs,
      generation: 2,
      crossFrom: { name: "root", certificatePem: old.certificatePem, keyRef: old.keyRef },
    } as never).outs;
    const x = new crypto.X509Certificate(String(next.crossCertificatePem));
    const r1 = new crypto.X509Certificate(old.certificatePem);
    const r2 = new crypto.X509Certificate(next.certificatePem);
    expect(x.subject).toBe(r2.subject);
    expect(x.publicKey.equals(r2.publicKey)).toBe(true);
    expect(x.checkIssued(r1)).toBe(true);
    expect(x.verify(r1.publicKey)).toBe(true);
    expect(x.ca).toBe(true);
    expect(new Date(x.validTo).getTime()).toBeLessThanOrEqual(new Date(r1.validTo).getTime());
    expect(old.crossCertificatePem).toBeNull();
    expect(diff("id", next, { ...inputs, generation: 2 } as never).changes).toBe(false);
  });
});
