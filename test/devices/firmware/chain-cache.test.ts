// The farm-wide memo of CA certificates and CA links in devices/firmware/chain.ts: a cached good
// link must never let anything else through, and a warm cache must answer exactly what a cold
// check answers, for good chains and for tampered ones.
import {
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  X509Certificate,
} from "node:crypto";
import { describe, expect, it } from "vitest";
import { StationError, Status } from "../../../core/station/frame";
import type { Subject } from "../../../core/station/messages";
import { bytesKey, CaCache, sha256, verifyChain } from "../../../devices/firmware/chain";
import { buildCertificate } from "../../../devices/firmware/pkix";

interface Key {
  privateKey: KeyObject;
  spki: Buffer;
}
function key(curve = "P-256"): Key {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: curve });
  return { privateKey, spki: createPublicKey(privateKey).export({ type: "spki", format: "der" }) };
}
const name = (cn: string): Subject => [
  ["O", "fleetguard tests"],
  ["CN", cn],
];
const DAY = 86400_000;
const now = new Date();

function cert(
  subject: string,
  k: Key,
  issuer: string,
  signer: Key,
  o: { ca: boolean; pathLen?: number; notAfter?: Date; akiOf?: Key } = { ca: true },
): Buffer {
  return buildCertificate({
    serial: randomBytes(8),
    issuer: name(issuer),
    subject: name(subject),
    notBefore: new Date(now.getTime() - DAY),
    notAfter: o.notAfter ?? new Date(now.getTime() + 365 * DAY),
    spki: k.spki,
    // a forger copies the genuine issuer's key identifier (akiOf), so only the signature differs
    issuerSpki: (o.akiOf ?? signer).spki,
    ca: o.ca,
    pathLen: o.pathLen,
    signer: signer.privateKey,
  });
}

// root (P-384) -> intermediate (P-384) -> issuing (P-256) -> leaf, as the reference program
const rootKey = key("P-384");
const interKey = key("P-384");
const issKey = key();
const root = cert("Root", rootKey, "Root", rootKey, { ca: true, pathLen: 2 });
const inter = cert("Inter", interKey, "Root", rootKey, { ca: true, pathLen: 1 });
const iss = cert("Issuing", issKey, "Inter", interKey, { ca: true, pathLen: 0 });
const anchors = [sha256(root)];
const leafFor = (k: Key, signer = issKey) => cert("dev", k, "Issuing", signer, { ca: false, akiOf: issKey });

/** The outcome of a check: "ok" or "<status> <message>". */
function outcome(chain: Buffer[], spki: Buffer, cache: CaCache): string {
  try {
    verifyChain(chain, anchors, spki, now, cache);
    return "ok";
  } catch (e) {
    if (e instanceof StationError) return `${e.status} ${e.detail}`;
    return `throws ${(e as Error).message}`;
  }
}

function warmCache(): CaCache {
  const cache = new CaCache();
  const k = key();
  expect(outcome([leafFor(k), iss, inter, root], k.spki, cache)).toBe("ok");
  return cache;
}

describe("CA cache in the device's chain check", () => {
  it("checks each CA link once, then answers from the memo", () => {
    const cache = warmCache();
    expect(cache.stats).toMatchObject({ parses: 3, linkChecks: 3 }); // root self, inter, issuing
    for (let i = 0; i < 3; i++) {
      const k = key();
      expect(outcome([leafFor(k), iss, inter, root], k.spki, cache)).toBe("ok");
    }
    expect(cache.stats).toMatchObject({ parses: 3, parseHits: 9, linkChecks: 3, linkHits: 9 });
  });

  it("a cached good link does not let a bad leaf through", () => {
    const cache = warmCache();
    const k = key();
    const good = leafFor(k);
    // a flipped bit in the leaf's signature
    const badSig = Buffer.from(good);
    badSig[badSig.length - 3]! ^= 0x01;
    expect(outcome([badSig, iss, inter, root], k.spki, cache)).toBe(
      `${Status.BAD_SIGNATURE} chain[0]: signature does not verify under chain[1]`,
    );
    // a leaf that names the issuing CA but is signed by another key
    const forged = leafFor(k, key());
    expect(outcome([forged, iss, inter, root], k.spki, cache)).toBe(
      `${Status.BAD_SIGNATURE} chain[0]: signature does not verify under chain[1]`,
    );
    // a genuine leaf for another device's key
    expect(outcome([good, iss, inter, root], key().spki, cache)).toMatch(
      /^8 chain\[0\]\.subjectPublicKey: got another key/,
    );
    // a leaf that is a CA
    const caLeaf = cert("dev", k, "Issuing", issKey, { ca: true });
    expect(outcome([caLeaf, iss, inter, root], k.spki, cache)).toBe(
      `${Status.BAD_CERTIFICATE} chain[0]: got a CA, want an end entity`,
    );
    // expired leaf
    const old = buildCertificate({
      serial: randomBytes(8),
      issuer: name("Issuing"),
      subject: name("dev"),
      notBefore: new Date(now.getTime() - 10 * DAY),
      notAfter: new Date(now.getTime() - DAY),
      spki: k.spki,
      issuerSpki: issKey.spki,
      ca: false,
      signer: issKey.privateKey,
    });
    expect(outcome([old, iss, inter, root], k.spki, cache)).toMatch(/^8 chain\[0\]\.validity/);
    // and the good one still passes
    expect(outcome([good, iss, inter, root], k.spki, cache)).toBe("ok");
  });

  it("a cached good link does not let a different bad intermediate through", () => {
    const cache = warmCache();
    const k = key();
    const leaf = leafFor(k);
    // same name and key as the genuine intermediate, signed by an impostor root of the same name
    const fakeRoot = key("P-384");
    const interForged = cert("Inter", interKey, "Root", fakeRoot, { ca: true, pathLen: 1, akiOf: rootKey });
    expect(outcome([leaf, iss, interForged, root], k.spki, cache)).toBe(
      `${Status.BAD_SIGNATURE} chain[2]: signature does not verify under chain[3]`,
    );
    // the genuine intermediate with one bit of its signature flipped
    const interFlipped = Buffer.from(inter);
    interFlipped[interFlipped.length - 3]! ^= 0x01;
    expect(outcome([leaf, iss, interFlipped, root], k.spki, cache)).toBe(
      `${Status.BAD_SIGNATURE} chain[2]: signature does not verify under chain[3]`,
    );
    // an issuing CA with the genuine key, re-signed by an impostor intermediate key
    const issForged = cert("Issuing", issKey, "Inter", key("P-384"), {
      ca: true,
      pathLen: 0,
      akiOf: interKey,
    });
    expect(outcome([leaf, issForged, inter, root], k.spki, cache)).toBe(
      `${Status.BAD_SIGNATURE} chain[1]: signature does not verify under chain[2]`,
    );
    // an intermediate that is not a CA, correctly signed by the root
    const interEe = cert("Inter", interKey, "Root", rootKey, { ca: false });
    expect(outcome([leaf, iss, interEe, root], k.spki, cache)).toBe(
      `${Status.BAD_CERTIFICATE} chain[2]: got an end entity, want a CA`,
    );
    // cached links of the genuine chain, with the issuing CA left out or out of order
    expect(outcome([leaf, inter, root], k.spki, cache)).toMatch(/^8 chain\[0\]: got issuer names/);
    expect(outcome([leaf, inter, iss, root], k.spki, cache)).toMatch(/^8 chain\[2\]\.pathLen/);
    expect(outcome([leaf, iss, root], k.spki, cache)).toMatch(/^8 chain\[1\]: got issuer names/);
    // a failed link is not remembered: the forged intermediate fails again
    expect(outcome([leaf, iss, interForged, root], k.spki, cache)).toMatch(/^7 chain\[2\]/);
    // the genuine chain still passes
    expect(outcome([leaf, iss, inter, root], k.spki, cache)).toBe("ok");
  });

  it("a warm cache answers exactly like no cache for every single-byte change of the chain", () => {
    const k = key();
    const chain = [leafFor(k), iss, inter, root];
    const warm = warmCache();
    const cold = () => new CaCache(0, 0);
    let tried = 0;
    let refused = 0;
    for (let c = 0; c < chain.length; c++) {
      // every 7th byte position of each certificate, two bit patterns
      for (let pos = 0; pos < chain[c]!.length; pos += 7) {
        for (const mask of [0x01, 0x80]) {
          const bad = chain.map((b) => Buffer.from(b));
          bad[c]![pos]! ^= mask;
          const a = outcome(bad, k.spki, warm);
          expect(a, `cert ${c} byte ${pos} mask ${mask}`).toBe(outcome(bad, k.spki, cold()));
          tried++;
          if (a !== "ok") refused++;
        }
      }
    }
    expect(tried).toBeGreaterThan(400);
    // most changes are refused; some (e.g. in an unchecked field such as the serial) are not
    expect(refused / tried).toBeGreaterThan(0.5);
    expect(outcome(chain, k.spki, warm)).toBe("ok");
  });

  it("compares the leaf key as OpenSSL exports it when the bytes differ (another encoding)", () => {
    const cache = warmCache();
    const k = key();
    const jwk = createPublicKey(k.privateKey).export({ format: "jwk" });
    const x = Buffer.from(jwk.x!, "base64url");
    const y = Buffer.from(jwk.y!, "base64url");
    const compressed = Buffer.concat([
      Buffer.from("3039301306072a8648ce3d020106082a8648ce3d030107032200", "hex"),
      Buffer.from([2 + (y[31]! & 1)]),
      x,
    ]);
    const leaf = cert("dev", { privateKey: k.privateKey, spki: compressed }, "Issuing", issKey, {
      ca: false,
      akiOf: issKey,
    });
    // the rule before the fast path: OpenSSL's export of the leaf key equals the device's SPKI
    const exported = new X509Certificate(leaf).publicKey.export({ type: "spki", format: "der" });
    const want = exported.equals(k.spki)
      ? "ok"
      : "8 chain[0].subjectPublicKey: got another key, want this device's key";
    expect(outcome([leaf, iss, inter, root], k.spki, cache)).toBe(want);
    expect(outcome([leaf, iss, inter, root], k.spki, new CaCache(0, 0))).toBe(want);
    // same key, other bytes: OpenSSL 3.0 keeps the compressed form, so the device refuses it
    expect(want).not.toBe("ok");
    expect(outcome([leafFor(k), iss, inter, root], k.spki, cache)).toBe("ok");
  });

  it("finds a certificate by its own bytes, not by another one's length and tail", () => {
    const cache = new CaCache();
    const genuine = cache.entry(inter)!;
    // same length, same last 16 bytes (the lookup key), one byte of the serial changed
    const serial = Buffer.from(new X509Certificate(inter).serialNumber, "hex");
    const other = Buffer.from(inter);
    other[inter.indexOf(serial) + serial.length - 1]! ^= 0x01;
    expect(bytesKey(other)).toBe(bytesKey(inter));
    const e = cache.entry(other)!;
    expect(e.hash.equals(sha256(other))).toBe(true);
    expect(e).not.toBe(genuine);
    expect(cache.entry(inter)).toBe(genuine);
    expect(cache.entry(Buffer.from(inter))).toBe(genuine);
  });

  it("takes a CA certificate whose key does not decode as one that does not parse", () => {
    // the format byte of the key's point (04, uncompressed): OpenSSL parses the certificate, not its key
    const k = createPublicKey(interKey.privateKey).export({ type: "spki", format: "der" });
    const bad = Buffer.from(inter);
    bad[inter.indexOf(k) + 23]! ^= 0xff;
    expect(() => new X509Certificate(bad).publicKey).toThrow();
    expect(new CaCache().entry(bad)).toBeUndefined();
    const leaf = leafFor(key());
    expect(outcome([leaf, iss, bad, root], key().spki, new CaCache())).toBe(
      `${Status.BAD_CERTIFICATE} chain[2]: got bytes that do not parse, want a DER certificate`,
    );
    // a leaf the issuer signed over such a key: not this device's key, not an internal error
    const dk = key();
    const broken = Buffer.from(dk.spki);
    broken[26]! ^= 0xff; // P-256: the point's format byte
    const badLeaf = cert("dev", { privateKey: dk.privateKey, spki: broken }, "Issuing", issKey, {
      ca: false,
      akiOf: issKey,
    });
    expect(() => new X509Certificate(badLeaf).publicKey).toThrow();
    expect(outcome([badLeaf, iss, inter, root], dk.spki, new CaCache())).toBe(
      `${Status.BAD_CERTIFICATE} chain[0].subjectPublicKey: got another key, want this device's key`,
    );
  });

  it("parses an evicted certificate again, whichever way it was found", () => {
    const cache = new CaCache(2, 8);
    cache.entry(root);
    cache.entry(inter);
    cache.entry(root); // root is now the most recently used
    cache.entry(iss); // evicts inter
    const before = cache.stats.parses;
    cache.entry(root);
    cache.entry(iss);
    expect(cache.stats.parses).toBe(before);
    cache.entry(inter);
    expect(cache.stats.parses).toBe(before + 1);
    expect(cache.size.entries).toBe(2);
  });

  it("stays within its bounds", () => {
    const cache = new CaCache(4, 6);
    for (let i = 0; i < 10; i++) {
      const rk = key();
      const r = cert(`R${i}`, rk, `R${i}`, rk, { ca: true });
      const e = cache.entry(r)!;
      expect(cache.selfSigned(e)).toBe(true);
      expect(cache.link(e, e)).toBe("ok");
    }
    expect(cache.size.entries).toBe(4);
    expect(cache.size.links).toBe(6);
    expect(cache.entry(Buffer.from("not a certificate"))).toBeUndefined();
  });
});
