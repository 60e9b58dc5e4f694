/**
 * One CRL per CA with one cRLNumber sequence (core/enroll/crl): the CA provider (CA-level
 * revocations) and the batch writer (the registry's revocations) publish the same file with one
 * sequence; the sequence only grows across a kill -9 at either step and with two processes
 * writing at once; an upgrade continues above both old series and keeps the old revocations.
 * OpenSSL reads every CRL (`openssl crl -CAfile`, its cRLNumber and serials).
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signCrl } from "../../../core/ca";
import {
  caCrlCurrent,
  crlCurrent,
  crlEntriesOf,
  crlFilesOf,
  crlNameOf,
  crlNamesFrom,
  digestOf,
  publishCaCrl,
  publishCrl,
  readCrlMeta,
} from "../../../core/enroll/crl";
import { pemOne } from "../../../core/x509/pem";
import { crlDue, diff, update } from "../../../providers/runtime/ca";
import { openssl, tmpdir } from "../../helpers/openssl";
import { BASE, type CrlPki, makeCrlPki } from "./crl-pki";

const LINE_A = `${BASE}/line-a.crl`;

const norm = (s: string) => s.replace(/^0+(?=.)/, "");

/** What OpenSSL reads in a CRL file (DER or PEM): its number and serials; it must verify with `ca`. */
function opensslCrl(file: string, caPem: string): { number: number; serials: string[] } {
  const d = tmpdir("fg-crl-");
  fs.writeFileSync(path.join(d, "ca.pem"), caPem);
  const form = file.endsWith(".pem") ? "PEM" : "DER";
  const r = openssl([
    "crl",
    "-inform",
    form,
    "-in",
    file,
    "-CAfile",
    path.join(d, "ca.pem"),
    "-noout",
    "-text",
  ]);
  fs.rmSync(d, { recursive: true, force: true });
  expect(r.out).toMatch(/verify OK/);
  // OpenSSL prints the number in decimal (in hex with 0x past 64 bits), serials in hex
  const number = Number(/X509v3 CRL Number:\s*\n\s*(\S+)/.exec(r.out)![1]!);
  const serials = [...r.out.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => norm(m[1]!.toLowerCase()));
  return { number, serials: serials.sort() };
}

let work: string;
let pki: CrlPki;

beforeAll(async () => {
  work = tmpdir("fg-crl-unified-");
  pki = await makeCrlPki(path.join(work, "crl"), path.join(work, "registry.db"));
});
afterAll(async () => {
  await pki?.registry.close?.();
  fs.rmSync(work, { recursive: true, force: true });
});

describe("one CRL per CA, one cRLNumber sequence", () => {
  it("every CA publishes from creation on, as <fingerprint>.crl (DER), .crl.pem, and under its distribution point's name", () => {
    for (const ca of [pki.root, pki.intermediate, pki.issuing]) {
      const f = crlFilesOf(pki.dir, ca.fingerprint);
      const der = opensslCrl(f.der, ca.outs.certificatePem);
      expect(der.number).toBe(1);
      expect(opensslCrl(f.pem, ca.outs.certificatePem)).toEqual(der);
      expect(readCrlMeta(pki.dir, ca.fingerprint)).toMatchObject({
        version: 2,
        crlNumber: 1,
        state: "published",
      });
      expect(ca.outs.crlNumber).toBe(1);
      expect(ca.outs.crlPem).toBe(fs.readFileSync(f.pem, "utf8"));
    }
    expect(opensslCrl(path.join(pki.dir, "root.crl"), pki.root.outs.certificatePem).number).toBe(1);
    expect(fs.readFileSync(path.join(pki.dir, "manufacturing.crl"))).toEqual(
      fs.readFileSync(crlFilesOf(pki.dir, pki.intermediate.fingerprint).der),
    );
    expect(fs.existsSync(path.join(pki.dir, "manufacturing.crl.pem"))).toBe(true);
    // the CA's publication is current: no change in the next preview
    expect(diff("id", pki.root.outs, pki.root.inputs).changes).toBe(false);
  });

  it("the CA provider and the batch writer share the issuing CA's sequence and its entries", async () => {
    const issuer = pki.issuer();
    const d1 = await pki.device("dev-1");
    const d2 = await pki.device("dev-2");
    await pki.revoke("dev-1");
    expect(await crlCurrent(pki.registry, issuer, pki.dir, 168, new Date(), [LINE_A])).toBe(false);
    const b1 = await publishCrl(pki.registry, issuer, pki.dir, 168, [LINE_A]);
    expect(b1.crlNumber).toBe(2);
    expect(await crlCurrent(pki.registry, issuer, pki.dir, 168, new Date(), [LINE_A])).toBe(true);
    // the sidecar keeps the CA's interval (24 h), not the batch's default
    expect(readCrlMeta(pki.dir, issuer.fingerprint)?.intervalHours).toBe(24);
    // the CA provider re-signs (its output is due): the number continues, the device stays revoked
    const stale = { ...pki.issuing.outs, crlNextUpdate: new Date(Date.now() + 3600_000).toISOString() };
    expect(crlDue(stale)).toBe(true);
    const u = update("id", stale, pki.issuing.inputs).outs as typeof pki.issuing.outs;
    expect(u.crlNumber).toBe(3);
    const named = path.join(pki.dir, "line-a.crl");
    let seen = opensslCrl(named, pki.issuing.outs.certificatePem);
    expect(seen).toEqual({ number: 3, serials: [norm(d1.serial)] });
    // the batch again, with a second revocation: 4, both listed, under every name
    await pki.revoke("dev-2", "superseded");
    expect(await crlCurrent(pki.registry, issuer, pki.dir, 168, new Date(), [LINE_A])).toBe(false);
    expect((await publishCrl(pki.registry, issuer, pki.dir, 168, [LINE_A])).crlNumber).toBe(4);
    seen = opensslCrl(named, pki.issuing.outs.certificatePem);
    expect(seen.number).toBe(4);
    expect(seen.serials.sort()).toEqual([norm(d1.serial), norm(d2.serial)].sort());
    expect(opensslCrl(crlFilesOf(pki.dir, issuer.fingerprint).der, pki.issuing.outs.certificatePem)).toEqual(
      seen,
    );
    // the reason codes survive (read back by the DER reader the upgrade uses)
    const entries = crlEntriesOf(fs.readFileSync(named));
    expect(Object.fromEntries(entries.map((e) => [e.serial, e.reason]))).toEqual({
      // the registry's form: lowercase hex without leading zero octets (a zero nibble stays)
      [d1.serial]: "keyCompromise",
      [d2.serial]: "superseded",
    });
    // a CA-level revocation (a revoked subordinate) joins the root's CRL with its own source
    const sub = String(pki.intermediate.outs.serialNumber).toLowerCase();
    const inputs = {
      ...pki.root.inputs,
      revoked: [{ serial: sub, revokedAt: new Date().toISOString(), reason: "cACompromise" as const }],
    };
    expect(diff("id", pki.root.outs, inputs).changes).toBe(true);
    const r = update("id", pki.root.outs, inputs).outs as typeof pki.root.outs;
    expect(r.crlNumber).toBe(2);
    expect(opensslCrl(path.join(pki.dir, "root.crl"), pki.root.outs.certificatePem)).toEqual({
      number: 2,
      serials: [norm(sub)],
    });
  });

  it("a CRL is republished at half of its validity, and a name another CA holds is refused", () => {
    const fp = pki.root.fingerprint;
    const want = {
      source: "ca" as const,
      digest: digestOf([String(pki.intermediate.outs.serialNumber)]),
      urls: [`${BASE}/root.crl`],
    };
    expect(caCrlCurrent(pki.dir, fp, want)).toBe(true);
    expect(readCrlMeta(pki.dir, fp)).toMatchObject({ names: ["root.crl"], paths: ["/crl/root.crl"] });
    // the root's interval is 168 h: past 84 h it is stale
    expect(caCrlCurrent(pki.dir, fp, want, new Date(Date.now() + 85 * 3600_000))).toBe(false);
    expect(caCrlCurrent(pki.dir, fp, { ...want, urls: [`${BASE}/other.crl`] })).toBe(false);
    expect(() =>
      publishCaCrl(pki.dir, pki.issuer(), {
        source: "registry",
        entries: [],
        urls: [`${BASE}/root.crl`],
        namesField: "profile.crlUrls",
      }),
    ).toThrow(/profile\.crlUrls: got "root\.crl", already the CRL of CA 'root' [0-9a-f]{16}/);
  });

  it("a CA replaced under the same declared name takes its names over; the old CA keeps its fingerprint files", async () => {
    const { create } = await import("../../../providers/runtime/ca");
    const dir = path.join(work, "replace");
    const inputs = { ...pki.root.inputs, crlDir: dir };
    const old = create(inputs).outs as typeof pki.root.outs;
    const successor = create({ ...inputs, subject: { commonName: "CRL Test Root 2" } })
      .outs as typeof pki.root.outs;
    expect(readCrlMeta(dir, successor.fingerprintSha256)).toMatchObject({
      names: ["root.crl"],
      caName: "root",
    });
    expect(readCrlMeta(dir, old.fingerprintSha256)).toMatchObject({ names: [], paths: [] });
    expect(fs.readFileSync(path.join(dir, "root.crl"))).toEqual(
      fs.readFileSync(crlFilesOf(dir, successor.fingerprintSha256).der),
    );
    expect(fs.existsSync(crlFilesOf(dir, old.fingerprintSha256).der)).toBe(true);
    // another CA under another name is still refused
    expect(() => create({ ...inputs, name: "other-root", subject: { commonName: "Other" } })).toThrow(
      /crlUrls: got "root\.crl", already the CRL of CA 'root' [0-9a-f]{16}/,
    );
  });

  it("names come from the last path segment of http(s) distribution points", () => {
    expect(crlNameOf("http://pki.example.com/crl/root.crl")).toBe("root.crl");
    expect(() => crlNameOf("http://pki.example.com/crl/")).toThrow(
      /crlDistributionPoint: got .*want an http\(s\) URL/,
    );
    expect(() => crlNameOf("http://pki.example.com/%2e%2e.crl")).toThrow();
    // the DER reader gives serials in the registry's form: a zero nibble stays, zero octets go
    const c = signCrl(
      { certificatePem: pki.root.outs.certificatePem, key: pki.root.key },
      { revoked: ["0abc", "ff", "00000d"].map((serialHex) => ({ serialHex, revokedAt: new Date() })) },
    );
    expect(crlEntriesOf(pemOne(c.crlPem, "X509 CRL", "crl")).map((e) => e.serial)).toEqual([
      "0abc",
      "ff",
      "0d",
    ]);
    expect(crlNamesFrom(["http://a/x.crl", "ldap://a/cn=x", "http://a/x.crl", "http://b/list"])).toEqual([
      "x.crl",
    ]);
  });
});

describe("size", () => {
  it("a CRL of 100,000 revocations is published and verifies with OpenSSL", () => {
    const dir = path.join(work, "big");
    const entries = Array.from({ length: 100_000 }, (_, i) => ({
      serial: `${(0x10000000 + i).toString(16)}abcdef0123456789`,
      revokedAt: new Date().toISOString(),
      reason: "superseded" as const,
    }));
    const r = publishCaCrl(dir, pki.issuer(), { source: "registry", entries });
    expect(r.revoked).toBe(100_000);
    const d = tmpdir("fg-crl-big-");
    fs.writeFileSync(path.join(d, "ca.pem"), pki.issuing.outs.certificatePem);
    const v = openssl([
      "crl",
      "-inform",
      "DER",
      "-in",
      r.derPath,
      "-CAfile",
      path.join(d, "ca.pem"),
      "-noout",
      "-crlnumber",
    ]);
    fs.rmSync(d, { recursive: true, force: true });
    expect(v.out).toMatch(/verify OK/);
    expect(v.out).toMatch(/crlNumber=0x01|crlNumber=01/);
  });
});

describe("upgrade from the two series", () => {
  it("the first run continues at max(old CA crlNumber, old batch crlNumber) + 1 and keeps the old revocations", async () => {
    const dir = path.join(work, "upgrade");
    fs.mkdirSync(dir);
    const ca = pki.issuing;
    const f = crlFilesOf(dir, ca.fingerprint);
    // what a batch left before: <fp>.crl.pem numbered 7 listing one serial, and its sidecar
    const old = signCrl(
      { certificatePem: ca.outs.certificatePem, key: ca.key },
      {
        previousNumber: 6,
        revoked: [
          { serialHex: "0badcafe", revokedAt: new Date(Date.now() - 86400_000), reason: "keyCompromise" },
        ],
      },
    );
    fs.writeFileSync(f.pem, old.crlPem);
    fs.writeFileSync(
      f.meta,
      JSON.stringify({
        crlNumber: 7,
        thisUpdate: old.thisUpdate,
        nextUpdate: old.nextUpdate,
        revokedDigest: digestOf(["0badcafe"]),
      }),
    );
    // a CA state from before: its own CRL numbered 9, no crlDir, no file of its own
    const inputs = { ...ca.inputs, crlDir: dir };
    const before = { ...ca.outs, crlNumber: 9, crlDir: undefined, crlPath: undefined };
    expect(diff("id", before, inputs)).toMatchObject({ changes: true, replaces: [] });
    const u = update("id", before, inputs).outs as typeof ca.outs;
    expect(u.crlNumber).toBe(10);
    expect(opensslCrl(f.der, ca.outs.certificatePem)).toEqual({ number: 10, serials: ["badcafe"] });
    // and the other way round: old batch 7, old CA 3 -> 8 (on a fresh copy of the old files)
    const dir2 = path.join(work, "upgrade2");
    fs.mkdirSync(dir2);
    const f2 = crlFilesOf(dir2, ca.fingerprint);
    fs.writeFileSync(f2.pem, old.crlPem);
    fs.writeFileSync(
      f2.meta,
      JSON.stringify({
        crlNumber: 7,
        thisUpdate: old.thisUpdate,
        nextUpdate: old.nextUpdate,
        revokedDigest: digestOf(["0badcafe"]),
      }),
    );
    const u2 = update("id", { ...ca.outs, crlNumber: 3 }, { ...ca.inputs, crlDir: dir2 })
      .outs as typeof ca.outs;
    expect(u2.crlNumber).toBe(8);
    expect(u2.crlPem).toBe(fs.readFileSync(f2.pem, "utf8"));
  });
});

/** Run the writer in its own process; resolves with the numbers it printed and how it ended. */
function writer(job: Record<string, unknown>): Promise<{ numbers: number[]; killed: boolean }> {
  const file = path.join(work, `job-${Math.random().toString(36).slice(2)}.json`);
  fs.writeFileSync(file, JSON.stringify(job));
  const tsx = path.resolve("node_modules/.bin/tsx");
  return new Promise((resolve, reject) => {
    const p = spawn(tsx, [path.join(__dirname, "crl-writer.ts"), file], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("error", reject);
    p.on("close", (code, signal) => {
      // tsx runs the script in a child node: its SIGKILL reaches us as exit code 137
      const killed = signal === "SIGKILL" || code === 137;
      if (code && !killed) reject(new Error(`writer exited ${code}: ${err}`));
      else resolve({ numbers: out.split("\n").filter(Boolean).map(Number), killed });
    });
  });
}

describe("crash safety and two writers", () => {
  const job = (over: Record<string, unknown>) => ({
    dir: path.join(work, "crash"),
    certificatePem: pki.issuing.outs.certificatePem,
    keyPem: pki.issuing.outs.keyPem,
    source: "registry",
    entries: [{ serial: "0a01", revokedAt: new Date().toISOString(), reason: "keyCompromise" }],
    urls: [LINE_A],
    times: 1,
    ...over,
  });

  it("kill -9 after the sidecar, and after the CRL files: the next number is never reused", async () => {
    const dir = path.join(work, "crash");
    const fp = pki.issuing.fingerprint;
    const f = crlFilesOf(dir, fp);
    const numbers: number[] = [];
    const record = () => numbers.push(opensslCrl(f.der, pki.issuing.outs.certificatePem).number);
    expect((await writer(job({}))).numbers).toEqual([1]);
    record();
    // killed between reserving number 2 in the sidecar and writing the CRL: files still say 1
    const k1 = await writer(job({ killAt: "reserved" }));
    expect(k1.killed).toBe(true);
    expect(readCrlMeta(dir, fp)).toMatchObject({ crlNumber: 2, state: "signing" });
    expect(fs.existsSync(f.lock)).toBe(true); // left by the dead process
    record();
    expect(caCrlCurrent(dir, fp, { source: "registry", digest: digestOf(["0a01"]), urls: [LINE_A] })).toBe(
      false,
    );
    // the next writer takes over the dead lock and skips 2
    expect((await writer(job({}))).numbers).toEqual([3]);
    record();
    // killed after the CRL files (number 4) but before the sidecar says published
    const k2 = await writer(job({ killAt: "written" }));
    expect(k2.killed).toBe(true);
    record();
    expect(readCrlMeta(dir, fp)).toMatchObject({ crlNumber: 4, state: "signing" });
    expect((await writer(job({}))).numbers).toEqual([5]);
    record();
    expect(numbers).toEqual([1, 1, 3, 4, 5]);
    expect(fs.existsSync(f.lock)).toBe(false);
    expect(opensslCrl(path.join(dir, "line-a.crl"), pki.issuing.outs.certificatePem)).toEqual({
      number: 5,
      serials: ["a01"],
    });
  });

  it("two processes writing at once: every number once, both sources on the last CRL", async () => {
    const dir = path.join(work, "two");
    const [a, b] = await Promise.all([
      writer(
        job({
          dir,
          source: "ca",
          entries: [{ serial: "c0de01", revokedAt: new Date().toISOString() }],
          times: 25,
        }),
      ),
      writer(job({ dir, source: "registry", times: 25 })),
    ]);
    const all = [...a.numbers, ...b.numbers].sort((x, y) => x - y);
    expect(all).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    // each writer saw its own numbers grow
    for (const w of [a, b]) expect([...w.numbers].sort((x, y) => x - y)).toEqual(w.numbers);
    const last = opensslCrl(crlFilesOf(dir, pki.issuing.fingerprint).der, pki.issuing.outs.certificatePem);
    expect(last.number).toBe(50);
    expect(last.serials.sort()).toEqual(["a01", "c0de01"]);
    expect(readCrlMeta(dir, pki.issuing.fingerprint)).toMatchObject({ crlNumber: 50, state: "published" });
    expect(pemOne(fs.readFileSync(path.join(dir, "line-a.crl.pem"), "utf8"), "X509 CRL", "crl")).toEqual(
      fs.readFileSync(path.join(dir, "line-a.crl")),
    );
  });
});
