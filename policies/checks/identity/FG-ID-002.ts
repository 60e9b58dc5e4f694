/** FG-ID-002: per-device credentials are unique: no shared certificate, serial or client identity. */
import { type Check, result, type Violation } from "../../check";

export const check: Check = {
  id: "FG-ID-002",
  title: "Unique per-device credentials (no shared certificate, serial or subject)",
  severity: "critical",
  standards: {
    etsiEn303645: ["5.4-4"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.2"],
    awsDeviceDefender: ["DEVICE_CERTIFICATE_SHARED_CHECK", "CONFLICTING_CLIENT_IDS_CHECK"],
  },
  rationale:
    "A device is only identifiable if its credential is its own: a certificate on two devices, a serial reused by one issuer (which breaks revocation) or two active devices with one subject (conflicting client IDs) make devices indistinguishable to the hub.",
  appliesTo: ["deployed.certificates"],
  check(ctx) {
    const devices = ctx.certificates().filter((c) => c.role === "device");
    const v: Violation[] = [];
    const group = <K>(key: (c: (typeof devices)[number]) => K) => {
      const m = new Map<K, typeof devices>();
      for (const c of devices) m.set(key(c), [...(m.get(key(c)) ?? []), c]);
      return m;
    };
    for (const [fp, cs] of group((c) => c.fingerprint256)) {
      const owners = new Set(cs.map((c) => c.deviceId ?? c.id));
      if (owners.size > 1)
        v.push({
          subject: `cert:${cs[0]!.id}`,
          message: `certificate ${fp.slice(0, 23)}... is installed on ${owners.size} devices (${[...owners].sort().join(", ")})`,
        });
    }
    for (const [, cs] of group((c) => `${c.issuerDer}/${c.serial}`)) {
      const distinct = new Set(cs.map((c) => c.fingerprint256));
      if (distinct.size > 1)
        v.push({
          subject: `cert:${cs[0]!.id}`,
          message: `serial ${cs[0]!.serial} is used by ${distinct.size} different certificates of one issuer (${cs
            .map((c) => c.id)
            .sort()
            .join(", ")}), want unique serials`,
        });
    }
    for (const [subject, cs] of group((c) => c.subject)) {
      const active = cs.filter((c) => c.active);
      const owners = new Set(active.map((c) => c.deviceId ?? c.id));
      if (owners.size > 1)
        v.push({
          subject: `cert:${active[0]!.id}`,
          message: `subject "${subject}" is active on ${owners.size} devices (${[...owners].sort().join(", ")}): conflicting client identities`,
        });
    }
    return result(v);
  },
};
