/**
 * The pull-request review: compare the effective policy and the declared fleet at a base ref and at HEAD,
 * evaluate both with the same engine and clock, and write a Markdown report: what changed in the policy
 * (each field classified tightened/loosened by the schema's annotations), what changed in the fleet,
 * which checks newly fail or pass, and the blast radius of the change: which CAs, batches and how many
 * devices the next `pulumi up` touches (enroll, re-issue, re-key, decommission), and why.
 */
import type { DeclaredCa, FleetContext } from "./context";
import type { Evaluation, Finding } from "./engine";
import { diffPolicies, type EffectivePolicy, type GrantedLoosening, type PolicyChange } from "./layering";
import { type Diagnostic, formatDiagnostic } from "./source";

export interface ReviewSide {
  /** e.g. "main (1a2b3c4)" or "HEAD (5d6e7f8)". */
  label: string;
  policyFile?: string;
  policy?: EffectivePolicy;
  fleet?: FleetContext;
  diagnostics: Diagnostic[];
  granted: GrantedLoosening[];
  evaluation?: Evaluation;
  /** Where the declaration comes from: the Pulumi program (run with mocks) or a fleet file. */
  source?: string;
  /** What the program stops with at `pulumi up`: refusals at construction and other errors. */
  program?: { refusals: Array<{ component: string; name: string; message: string }>; errors: string[] };
}

export interface Impact {
  cause: string;
  /** The next `pulumi up` fails on this (a declaration the policy refuses at construction). */
  fails?: boolean;
  effect: string;
  cas: string[];
  batches: string[];
  devices: number;
}

export interface Review {
  markdown: string;
  policyChanges: PolicyChange[];
  newlyFailing: Finding[];
  newlyPassing: Finding[];
  impacts: Impact[];
  totals: { cas: number; batches: number; devices: number };
}

const fmt = (n: number) => n.toLocaleString("en-US");
const show = (v: unknown): string =>
  v === undefined
    ? "(unset)"
    : Array.isArray(v)
      ? `[${v.join(", ")}]`
      : typeof v === "object"
        ? JSON.stringify(v)
        : String(v);
const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");
const subjectKey = (f: Finding) => `${f.checkId}\u0000${f.subject}`;

/** CA fields whose change replaces the CA (new key or certificate), and with it everything it signed. */
const CA_REPLACE_FIELDS: Array<keyof DeclaredCa> = [
  "role",
  "parent",
  "algorithm",
  "subject",
  "validityDays",
  "pathLen",
  "keyUsage",
  "nameConstraints",
];

function changedFields<T extends object>(a: T, b: T, fields: Array<keyof T>): string[] {
  return fields.filter((f) => JSON.stringify(a[f]) !== JSON.stringify(b[f])).map(String);
}

/** Devices the registry or the stack holds for a batch (all but decommissioned); undefined: not known. */
export function live(side: ReviewSide, batch: string): number | undefined {
  const deployed = side.fleet?.deployed?.batches;
  if (!deployed) return undefined;
  const b = deployed.find((x) => x.id === batch);
  if (!b) return 0;
  return Object.entries(b.states).reduce((a, [k, n]) => a + (k === "decommissioned" ? 0 : (n ?? 0)), 0);
}

/** Devices of a batch in the given registry states; undefined: no deployed side. */
function byState(side: ReviewSide, batch: string, states: string[]): number | undefined {
  const deployed = side.fleet?.deployed?.batches;
  if (!deployed) return undefined;
  const b = deployed.find((x) => x.id === batch);
  return states.reduce((a, k) => a + ((b?.states as Record<string, number> | undefined)?.[k] ?? 0), 0);
}

interface Refusal {
  kind: "batch" | "ca";
  id: string;
  checks: string[];
}

/** Batches and CAs with a mandatory finding at HEAD that the base did not have. */
function refusals(base: ReviewSide, head: ReviewSide): Refusal[] {
  const before = new Set((base.evaluation?.blocking ?? []).map(subjectKey));
  const out = new Map<string, Refusal>();
  for (const f of head.evaluation?.blocking ?? []) {
    if (before.has(subjectKey(f))) continue;
    const m = /^(batch|ca):(.+)$/.exec(f.subject);
    if (!m) continue;
    const r = out.get(f.subject) ?? { kind: m[1] as Refusal["kind"], id: m[2]!, checks: [] };
    if (!r.checks.includes(f.checkId)) r.checks.push(f.checkId);
    out.set(f.subject, r);
  }
  return [...out.values()];
}

/** Which CAs, batches and devices the step from base to head touches at the next run. */
export function blastRadius(base: ReviewSide, head: ReviewSide): Impact[] {
  const impacts: Impact[] = [];
  const bCas = new Map((base.fleet?.declared.cas ?? []).map((c) => [c.name, c]));
  const hCas = head.fleet?.declared.cas ?? [];
  const bBatches = new Map((base.fleet?.declared.batches ?? []).map((b) => [b.id, b]));
  const hBatches = head.fleet?.declared.batches ?? [];
  const bSpec = base.policy?.spec;
  const hSpec = head.policy?.spec;
  const batchChanged = (id: string) =>
    JSON.stringify(bBatches.get(id)) !== JSON.stringify(hBatches.find((b) => b.id === id));
  const caChanged = (name: string) =>
    JSON.stringify(bCas.get(name)) !== JSON.stringify(hCas.find((c) => c.name === name));
  // devices a batch has now: the registry's or the stack's count when given, else the base declaration's
  const now = (id: string, declared: number) => live(head, id) ?? declared;

  // CAs replaced directly, then everything below them.
  const replaced = new Map<string, string>();
  for (const ca of hCas) {
    const old = bCas.get(ca.name);
    if (!old) continue;
    const fields = changedFields(old, ca, CA_REPLACE_FIELDS);
    if (fields.length)
      replaced.set(
        ca.name,
        `CA \`${ca.name}\`: ${fields.map((f) => `${f} ${show(old[f as keyof DeclaredCa])} → ${show(ca[f as keyof DeclaredCa])}`).join(", ")}`,
      );
  }
  const hByName = new Map(hCas.map((c) => [c.name, c]));
  const rootCause = (name: string | undefined): string | undefined => {
    for (let n = name, guard = 0; n !== undefined && guard < 64; n = hByName.get(n)?.parent, guard++)
      if (replaced.has(n)) return n;
    return undefined;
  };
  const byCause = new Map<string, Impact>();
  for (const ca of hCas) {
    const r = rootCause(ca.name);
    if (!r) continue;
    const imp = byCause.get(r) ?? {
      cause: replaced.get(r)!,
      effect: "CA replaced; everything it signed is re-issued",
      cas: [],
      batches: [],
      devices: 0,
    };
    imp.cas.push(ca.name);
    byCause.set(r, imp);
  }
  for (const b of hBatches) {
    const r = rootCause(b.issuingCa);
    if (!r || !bBatches.has(b.id)) continue;
    const imp = byCause.get(r)!;
    imp.batches.push(b.id);
    imp.devices += now(b.id, bBatches.get(b.id)?.count ?? 0);
  }
  impacts.push(...byCause.values());
  for (const name of bCas.keys())
    if (!hByName.has(name))
      impacts.push({
        cause: `CA \`${name}\` removed`,
        effect: "CA retired (its certificate is no longer managed)",
        cas: [name],
        batches: [],
        devices: 0,
      });
  for (const ca of hCas)
    if (!bCas.has(ca.name))
      impacts.push({
        cause: `CA \`${ca.name}\` added`,
        effect: "CA created",
        cas: [ca.name],
        batches: [],
        devices: 0,
      });

  // Batches declared differently: what the next run does with the devices there are now.
  for (const b of hBatches) {
    const old = bBatches.get(b.id);
    const known = live(head, b.id);
    const have = known ?? old?.count ?? 0;
    const counted =
      known === undefined
        ? old
          ? `count ${fmt(old.count)} → ${fmt(b.count)}`
          : "added"
        : `declared ${fmt(b.count)}${old && old.count !== b.count ? ` (was ${fmt(old.count)})` : ""}, ${fmt(known)} deployed`;
    const cause = `batch \`${b.id}\`${counted === "added" ? " added" : `: ${counted}`}`;
    // devices the registry holds but that never finished enrolling are enrolled by the same run
    const resume = Math.min(byState(head, b.id, ["pending", "attested"]) ?? 0, b.count);
    if (b.count > have || resume > 0)
      impacts.push({
        cause,
        effect: "devices enrolled",
        cas: [],
        batches: [b.id],
        devices: Math.max(0, b.count - have) + resume,
      });
    if (b.count < have)
      impacts.push({
        cause,
        effect: "devices decommissioned (certificates revoked)",
        cas: [],
        batches: [b.id],
        devices: have - b.count,
      });
    if (!old) continue;
    // devices holding a certificate: what a re-issue or re-key touches
    const kept = Math.min(byState(head, b.id, ["issued", "installed", "active"]) ?? have, b.count);
    if (old.profile.algorithm !== b.profile.algorithm)
      impacts.push({
        cause: `batch \`${b.id}\`: profile.algorithm ${old.profile.algorithm} → ${b.profile.algorithm}`,
        effect: "devices re-keyed and re-issued",
        cas: [],
        batches: [b.id],
        devices: kept,
      });
    else {
      const fields = changedFields(old.profile, b.profile, ["validityDays", "keyUsage", "extKeyUsage"]);
      if (fields.length)
        impacts.push({
          cause: `batch \`${b.id}\`: ${fields.map((f) => `profile.${f} ${show(old.profile[f as "validityDays"])} → ${show(b.profile[f as "validityDays"])}`).join(", ")}`,
          effect: "device certificates re-issued",
          cas: [],
          batches: [b.id],
          devices: kept,
        });
    }
    if (old.issuingCa !== b.issuingCa)
      impacts.push({
        cause: `batch \`${b.id}\`: issuingCa ${old.issuingCa} → ${b.issuingCa}`,
        effect: "device certificates re-issued under the new CA",
        cas: [b.issuingCa],
        batches: [b.id],
        devices: kept,
      });
    if (old.identitySource !== b.identitySource)
      impacts.push({
        cause: `batch \`${b.id}\`: identitySource ${old.identitySource} → ${b.identitySource}`,
        effect: "devices re-enrolled",
        cas: [],
        batches: [b.id],
        devices: kept,
      });
  }
  for (const [id, old] of bBatches)
    if (!hBatches.some((b) => b.id === id))
      impacts.push({
        cause: `batch \`${id}\` removed`,
        effect: "devices decommissioned (certificates revoked)",
        cas: [],
        batches: [id],
        devices: now(id, old.count),
      });

  // A mandatory finding at HEAD that the base did not have: the component refuses its declaration at
  // construction, so `pulumi up` stops before anything is created, re-issued or enrolled.
  const refusedNow = refusals(base, head);
  if (refusedNow.length) {
    const changed = diffPolicies(bSpec, hSpec);
    const byCause = new Map<string, Impact & { checks: Set<string> }>();
    for (const r of refusedNow) {
      const declChanged = r.kind === "batch" ? batchChanged(r.id) : caChanged(r.id);
      // the policy fields the refusing checks read; any change when none of them moved
      const relevant = changed.filter((c) => c.check && r.checks.includes(c.check));
      const fields = relevant.length ? relevant : changed;
      const cause = declChanged
        ? `${r.kind === "batch" ? "batch" : "CA"} \`${r.id}\` declaration`
        : fields.length
          ? `policy ${fields.map((c) => `${c.path} ${show(c.base)} → ${show(c.head)}`).join(", ")}`
          : "policy";
      const imp = byCause.get(cause) ?? {
        cause,
        effect: "",
        cas: [],
        batches: [],
        devices: 0,
        fails: true,
        checks: new Set<string>(),
      };
      if (r.kind === "batch") imp.batches.push(r.id);
      else imp.cas.push(r.id);
      for (const c of r.checks) imp.checks.add(c);
      byCause.set(cause, imp);
    }
    for (const { checks, ...imp } of byCause.values()) {
      const devices = imp.batches.reduce(
        (a, id) => a + (live(head, id) ?? hBatches.find((b) => b.id === id)?.count ?? 0),
        0,
      );
      imp.effect = `\`pulumi up\` fails: the policy refuses the declaration at construction (${[...checks].join(", ")}); it is not created, updated, re-issued or enrolled until the declaration or the policy changes${devices ? ` (its ${fmt(devices)} device(s) stay as they are)` : ""}`;
      impacts.push(imp);
    }
  }
  const bWave = bSpec?.rotation?.maxWaveFraction;
  const hWave = hSpec?.rotation?.maxWaveFraction;
  if (bWave !== hWave) {
    const counts = new Map(hBatches.map((b) => [b.id, b.count]));
    for (const r of head.fleet?.declared.rotation ?? []) {
      const devices = r.batches.reduce((a, id) => a + (counts.get(id) ?? 0), 0);
      const wave = (f: number | undefined) => Math.ceil(devices * Math.min(r.waveFraction, f ?? 1));
      if (wave(bWave) !== wave(hWave))
        impacts.push({
          cause: `policy spec.rotation.maxWaveFraction ${show(bWave)} → ${show(hWave)}`,
          effect: `rotation \`${r.name}\` waves of at most ${fmt(wave(hWave))} devices (was ${fmt(wave(bWave))})`,
          cas: [],
          batches: [...r.batches],
          devices: 0,
        });
    }
  }
  // With an inventory: certificates that newly fall inside the renewal window or over the key age.
  const certs = head.evaluation ? (head.fleet?.deployed?.certificates ?? []) : [];
  if (certs.length) {
    for (const [id, cause] of [
      ["FG-LIFE-002", "policy spec.renewal.deviceWindowDays"],
      ["FG-LIFE-003", "policy spec.renewal.maxKeyAgeDays"],
    ] as const) {
      const before = new Set(
        (base.evaluation?.findings ?? []).filter((f) => f.checkId === id).map((f) => f.subject),
      );
      const now = (head.evaluation?.findings ?? []).filter(
        (f) => f.checkId === id && f.subject.startsWith("cert:") && !before.has(f.subject),
      );
      if (now.length && JSON.stringify(bSpec?.renewal) !== JSON.stringify(hSpec?.renewal))
        impacts.push({
          cause,
          effect:
            id === "FG-LIFE-002"
              ? "deployed device certificates renewed at the next run"
              : "deployed devices re-keyed at the next run",
          cas: [],
          batches: [],
          devices: now.length,
        });
    }
  }
  return impacts;
}

function summarizeFleetChanges(base: ReviewSide, head: ReviewSide): string[] {
  const lines: string[] = [];
  const b = base.fleet?.declared;
  const h = head.fleet?.declared;
  const bCas = new Map((b?.cas ?? []).map((c) => [c.name, c]));
  for (const ca of h?.cas ?? []) {
    const old = bCas.get(ca.name);
    if (!old) lines.push(`- CA \`${ca.name}\` added (${ca.role}, ${ca.algorithm}, ${ca.validityDays} days)`);
    else {
      const f = changedFields(old, ca, [...CA_REPLACE_FIELDS, "crlIntervalHours"]);
      if (f.length)
        lines.push(
          `- CA \`${ca.name}\`: ${f.map((x) => `${x} ${show(old[x as keyof DeclaredCa])} → ${show(ca[x as keyof DeclaredCa])}`).join(", ")}`,
        );
    }
  }
  for (const name of bCas.keys())
    if (!(h?.cas ?? []).some((c) => c.name === name)) lines.push(`- CA \`${name}\` removed`);
  const bB = new Map((b?.batches ?? []).map((x) => [x.id, x]));
  for (const x of h?.batches ?? []) {
    const old = bB.get(x.id);
    if (!old)
      lines.push(
        `- batch \`${x.id}\` added (${fmt(x.count)} devices, ${x.identitySource}, ${x.profile.algorithm}, ${x.profile.validityDays} days)`,
      );
    else if (JSON.stringify(old) !== JSON.stringify(x)) {
      const f: string[] = [];
      for (const k of ["count", "issuingCa", "identitySource", "deviceModel"] as const)
        if (old[k] !== x[k]) f.push(`${k} ${show(old[k])} → ${show(x[k])}`);
      for (const k of ["algorithm", "validityDays", "keyUsage"] as const)
        if (JSON.stringify(old.profile[k]) !== JSON.stringify(x.profile[k]))
          f.push(`profile.${k} ${show(old.profile[k])} → ${show(x.profile[k])}`);
      if (JSON.stringify(old.hsmCounter) !== JSON.stringify(x.hsmCounter))
        f.push(`hsmCounter ${show(old.hsmCounter)} → ${show(x.hsmCounter)}`);
      if (JSON.stringify(old.puf) !== JSON.stringify(x.puf)) f.push(`puf ${show(old.puf)} → ${show(x.puf)}`);
      lines.push(`- batch \`${x.id}\`: ${f.join(", ")}`);
    }
  }
  for (const id of bB.keys())
    if (!(h?.batches ?? []).some((x) => x.id === id))
      lines.push(`- batch \`${id}\` removed (${fmt(bB.get(id)!.count)} devices)`);
  const bR = new Map((b?.rotation ?? []).map((r) => [r.name, r]));
  for (const r of h?.rotation ?? []) {
    const old = bR.get(r.name);
    if (!old) lines.push(`- rotation \`${r.name}\` added`);
    else if (JSON.stringify(old) !== JSON.stringify(r)) lines.push(`- rotation \`${r.name}\` changed`);
  }
  for (const name of bR.keys())
    if (!(h?.rotation ?? []).some((r) => r.name === name)) lines.push(`- rotation \`${name}\` removed`);
  if (JSON.stringify(b?.hubs) !== JSON.stringify(h?.hubs)) lines.push("- hub settings changed");
  return lines;
}

function findingTable(fs: Finding[]): string[] {
  if (!fs.length) return ["None."];
  const rows = ["| Check | Enforcement | Subject | Finding |", "|---|---|---|---|"];
  for (const f of fs)
    rows.push(
      `| ${f.checkId} | ${f.waived ? `waived until ${f.waived.expires}` : f.enforcement} | \`${f.subject}\` | ${cell(f.message)} |`,
    );
  return rows;
}

export function buildReview(
  base: ReviewSide,
  head: ReviewSide,
  opts: {
    fleetName?: string;
    now: Date;
    /** Where the deployed side (registry, stack) came from; none: the review covers declarations only. */
    deployed?: string;
  },
): Review {
  const policyChanges = diffPolicies(base.policy?.spec, head.policy?.spec);
  const bf = base.evaluation?.findings ?? [];
  const hf = head.evaluation?.findings ?? [];
  const bKeys = new Set(bf.map(subjectKey));
  const hKeys = new Set(hf.map(subjectKey));
  const newlyFailing = hf.filter((f) => !bKeys.has(subjectKey(f)));
  const newlyPassing = bf.filter((f) => !hKeys.has(subjectKey(f)));
  const stillFailing = hf.filter((f) => bKeys.has(subjectKey(f)));
  const impacts = blastRadius(base, head);
  const cas = new Set(impacts.flatMap((i) => i.cas));
  const perBatch = new Map<string, number>();
  let looseDevices = 0;
  for (const i of impacts) {
    if (i.batches.length === 0) looseDevices += i.devices;
    else if (i.devices > 0) {
      const share = i.devices / i.batches.length;
      for (const b of i.batches) perBatch.set(b, Math.max(perBatch.get(b) ?? 0, share));
    } else for (const b of i.batches) perBatch.set(b, perBatch.get(b) ?? 0);
  }
  const totals = {
    cas: cas.size,
    batches: perBatch.size,
    devices: Math.round([...perBatch.values()].reduce((a, b) => a + b, 0)) + looseDevices,
  };

  const count = (s: ReviewSide, pick: (e: Evaluation) => Finding[]) =>
    s.evaluation ? String(pick(s.evaluation).length) : "n/a";
  const headBlocking = head.evaluation?.blocking.length ?? 0;
  const headPolicyViolations = head.diagnostics.length;
  const headErrors = head.program?.errors ?? [];
  const headRefusals = head.program?.refusals ?? [];
  const md: string[] = [];
  md.push(`# Fleet policy review${opts.fleetName ? `: ${opts.fleetName}` : ""}`, "");
  md.push(`Base ${base.label} → ${head.label}, evaluated at ${opts.now.toISOString().slice(0, 10)}.`);
  if (head.policy)
    md.push(
      `Policy: \`${head.policyFile}\` (${head.policy.chain
        .map((c) => c.name)
        .reverse()
        .join(" ← ")}).`,
    );
  if (head.source) md.push(`Declarations: ${head.source}.`);
  md.push(
    opts.deployed
      ? `Deployed: ${opts.deployed}.`
      : "Deployed: not given (`--registry`, `--stack`): this review covers the declarations only; device numbers are the declared counts.",
  );
  md.push("");
  const verdict =
    headPolicyViolations > 0 || headBlocking > 0 || headErrors.length > 0
      ? `**Result: changes requested.** ${headBlocking} mandatory violation(s) and ${headPolicyViolations} policy file problem(s) at HEAD; ${newlyFailing.filter((f) => !f.waived && f.enforcement === "mandatory").length} mandatory finding(s) are new.${headRefusals.length || headErrors.length ? ` \`pulumi up\` at HEAD fails (${[headRefusals.length ? `${headRefusals.length} component(s) refused at construction` : "", headErrors.length ? `${headErrors.length} program error(s)` : ""].filter(Boolean).join(", ")}).` : ""}`
      : "**Result: no mandatory violations at HEAD.**";
  md.push(verdict, "");
  md.push("## Summary", "", "| | Base | HEAD |", "|---|---:|---:|");
  md.push(`| Mandatory violations | ${count(base, (e) => e.blocking)} | ${count(head, (e) => e.blocking)} |`);
  md.push(`| Advisory findings | ${count(base, (e) => e.advisory)} | ${count(head, (e) => e.advisory)} |`);
  md.push(
    `| Waived findings | ${count(base, (e) => e.findings.filter((f) => f.waived))} | ${count(head, (e) => e.findings.filter((f) => f.waived))} |`,
  );
  md.push(`| Policy file problems | ${base.diagnostics.length} | ${head.diagnostics.length} |`);
  md.push(
    `| Devices declared | ${fmt((base.fleet?.declared.batches ?? []).reduce((a, b) => a + b.count, 0))} | ${fmt((head.fleet?.declared.batches ?? []).reduce((a, b) => a + b.count, 0))} |`,
    "",
  );

  if (headRefusals.length || headErrors.length) {
    md.push("## `pulumi up` at HEAD", "", "```");
    for (const r of headRefusals) md.push(`${r.component} '${r.name}': ${r.message}`);
    md.push(...headErrors, "```", "");
  }
  if (head.diagnostics.length) {
    md.push("## Policy and fleet file problems at HEAD", "", "```");
    md.push(...head.diagnostics.map(formatDiagnostic), "```", "");
  }

  md.push("## Policy changes", "");
  if (!policyChanges.length) md.push("No change to the effective policy.");
  else {
    md.push("| Field | Base | HEAD | Direction | Check |", "|---|---|---|---|---|");
    for (const c of policyChanges)
      md.push(
        `| \`${c.path}\` | ${cell(show(c.base))} | ${cell(show(c.head))} | ${c.direction} | ${c.check ?? ""} |`,
      );
  }
  const bw = new Set((base.policy?.waivers ?? []).map((w) => JSON.stringify([w.check, w.expires, w.scope])));
  const hw = new Set((head.policy?.waivers ?? []).map((w) => JSON.stringify([w.check, w.expires, w.scope])));
  const added = (head.policy?.waivers ?? []).filter(
    (w) => !bw.has(JSON.stringify([w.check, w.expires, w.scope])),
  );
  const removed = (base.policy?.waivers ?? []).filter(
    (w) => !hw.has(JSON.stringify([w.check, w.expires, w.scope])),
  );
  if (added.length || removed.length) {
    md.push("", "Waivers:");
    for (const w of added)
      md.push(
        `- added: ${w.check} until ${w.expires}${w.scope ? ` for ${w.scope.join(", ")}` : ""} (${w.policy}): ${w.reason}`,
      );
    for (const w of removed) md.push(`- removed: ${w.check} until ${w.expires} (${w.policy})`);
  }
  if (head.granted.length) {
    md.push("", "Loosenings granted by a waiver:");
    for (const g of head.granted)
      md.push(
        `- \`${g.path}\` in \`${g.file}\`: ${g.message} (waiver for ${g.check} until ${g.expires}: ${g.reason})`,
      );
  }
  md.push("");
  md.push("## Fleet changes", "");
  const fleetLines = summarizeFleetChanges(base, head);
  md.push(...(fleetLines.length ? fleetLines : ["No change to the declared fleet."]), "");

  md.push(
    "## Checks",
    "",
    `### Newly failing (${newlyFailing.length})`,
    "",
    ...findingTable(newlyFailing),
    "",
  );
  md.push(`### Newly passing (${newlyPassing.length})`, "", ...findingTable(newlyPassing), "");
  md.push(`### Still failing (${stillFailing.length})`, "", ...findingTable(stillFailing), "");

  md.push("## Blast radius", "");
  if (!impacts.length) md.push("Nothing is re-issued, re-keyed, enrolled or decommissioned by this change.");
  else {
    md.push("| Cause | Effect | CAs | Batches | Devices |", "|---|---|---|---|---:|");
    for (const i of impacts)
      md.push(
        `| ${cell(i.cause)} | ${cell(i.effect)} | ${i.cas.map((c) => `\`${c}\``).join(", ")} | ${i.batches.map((b) => `\`${b}\``).join(", ")} | ${fmt(i.devices)} |`,
      );
    md.push(
      "",
      headRefusals.length || headErrors.length || impacts.some((i) => i.fails)
        ? "**At the next run:** `pulumi up` fails: the declaration or the policy must change before this merges."
        : `**Total at the next run:** ${fmt(totals.cas)} CA(s), ${fmt(totals.batches)} batch(es), ${fmt(totals.devices)} device(s) touched.`,
    );
  }
  md.push("");
  return { markdown: md.join("\n"), policyChanges, newlyFailing, newlyPassing, impacts, totals };
}
