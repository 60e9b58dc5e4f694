import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyAttestation } from "../../../core/station/attest";
import { StationClient } from "../../../core/station/client";
import { verifyCsr } from "../../../core/station/csr";
import { StationError, Status } from "../../../core/station/frame";
import { deviceId } from "../../../core/station/ids";
import type { RunningFarm } from "../../../devices/farm/serve";
import { farmFor, makeCa, tempDir } from "./helpers";

const id = (i: number) => deviceId("fg100", i);
const subject = (i: number) =>
  [
    ["O", "Acme"],
    ["CN", id(i)],
  ] as Array<["O" | "CN", string]>;

async function rejects(p: Promise<unknown>): Promise<StationError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof StationError) return e;
    throw e;
  }
  throw new Error("expected a StationError");
}

describe("device farm over TCP", () => {
  const dir = tempDir();
  const ca = makeCa();
  let farm: RunningFarm;
  let client: StationClient;

  beforeAll(async () => {
    farm = await farmFor(dir.path, {
      clones: [id(900)],
      noisy: [id(901)],
      drop: [{ id: id(902), times: 1 }],
      hang: [{ id: id(903), times: Number.POSITIVE_INFINITY }],
    });
    client = new StationClient({ port: farm.port, timeoutMs: 5000, backoffMs: 1 });
  });
  afterAll(async () => {
    await client.close();
    await farm.close();
    dir.remove();
  });

  it("answers ping with the farm's model, size and vendor CA", async () => {
    const info = await client.ping();
    expect(info).toMatchObject({ protocol: 2, model: "fg100", count: 1000 });
    expect(info.vendorCa.equals(farm.vendor.certificate)).toBe(true);
  });

  it("enrolls a device: identify, attest, CSR, trust, install -> closed, and it survives a restart", async () => {
    const d = id(1);
    const before = await client.status(d);
    expect(before.lifecycle).toBe("blank");
    expect(before.helperBytes).toBe(0);

    const ident = await client.identify(d);
    expect(ident).toMatchObject({
      device: d,
      model: "fg100",
      lifecycle: "provisioned",
      epoch: 0,
      source: "puf",
    });
    const nonce = randomBytes(32);
    const att = await client.attest(d, nonce);
    expect(verifyAttestation(ident.publicKey!, d, att.epoch, nonce, att.signature)).toBe(true);
    // domain separation and binding: another nonce, device or epoch does not verify
    expect(verifyAttestation(ident.publicKey!, d, att.epoch, randomBytes(32), att.signature)).toBe(false);
    expect(verifyAttestation(ident.publicKey!, id(2), att.epoch, nonce, att.signature)).toBe(false);
    expect(verifyAttestation(ident.publicKey!, d, 1, nonce, att.signature)).toBe(false);

    const { csr } = await client.csr(d, subject(1));
    const parsed = verifyCsr(csr, ident.publicKey!);
    expect(parsed.subject).toEqual(subject(1));

    expect((await client.setTrustAnchor(d, ca.root)).slot).toBe(0);
    expect((await client.setTrustAnchor(d, ca.root)).slot).toBe(0); // idempotent
    const chain = ca.chainFor(parsed.spki, d);
    expect(await client.install(d, chain)).toMatchObject({ lifecycle: "closed", epoch: 0 });
    expect(await client.install(d, chain)).toMatchObject({ lifecycle: "closed", epoch: 0 }); // idempotent

    const st = await client.status(d);
    expect(st.lifecycle).toBe("closed");
    expect(st.chain.map((c) => c.toString("hex"))).toEqual(chain.map((c) => c.toString("hex")));
    expect(st.trustAnchors).toHaveLength(1);
    const lcWord = st.otp.find((r) => r.name === "lifecycle")!;
    expect(lcWord.data!.readUInt32BE(0)).toBe(3);

    await client.close();
    await farm.close();
    farm = await farmFor(dir.path, {
      clones: [id(900)],
      noisy: [id(901)],
      drop: [{ id: id(902), times: 1 }],
      hang: [{ id: id(903), times: Number.POSITIVE_INFINITY }],
    });
    client = new StationClient({ port: farm.port, timeoutMs: 5000, backoffMs: 1 });
    expect(await client.status(d)).toEqual(st);
    const again = await client.identify(d);
    expect(again.publicKey!.equals(ident.publicKey!)).toBe(true);
  });

  it("refuses a chain that does not certify the device key, or is untrusted, or tampered", async () => {
    const d = id(3);
    const other = id(4);
    const k3 = (await client.identify(d)).publicKey!;
    const k4 = (await client.identify(other)).publicKey!;
    await client.setTrustAnchor(d, ca.root);
    expect((await rejects(client.install(d, ca.chainFor(k4, d)))).status).toBe(Status.BAD_CERTIFICATE);
    const stranger = makeCa("Stranger");
    expect((await rejects(client.install(d, stranger.chainFor(k3, d)))).status).toBe(Status.BAD_CERTIFICATE);
    const chain = ca.chainFor(k3, d);
    const bad = Buffer.from(chain[0]!);
    bad[bad.length - 5]! ^= 1; // inside the signature
    expect((await rejects(client.install(d, [bad, chain[1]!, chain[2]!]))).status).toBe(Status.BAD_SIGNATURE);
    const expired = ca.issue(k3, d, {
      notBefore: new Date(Date.now() - 86400_000 * 2),
      notAfter: new Date(Date.now() - 86400_000),
    });
    expect((await rejects(client.install(d, [expired, chain[1]!, chain[2]!]))).status).toBe(
      Status.BAD_CERTIFICATE,
    );
    expect((await client.status(d)).lifecycle).toBe("provisioned");
    expect((await client.install(d, chain)).lifecycle).toBe("closed");
  });

  it("rotates: a new epoch key, its CSR, and install switches epochs", async () => {
    const d = id(5);
    const k0 = (await client.identify(d)).publicKey!;
    await client.setTrustAnchor(d, ca.root);
    await client.install(d, ca.chainFor(k0, d));
    // closed: the re-key and the new install are commands signed under the device's anchor
    const c0 = (await client.status(d)).challenge!;
    const r1 = await client.rotate(d, subject(5), {
      auth: ca.command(d, { op: "ROTATE", subject: subject(5) }, c0),
    });
    expect(r1.epoch).toBe(1);
    expect(r1.challenge!.equals(c0)).toBe(false); // the command moved the challenge on
    const r1b = await client.rotate(d, subject(5)); // idempotent: same pending epoch, same key
    const csr1 = verifyCsr(r1.csr);
    expect(verifyCsr(r1b.csr).spki.equals(csr1.spki)).toBe(true);
    expect(csr1.spki.equals(k0)).toBe(false);
    expect((await client.status(d)).pendingEpoch).toBe(1);
    // until the new certificate is installed the device still attests with epoch 0
    const n = randomBytes(16);
    const a0 = await client.attest(d, n);
    expect(a0.epoch).toBe(0);
    expect(verifyAttestation(k0, d, 0, n, a0.signature)).toBe(true);
    const chain1 = ca.chainFor(csr1.spki, d);
    expect(
      await client.install(d, chain1, {
        auth: ca.command(d, { op: "INSTALL", chain: chain1 }, r1.challenge!),
      }),
    ).toMatchObject({
      epoch: 1,
      lifecycle: "closed",
    });
    const a1 = await client.attest(d, n);
    expect(a1.epoch).toBe(1);
    expect(verifyAttestation(csr1.spki, d, 1, n, a1.signature)).toBe(true);
    expect(verifyAttestation(k0, d, 1, n, a1.signature)).toBe(false);
    expect((await client.identify(d)).publicKey!.equals(csr1.spki)).toBe(true);
    expect((await client.status(d)).pendingEpoch).toBeNull();
  });

  it("decommissions: zeroized fuses, no key, every key operation refused", async () => {
    const d = id(6);
    await client.identify(d);
    expect((await rejects(client.device("DECOMMISSION", { device: d, confirm: id(7) }))).status).toBe(
      Status.BAD_REQUEST,
    );
    expect((await client.decommission(d)).lifecycle).toBe("decommissioned");
    expect((await client.decommission(d)).lifecycle).toBe("decommissioned");
    const ident = await client.identify(d);
    expect(ident.lifecycle).toBe("decommissioned");
    expect(ident.publicKey).toBeUndefined();
    expect((await rejects(client.attest(d, randomBytes(16)))).status).toBe(Status.INVALID_STATE);
    expect((await rejects(client.csr(d, subject(6)))).status).toBe(Status.INVALID_STATE);
    expect((await rejects(client.setTrustAnchor(d, ca.root))).status).toBe(Status.INVALID_STATE);
    const st = await client.status(d);
    expect(st.helperBytes).toBe(0);
    const oem = st.otp.find((r) => r.name === "oem")!;
    expect(oem).toMatchObject({ locked: true, secret: true, data: null, programmed: oem.words });
  });

  it("fault knobs: a clone and a noisy device cannot use their key", async () => {
    const c = await rejects(client.identify(id(900)));
    expect(c.status).toBe(Status.KEY_FAILURE);
    const n = await rejects(client.attest(id(901), randomBytes(16)));
    expect(n.status).toBe(Status.KEY_FAILURE);
    const stats = await client.stats();
    expect(stats.reconstructionFailures).toBeGreaterThanOrEqual(2);
  });

  it("fault knobs: a dropped connection is retried for idempotent calls; a hang times out", async () => {
    const ident = await client.identify(id(902)); // first attempt dropped, retry answered
    expect(ident.device).toBe(id(902));
    const e = await rejects(client.status(id(903), { timeoutMs: 150, retries: 1 }));
    expect(e.status).toBe(Status.TIMEOUT);
    expect(e.code).toBe("UNAVAILABLE");
    // the farm serves everyone else meanwhile
    expect((await client.status(id(8))).lifecycle).toBe("blank");
  });

  it("batches: one request, per-device results in order, faults isolated per device", async () => {
    const devices = [id(10), id(11), "nope-0000001", id(903), id(12)];
    const res = await client.identifyBatch(devices, { deviceTimeoutMs: 50 });
    expect(res.map((r) => (r.ok ? r.value.device : statusOf(r.error)))).toEqual([
      id(10),
      id(11),
      Status.UNKNOWN_DEVICE,
      Status.TIMEOUT,
      id(12),
    ]);
    const big = Array.from({ length: 64 }, (_, i) => id(100 + i));
    const all = await client.identifyBatch(big);
    expect(all.every((r) => r.ok)).toBe(true);
    const nonces = big.map(() => randomBytes(16));
    const atts = await client.attestBatch(big.map((device, i) => ({ device, nonce: nonces[i]! })));
    atts.forEach((r, i) => {
      if (!r.ok || !all[i]!.ok) throw new Error("batch item failed");
      expect(verifyAttestation(all[i]!.value.publicKey!, big[i]!, 0, nonces[i]!, r.value.signature)).toBe(
        true,
      );
    });
  });

  it("pipelines many requests on one connection", async () => {
    const c = new StationClient({ port: farm.port, poolSize: 1, maxInFlight: 64 });
    const devices = Array.from({ length: 120 }, (_, i) => id(500 + i));
    const res = await Promise.all(devices.map((d) => c.identify(d)));
    expect(res.map((r) => r.device)).toEqual(devices);
    expect(c.connections).toBe(1);
    await c.close();
  });
});

function statusOf(e: StationError): number {
  return e.status;
}

describe("a farm of a million devices", () => {
  it("starts without materialising devices and serves the last one", async () => {
    const dir = tempDir();
    const farm = await farmFor(dir.path, { count: 1_000_000 });
    const client = new StationClient({ port: farm.port });
    try {
      expect((await client.ping()).count).toBe(1_000_000);
      const last = deviceId("fg100", 999_999);
      expect((await client.identify(last)).lifecycle).toBe("provisioned");
      expect((await client.status(deviceId("fg100", 500_000))).lifecycle).toBe("blank");
      expect((await client.status(deviceId("fg100", 1_000_000)).catch((e) => e)).status).toBe(
        Status.UNKNOWN_DEVICE,
      );
      expect(farm.store.states.size).toBe(1);
    } finally {
      await client.close();
      await farm.close();
      dir.remove();
    }
  });
});
