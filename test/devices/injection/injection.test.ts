import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import { verifyAttestation } from "../../../core/station/attest";
import { StationClient } from "../../../core/station/client";
import { StationError, Status } from "../../../core/station/frame";
import { deviceId } from "../../../core/station/ids";
import { DeviceAgent, type DeviceRef } from "../../../devices/firmware/agent";
import { lifecycleOf } from "../../../devices/firmware/lifecycle";
import { toPem } from "../../../devices/firmware/pkix";
import { blankState, type DeviceState, encodeState } from "../../../devices/firmware/state";
import { Hsm } from "../../../devices/injection/hsm";
import { parseLicense } from "../../../devices/injection/license";
import { SiliconVendor } from "../../../devices/injection/vendor";
import { farmFor, makeCa, SEED, tempDir } from "../farm/helpers";

const seed = Buffer.from(SEED, "hex");
const vendor = new SiliconVendor(seed);
const agent = new DeviceAgent({ seed, model: "fg100", vendor });
const id = (i: number) => deviceId("fg100", i);
const dir = tempDir("fg-inj-");
afterAll(() => dir.remove());
const ca = makeCa("OEM");

let hsmN = 0;
function newHsm(limit: number): Hsm {
  return Hsm.create(
    join(dir.path, `hsm-${hsmN++}.json`),
    {
      productId: "acme-sensor-v2",
      limit,
      secrets: { "fw-key": randomBytes(32), "cloud-psk": randomBytes(16) },
    },
    vendor.certificate,
  );
}

function dev(i: number, state: DeviceState = blankState(), extra: Partial<DeviceRef> = {}): DeviceRef {
  return { id: id(i), index: i, state, ...extra };
}

function refused(f: () => unknown): StationError {
  try {
    f();
  } catch (e) {
    if (e instanceof StationError) return e;
    throw e;
  }
  throw new Error("expected the chip to refuse");
}

describe("silicon vendor", () => {
  it("signs chip certificates that OpenSSL verifies against the vendor CA", () => {
    const ca = join(dir.path, "vendor.pem");
    const chip = join(dir.path, "chip.pem");
    writeFileSync(ca, toPem(vendor.certificate));
    writeFileSync(chip, toPem(vendor.chipCertificate(id(1))));
    const r = spawnSync("openssl", ["verify", "-x509_strict", "-CAfile", ca, chip], { encoding: "utf8" });
    expect(`${r.stdout}${r.stderr}`).toContain(": OK");
    expect(r.status).toBe(0);
  });
  it("derives the same chip key for the same seed and ID, different ones otherwise", () => {
    expect(vendor.chipKey(id(1)).spki.equals(new SiliconVendor(seed).chipKey(id(1)).spki)).toBe(true);
    expect(vendor.chipKey(id(1)).spki.equals(vendor.chipKey(id(2)).spki)).toBe(false);
  });
  it("refuses to reuse a vendor certificate for another seed", () => {
    expect(() => new SiliconVendor(randomBytes(32), vendor.certificate)).toThrow(/vendorCa/);
  });
});

describe("HSM", () => {
  it("counts licenses durably and refuses over-production", () => {
    const hsm = newHsm(2);
    const path = join(dir.path, `hsm-${hsmN - 1}.json`);
    const a = hsm.license(vendor.chipCertificate(id(1)));
    expect(a.counter).toBe(1);
    expect(JSON.parse(readFileSync(path, "utf8")).issued).toBe(1); // on disk before the license left
    hsm.license(vendor.chipCertificate(id(2)));
    expect(hsm.remaining).toBe(0);
    let err: unknown;
    try {
      hsm.license(vendor.chipCertificate(id(3)));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FleetError);
    expect((err as FleetError).code).toBe("POLICY_VIOLATION");
    expect(Hsm.open(path, vendor.certificate).remaining).toBe(0); // a restart does not refill it
    expect(() => Hsm.create(path, { productId: "x", limit: 5, secrets: {} }, vendor.certificate)).toThrow(
      /existing/,
    );
  });
  it("refuses chip certificates the vendor did not sign (another vendor, or tampered)", () => {
    const hsm = newHsm(5);
    const fake = new SiliconVendor(randomBytes(32));
    expect(() => hsm.license(fake.chipCertificate(id(1)))).toThrow(/did not issue/);
    const cert = Buffer.from(vendor.chipCertificate(id(1)));
    cert[cert.length - 10]! ^= 1;
    expect(() => hsm.license(cert)).toThrow(FleetError);
    expect(hsm.remaining).toBe(5); // refused before the counter moved
  });
});

describe("chip receiving a license", () => {
  it("verifies, decrypts, burns and locks the OTP, and closes; the injected identity works", () => {
    const hsm = newHsm(10);
    const lic = hsm.license(vendor.chipCertificate(id(20)), (chipId, spki) => ca.chainFor(spki, chipId));
    const out = agent.inject(dev(20), { device: id(20), license: lic.license, payload: lic.payload });
    expect(out.result).toMatchObject({ lifecycle: "closed", counter: lic.counter });
    const s = out.next!;
    expect(lifecycleOf(s.otp)).toBe("closed");
    expect(s.otp.isLocked("oem")).toBe(true);
    expect(s.otp.isLocked("inject")).toBe(true);
    expect(s.otp.read("inject").readUInt32BE(8)).toBe(lic.counter);
    const view = s.otp.map().find((r) => r.name === "oem")!;
    expect(view.data).toBeNull(); // secret region: not readable from outside
    expect(view.programmed).toBeGreaterThan(0);
    // the OEM secret values never appear in the persisted record in clear... they are in OTP, which
    // is the point; but the identity key must not be readable through STATUS
    const st = agent.status(dev(20, s)).result;
    expect(JSON.stringify(st)).not.toContain("fw-key");
    const ident = agent.identify(dev(20, s), { device: id(20) }).result;
    expect(ident.source).toBe("injected");
    expect(ident.publicKey!.equals(lic.identitySpki!)).toBe(true);
    const nonce = randomBytes(16);
    const att = agent.attest(dev(20, s), { device: id(20), nonce }).result;
    expect(verifyAttestation(lic.identitySpki!, id(20), 0, nonce, att.signature)).toBe(true);
    expect(s.chain).toHaveLength(3);
  });

  it("refuses every single modified byte of a license, changing nothing", () => {
    const hsm = newHsm(10);
    const lic = hsm.license(vendor.chipCertificate(id(21)));
    const before = blankState();
    const ref = encodeState(before);
    const statuses = new Set<number>();
    for (let i = 0; i < lic.license.length; i++) {
      for (const mask of [0x01, 0x80]) {
        const bad = Buffer.from(lic.license);
        bad[i]! ^= mask;
        const e = refused(() =>
          agent.inject(dev(21, before), { device: id(21), license: bad, payload: lic.payload }),
        );
        statuses.add(e.status);
      }
    }
    expect([...statuses].every((s) => s === Status.BAD_SIGNATURE || s === Status.BAD_REQUEST)).toBe(true);
    expect(encodeState(before).equals(ref)).toBe(true);
    // the untampered license still works afterwards
    expect(
      agent.inject(dev(21, before), { device: id(21), license: lic.license, payload: lic.payload }).result
        .lifecycle,
    ).toBe("closed");
  });

  it("refuses modified payload bytes (a sample: header, every 7th byte, tag)", () => {
    const hsm = newHsm(10);
    const lic = hsm.license(vendor.chipCertificate(id(22)));
    const positions = new Set<number>([
      0,
      1,
      2,
      3,
      4,
      15,
      16,
      lic.payload.length - 1,
      lic.payload.length - 16,
    ]);
    for (let i = 0; i < lic.payload.length; i += 7) positions.add(i);
    for (const i of positions) {
      const bad = Buffer.from(lic.payload);
      bad[i]! ^= 0x40;
      const e = refused(() => agent.inject(dev(22), { device: id(22), license: lic.license, payload: bad }));
      expect(e.status).toBe(Status.BAD_SIGNATURE);
    }
    // truncated and extended payloads too
    refused(() =>
      agent.inject(dev(22), { device: id(22), license: lic.license, payload: lic.payload.subarray(0, 40) }),
    );
    refused(() =>
      agent.inject(dev(22), {
        device: id(22),
        license: lic.license,
        payload: Buffer.concat([lic.payload, Buffer.from([0])]),
      }),
    );
  });

  it("refuses another chip's license, and a payload from another license", () => {
    const hsm = newHsm(10);
    const forA = hsm.license(vendor.chipCertificate(id(23)));
    const forB = hsm.license(vendor.chipCertificate(id(24)));
    expect(refused(() => agent.inject(dev(24), { device: id(24), ...pick(forA) })).status).toBe(
      Status.BAD_SIGNATURE,
    );
    // A's license relabelled for B: the chip ID is authenticated data
    const relabelled = Buffer.from(forA.license);
    const f = parseLicense(relabelled);
    const at = relabelled.indexOf(Buffer.from(f.chipId));
    Buffer.from(id(24)).copy(relabelled, at);
    expect(
      refused(() => agent.inject(dev(24), { device: id(24), license: relabelled, payload: forA.payload }))
        .status,
    ).toBe(Status.BAD_SIGNATURE);
    // B's own license with A's payload
    expect(
      refused(() => agent.inject(dev(24), { device: id(24), license: forB.license, payload: forA.payload }))
        .status,
    ).toBe(Status.BAD_SIGNATURE);
  });

  it("refuses a second provisioning of a closed chip, with the same or a fresh license", () => {
    const hsm = newHsm(10);
    const lic = hsm.license(vendor.chipCertificate(id(25)));
    const closed = agent.inject(dev(25), { device: id(25), ...pick(lic) }).next!;
    expect(refused(() => agent.inject(dev(25, closed), { device: id(25), ...pick(lic) })).status).toBe(
      Status.INVALID_STATE,
    );
    const fresh = hsm.license(vendor.chipCertificate(id(25)));
    expect(refused(() => agent.inject(dev(25, closed), { device: id(25), ...pick(fresh) })).status).toBe(
      Status.INVALID_STATE,
    );
  });

  it("a cloned chip (same ID, other chip key) cannot open the genuine chip's license", () => {
    const hsm = newHsm(10);
    const lic = hsm.license(vendor.chipCertificate(id(26)));
    expect(
      refused(() => agent.inject(dev(26, blankState(), { clone: true }), { device: id(26), ...pick(lic) }))
        .status,
    ).toBe(Status.BAD_SIGNATURE);
  });
});

describe("injection over the station protocol", () => {
  it("station flow: identify with chip certificate, HSM license, INJECT, STATUS", async () => {
    const fdir = tempDir();
    const farm = await farmFor(fdir.path);
    const client = new StationClient({ port: farm.port });
    try {
      const hsm = Hsm.create(
        join(fdir.path, "hsm.json"),
        { productId: "acme", limit: 1, secrets: { k: randomBytes(32) } },
        (await client.ping()).vendorCa,
      );
      const ident = await client.identify(id(40), { chipCert: true });
      const lic = hsm.license(ident.chipCertificate!);
      expect(await client.inject(id(40), lic.license, lic.payload)).toMatchObject({
        lifecycle: "closed",
        counter: 1,
      });
      const e = await client.inject(id(40), lic.license, lic.payload).catch((x: StationError) => x);
      expect((e as StationError).status).toBe(Status.INVALID_STATE);
      expect(() => hsm.license(ident.chipCertificate!)).toThrow(/over-production/);
      const st = await client.status(id(40));
      expect(st.otp.find((r) => r.name === "inject")!.locked).toBe(true);
    } finally {
      await client.close();
      await farm.close();
      fdir.remove();
    }
  });
});

function pick(l: { license: Buffer; payload: Buffer }) {
  return { license: l.license, payload: l.payload };
}
