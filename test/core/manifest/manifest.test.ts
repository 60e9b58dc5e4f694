import * as crypto from "node:crypto";
import { PassThrough, Writable } from "node:stream";
import * as util from "node:util";
import { describe, expect, it } from "vitest";
import { canonicalJson } from "../../../core/canonical";
import { FleetError } from "../../../core/errors";
import {
  buildManifest,
  createManifestSigner,
  type FailureReason,
  LEGACY_MANIFEST_SIGNER_EKU,
  MANIFEST_SIGNER_EKU,
  ManifestDigest,
  type ManifestEntry,
  manifestDigest,
  readManifest,
  verifyManifest,
  verifyManifestStream,
  writeManifest,
} from "../../../core/manifest";
import { EKU } from "../../../core/x509/ext";
import { derOf, handSigner, makeDevices, makePki, payloadFor } from "./fixtures";

const pki = makePki();
const other = makePki("Other");
const signer = createManifestSigner(pki.manifests);
const devices = makeDevices(pki.devices, 6);
const entries = buildManifest(devices, signer);
const opts = { trustAnchorsPem: [pki.root.certificatePem], signerCertificatePem: signer.signerChainPem };

const decode = (e: ManifestEntry) => JSON.parse(Buffer.from(e.payload, "base64url").toString("utf8"));
const encode = (p: unknown) => Buffer.from(JSON.stringify(p)).toString("base64url");
const reasons = (r: ReturnType<typeof verifyManifest>) => r.failures.map((f) => f.reason);

function expectInvalid(fn: () => unknown, message: string | RegExp) {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(FleetError);
    expect((e as FleetError).code).toBe("INVALID_INPUT");
    expect((e as Error).message).toMatch(message);
    expect((e as Error).message).not.toMatch(/BEGIN [A-Z ]*PRIVATE KEY|[A-Za-z0-9+/]{64}/);
    return;
  }
  expect.unreachable("no error thrown");
}

describe("signed manifest round trip", () => {
  it("verifies every entry and returns the decoded payloads", () => {
    const r = verifyManifest(JSON.stringify(entries), opts);
    expect(r.failures).toEqual([]);
    expect(r.ok.map((e) => e.uniqueId)).toEqual(devices.map((d) => d.deviceId));
    expect(r.ok[2]!.index).toBe(2);
    expect(r.ok[2]!.payload.batch).toBe("LOT-2026-11");
  });

  it("writes what an independent producer would write, entry shape after RFC 7515 7.2.2", () => {
    const e = entries[3]!;
    expect(Object.keys(e).sort()).toEqual(["header", "payload", "protected", "signature"]);
    expect(e.header).toEqual({ uniqueId: devices[3]!.deviceId });
    // the payload equals one computed here with Node's own JWK export and hashing
    expect(decode(e)).toEqual(payloadFor(devices[3]!));
    const prot = JSON.parse(Buffer.from(e.protected, "base64url").toString());
    const signerDer = derOf(signer.signerCertificatePem);
    const signerJwk = new crypto.X509Certificate(signerDer).publicKey.export({ format: "jwk" }) as {
      x: string;
      y: string;
    };
    expect(prot).toEqual({
      alg: "ES256",
      kid: crypto
        .createHash("sha256")
        .update(`{"crv":"P-256","kty":"EC","x":"${signerJwk.x}","y":"${signerJwk.y}"}`)
        .digest("base64url"),
      "x5t#S256": crypto.createHash("sha256").update(signerDer).digest("base64url"),
    });
    // ES256 signatures are raw r||s (RFC 7518 3.4), 64 bytes
    expect(Buffer.from(e.signature, "base64url").length).toBe(64);
  });

  it("accepts an entry built and signed independently (the verifier reads the format, not our bytes)", () => {
    const hand = handSigner(pki.manifests);
    const e = hand.sign(payloadFor(devices[0]!), devices[0]!.deviceId);
    const r = verifyManifest([e], {
      ...opts,
      signerCertificatePem: hand.certificatePem + pki.manifests.certificatePem,
    });
    expect(r.failures).toEqual([]);
    expect(r.ok).toHaveLength(1);
  });

  it.each(["ecdsa-p384", "ed25519"] as const)("signs with %s (ES384 / EdDSA)", (algorithm) => {
    const s = createManifestSigner(pki.manifests, { algorithm });
    const es = buildManifest(devices.slice(0, 2), s);
    const alg = JSON.parse(Buffer.from(es[0]!.protected, "base64url").toString()).alg;
    expect(alg).toBe(algorithm === "ed25519" ? "EdDSA" : "ES384");
    expect(s.alg).toBe(alg);
    const r = verifyManifest(es, { ...opts, signerCertificatePem: s.signerChainPem });
    expect(r.failures).toEqual([]);
    expect(r.ok).toHaveLength(2);
  });

  it("makes a short-lived end-entity signer certificate with the manifest EKU", () => {
    const x = new crypto.X509Certificate(derOf(signer.signerCertificatePem));
    expect(x.ca).toBe(false);
    expect(x.keyUsage).toEqual(["1.2.840.113556.1.8000.2554.4230.15552.42020.18010.40771.16663120.14401440"]);
    const days = (new Date(x.validTo).getTime() - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(29.9);
    expect(days).toBeLessThanOrEqual(30);
    expect(x.checkIssued(new crypto.X509Certificate(derOf(pki.manifests.certificatePem)))).toBe(true);
    expect(signer.notAfter.toISOString()).toBe(new Date(x.validTo).toISOString());
  });

  it("never exposes or serializes the signer's private key", () => {
    expect(Object.keys(signer).sort()).toEqual(
      ["alg", "kid", "notAfter", "sign", "signerCertificatePem", "signerChainPem", "toJSON"].sort(),
    );
    const shown = JSON.stringify(signer) + util.inspect(signer, { depth: 10, showHidden: true });
    expect(shown).not.toMatch(/PRIVATE KEY|KeyObject|"d"/);
    for (const v of Object.values(signer)) expect(v).not.toBeInstanceOf(crypto.KeyObject);
  });

  it("refuses to sign once its certificate has expired", () => {
    let now = new Date();
    const s = createManifestSigner(
      pki.manifests,
      { validityDays: 1 },
      { now: () => now, rng: crypto.randomBytes },
    );
    s.sign(devices[0]!);
    now = new Date(Date.now() + 2 * 86_400_000);
    expectInvalid(() => s.sign(devices[0]!), /^signer: got a signer certificate that expired/);
  });
});

describe("streaming", () => {
  it("writes valid JSON one entry per line, reads it back and verifies it with the same digest", async () => {
    const chunks: string[] = [];
    const out = new Writable({
      highWaterMark: 1024, // small: exercise the drain path
      write(c, _enc, cb) {
        chunks.push(c.toString());
        setImmediate(cb);
      },
    });
    const d = new ManifestDigest();
    async function* gen() {
      for (const x of devices) yield x;
    }
    const { count } = await writeManifest(gen(), signer, out, d);
    const text = chunks.join("");
    expect(count).toBe(devices.length);
    expect(text.split("\n")).toHaveLength(devices.length + 3); // "[", entries, "]", ""
    const parsed = JSON.parse(text) as ManifestEntry[];
    expect(verifyManifest(parsed, opts).ok).toHaveLength(devices.length);
    const digest = d.digest();
    expect(digest).toBe(manifestDigest(parsed));

    const src = new PassThrough();
    // split at awkward places: chunk boundaries inside entries
    for (let i = 0; i < text.length; i += 777) src.write(text.slice(i, i + 777));
    src.end();
    const r = await verifyManifestStream(readManifest(src), opts);
    expect(r).toEqual({ count: devices.length, okCount: devices.length, failures: [], digest });
  });

  it("writes an empty manifest as []", async () => {
    let text = "";
    const out = new Writable({
      write(c, _e, cb) {
        text += c;
        cb();
      },
    });
    expect((await writeManifest([], signer, out)).count).toBe(0);
    expect(JSON.parse(text)).toEqual([]);
  });

  it("refuses a stream that is not in writeManifest's line format, naming the entry", async () => {
    const read = async (text: string) => {
      const out: unknown[] = [];
      for await (const e of readManifest([text])) out.push(e);
      return out;
    };
    await expect(read(JSON.stringify(entries))).rejects.toThrow(/^manifest: got a first line/);
    await expect(read(`[\n${JSON.stringify(entries[0])},\n{oops\n]\n`)).rejects.toThrow(
      /^manifest\[1\]: got a line that is not one JSON entry/,
    );
    await expect(read(`[\n${JSON.stringify(entries[0])}\n`)).rejects.toThrow(/without its closing/);
  });
});

describe("manifestDigest", () => {
  it("is SHA-256 over the canonical JSON, whatever the key order or formatting", () => {
    const d = manifestDigest(entries);
    expect(d).toBe(crypto.createHash("sha256").update(canonicalJson(entries)).digest("hex"));
    const reordered = JSON.parse(
      JSON.stringify(
        entries.map((e) => ({
          signature: e.signature,
          header: e.header,
          protected: e.protected,
          payload: e.payload,
        })),
      ),
    );
    expect(JSON.stringify(reordered)).not.toBe(JSON.stringify(entries));
    expect(manifestDigest(reordered)).toBe(d);
    expect(manifestDigest(entries.slice(1))).not.toBe(d);
    expect(manifestDigest([...entries].reverse())).not.toBe(d);
  });
});

describe("tampering is refused with the right reason", () => {
  const one = (e: unknown, o = opts) => verifyManifest([entries[0], e, entries[2]], o);
  const only = (r: ReturnType<typeof verifyManifest>, reason: FailureReason, detail?: RegExp) => {
    expect(reasons(r)).toEqual([reason]);
    expect(r.failures[0]!.index).toBe(1);
    expect(r.ok.map((x) => x.index)).toEqual([0, 2]);
    if (detail) expect(r.failures[0]!.detail).toMatch(detail);
  };

  it("a payload byte changed: signature", () => {
    const e = entries[1]!;
    const p = decode(e);
    p.batch = "LOT-2026-12";
    only(one({ ...e, payload: encode(p) }), "signature");
    // and one base64url character flipped, payload still decodes
    const i = 40;
    const flipped = e.payload.slice(0, i) + (e.payload[i] === "A" ? "B" : "A") + e.payload.slice(i + 1);
    only(one({ ...e, payload: flipped }), "signature");
  });

  it("signature changed: signature", () => {
    const e = entries[1]!;
    const sig = Buffer.from(e.signature, "base64url");
    sig[10]! ^= 1;
    only(one({ ...e, signature: sig.toString("base64url") }), "signature");
    // a DER signature where raw r||s belongs (a common interop bug) is refused too
    const der = crypto.sign(
      "sha256",
      Buffer.from("x"),
      crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey,
    );
    only(one({ ...e, signature: der.toString("base64url") }), "signature");
  });

  it("header uniqueId swapped: unique-id", () => {
    const swapped = { ...entries[1]!, header: { uniqueId: entries[2]!.header.uniqueId } };
    only(one(swapped), "unique-id", /is not the payload's/);
  });

  it("JWK replaced (signed by a signer that was fed bad input): jwk", () => {
    const hand = handSigner(pki.manifests);
    const o = { ...opts, signerCertificatePem: hand.certificatePem + pki.manifests.certificatePem };
    // neighbours from the same hand signer, so only the middle entry is wrong
    const ok = (i: number) => hand.sign(payloadFor(devices[i]!), devices[i]!.deviceId);
    const one = (e: unknown, o2: typeof o) => verifyManifest([ok(0), e, ok(2)], o2);
    const p = payloadFor(devices[1]!);
    const foreign = payloadFor(devices[4]!).publicKeySet.keys[0]!;
    // another device's key and kid, this device's certificate chain
    p.publicKeySet.keys[0] = { ...p.publicKeySet.keys[0]!, x: foreign.x, y: foreign.y, kid: foreign.kid };
    only(one(hand.sign(p, devices[1]!.deviceId), o), "jwk", /not the public key of x5c\[0\]/);
    // the key kept, its kid not its thumbprint
    const q = payloadFor(devices[1]!);
    q.publicKeySet.keys[0]!.kid = foreign.kid;
    only(one(hand.sign(q, devices[1]!.deviceId), o), "jwk", /thumbprint/);
    // x5t#S256 of another certificate
    const t = payloadFor(devices[1]!);
    t.publicKeySet.keys[0]!["x5t#S256"] = foreign["x5t#S256"];
    only(one(hand.sign(t, devices[1]!.deviceId), o), "thumbprint");
  });

  it("device chain from another CA: chain", () => {
    const stranger = makeDevices(other.devices, 1, "stranger")[0]!;
    // the signer signs what it is given; the verifier checks the path to the anchors
    only(one(signer.sign(stranger)), "chain", /x5c\[1\] .*Other Devices.* not issued by any trust anchor/);
    // the stranger's leaf presented with our devices CA as its issuer
    const spliced = { ...stranger, chain: [stranger.chain[0]!, derOf(pki.devices.certificatePem)] };
    only(one(signer.sign(spliced)), "chain", /x5c\[0\] .* not issued by the next certificate/);
  });

  it("expired device certificate: chain", () => {
    const r = verifyManifest(entries, { ...opts, now: new Date(Date.now() + 400 * 86_400_000) });
    // the signer expired first (30 days), which is reported for every entry
    expect(new Set(reasons(r))).toEqual(new Set(["signer-expired"]));
    const longSigner = createManifestSigner(pki.manifests, { validityDays: 397 });
    const es = buildManifest(devices.slice(0, 2), longSigner);
    const r2 = verifyManifest(es, {
      ...opts,
      signerCertificatePem: longSigner.signerChainPem,
      now: new Date(Date.now() + 370 * 86_400_000),
    });
    expect(reasons(r2)).toEqual(["chain", "chain"]);
    expect(r2.failures[0]!.detail).toMatch(/^x5c\[0\] .* expired/);
  });

  it("expired signer: signer-expired, for every entry", () => {
    const r = verifyManifest(entries, { ...opts, now: new Date(Date.now() + 31 * 86_400_000) });
    expect(r.ok).toEqual([]);
    expect(reasons(r)).toEqual(entries.map(() => "signer-expired"));
    expect(r.failures[0]!.detail).toMatch(/^signer certificate .* expired/);
  });

  it("signer not issued by the anchor: signer-untrusted", () => {
    const rogue = createManifestSigner(other.manifests);
    const es = buildManifest(devices.slice(0, 3), rogue);
    const r = verifyManifest(es, { ...opts, signerCertificatePem: rogue.signerChainPem });
    expect(reasons(r)).toEqual(["signer-untrusted", "signer-untrusted", "signer-untrusted"]);
    expect(r.failures[0]!.detail).toMatch(/not issued by any trust anchor/);
    // a rogue signer that claims our manifests CA as its issuer
    const r2 = verifyManifest(es, {
      ...opts,
      signerCertificatePem: rogue.signerCertificatePem + pki.manifests.certificatePem,
    });
    expect(r2.failures[0]!.reason).toBe("signer-untrusted");
  });

  it("the manifest EKU has no arc of 2^31 or more (Go's crypto/x509 refuses the certificate otherwise)", () => {
    const arcs = MANIFEST_SIGNER_EKU.split(".").map(BigInt);
    expect(arcs.every((a) => a < 2n ** 31n)).toBe(true);
    // the same UUID as the legacy 2.25 OID: 16- and 24-bit slices of its 128 bits
    const uuid = BigInt(LEGACY_MANIFEST_SIGNER_EKU.split(".")[2]!);
    const hex = uuid.toString(16).padStart(32, "0");
    const slices = [0, 4, 8, 12, 16, 20, 26, 32];
    const guidArcs = slices.slice(0, -1).map((a, i) => Number.parseInt(hex.slice(a, slices[i + 1]), 16));
    expect(MANIFEST_SIGNER_EKU).toBe(`1.2.840.113556.1.8000.2554.${guidArcs.join(".")}`);
  });

  it("a signer certificate with the legacy 2.25 EKU (manifests exported before) still verifies", () => {
    const legacy = handSigner(pki.manifests, [LEGACY_MANIFEST_SIGNER_EKU]);
    const e = legacy.sign(payloadFor(devices[0]!), devices[0]!.deviceId);
    const r = verifyManifest([e], {
      ...opts,
      signerCertificatePem: legacy.certificatePem + pki.manifests.certificatePem,
    });
    expect(r.failures).toEqual([]);
    expect(r.ok).toHaveLength(1);
  });

  it("a certificate from the right CA without the manifest EKU: signer-untrusted", () => {
    const codeSigner = handSigner(pki.manifests, [EKU.codeSigning]);
    const e = codeSigner.sign(payloadFor(devices[0]!), devices[0]!.deviceId);
    const r = verifyManifest([e], {
      ...opts,
      signerCertificatePem: codeSigner.certificatePem + pki.manifests.certificatePem,
    });
    expect(reasons(r)).toEqual(["signer-untrusted"]);
    expect(r.failures[0]!.detail).toMatch(/extendedKeyUsage is \[1.3.6.1.5.5.7.3.3\]/);
  });

  it("an entry of another (trusted) signer, checked against ours: signer-mismatch", () => {
    const second = createManifestSigner(pki.manifests);
    only(one(second.sign(devices[1]!)), "signer-mismatch", /kid/);
    // alg downgraded in the protected header
    const e = entries[1]!;
    const prot = JSON.parse(Buffer.from(e.protected, "base64url").toString());
    only(one({ ...e, protected: encode({ ...prot, alg: "none" }) }), "signer-mismatch", /alg none/);
  });
});

describe("structurally broken input throws INVALID_INPUT naming the field", () => {
  const at = (i: number, e: unknown) => {
    const list: unknown[] = [...entries];
    list[i] = e;
    return () => verifyManifest(list, opts);
  };
  it("not a manifest at all", () => {
    expectInvalid(() => verifyManifest("{not json", opts), "manifest: got text that is not JSON");
    expectInvalid(() => verifyManifest('{"a":1}', opts), "manifest: got object, want a JSON array");
  });
  it("bad members of one entry", () => {
    expectInvalid(at(4, "x"), /^manifest\[4\]: got "x", want a JWS object/);
    expectInvalid(
      at(2, { ...entries[2], protected: 123 }),
      /^manifest\[2\]\.protected: got 123, want base64url/,
    );
    expectInvalid(
      at(1, { ...entries[1], payload: "a+b/" }),
      /^manifest\[1\]\.payload: got text that is not unpadded base64url/,
    );
    expectInvalid(at(0, { ...entries[0], header: {} }), /^manifest\[0\]\.header: got object, want an object/);
    expectInvalid(
      at(3, { ...entries[3], protected: encode("text") }),
      /^manifest\[3\]\.protected: got a header without alg/,
    );
    expectInvalid(
      at(5, { ...entries[5], protected: Buffer.from("{no").toString("base64url") }),
      /^manifest\[5\]\.protected: got base64url of text that is not JSON/,
    );
  });
  it("bad options", () => {
    expectInvalid(
      () => verifyManifest(entries, { ...opts, trustAnchorsPem: [] }),
      /^trustAnchorsPem: got array\(0\)/,
    );
    expectInvalid(
      () => verifyManifest(entries, { ...opts, signerCertificatePem: "nope" }),
      /^signerCertificatePem: got text that is not PEM/,
    );
  });
});

describe("wrong arguments", () => {
  const d = devices[0]!;
  it("createManifestSigner", () => {
    expectInvalid(
      () => createManifestSigner(pki.manifests, { algorithm: "rsa-3072" as never }),
      /^opts.algorithm: got "rsa-3072"/,
    );
    expectInvalid(
      () => createManifestSigner(pki.manifests, { validityDays: 0 }),
      /^opts.validityDays: got 0, want an integer from 1 to 397/,
    );
    expectInvalid(
      () =>
        createManifestSigner({ certificatePem: signer.signerCertificatePem, keyPem: pki.manifests.keyPem }),
      /^issuer.certificatePem: got a certificate that is not a CA/,
    );
    expectInvalid(
      () =>
        createManifestSigner({ certificatePem: pki.manifests.certificatePem, keyPem: pki.devices.keyPem }),
      /^issuer.keyPem: got a key that does not match the certificate/,
    );
    expectInvalid(
      () => createManifestSigner({ certificatePem: pki.manifests.certificatePem, keyPem: "x" }),
      /^issuer.keyPem/,
    );
  });
  it("sign / buildManifest", () => {
    expectInvalid(
      () => signer.sign({ ...d, deviceId: "" }),
      /^device.deviceId: got "", want 1 to 256 printable/,
    );
    expectInvalid(
      () => buildManifest([d, { ...d, model: 7 as never }], signer),
      /^devices\[1\]\.model: got 7/,
    );
    expectInvalid(() => signer.sign({ ...d, issuedAt: "yesterday" }), /^device.issuedAt: got "yesterday"/);
    expectInvalid(
      () => signer.sign({ ...d, publicKeySpki: Buffer.alloc(91) }),
      /^device.publicKeySpki: got 91 bytes that are not/,
    );
    expectInvalid(
      () => signer.sign({ ...d, publicKeySpki: devices[1]!.publicKeySpki }),
      /^device.chain\[0\]: got a certificate for another public key/,
    );
    expectInvalid(() => signer.sign({ ...d, chain: [] }), /^device.chain: got array\(0\)/);
    expectInvalid(
      () => signer.sign({ ...d, chain: [...d.chain, derOf(pki.root.certificatePem)] }),
      /^device.chain\[2\]: got a self-signed certificate, want the chain up to but excluding the root/,
    );
    expectInvalid(() => buildManifest("x" as never, signer), /^devices: got "x"/);
  });
});
