/**
 * The reference fleet program (index.ts, what `npm run demo` deploys) under the real engine:
 * it passes its own baseline policy, and refuses to protect a non-demo stack with the demo's
 * throwaway passphrase.
 */
import { afterAll, describe, expect, it } from "vitest";
import { PulumiStack, REPO } from "../helpers/pulumi";

const DEMO_PASSPHRASE = "fleetguard-demo-passphrase-not-a-secret";

describe("reference program", () => {
  const stacks: PulumiStack[] = [];
  afterAll(() => {
    for (const s of stacks) s.cleanup();
  });

  // stack names of their own: never touch a developer's Pulumi.demo.yaml
  it("previews cleanly: the declared hierarchy obeys policies/baseline.yaml", async () => {
    const s = new PulumiStack(REPO, "it-reference");
    stacks.push(s);
    await s.init();
    // a preview of a new batch does not contact the station; any port declares it
    s.env.FLEETGUARD_STATION_PORT = "7700";
    const ops = (await s.previewSteps()).map((x) => `${x.op} ${x.urn.split("::").pop()}`);
    expect(ops).toEqual(
      expect.arrayContaining([
        "create fleet-root",
        "create fleet-manufacturing",
        "create fleet-line-a",
        "create line-a-lot-1-lot",
      ]),
    );
  });

  it("says what it wants when the device station is not given", async () => {
    const s = new PulumiStack(REPO, "it-reference-nostation");
    stacks.push(s);
    await s.init();
    delete s.env.FLEETGUARD_STATION_PORT;
    const r = await s.run(["preview"], { allowFail: true });
    expect(r.status).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toMatch(
      /fleetguard:stationPort: got nothing, want the device station's TCP port/,
    );
  });

  it("refuses the throwaway demo passphrase on any other stack, naming what it wants", async () => {
    const s = new PulumiStack(REPO, "it-prod-eu", DEMO_PASSPHRASE);
    stacks.push(s);
    await s.init();
    const r = await s.run(["preview"], { allowFail: true });
    expect(r.status).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toMatch(
      /stack 'it-prod-eu': got the throwaway demo passphrase, want your own PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE/,
    );
  });
});
