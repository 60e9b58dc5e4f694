/** FG-KEY-003: no public key appears under two different identities. */
import { type Check, result, type Violation } from "../../check";

export const check: Check = {
  id: "FG-KEY-003",
  title: "No public key shared between identities",
  severity: "critical",
  standards: {
    etsiEn303645: ["5.4-4"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.2", "CR 1.9"],
    awsDeviceDefender: ["DEVICE_CERTIFICATE_KEY_QUALITY_CHECK"],
  },
  rationale:
    "Two identities with one key are one identity: compromising one device compromises both, and a repeated key usually means a broken random generator on the line (as with Debian's CVE-2008-0166).",
  appliesTo: ["deployed.certificates"],
  check(ctx) {
    const byKey = new Map<string, Set<string>>();
    for (const c of ctx.certificates()) {
      const owner = c.deviceId ?? c.id;
      const set = byKey.get(c.key.spkiSha256) ?? new Set<string>();
      set.add(owner);
      byKey.set(c.key.spkiSha256, set);
    }
    const v: Violation[] = [];
    for (const [spki, owners] of byKey) {
      if (owners.size < 2) continue;
      const list = [...owners].sort();
      v.push({
        subject: `cert:${list[0]}`,
        message: `public key sha256:${spki.slice(0, 16)}... is shared by ${list.length} identities (${list.join(", ")}), want one key per identity`,
      });
    }
    return result(v);
  },
};
