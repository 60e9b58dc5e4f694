/**
 * A review sees a program's hub registrations as `up` deploys them (brief, rule 5): the AWS device
 * policy HubRegistration generates is the one FG-HUB-001/002 evaluate, and a refusal the
 * component's construction would raise at `up` is reported by the review.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runProgramWithMocks } from "../../policies/declared";
import { ROOT } from "./policy-helpers";

const dir = mkdtempSync(join(tmpdir(), "fleet-review-hubs-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function program(minLogLevel: string): void {
  writeFileSync(join(dir, "Pulumi.yaml"), "name: hubs-review\nruntime: nodejs\nmain: index.ts\n");
  writeFileSync(
    join(dir, "index.ts"),
    `import { CaHierarchy } from ${JSON.stringify(join(ROOT, "components/CaHierarchy"))};
import { DeviceIdentityBatch } from ${JSON.stringify(join(ROOT, "components/DeviceIdentityBatch"))};
import { HubRegistration } from ${JSON.stringify(join(ROOT, "components/HubRegistration"))};
const pki = new CaHierarchy("pki", {
  root: { name: "root", algorithm: "ecdsa-p256", subject: { commonName: "R" }, validityDays: 3650, pathLen: 1 },
  issuing: [{ name: "line", algorithm: "ecdsa-p256", subject: { commonName: "L" }, validityDays: 730 }],
});
const lot = new DeviceIdentityBatch("lot", {
  model: "fg100", serials: { count: 10 }, identitySource: "puf", issuingCa: pki.issuingCa("line"), station: { port: 7000 },
});
new HubRegistration("prod", {
  batches: [lot],
  hub: { kind: "aws", region: "eu-central-1", topicPrefix: "plant" },
  policy: { name: "hubs", spec: { hubs: { aws: { minLogLevel: ${JSON.stringify(minLogLevel)} } }, enforcement: { "FG-HUB-003": "mandatory" } } },
});
`,
  );
}

describe("a review of a program with a HubRegistration", () => {
  it("declares the AWS hub's generated device policy, scoped to the thing", () => {
    program("DISABLED");
    const r = runProgramWithMocks({ dir });
    expect(r.errors).toEqual([]);
    expect(r.refusals).toEqual([]);
    const p = r.declared.hubs?.aws?.policies?.[0];
    expect(p?.name).toBe("prod-devices");
    expect(JSON.stringify(p?.document)).toContain("plant/${iot:Connection.Thing.ThingName}");
    expect(r.components.map((c) => c.component)).toContain("HubRegistration");
  }, 120_000);

  it("reports the refusal `up` would stop with (hub logging required by the policy)", () => {
    program("INFO");
    const r = runProgramWithMocks({ dir });
    expect(r.refusals).toEqual([
      expect.objectContaining({
        component: "HubRegistration",
        name: "prod",
        message: expect.stringMatching(/FG-HUB-003/),
      }),
    ]);
  }, 120_000);
});
