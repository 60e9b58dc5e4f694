/**
 * RotationSchedule's resource graph with Pulumi mocks (the engine runs it in
 * test/integration/rotation.test.ts): one dynamic resource per governed batch, named by batch,
 * carrying the batch's station, registry and CA custody and the schedule checked against the
 * policy; the clock from the `now` input or config; bad input naming the field.
 */
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it } from "vitest";
import { CaHierarchy } from "../../components/CaHierarchy";
import { DeviceIdentityBatch } from "../../components/DeviceIdentityBatch";
import { RotationSchedule, shapeSchedule } from "../../components/RotationSchedule";
import { loadPolicyFile } from "../../policies/engine";

type Registered = { type: string; name: string; inputs: Record<string, unknown> };
const registered: Registered[] = [];
const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const isSecret = (v: unknown) => !!v && typeof v === "object" && SECRET_SIG in (v as object);
function unwrap(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(unwrap);
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (SECRET_SIG in o) return unwrap(o.value);
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, unwrap(x)]));
  }
  return v;
}

beforeAll(() => {
  pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        const state: Record<string, unknown> = { ...args.inputs };
        if (args.type === "pulumi-nodejs:dynamic:Resource" && args.inputs.kind !== "fleetguard:rotation")
          Object.assign(state, {
            certificatePem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
            chainPem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
            keyRef: { custody: "embedded", location: "x", keyId: "k", publicKeySha256: "0".repeat(64) },
            fingerprintSha256: "ab".repeat(32),
          });
        if (args.inputs.kind === "fleetguard:rotation")
          Object.assign(state, {
            plan: { batch: "x", renew: 0, rekey: 0, resume: 0, waves: 0, waveSize: 1 },
          });
        return { id: `${args.name}-id`, state };
      },
      call(args) {
        return args.inputs;
      },
    },
    "fleet",
    "unit",
    false,
  );
});

const POLICY = path.join(__dirname, "..", "..", "policies", "baseline.yaml");

function fleet(prefix: string) {
  const pki = new CaHierarchy(`${prefix}-pki`, {
    root: {
      name: "root",
      algorithm: "ecdsa-p256",
      subject: { commonName: "R" },
      validityDays: 3650,
      pathLen: 1,
    },
    issuing: [{ name: "line", algorithm: "ecdsa-p256", subject: { commonName: "L" }, validityDays: 730 }],
  });
  const lot = (name: string) =>
    new DeviceIdentityBatch(`${prefix}-${name}`, {
      name,
      model: "fg100",
      serials: { count: 10 },
      identitySource: "puf",
      issuingCa: pki.issuingCa("line"),
      station: { port: 7000 },
      registry: "fleet.db",
      crlDir: "crl",
    });
  return { a: lot("lot-a"), b: lot("lot-b") };
}

const rotations = (prefix: string) =>
  registered.filter((r) => r.name.startsWith(prefix) && r.inputs.kind === "fleetguard:rotation");
async function settle(prefix: string, n: number): Promise<void> {
  for (let i = 0; i < 100 && rotations(prefix).length < n; i++) await new Promise((r) => setTimeout(r, 50));
}

describe("RotationSchedule (mocks)", () => {
  it("one dynamic resource per batch, named by batch, with the batch's station, registry and CA custody (secret)", async () => {
    const { a, b } = fleet("s");
    new RotationSchedule("s-nightly", {
      batches: [a, b],
      renewBeforeDays: 60,
      maxFailureFraction: 0.02,
      maintenanceWindow: "01:00-05:00",
      now: "2027-06-01T02:00:00Z",
      policy: POLICY,
    });
    await settle("s-nightly", 2);
    const rs = rotations("s-nightly");
    console.log(registered.map((r) => `${r.type} ${r.name} ${r.inputs.kind}`).join("\n"));
    expect(rs.map((r) => r.name).sort()).toEqual(["s-nightly-lot-a", "s-nightly-lot-b"]);
    const r = rs.find((x) => x.name === "s-nightly-lot-a")!;
    expect(r.type).toBe("pulumi-nodejs:dynamic:Resource");
    expect(r.inputs).toMatchObject({
      schedule: "s-nightly",
      now: "2027-06-01T02:00:00Z",
      rotation: {
        renewBeforeDays: 60,
        maxKeyAgeDays: 1095, // the policy's renewal.maxKeyAgeDays
        maxWaveFraction: 0.25, // the policy's rotation.maxWaveFraction
        maxFailureFraction: 0.02,
        maintenanceWindow: "01:00-05:00",
      },
      bounds: { policy: "baseline", deviceWindowDays: 30 },
    });
    expect(isSecret(r.inputs.batch)).toBe(true);
    expect(unwrap(r.inputs.batch)).toMatchObject({
      name: "lot-a",
      model: "fg100",
      count: 10,
      station: { host: "127.0.0.1", port: 7000 },
      registry: "fleet.db",
      crlDir: "crl",
      issuerKeyRef: { custody: "embedded" },
    });
  });

  it("the clock comes from config fleetguard:now when the program sets none", async () => {
    pulumi.runtime.setAllConfig({ "fleetguard:now": "2028-01-01T00:00:00Z" });
    try {
      const { a } = fleet("c");
      new RotationSchedule("c-nightly", { batches: [a] });
      await settle("c-nightly", 1);
      expect(rotations("c-nightly")[0]!.inputs).toMatchObject({
        now: "2028-01-01T00:00:00Z",
        rotation: { renewAtFraction: 2 / 3, maxWaveFraction: 0.25, maxFailureFraction: 0.05 },
      });
    } finally {
      pulumi.runtime.setAllConfig({});
    }
  });

  it("checks the schedule against the policy, naming the field", () => {
    const policy = loadPolicyFile(POLICY);
    const { a } = fleet("p");
    expect(() => shapeSchedule("n", { batches: [a], maxWaveFraction: 0.5 }, policy)).toThrow(
      "maxWaveFraction: got 0.5, want at most 0.25 (policy 'baseline' rotation.maxWaveFraction)",
    );
    expect(() => shapeSchedule("n", { batches: [a], renewBeforeDays: 7 }, policy)).toThrow(
      "renewBeforeDays: got 7, want at least 30 (policy 'baseline' renewal.deviceWindowDays)",
    );
    expect(() => shapeSchedule("n", { batches: [a], maxKeyAgeDays: 2000 }, policy)).toThrow(
      "maxKeyAgeDays: got 2000, want at most 1095 (policy 'baseline' renewal.maxKeyAgeDays)",
    );
    expect(() => shapeSchedule("n", { batches: [] })).toThrow(/batches: got/);
    expect(() => shapeSchedule("n", { batches: [a, a] })).toThrow(
      /batches: got "lot-a", want each batch once/,
    );
    expect(() => shapeSchedule("n", { batches: [a], maintenanceWindow: "1-5" })).toThrow(
      /maintenanceWindow: got/,
    );
    expect(() => shapeSchedule("n", { batches: [a], bakeHours: -2 })).toThrow(
      /^bakeHours: got -2, want a number of hours in \[0, 8760\] between waves \(0: no bake\), e\.g\. 20$/,
    );
    // the bake reaches the provider when declared; left out (the default, 20 h) it is not in the inputs
    expect(shapeSchedule("n", { batches: [a], bakeHours: 6 }).rotation.bakeHours).toBe(6);
    expect("bakeHours" in shapeSchedule("n", { batches: [a] }).rotation).toBe(false);
    expect(shapeSchedule("n", { batches: [a], renewBeforeDays: 45 }, policy).declared).toEqual({
      name: "n",
      batches: ["lot-a"],
      waveFraction: 0.25,
      renewBeforeDays: 45,
      rekeyAfterDays: 1095,
    });
  });

  it("a declaration the policy refuses stops the program with the component and field named", () => {
    const { a } = fleet("e");
    expect(
      () => new RotationSchedule("e-nightly", { batches: [a], maxWaveFraction: 0.9, policy: POLICY }),
    ).toThrow(
      "RotationSchedule 'e-nightly': maxWaveFraction: got 0.9, want at most 0.25 (policy 'baseline' rotation.maxWaveFraction)",
    );
  });
});
