import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { LocalHubDriver } from "../../../core/hubs/local";
import {
  ensureServerIdentity,
  loadTrust,
  parseCrl,
  readRegistration,
  rebuildBundles,
  registrationPath,
  statePaths,
  writeEndpoint,
} from "../../../core/hubs/local-state";
import { pemBlocks } from "../../../core/x509/pem";
import { openssl, tmpdir } from "../../helpers/openssl";
import { makePki } from "../../hub/pki";

const dirs: string[] = [];
const state = () => {
  const d = tmpdir("fleetguard-localhub-");
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const pki = makePki("acme");
const other = makePki("other");

describe("LocalHubDriver", () => {
  it("writes the registration file (0600) and the bundles on ensureTrust and flush", async () => {
    const dir = state();
    const d = new LocalHubDriver({ stateDir: dir, registration: "demo", batch: "b1" });
    expect(d.kind).toBe("local");
    expect(d.mode).toBe("per-device");
    expect(d.ratePerSecond).toBe(Number.POSITIVE_INFINITY);
    expect(d.label).toBe("local hub 'demo'");
    const summary = await d.ensureTrust([pki.trusted()]);
    expect(summary.caIds).toEqual([pki.issuing.fingerprintSha256]);
    expect(summary.endpoint).toBe(`local:${path.resolve(dir)}`);
    const devs = [pki.device("fg100-1"), pki.device("fg100-2")];
    const out = await d.register(devs.map((x) => x.cert));
    expect(out).toEqual(devs.map((x) => ({ serial: x.serial, ok: true, remoteId: x.sha256 })));
    // buffered until flush
    expect(Object.keys(readRegistration(d.file)!.devices)).toEqual([]);
    await d.flush();
    const file = registrationPath(dir, "demo", "b1");
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const reg = readRegistration(file)!;
    expect(reg.devices[devs[0]!.sha256]).toEqual({ deviceId: "fg100-1", serial: devs[0]!.serial });
    const p = statePaths(dir);
    const bundle = fs.readFileSync(p.caBundle, "utf8");
    expect(pemBlocks(bundle, "CERTIFICATE", "b")).toHaveLength(2); // issuing + root
    expect(pemBlocks(fs.readFileSync(p.crls, "utf8"), "X509 CRL", "c")).toHaveLength(2);
    // idempotent: registering again reports the same remote ids and changes nothing
    expect(await d.register([devs[0]!.cert])).toEqual([
      { serial: devs[0]!.serial, ok: true, remoteId: devs[0]!.sha256 },
    ]);
    expect(await d.read(devs.map((x) => ({ deviceId: x.id, serial: x.serial, remoteId: x.sha256 })))).toEqual(
      devs.map((x) => ({ serial: x.serial, remoteId: x.sha256, status: "active" })),
    );
    await d.close();
  });

  it("refuses a certificate of a CA it was not told to trust, and a revoked one", async () => {
    const dir = state();
    const d = new LocalHubDriver({ stateDir: dir, registration: "demo", batch: "b1" });
    const foreign = other.device("fg100-9");
    const [o1] = await d.register([foreign.cert]);
    expect(o1).toMatchObject({ ok: false, retryable: false });
    expect((o1 as { reason: string }).reason).toMatch(/^issuer: got .*, want a CA this registration trusts/);
    const p2 = makePki("p2");
    const dev = p2.device("fg100-3");
    p2.revoke(dev.serial);
    await d.ensureTrust([p2.trusted()]);
    const [o2] = await d.register([dev.cert]);
    expect((o2 as { reason: string }).reason).toMatch(/^revoked/);
    // a tampered sha256 is refused too
    const good = p2.device("fg100-4");
    const [o3] = await d.register([{ ...good.cert, sha256: "00".repeat(32) }]);
    expect((o3 as { reason: string }).reason).toMatch(/^sha256: got 0+, want the SHA-256 of der/);
  });

  it("disable, read, unknown and remove", async () => {
    const dir = state();
    const d = new LocalHubDriver({ stateDir: dir, registration: "r", batch: "b-2" });
    await d.ensureTrust([pki.trusted()]);
    const [a, b, c] = [pki.device("fg100-a"), pki.device("fg100-b"), pki.device("fg100-c")];
    await d.register([a.cert, b.cert, c.cert]);
    await d.flush();
    const ref = (x: typeof a, remote = true) => ({
      deviceId: x.id,
      serial: x.serial,
      remoteId: remote ? x.sha256 : null,
    });
    // by serial when the registry has no remote id yet (a run killed between hub and registry)
    expect(await d.disable([ref(b, false)])).toEqual([{ serial: b.serial, ok: true, remoteId: b.sha256 }]);
    await d.flush();
    expect((await d.read([ref(a), ref(b), ref(pki.device("fg100-z"))])).map((s) => s.status)).toEqual([
      "active",
      "inactive",
      "missing",
    ]);
    expect(loadTrust(dir).devices.has(b.sha256)).toBe(false);
    expect(await d.unknown(new Set([a.sha256, b.serial]))).toEqual([c.sha256]);
    // disabled again: still ok
    expect((await d.disable([ref(b)]))[0]!.ok).toBe(true);
    // revoked through a new CRL: ensureTrust moves it out of the allowed set
    pki.revoke(a.serial);
    await d.ensureTrust([pki.trusted()]);
    expect((await d.read([ref(a)]))[0]!.status).toBe("revoked");
    expect(loadTrust(dir).devices.has(a.sha256)).toBe(false);
    expect((await d.register([a.cert]))[0]!.ok).toBe(false);
    // a disabled (not revoked) certificate may be registered again
    expect((await d.register([b.cert]))[0]).toMatchObject({ ok: true });
    await d.flush();
    expect(loadTrust(dir).devices.has(b.sha256)).toBe(true);
    // destroy: removing every certificate deletes the file and empties the bundles
    await d.remove([ref(a), ref(b), ref(c)]);
    await d.flush();
    expect(fs.existsSync(d.file)).toBe(false);
    expect(fs.readFileSync(statePaths(dir).caBundle, "utf8")).toBe("");
  });

  it("keeps one current CRL per CA across registrations (highest cRLNumber)", async () => {
    const dir = state();
    const d1 = new LocalHubDriver({ stateDir: dir, registration: "r", batch: "b1" });
    const d2 = new LocalHubDriver({ stateDir: dir, registration: "r", batch: "b2" });
    const old = pki.trusted();
    const newer = pki.trusted();
    await d1.ensureTrust([newer]);
    await d2.ensureTrust([old]);
    const crls = pemBlocks(fs.readFileSync(statePaths(dir).crls, "utf8"), "X509 CRL", "c").map((x) =>
      parseCrl(x),
    );
    expect(crls).toHaveLength(2);
    const issuingCrl = crls.find((c) =>
      c.issuer.equals(parseCrl(pemBlocks(newer.crlPems[0], "X509 CRL", "n")[0]!).issuer),
    )!;
    expect(issuingCrl.crlNumber).toBe(parseCrl(pemBlocks(newer.crlPems[0], "X509 CRL", "n")[0]!).crlNumber);
    expect(pemBlocks(fs.readFileSync(statePaths(dir).caBundle, "utf8"), "CERTIFICATE", "b")).toHaveLength(2);
  });

  it("names the file of a garbled or tampered registration", async () => {
    const dir = state();
    const d = new LocalHubDriver({ stateDir: dir, registration: "r", batch: "b1" });
    await d.ensureTrust([pki.trusted()]);
    const goodText = fs.readFileSync(d.file, "utf8");
    fs.writeFileSync(d.file, "{not json");
    const d2 = new LocalHubDriver({ stateDir: dir, registration: "r", batch: "b1" });
    await expect(d2.register([])).rejects.toThrow(
      `${d.file}: got 9 bytes that are not JSON, want a registration document`,
    );
    const tampered = JSON.parse(goodText);
    tampered.cas[0].fingerprint = "ab".repeat(32);
    fs.writeFileSync(d.file, JSON.stringify(tampered));
    await expect(
      new LocalHubDriver({ stateDir: dir, registration: "r", batch: "b1" }).read([]),
    ).rejects.toThrow(
      /r--b1\.json: cas\[0\]\.fingerprint: got "abab[ab]*"\.\.\., want the SHA-256 of certificatePem/,
    );
    // the hub's reader reports it and trusts nothing of it (fail closed)
    const t = loadTrust(dir);
    expect(t.errors).toHaveLength(1);
    expect(t.errors[0]!.file).toBe(d.file);
    expect(t.caPems).toEqual([]);
  });

  it("refuses bad names and options with field errors", () => {
    expect(() => new LocalHubDriver({ stateDir: "", registration: "r", batch: "b" })).toThrow(
      'hub.local.stateDir: got "", want the local hub\'s state folder',
    );
    expect(() => new LocalHubDriver({ stateDir: "/tmp/x", registration: "a--b", batch: "b" })).toThrow(
      /^registration: got "a--b", want 1\.\.100 of letters/,
    );
    expect(() => new LocalHubDriver({ stateDir: "/tmp/x", registration: "r", batch: "../b" })).toThrow(
      FleetError,
    );
  });
});

describe("the hub's own identity", () => {
  it("is made once, kept, and verifies under hub-ca.pem (OpenSSL)", () => {
    const dir = state();
    const a = ensureServerIdentity(dir);
    const b = ensureServerIdentity(dir);
    expect(b.certPem).toBe(a.certPem);
    const p = statePaths(dir);
    expect(fs.statSync(p.serverKey).mode & 0o777).toBe(0o600);
    expect(fs.statSync(p.hubCaKey).mode & 0o777).toBe(0o600);
    const v = openssl(["verify", "-CAfile", p.hubCa, "-purpose", "sslserver", p.serverCert]);
    expect(v.out).toContain("OK");
    const text = openssl(["x509", "-noout", "-ext", "subjectAltName", "-in", p.serverCert]).out;
    expect(text).toMatch(/DNS:localhost, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1/);
    // a new host: a new server certificate under the same hub CA
    const c = ensureServerIdentity(dir, ["hub.example.com"]);
    expect(c.certPem).not.toBe(a.certPem);
    expect(c.caPem).toBe(a.caPem);
    expect(openssl(["x509", "-noout", "-ext", "subjectAltName", "-in", p.serverCert]).out).toMatch(
      /DNS:hub\.example\.com/,
    );
    expect(() => ensureServerIdentity(dir, ["bad host"])).toThrow(
      'hosts: got "bad host", want a DNS name or an IP address',
    );
  });

  it("endpoint.json and rebuildBundles on an empty folder", () => {
    const dir = state();
    const t = rebuildBundles(dir);
    expect(t.caPems).toEqual([]);
    writeEndpoint(dir, { host: "127.0.0.1", port: 8883 });
    expect(JSON.parse(fs.readFileSync(statePaths(dir).endpoint, "utf8"))).toEqual({
      host: "127.0.0.1",
      port: 8883,
    });
  });
});
