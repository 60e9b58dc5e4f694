/**
 * What the replay checks after every night, read from what is deployed: the registry (devices,
 * certificates, hub records), the issuing CA's published CRL (DER, parsed independently of the
 * writer) and the local hub's state folder (the certificates it admits). A snapshot is read again
 * only when something changed (the registry's audit head, a CRL file, a hub file); the invariants
 * that depend on the night's clock are evaluated on it every night.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseCrl, readRegistration, statePaths } from "../../../core/hubs/local-state";
import type {
  CertificateRecord,
  DeviceRecord,
  HubRegistrationRecord,
  Registry,
} from "../../../core/registry/types";

/** Device states in which a device holds a certificate it may use (core/hubs/sync.ts CONNECTABLE). */
export const CONNECTABLE = new Set(["issued", "installed", "active"]);

export type Cert = Omit<CertificateRecord, "der">;

export interface Snapshot {
  token: string;
  devices: DeviceRecord[];
  certs: Cert[];
  hub: HubRegistrationRecord[];
  /** per CA fingerprint: the serials on its published CRL */
  crl: Map<string, Set<string>>;
  /** per CA fingerprint: its published CRL's nextUpdate */
  crlNextUpdate: Map<string, Date>;
  /** the local hub's files: certificate serials admitted and disabled */
  hubFiles: { admitted: Set<string>; disabled: Set<string> };
  /** the CAs the local hub's registrations trust (SHA-256 fingerprints) */
  hubCas: Set<string>;
}

const bare = (serial: string) => serial.toLowerCase().replace(/^0+/, "");

/** A cheap fingerprint of everything a snapshot reads: when it is unchanged, so is the snapshot. */
export async function tokenOf(reg: Registry, dirs: string[]): Promise<string> {
  const h = await reg.auditHead();
  const files: string[] = [];
  const walk = (d: string) => {
    if (!fs.existsSync(d)) return;
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const st = fs.statSync(p);
        files.push(`${p}:${st.size}:${st.mtimeMs}`);
      }
    }
  };
  for (const d of dirs) walk(d);
  return `${h.seq}:${h.hash}|${files.sort().join(",")}`;
}

export async function snapshot(
  reg: Registry,
  o: { batches: string[]; crlDir: string; hubState: string; hub: string; token: string },
): Promise<Snapshot> {
  const devices: DeviceRecord[] = [];
  for (const b of o.batches) devices.push(...(await reg.listDevices(b, { limit: 10_000_000 })));
  const certs: Cert[] = [];
  for (const b of o.batches)
    for (const c of await reg.certificates({ batch: b, limit: 10_000_000 })) {
      const { der: _der, ...rest } = c;
      certs.push(rest);
    }
  const hub = await reg.hubRegistrations(o.hub, { limit: 10_000_000 });
  const crl = new Map<string, Set<string>>();
  const crlNextUpdate = new Map<string, Date>();
  for (const f of fs.readdirSync(o.crlDir)) {
    const m = /^([0-9a-f]{64})\.crl$/.exec(f);
    if (!m) continue;
    const c = parseCrl(fs.readFileSync(path.join(o.crlDir, f)));
    crl.set(m[1]!, new Set(c.revoked.map(bare)));
    if (c.nextUpdate) crlNextUpdate.set(m[1]!, c.nextUpdate);
  }
  const admitted = new Set<string>();
  const disabled = new Set<string>();
  const hubCas = new Set<string>();
  const regs = statePaths(o.hubState).registrations;
  for (const f of fs.existsSync(regs) ? fs.readdirSync(regs) : []) {
    if (!f.endsWith(".json")) continue;
    const r = readRegistration(path.join(regs, f));
    for (const d of Object.values(r?.devices ?? {})) admitted.add(bare(d.serial));
    for (const d of Object.values(r?.disabled ?? {})) disabled.add(bare(d.serial));
    for (const c of r?.cas ?? []) hubCas.add(c.fingerprint);
  }
  return {
    token: o.token,
    devices,
    certs,
    hub,
    crl,
    crlNextUpdate,
    hubFiles: { admitted, disabled },
    hubCas,
  };
}

export interface NightFacts {
  /** devices in service (issued, installed, active: they hold a certificate they use) */
  inService: number;
  live: number;
  revokedByReason: Record<string, number>;
  /** live certificates of devices in service expiring within 7 days of the clock, per batch */
  expiringThisWeek: number;
  hubActive: number;
}

/**
 * The invariants of one night at `now`; returns the problems found (empty: all hold) and the facts
 * the per-night counts are made of.
 */
export function checkNight(s: Snapshot, now: Date): { problems: string[]; facts: NightFacts } {
  const problems: string[] = [];
  const t = now.getTime();
  const byDevice = new Map<string, Cert[]>();
  for (const c of s.certs) {
    const l = byDevice.get(c.deviceId);
    if (l) l.push(c);
    else byDevice.set(c.deviceId, [c]);
  }
  const wanted = new Set<string>(); // serials every hub must hold active
  let inService = 0;
  let expiringThisWeek = 0;
  for (const d of s.devices) {
    const mine = byDevice.get(d.deviceId) ?? [];
    const live = mine.filter((c) => c.status === "live");
    if (CONNECTABLE.has(d.state)) for (const c of live) wanted.add(bare(c.serial));
    if (CONNECTABLE.has(d.state)) inService++;
    if (d.state === "active" || d.state === "installed") {
      // the certificate the device holds is its current one; the others are superseded
      const current = live.find((c) => c.serial === d.certSerial);
      if (!current)
        problems.push(`${d.deviceId} (${d.state}): its current certificate ${d.certSerial} is not live`);
      else if (current.notAfter.getTime() <= t || current.notBefore.getTime() > t)
        problems.push(
          `${d.deviceId} (${d.state}): holds only certificate ${current.serial}, valid ${current.notBefore.toISOString()} .. ${current.notAfter.toISOString()}, at ${now.toISOString()}`,
        );
      else if (current.notAfter.getTime() - t < 7 * 86_400_000) expiringThisWeek++;
      if (d.state === "active" && live.length !== 1)
        problems.push(
          `${d.deviceId} (active): ${live.length} live certificates, want 1 (a superseded one is live)`,
        );
    } else if (d.state === "issued") {
      // the overlap: the new certificate recorded (current), the old one still live until the switch
      if (live.length > 2 || !live.some((c) => c.serial === d.certSerial))
        problems.push(
          `${d.deviceId} (issued): live ${live.map((c) => c.serial)}, want its new one and at most its old one`,
        );
      const old = live.find((c) => c.serial !== d.certSerial);
      if (old && old.notAfter.getTime() <= t)
        problems.push(`${d.deviceId} (issued): waits for its switch on an expired certificate ${old.serial}`);
    } else if (live.length)
      problems.push(`${d.deviceId} (${d.state}): ${live.length} live certificates, want none`);
  }
  // every revoked certificate (superseded included) is on its issuing CA's published CRL
  const revokedByReason: Record<string, number> = {};
  let live = 0;
  for (const c of s.certs) {
    if (c.status === "live") {
      live++;
      continue;
    }
    const r = c.revocationReason ?? "unspecified";
    revokedByReason[r] = (revokedByReason[r] ?? 0) + 1;
    if (!s.crl.get(c.issuer)?.has(bare(c.serial)))
      problems.push(
        `${c.deviceId}: certificate ${c.serial} revoked (${r}) but not on the CRL of CA ${c.issuer.slice(0, 16)}`,
      );
  }
  // the hub agrees with the registry: the registry's records and the hub's own files
  const activeAtHub = new Set<string>();
  for (const h of s.hub) {
    if (h.status === "active") activeAtHub.add(bare(h.serial));
    else if (h.status !== "disabled" && h.status !== "removed")
      problems.push(`hub record ${h.deviceId}/${h.serial}: ${h.status} (an intent or a refusal left over)`);
  }
  for (const w of wanted) {
    if (!activeAtHub.has(w))
      problems.push(`certificate ${w}: live for a device in good standing, not active at the hub`);
    if (!s.hubFiles.admitted.has(w))
      problems.push(
        `certificate ${w}: live for a device in good standing, not admitted by the local hub's files`,
      );
  }
  for (const a of activeAtHub)
    if (!wanted.has(a))
      problems.push(
        `certificate ${a}: active at the hub, not wanted (revoked, superseded or its device out of service)`,
      );
  for (const a of s.hubFiles.admitted)
    if (!wanted.has(a)) problems.push(`certificate ${a}: admitted by the local hub's files, not wanted`);
  return {
    problems,
    facts: { inService, live, revokedByReason, expiringThisWeek, hubActive: activeAtHub.size },
  };
}

/**
 * The earliest instant after `from` at which a clock-dependent audit check could change its answer on
 * an unchanged fleet from pass to fail: a live certificate becoming valid, entering the policy's expiry
 * window (FG-LIFE-002) or expiring, a key reaching the policy's maximum age (FG-LIFE-003), a CA
 * entering the CA window (FG-LIFE-001). Until then, an audit of the same snapshot passes as it did.
 */
export function nextAuditChange(
  s: Snapshot,
  from: Date,
  p: { deviceWindowDays: number; maxKeyAgeDays: number; caNotAfter: Date[]; caWindowDays: number },
): number {
  const DAY = 86_400_000;
  const f = from.getTime();
  let next = Number.POSITIVE_INFINITY;
  const consider = (x: number) => {
    if (x > f && x < next) next = x;
  };
  for (const c of s.certs) {
    // a revoked certificate is in nobody's hands (FG-LIFE-* read active ones) and its expiry only ends
    // FG-REV-005's interest in it: a pass stays a pass
    if (c.status !== "live") continue;
    consider(c.notAfter.getTime() - p.deviceWindowDays * DAY);
    consider(c.notAfter.getTime());
    consider(c.notBefore.getTime());
    // any certificate may be the first of its key (the key's age starts there)
    consider(c.notBefore.getTime() + p.maxKeyAgeDays * DAY);
  }
  for (const n of p.caNotAfter) consider(n.getTime() - p.caWindowDays * DAY);
  return next;
}
