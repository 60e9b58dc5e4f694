/**
 * core/hubs/sync.ts against a real SQLite registry and a recording driver (the drivers themselves
 * are tested against real hubs: test/hub, test/core/hubs/aws-*, azure-dps.contract): what is
 * registered and disabled, intents before calls, a run killed mid-wave converging with no
 * duplicate registration, refusals recorded and retried, the plan in words.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FleetError } from "../../../core/errors";
import {
  describeHubPlan,
  hubDrift,
  hubSummary,
  planHubSync,
  refusalError,
  removeHub,
  syncHub,
} from "../../../core/hubs/sync";
import type {
  DeviceCert,
  HubDriver,
  Outcome,
  RemoteRef,
  RemoteStatus,
  TrustedCa,
} from "../../../core/hubs/types";
import { openRegistry } from "../../../core/registry";
import type { Registry } from "../../../core/registry/types";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-hubsync-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const ISSUER = "c3".repeat(32);
const CA: TrustedCa = { name: "line", fingerprint: ISSUER, certificatePem: "", chainPem: "", crlPems: [] };
const spec = { hub: "h1", batch: "lot" };

/** A hub that keeps what it was told in memory; it can refuse, throttle or die after k calls. */
class RecordingHub implements HubDriver {
  readonly kind = "local" as const;
  readonly label = "test hub 'h1'";
  readonly mode = "per-device" as const;
  ratePerSecond = Number.POSITIVE_INFINITY;
  readonly held = new Map<string, "active" | "inactive">();
  registerCalls = 0;
  refuse = new Set<string>();
  dieAfter = Number.POSITIVE_INFINITY;
  async ensureTrust(cas: readonly TrustedCa[]) {
    return { endpoint: "127.0.0.1:1", caIds: cas.map((c) => c.fingerprint) };
  }
  async register(certs: readonly DeviceCert[]): Promise<Outcome[]> {
    return certs.map((c) => {
      if (this.registerCalls >= this.dieAfter) throw new FleetError("UNAVAILABLE", "connection reset");
      this.registerCalls++;
      if (this.refuse.has(c.deviceId))
        return { serial: c.serial, ok: false, reason: "refused by the hub", retryable: false };
      this.held.set(c.serial, "active");
      return { serial: c.serial, ok: true, remoteId: c.sha256 };
    });
  }
  async disable(refs: readonly RemoteRef[]): Promise<Outcome[]> {
    return refs.map((r) => {
      this.held.set(r.serial, "inactive");
      return { serial: r.serial, ok: true, remoteId: r.remoteId ?? r.serial };
    });
  }
  async remove(refs: readonly RemoteRef[]): Promise<Outcome[]> {
    return refs.map((r) => {
      this.held.delete(r.serial);
      return { serial: r.serial, ok: true, remoteId: r.remoteId ?? r.serial };
    });
  }
  async read(refs: readonly RemoteRef[]): Promise<RemoteStatus[]> {
    return refs.map((r) => {
      const h = this.held.get(r.serial);
      return { serial: r.serial, remoteId: r.remoteId ?? "", status: h ?? "missing" };
    });
  }
  async close() {}
}

/** A registry with `count` active devices, each with one live certificate. */
async function fleet(count: number): Promise<Registry> {
  const reg = await openRegistry(path.join(tmp, `r${++n}.db`));
  await reg.putBatch({ name: "lot", model: "fg100", source: "puf", spec: "{}" });
  const ids = Array.from({ length: count }, (_, i) => `fg100-${String(i).padStart(7, "0")}`);
  await reg.addDevices("lot", ids);
  for (const id of ids) await enroll(reg, id, "pending");
  return reg;
}

let serial = 0x1000;
async function enroll(reg: Registry, id: string, from: "pending" | "active") {
  const s = (++serial).toString(16);
  const der = crypto.randomBytes(300);
  const key = crypto.randomBytes(91);
  const now = new Date();
  const cert = {
    serial: s,
    deviceId: id,
    batch: "lot",
    issuer: ISSUER,
    der,
    notBefore: now,
    notAfter: new Date(now.getTime() + 864e5),
    issuedAt: now,
  };
  if (from === "pending")
    await reg.apply([
      { deviceId: id, batch: "lot", from: "pending", to: "attested", publicKey: key, epoch: 0 },
      { deviceId: id, batch: "lot", from: "attested", to: "issued", certificate: cert },
      { deviceId: id, batch: "lot", from: "issued", to: "installed" },
      { deviceId: id, batch: "lot", from: "installed", to: "active" },
    ]);
  else
    await reg.apply([
      { deviceId: id, batch: "lot", from: "active", to: "issued", certificate: cert },
      { deviceId: id, batch: "lot", from: "issued", to: "installed" },
      { deviceId: id, batch: "lot", from: "installed", to: "active" },
    ]);
  return s;
}

describe("hub sync", () => {
  it("registers every active device once, disables the decommissioned and superseded, and a rerun does nothing", async () => {
    const reg = await fleet(30);
    const hub = new RecordingHub();
    expect(await planHubSync(reg, spec)).toEqual({ register: 30, disable: 0, resume: 0, unchanged: 0 });
    const r = await syncHub(reg, hub, spec, [CA]);
    expect(r.registered).toBe(30);
    expect(r.failed).toEqual([]);
    expect(hub.held.size).toBe(30);
    expect(await hubSummary(reg, spec)).toMatchObject({ registered: 30, active: 30, disabled: 0, failed: 0 });

    // a device decommissioned and one re-issued (its old certificate superseded, the new one live)
    await reg.apply([
      {
        deviceId: "fg100-0000003",
        batch: "lot",
        from: "active",
        to: "decommissioned",
        revoke: { at: new Date(), reason: "cessationOfOperation" },
      },
    ]);
    const newSerial = await enroll(reg, "fg100-0000004", "active");
    expect(await planHubSync(reg, spec)).toEqual({ register: 1, disable: 2, resume: 0, unchanged: 28 });
    const r2 = await syncHub(reg, hub, spec, [CA]);
    expect([r2.registered, r2.disabled]).toEqual([1, 2]);
    expect(hub.held.get(newSerial)).toBe("active");
    expect([...hub.held.values()].filter((v) => v === "inactive")).toHaveLength(2);
    expect(await planHubSync(reg, spec)).toEqual({ register: 0, disable: 0, resume: 0, unchanged: 29 });
    const calls = hub.registerCalls;
    await syncHub(reg, hub, spec, [CA]);
    expect(hub.registerCalls).toBe(calls);

    // every hub change is in the audit log, and the log still verifies
    const rows = await reg.audit({ deviceId: "fg100-0000003" });
    expect(rows.map((a) => (a.detail as { hub?: { to: string } } | null)?.hub?.to).filter(Boolean)).toEqual([
      "registering",
      "active",
      "disabling",
      "disabled",
    ]);
    expect((await reg.verify()).ok).toBe(true);
    await reg.close();
  });

  it("a run killed mid-wave leaves intents that the next run finishes, with no duplicate registration", async () => {
    const reg = await fleet(25);
    const hub = new RecordingHub();
    hub.dieAfter = 12;
    await expect(syncHub(reg, hub, spec, [CA], { wave: 10 })).rejects.toThrow(
      /test hub 'h1': 10 of 25 registered, then: connection reset/,
    );
    // wave 1 recorded active; wave 2 is an intent the hub may or may not have acted on
    const counts = await reg.hubCounts("h1", "lot");
    expect([counts.active, counts.registering]).toEqual([10, 10]);
    expect(await planHubSync(reg, spec)).toEqual({ register: 5, disable: 0, resume: 10, unchanged: 10 });
    hub.dieAfter = Number.POSITIVE_INFINITY;
    const r = await syncHub(reg, hub, spec, [CA], { wave: 10 });
    expect(r.registered).toBe(15);
    expect(hub.held.size).toBe(25);
    expect((await reg.hubCounts("h1", "lot")).active).toBe(25);
    expect(describeHubPlan(await planHubSync(reg, spec), hub)).toBe("register 0, disable 0 at test hub 'h1'");
    await reg.close();
  });

  it("a hub that refuses certificates: recorded as failed, the error names the hub and the counts, the next run retries", async () => {
    const reg = await fleet(8);
    const hub = new RecordingHub();
    hub.refuse = new Set(["fg100-0000001", "fg100-0000006"]);
    const r = await syncHub(reg, hub, spec, [CA]);
    expect(r.registered).toBe(6);
    const err = refusalError(hub.label, r, 8);
    expect(err?.message).toMatch(
      /^test hub 'h1': 6 of 8 registered, 0 disabled; 2 refused \(fg100-0000001: refused by the hub; fg100-0000006: refused by the hub\)/,
    );
    expect((await reg.hubCounts("h1", "lot")).failed).toBe(2);
    expect((await planHubSync(reg, spec)).register).toBe(2);
    hub.refuse.clear();
    expect((await syncHub(reg, hub, spec, [CA])).registered).toBe(2);
    expect((await reg.hubCounts("h1", "lot")).active).toBe(8);
    await reg.close();
  });

  it("refresh finds a certificate deactivated behind fleetguard's back; destroy removes every registration and keeps the history", async () => {
    const reg = await fleet(5);
    const hub = new RecordingHub();
    await syncHub(reg, hub, spec, [CA]);
    const [victim] = [...hub.held.keys()];
    hub.held.set(victim!, "inactive");
    const d = await hubDrift(reg, hub, spec);
    expect(d.deactivated.map((x) => x.serial)).toEqual([victim]);
    const { removed } = await removeHub(reg, hub, spec);
    expect(removed).toBe(5);
    expect(hub.held.size).toBe(0);
    expect((await reg.hubCounts("h1", "lot")).removed).toBe(5);
    expect((await reg.audit({ batch: "lot" })).length).toBeGreaterThan(5 * 4);
    expect((await reg.verify()).ok).toBe(true);
    await reg.close();
  });

  it("says the plan in words, with the time a rate-limited hub will take", () => {
    const plan = { register: 100_000, disable: 0, resume: 0, unchanged: 0 };
    expect(
      describeHubPlan(plan, { label: "AWS IoT 'prod'", mode: "per-device", ratePerSecond: 10, kind: "aws" }),
    ).toBe(
      "register 100,000 devices with AWS IoT 'prod' at 10/s: about 2 h 47 min; consider just-in-time provisioning; disable 0",
    );
    expect(
      describeHubPlan(
        { register: 1000, disable: 12, resume: 0, unchanged: 5 },
        { label: "local hub 'demo'", mode: "per-device", ratePerSecond: Number.POSITIVE_INFINITY },
      ),
    ).toBe("register 1,000, disable 12 at local hub 'demo'");
    expect(
      describeHubPlan(
        { register: 500, disable: 0, resume: 0, unchanged: 0 },
        { label: "AWS IoT 'prod'", mode: "ca", ratePerSecond: 10 },
      ),
    ).toBe("record 500 devices trusted through the CA at AWS IoT 'prod' (no per-device call), disable 0");
  });
});
