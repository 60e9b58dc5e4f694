/**
 * The nightly pipeline, replayed over three simulated years (issue 12, point 6). A fleet of two PUF
 * lots from the device farm (in this process, so its devices check validity at the replay's clock), a
 * CA hierarchy, a RotationSchedule over both lots (365-day certificates renewed at 2/3 of their life,
 * keys re-keyed after 600 days, waves of the baseline policy's 0.25) and a HubRegistration with the
 * embedded local hub, declared by test/integration/fixtures/replay-program. The clock moves one day
 * per night for 1,095 nights.
 *
 * Every night runs the nightly workflow's steps at 02:00 UTC, inside the schedule's maintenance
 * window: either the provider code `pulumi up` runs (providers/runtime/batch.ts, rotation.ts, hub.ts:
 * check, diff, and update where the diff finds work), with the inputs the real engine last wrote
 * (`pulumi stack export`), followed by the workflow's convergence check in process (every diff again,
 * none may find a change): test/helpers/replay/providers.ts; or the real engine runs the nightly
 * workflow itself (the `run:` lines of examples/github/nightly-rotate.yml: policy check, preview under
 * the policy pack, up, a preview that must show no changes, the CA certificates exported, `fleet
 * audit`) on the first night, on the first night a rotation wave runs (with three waves left), on
 * the night of every program change (two revocations, the CA rollover to generation 2, the
 * retirement of a lot: merged by day, deployed by that night's run whatever is due) and on the last
 * night. The convergence check holds on nights with waves left because a wave bakes (the schedule's
 * default 20 hours, one wave per maintenance window) before the next is due.
 *
 * After every night: no device in service holds only an expired certificate; no run changes more
 * than the policy's fraction of a batch; every revoked certificate (superseded ones included) is on
 * its issuing CA's published CRL; the hub agrees with the registry (its records and the local hub's
 * files admit exactly the live certificates of devices in good standing); the lifecycle checks
 * (FG-LIFE-*, FG-REV-*, FG-ROT-001) pass on the deployed fleet (policies/deployed.ts, what `fleet
 * audit` runs); the registry's audit chain verifies. Through the rollover: both CAs trusted at the
 * hub while a live certificate needs the predecessor, nothing issued under it, every device moved to
 * the successor, the predecessor's certificates revoked (on its CRL) or expired, then the hub
 * trusting the successor alone.
 *
 * REPLAY_OUT=<file.json> keeps the per-night counts (scripts/replay-plot.ts draws docs/replay-*.svg
 * from it); REPLAY_NIGHTS and REPLAY_LOT shorten the replay for a quick look.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseDocument } from "yaml";
import { openRegistry } from "../../core/registry";
import type { Registry } from "../../core/registry/types";
import { StationClient } from "../../core/station/client";
import { type RunningFarm, startFarm } from "../../devices/farm/serve";
import { catalog } from "../../policies/checks/index";
import { auditDeployed } from "../../policies/deployed";
import { evaluate, loadPolicyFile } from "../../policies/engine";
import { tmpdir } from "../helpers/openssl";
import { runCommand } from "../helpers/proc";
import { PulumiStack, REPO } from "../helpers/pulumi";
import { ProviderFleet } from "../helpers/replay/providers";
import { exportStack } from "../helpers/replay/state";
import { checkNight, nextAuditChange, type Snapshot, snapshot, tokenOf } from "../helpers/replay/view";

const DAY = 86_400_000;
const NIGHTS = Number(process.env.REPLAY_NIGHTS ?? 1095);
const LOT = Number(process.env.REPLAY_LOT ?? 1500);
const PROGRAM = path.join(REPO, "test", "integration", "fixtures", "replay-program");
const POLICY = path.join(REPO, "policies", "baseline.yaml");
const PACK = path.join(REPO, "policies", "pack");
const WORKFLOW = path.join(REPO, "examples", "github", "nightly-rotate.yml");
// the nightly runs at 02:00 UTC are inside the maintenance window; a program change deployed by day is not
const ROTATION = { maxKeyAgeDays: 600, maintenanceWindow: "01:00-05:00" };
const id = (i: number) => `fg100-${String(i).padStart(7, "0")}`;

/** SHA-256 of the issuing CA the engine last gave the batches. */
function issuerFp(fleet: ProviderFleet): string {
  const pem = (fleet.byKind("fleetguard:batch")[0]!.inputs.issuer as { certificatePem: string })
    .certificatePem;
  const der = Buffer.from(pem.replace(/-----[A-Z ]+-----|\s/g, ""), "base64");
  return crypto.createHash("sha256").update(der).digest("hex");
}

interface LotConfig {
  name: string;
  first: number;
  count: number;
  revocations?: { device: string; reason: "keyCompromise" | "cessationOfOperation" | "affiliationChanged" }[];
}

/** A program change: merged by day, deployed by the nightly run of `night` (whatever else is due). */
interface ProgramEvent {
  night: number;
  what: string;
  apply: (lots: LotConfig[]) => void;
  /** the CA rollover hook: the issuing CA's generation (fixture config fleetguard:caGeneration) */
  caGeneration?: number;
  /** what the night's preview and up must say */
  says: RegExp[];
}

const EVENTS: ProgramEvent[] = [
  {
    night: Math.round(NIGHTS * 0.14),
    what: `revoke ${id(7)} (keyCompromise) and ${id(420 % LOT)} (cessationOfOperation) of lot-a`,
    apply: (lots) => {
      lots[0]!.revocations = [
        { device: id(7), reason: "keyCompromise" },
        { device: id(420 % LOT), reason: "cessationOfOperation" },
      ];
    },
    says: [
      /batch lot-a: enroll 0 devices, re-issue 0, decommission 0, revoke 2 devices \(cessationOfOperation 1, keyCompromise 1\)/,
      /batch lot-a: revoked 2 device\(s\) as declared; CRL #\d+/,
      /register 0, disable 2 at local hub 'hub'/,
    ],
  },
  {
    night: Math.round(NIGHTS * 0.51),
    what: `revoke ${id(LOT + (100 % LOT))} (keyCompromise) of lot-b`,
    apply: (lots) => {
      lots[1]!.revocations = [{ device: id(LOT + (100 % LOT)), reason: "keyCompromise" }];
    },
    says: [
      /batch lot-b: revoked 1 device\(s\) as declared; CRL #\d+/,
      /register 0, disable 1 at local hub 'hub'/,
    ],
  },
  {
    night: Math.round(NIGHTS * 0.82),
    what: "retire lot-a (every device leaves the serial range: decommissioned)",
    apply: (lots) => {
      lots[0]!.count = 0;
      // its devices are no longer in the batch: a declaration naming them would be refused
      delete lots[0]!.revocations;
    },
    says: [
      new RegExp(`batch lot-a: enroll 0 devices, re-issue 0, decommission ${LOT.toLocaleString("en-US")}`),
      new RegExp(`register 0, disable ${(LOT - 2).toLocaleString("en-US")} at local hub 'hub'`),
    ],
  },
  {
    // the rollover of the issuing CA (docs/rotation.md, CA rollover): generation 2 in the program
    night: Math.round(NIGHTS * 0.35),
    what: "CA rollover of the issuing CA 'line' to generation 2",
    caGeneration: 2,
    apply: () => {},
    says: [/CA rollover of 'line': generation 1 -> 2/, /CA rollover: move [\d,]+ devices to generation 2/],
  },
];

interface NightRecord {
  night: number;
  at: string;
  engine: boolean;
  events: string[];
  renewed: Record<string, number>;
  rekeyed: Record<string, number>;
  /** certificates revoked tonight, by reason */
  revoked: Record<string, number>;
  /** live certificates of devices in service expiring within 7 days of the night */
  expiringNext7Days: number;
  inService: number;
  live: number;
  hubActive: number;
  audited: boolean;
  /** the resources whose update ran tonight (engine nights: the whole workflow) */
  updated: string[];
  ms: number;
}

describe("the nightly pipeline replayed over three simulated years", () => {
  const work = tmpdir("fleetguard-replay-");
  const registryFile = path.join(work, "registry.db");
  const crlDir = path.join(work, "crl");
  const hubState = path.join(work, "hub");
  const casDir = path.join(work, "cas");
  const stack = new PulumiStack(PROGRAM, "it-replay");
  const cwd = process.cwd();
  const passphrase = process.env.PULUMI_CONFIG_PASSPHRASE;
  let farm: RunningFarm;
  let clock = Date.now();

  beforeAll(async () => {
    farm = await startFarm({ stateDir: path.join(work, "farm"), count: 2 * LOT, workers: 0, log: () => {} });
    (farm.farm.agent as unknown as { clock: () => Date }).clock = () => new Date(clock);
    await stack.init();
    await stack.setConfig("fleetguard:stationPort", String(farm.port));
    await stack.setConfig("fleetguard:registry", registryFile);
    await stack.setConfig("fleetguard:crlDir", crlDir);
    await stack.setConfig("fleetguard:hubState", hubState);
    await stack.setConfig("fleetguard:policy", POLICY);
    await stack.setConfig("fleetguard:rotation", ROTATION);
    // the providers in this process resolve what the engine's resolve from the program's directory
    // (the CA key store) and open it with the stack's passphrase, as the engine's provider host does
    process.chdir(PROGRAM);
    process.env.PULUMI_CONFIG_PASSPHRASE = stack.env.PULUMI_CONFIG_PASSPHRASE;
  }, 300_000);

  afterAll(async () => {
    await reader?.close();
    process.chdir(cwd);
    if (passphrase === undefined) delete process.env.PULUMI_CONFIG_PASSPHRASE;
    else process.env.PULUMI_CONFIG_PASSPHRASE = passphrase;
    await farm?.close();
    stack.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }, 120_000);

  /** The test's own reads of the registry: one connection (the providers open their own). */
  let reader: Registry | undefined;
  async function withRegistry<T>(f: (r: Registry) => Promise<T>): Promise<T> {
    reader ??= await openRegistry(registryFile);
    return f(reader);
  }

  /** Where the replay's time goes, in ms (reported in the JSON). */
  const spent: Record<string, number> = {};
  async function timed<T>(what: string, f: () => Promise<T>): Promise<T> {
    const t = performance.now();
    try {
      return await f();
    } finally {
      spent[what] = (spent[what] ?? 0) + performance.now() - t;
    }
  }

  /**
   * The steps of examples/github/nightly-rotate.yml from its policy gate to its audit: their `run:`
   * lines as written there, run by bash with the job's environment set to this test's stack, folders
   * and registry (docs/replay.md maps them).
   */
  function workflowSteps(): { name: string; run: string }[] {
    const doc = parseDocument(fs.readFileSync(WORKFLOW, "utf8"));
    const steps = (doc.toJS() as { jobs: { rotate: { steps: { name: string; run?: string }[] } } }).jobs
      .rotate.steps;
    const from = steps.findIndex((s) => s.name.startsWith("Policy gate"));
    const to = steps.findIndex((s) => s.name.startsWith("Audit"));
    const mine = steps.slice(from, to + 1).filter((s): s is { name: string; run: string } => !!s.run);
    // the workflow's nightly steps, in this order
    expect(mine.map((s) => s.run.split(" --")[0])).toEqual([
      "npx tsx cli/fleet.ts policy check",
      "pulumi preview",
      "pulumi up",
      "pulumi preview",
      "npx tsx cli/fleet.ts ca summary",
      "npx tsx cli/fleet.ts audit",
    ]);
    expect(mine[3]!.run).toContain("--expect-no-changes");
    return mine;
  }

  /** One engine night: the workflow's steps; the clock is the replay's (stack config fleetguard:now). */
  async function engineNight(at: Date): Promise<string> {
    await stack.setConfig("fleetguard:now", at.toISOString());
    const env = {
      ...stack.env,
      STACK: stack.stack,
      PROGRAM_DIR: PROGRAM,
      FLEET_POLICY: POLICY,
      FLEETGUARD_POLICY: POLICY,
      FLEET_POLICY_PACK: PACK,
      FLEET_REGISTRY: registryFile,
      FLEET_CRL_DIR: crlDir,
      FLEET_HUB_STATE: hubState,
      FLEET_CA_DIR: casDir,
      FLEET_AUDIT_DIR: path.join(work, "audit"),
    };
    let log = "";
    for (const s of workflowSteps()) {
      const r = await runCommand("bash", ["-euo", "pipefail", "-c", s.run], {
        env,
        cwd: REPO,
        timeoutMs: 900_000,
      });
      const out = `${r.stdout}${r.stderr}`;
      expect(r.status, `${at.toISOString()}: ${s.name}: ${s.run}\n${out}`).toBe(0);
      log += `${out}\n`;
    }
    return log;
  }

  it(`${NIGHTS} nights: every invariant holds after each; the engine runs the workflow on the event nights`, async () => {
    const t0 = performance.now();
    // night n runs at 02:00 UTC; night 0 is the first such time after now (the lots are enrolled then)
    const first = new Date();
    first.setUTCHours(2, 0, 0, 0);
    if (first.getTime() <= Date.now()) first.setTime(first.getTime() + DAY);
    const start = first.getTime();
    const policy = loadPolicyFile(POLICY);
    const spec = policy.spec;
    const maxWave = spec.rotation!.maxWaveFraction!;
    const lots: LotConfig[] = [
      { name: "lot-a", first: 0, count: LOT },
      { name: "lot-b", first: LOT, count: LOT },
    ];
    const counts = new Map(lots.map((l) => [l.name, l.count]));
    const pending = [...EVENTS].sort((a, b) => a.night - b.night);
    const records: NightRecord[] = [];
    let fleet: ProviderFleet | undefined;
    let snap: Snapshot | undefined;
    let audit: { at: number; token: string; until: number } | undefined;
    let engineNights = 0;
    let skippedBefore = 0;
    /** the CA rollover: the predecessor's and successor's fingerprints, and when every device had moved */
    let rollover: { night: number; from: string; to: string; done?: number; hubDropped?: number } | undefined;
    let audits = 0;
    let prevRevoked: Record<string, number> = {};
    const dirs = [crlDir, path.join(hubState, "registrations")];
    /** the first night on which the schedule or the hub has work (a renewal wave): an engine night */
    let waveNight: number | undefined;
    /** nights whose in-process convergence check ran (something changed in the up) */
    let convergenceChecks = 0;

    for (let night = 0; night <= NIGHTS; night++) {
      const nightly = start + night * DAY;
      // a program change is merged by day and deployed by that night's run, waves due or not
      const change = fleet && pending[0] && pending[0].night <= night ? pending.shift() : undefined;
      // the first night with rotation work: the real engine runs the workflow, convergence check included
      const wave =
        waveNight === undefined &&
        fleet &&
        !(await fleet.quiet(new Date(nightly).toISOString(), ["fleetguard:rotation"]));
      if (wave) waveNight = night;
      const runs: { at: number; engine: boolean; change?: ProgramEvent }[] = [
        { at: nightly, engine: night === 0 || night === NIGHTS || !!change || !!wave, change },
      ];
      for (const run of runs) {
        const tn = performance.now();
        clock = run.at;
        const at = new Date(clock);
        const events: string[] = [];
        const renewed: Record<string, number> = {};
        let updated: string[] = [];
        const rekeyed: Record<string, number> = {};
        const engine = run.engine;
        if (engine) {
          let said: RegExp[] = [];
          if (run.change) {
            const ev = run.change;
            ev.apply(lots);
            if (ev.caGeneration) {
              await stack.setConfig("fleetguard:caGeneration", String(ev.caGeneration));
            }
            events.push(ev.what);
            said = ev.says;
          }
          await stack.setConfig("fleetguard:batches", lots);
          for (const l of lots) counts.set(l.name, l.count);
          const log = await timed("engine nights", () => engineNight(at));
          engineNights++;
          for (const w of said) expect(log, `night ${night}: ${events[0]}`).toMatch(w);
          if (wave) {
            // a renewal wave ran in the up; the convergence preview passed (engineNight asserts its exit
            // status) and said when the next wave is due
            expect(log, `night ${night}: the first wave`).toMatch(/ renewed, /);
            expect(log, `night ${night}: the convergence preview`).toMatch(
              /waves? left, the next due after \d{4}-\d\d-\d\dT\d\d:\d\dZ: the last wave bakes 20 h/,
            );
            events.push("first renewal wave (the workflow's convergence check with waves left)");
          }
          const before = fleet ? issuerFp(fleet) : "";
          skippedBefore += fleet?.skipped ?? 0;
          fleet = new ProviderFleet(await exportStack(stack));
          if (run.change?.caGeneration) {
            rollover = { night, from: before, to: issuerFp(fleet) };
            expect(rollover.to).not.toBe(rollover.from);
          }
          // the nightly workflow's rotation runs are part of the record too
          for (const r of fleet.byKind("fleetguard:rotation")) {
            const last = r.outputs.lastRun as { at: string; renewed: number; rekeyed: number } | null;
            if (last && Date.parse(last.at) === clock) {
              const b = (r.inputs.batch as { name: string }).name;
              renewed[b] = last.renewed;
              rekeyed[b] = last.rekeyed;
            }
          }
        } else {
          const steps = await timed("provider nights", () =>
            fleet!.night(at.toISOString(), () => withRegistry((r) => tokenOf(r, dirs))),
          );
          updated = steps.filter((s) => s.changed).map((s) => s.name);
          // the workflow's "Confirm convergence" step, in process: after an up that changed something,
          // every diff again finds nothing (an up that changed nothing leaves the same diffs behind)
          if (updated.length) {
            const left = await timed("convergence checks", () => fleet!.converged(at.toISOString()));
            convergenceChecks++;
            expect(
              left.map((l) => `${l.name}: ${l.words.join(" | ")}`),
              `night ${night}: pulumi preview --expect-no-changes after the up (${updated.join(", ")})`,
            ).toEqual([]);
          }
          for (const s of steps) {
            if (s.kind !== "fleetguard:rotation" || !s.changed) continue;
            const b = (s.outs.batch as { name: string }).name;
            const last = s.outs.lastRun as {
              renewed: number;
              rekeyed: number;
              waves: number;
              failed: number;
            };
            renewed[b] = last.renewed;
            rekeyed[b] = last.rekeyed;
            expect(last.failed, `night ${night}: ${s.words.join("\n")}`).toBe(0);
            expect(last.waves).toBeLessThanOrEqual(1);
          }
        }
        // no run changes more than the policy's fraction of a batch
        for (const [b, n] of Object.entries(renewed))
          expect(n + (rekeyed[b] ?? 0), `night ${night}: batch ${b}`).toBeLessThanOrEqual(
            Math.ceil(maxWave * (counts.get(b) ?? 0)),
          );

        // the deployed fleet, read again when anything changed
        const token = await withRegistry((r) => tokenOf(r, dirs));
        if (!snap || snap.token !== token) {
          snap = await withRegistry(async (r) => {
            const v = await timed("registry verify", () => r.verify());
            expect(
              v.ok,
              `night ${night}: the registry's audit chain: ${JSON.stringify(v).slice(0, 2000)}`,
            ).toBe(true);
            return timed("snapshots", () =>
              snapshot(r, { batches: lots.map((l) => l.name), crlDir, hubState, hub: "hub", token }),
            );
          });
          // what tonight issued, from the registry (not the provider's own count): within the wave
          for (const l of lots) {
            const issued = snap.certs.filter(
              (c) =>
                c.batch === l.name && c.issuedAt.getTime() > clock - DAY && c.issuedAt.getTime() <= clock,
            ).length;
            if (night > 0)
              expect(issued, `night ${night}: certificates issued for ${l.name}`).toBeLessThanOrEqual(
                Math.ceil(maxWave * l.count),
              );
          }
        }
        const { problems, facts } = checkNight(snap, at);
        if (rollover) {
          // during the overlap the hub trusts both CAs; once no live certificate needs the predecessor,
          // every device is under the successor; nothing new is issued under the predecessor
          const needOld = snap.certs.filter((c) => c.status === "live" && c.issuer === rollover!.from).length;
          if (needOld) {
            expect(snap.hubCas.has(rollover.from), `night ${night}: the hub trusts the predecessor`).toBe(
              true,
            );
            expect(snap.hubCas.has(rollover.to), `night ${night}: the hub trusts the successor`).toBe(true);
          } else rollover.done ??= night;
          if (rollover.done !== undefined && !snap.hubCas.has(rollover.from)) rollover.hubDropped ??= night;
          const issuedOld = snap.certs.filter(
            (c) => c.issuer === rollover!.from && c.issuedAt.getTime() > start + rollover!.night * DAY,
          );
          expect(
            issuedOld.map((c) => c.deviceId).slice(0, 5),
            `night ${night}: issued under the predecessor`,
          ).toEqual([]);
        }
        // the CRLs' freshness at the clock they are signed by (the wall clock)
        for (const [fp, next] of snap.crlNextUpdate)
          expect(next.getTime(), `night ${night}: CRL of ${fp.slice(0, 16)}`).toBeGreaterThan(Date.now());
        expect(problems.slice(0, 20), `night ${night} (${at.toISOString()})`).toEqual([]);

        // the lifecycle checks on the deployed fleet, at the night's clock: the full audit whenever the
        // fleet changed or the clock crossed a point where a check's answer can change
        if (!audit || audit.token !== token || clock >= audit.until) {
          const a = await timed("audits", () =>
            withRegistry((registry) =>
              auditDeployed(policy, { registry, caDir: casDir, crlDir, hubStateDir: hubState }, { now: at }),
            ),
          );
          audits++;
          for (const r of a.runs.filter((x) => /^FG-(LIFE|REV)-/.test(x.id))) {
            // CRLs are signed at the wall clock (docs/rotation.md, The clock): at the replay's clock a CRL
            // is past its nextUpdate once the replay is more than a week ahead; the CRL's freshness at its
            // own clock is checked here instead
            const f = r.findings.filter((x) => {
              const stale = r.id === "FG-REV-003" && /^stale: nextUpdate (\S+) has passed$/.exec(x.message);
              return !(stale && Date.parse(stale[1]!) + DAY > Date.now());
            });
            expect(
              f.map((x) => `${x.subject}: ${x.message}`).slice(0, 10),
              `night ${night}: ${r.id} ${r.title}`,
            ).toEqual([]);
            expect(r.status, r.id).not.toBe("error");
          }
          const caNotAfter = a.inventory.cas.map((c) => new Date(c.notAfter));
          audit = {
            at: clock,
            token,
            until: nextAuditChange(snap, at, {
              deviceWindowDays: spec.renewal!.deviceWindowDays!,
              maxKeyAgeDays: spec.renewal!.maxKeyAgeDays!,
              caNotAfter,
              caWindowDays: spec.renewal!.caWindowDays!,
            }),
          };
        }
        // FG-ROT-001 reads the declaration: the schedule as the engine holds it, over the deployed lots
        const rot = (fleet!.byKind("fleetguard:rotation")[0]!.inputs.rotation as { maxWaveFraction: number })
          .maxWaveFraction;
        const rot001 = evaluate(
          policy,
          {
            declared: {
              rotation: [{ name: "nightly", batches: lots.map((l) => l.name), waveFraction: rot }],
              batches: lots.map((l) => ({ id: l.name, count: l.count })) as never,
            },
          },
          { now: at, checks: catalog.filter((c) => c.id === "FG-ROT-001") },
        );
        expect(rot001.runs[0]!.status, `night ${night}: FG-ROT-001`).toBe("pass");

        const revoked: Record<string, number> = {};
        for (const [k, n] of Object.entries(facts.revokedByReason))
          if (n - (prevRevoked[k] ?? 0)) revoked[k] = n - (prevRevoked[k] ?? 0);
        prevRevoked = facts.revokedByReason;
        records.push({
          night,
          at: at.toISOString(),
          engine,
          events,
          renewed,
          rekeyed,
          revoked,
          expiringNext7Days: facts.expiringThisWeek,
          inService: facts.inService,
          live: facts.live,
          hubActive: facts.hubActive,
          audited: audit.at === clock,
          updated,
          ms: Math.round(performance.now() - tn),
        });
        expect(facts.expiringThisWeek, `night ${night}`).toBe(0);
      }
    }

    // every event happened; the engine ran the workflow on the first, event and last nights
    expect(pending.map((e) => e.what)).toEqual([]);
    expect(waveNight, "a night with a renewal wave").toBeDefined();
    expect(engineNights).toBe(3 + EVENTS.length);
    // the in-process convergence check ran after every in-process up that changed something
    expect(convergenceChecks).toBe(records.filter((r) => !r.engine && r.updated.length).length);
    expect(convergenceChecks).toBeGreaterThan(0);
    const sum = (k: "renewed" | "rekeyed") =>
      records.reduce((a, r) => a + Object.values(r[k]).reduce((x, y) => x + y, 0), 0);

    const out = {
      generatedBy: "test/integration/replay.test.ts",
      lots: lots.map((l) => ({ name: l.name, count: LOT })),
      rotation: { ...ROTATION, maxWaveFraction: maxWave, certificateDays: 365, renewAtFraction: 2 / 3 },
      nights: records,
      expiries: snap!.certs.map((c) => ({
        batch: c.batch,
        notAfter: c.notAfter.toISOString(),
        status: c.status === "live" ? "live" : (c.revocationReason ?? "unspecified"),
      })),
      totals: {
        renewed: sum("renewed"),
        rekeyed: sum("rekeyed"),
        revoked: prevRevoked,
        engineNights,
        firstWaveNight: waveNight,
        convergenceChecks,
        audits,
        rollover: rollover
          ? {
              deployed: rollover.night,
              everyDeviceMoved: rollover.done,
              hubTrustsSuccessorAlone: rollover.hubDropped,
            }
          : null,
        batchDiffsSkipped: skippedBefore + fleet!.skipped,
        seconds: Math.round((performance.now() - t0) / 1000),
        secondsBy: Object.fromEntries(Object.entries(spent).map(([k, v]) => [k, Math.round(v / 1000)])),
      },
    };
    const file = process.env.REPLAY_OUT ?? path.join(work, "replay.json");
    fs.writeFileSync(file, `${JSON.stringify(out, null, 1)}\n`);
    // the rollover completed: every device re-issued under the successor, the predecessor's certificates
    // revoked (superseded, on its CRL: checked every night) or expired, the hub trusting the successor alone
    expect(rollover?.done, "every device moved to the successor").toBeDefined();
    const left = snap!.certs.filter(
      (c) => c.issuer === rollover!.from && c.status === "live" && c.notAfter.getTime() > clock,
    );
    expect(left.map((c) => c.deviceId)).toEqual([]);
    expect(snap!.hubCas.has(rollover!.from)).toBe(false);
    expect(snap!.hubCas.has(rollover!.to)).toBe(true);

    // the fleet at the end: lot-a retired, lot-b in service on its renewed and re-keyed keys
    await withRegistry(async (r) => {
      const a = await r.counts("lot-a");
      const b = await r.counts("lot-b");
      expect(a.decommissioned + a.revoked).toBe(LOT);
      expect(b.active).toBe(LOT - 1);
      expect(b.revoked).toBe(1);
      // the devices hold what the registry says they hold (STATUS over the station protocol)
      const st = new StationClient({ port: farm.port, poolSize: 2, timeoutMs: 60_000 });
      try {
        const devs = (await r.listDevices("lot-b", { limit: 1_000_000 })).filter((d) => d.state === "active");
        const status = [];
        for (let i = 0; i < devs.length; i += 1000)
          status.push(...(await st.statusBatch(devs.slice(i, i + 1000).map((d) => d.deviceId))));
        for (const [i, d] of devs.entries()) {
          const [live] = await r.certificates({ deviceId: d.deviceId, status: ["live"] });
          const s = status[i]!;
          expect(s.ok && s.value.chain[0]!.equals(live!.der), d.deviceId).toBe(true);
        }
      } finally {
        await st.close();
      }
    });

    if (NIGHTS >= 1095) {
      // several renewals and a re-key of every device in three years
      expect(out.totals.renewed).toBeGreaterThan(3 * LOT);
      expect(out.totals.rekeyed).toBeGreaterThan(LOT);
      // renewals, re-keys and the rollover's waves: many nights with waves left, each converged
      expect(convergenceChecks).toBeGreaterThanOrEqual(10);
    }
  }, 3_600_000);
});
