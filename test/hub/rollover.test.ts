/**
 * The local hub during an issuing-CA rollover (issue 12, point 3): two CAs of one name and
 * subject under one root, the predecessor and its successor. Each has its own CRL (kept apart by
 * their authority key identifiers, not merged by issuer name: OpenSSL with CRL_CHECK_ALL needs
 * the right one for each); devices of both connect during the overlap; a revocation on one CA's
 * CRL refuses that CA's device only; once the hub is told to trust the successor alone, the
 * predecessor's devices are refused.
 */
import * as fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalHubDriver } from "../../core/hubs/local";
import { loadTrust, parseCrl } from "../../core/hubs/local-state";
import { pemBlocks } from "../../core/x509/pem";
import { type LocalHub, startLocalHub } from "../../hub/local/server";
import { tmpdir } from "../helpers/openssl";
import { type Attempt, connectDevice } from "./mqtt";
import { makePki, type TestDevice } from "./pki";

const dir = tmpdir("fleetguard-hub-rollover-");
const logs: string[] = [];
let hub: LocalHub;
const open: Attempt[] = [];

const g1 = makePki("line");
const g2 = makePki("line", { successorOf: g1 });
const driver = new LocalHubDriver({ stateDir: dir, registration: "r", batch: "b1" });
const old1 = g1.device("fg100-1");
const old2 = g1.device("fg100-2");
const new1 = g2.device("fg100-3");
const new2 = g2.device("fg100-4");

async function connect(device: TestDevice): Promise<Attempt> {
  const a = await connectDevice(hub.port, fs.readFileSync(hub.hubCaFile, "utf8"), device);
  if (a.client) open.push(a);
  return a;
}
const admitted = async (d: TestDevice) => {
  const a = await connect(d);
  a.client?.end(true);
  return a.client !== undefined;
};
const reload = async (cas: Parameters<LocalHubDriver["ensureTrust"]>[0]) => {
  const before = hub.stats().reloads;
  await driver.ensureTrust(cas);
  await driver.flush?.();
  for (let i = 0; i < 100 && hub.stats().reloads === before; i++) await new Promise((r) => setTimeout(r, 50));
};

beforeAll(async () => {
  await driver.ensureTrust([g2.trusted(), g1.trusted()]);
  await driver.register([old1.cert, old2.cert, new1.cert, new2.cert]);
  await driver.flush?.();
  hub = await startLocalHub({ stateDir: dir, port: 0, reloadMs: 100, log: (l) => logs.push(l) });
});
afterAll(async () => {
  for (const a of open) a.client?.end(true);
  await hub?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("the local hub during a CA rollover", () => {
  it("keeps a CRL for each of two CAs with one name, and admits devices of both", async () => {
    const t = loadTrust(dir);
    const crls = t.crlPems.map((p) => parseCrl(pemBlocks(p, "X509 CRL", "crl")[0]!));
    const kids = new Set(crls.map((c) => c.authorityKeyId?.toString("hex")));
    expect(kids.has(g1.issuing.subjectKeyId)).toBe(true);
    expect(kids.has(g2.issuing.subjectKeyId)).toBe(true);
    expect(t.casWithoutCrl).toEqual([]);
    expect(await admitted(old1)).toBe(true);
    expect(await admitted(new1)).toBe(true);
  });

  it("a revocation on the successor's CRL refuses its device only", async () => {
    g2.revoke(new2.serial);
    await reload([g2.trusted(), g1.trusted()]);
    expect(await admitted(new2)).toBe(false);
    expect(await admitted(new1)).toBe(true);
    expect(await admitted(old2)).toBe(true);
  });

  it("trusting the successor alone refuses the predecessor's devices", async () => {
    await reload([g2.trusted()]);
    expect(hub.stats().cas).toBe(2); // the root and the successor
    expect(await admitted(old1)).toBe(false);
    expect(await admitted(new1)).toBe(true);
  });
});
