import { readFileSync } from "node:fs";
import { join } from "node:path";
import { unknownCheckingProxy } from "@pulumi/policy";
import * as policyProxy from "@pulumi/policy/proxy";
import { describe, expect, it } from "vitest";
import { catalog } from "../../policies/checks/index";
import { evaluate } from "../../policies/engine";
import { contextFromResources, type ResourceLike } from "../../policies/pack/resources";

const DYN = "pulumi-nodejs:dynamic:Resource";
// the SDK's sentinels for values unknown during preview (exported at runtime, not in its typings)
const proxy = policyProxy as unknown as { unknownStringValue: unknown; unknownObjectValue: unknown };
const urn = (name: string) => `urn:pulumi:s::p::fleetguard:pki:CaHierarchy$${DYN}::${name}`;
const pem = readFileSync(join(__dirname, "fixtures/certs/issuing.pem"), "utf8");

/** As the policy SDK hands resources over: props behind its unknown-checking proxy. */
function res(name: string, props: Record<string, unknown>, dependencies: ResourceLike[] = []): ResourceLike {
  return { type: DYN, urn: urn(name), name, props: unknownCheckingProxy(props), dependencies };
}

describe("pack: resources to fleet context", () => {
  it("reads CAs during a preview (kind and outputs still unknown) and finds parents through dependencies", () => {
    const root = res("root", {
      kind: proxy.unknownStringValue,
      name: "root",
      role: "root",
      algorithm: "ecdsa-p384",
      validityDays: 7300,
      pathLen: 1,
      certificatePem: proxy.unknownStringValue,
    });
    const issuing = res(
      "issuing",
      {
        kind: proxy.unknownStringValue,
        name: "issuing",
        role: "issuing",
        algorithm: "ecdsa-p256",
        validityDays: 1825,
        pathLen: 0,
        issuer: proxy.unknownObjectValue,
        nameConstraints: { permittedDNS: ["devices.acme.example"] },
      },
      [root],
    );
    const { fleet, urns } = contextFromResources([root, issuing]);
    expect(fleet.declared.cas).toEqual([
      { name: "root", role: "root", algorithm: "ecdsa-p384", validityDays: 7300, pathLen: 1 },
      {
        name: "issuing",
        role: "issuing",
        parent: "root",
        algorithm: "ecdsa-p256",
        validityDays: 1825,
        pathLen: 0,
        nameConstraints: { permitted: ["devices.acme.example"] },
      },
    ]);
    expect(fleet.deployed!.certificates).toEqual([]);
    expect(urns.get("ca:issuing")).toBe(urn("issuing"));
  });

  it("reads CA outputs after an update (kind, issuerName, certificatePem) as declared and deployed", () => {
    const ca = res("issuing", {
      kind: "fleetguard:ca",
      name: "issuing",
      role: "issuing",
      algorithm: "ecdsa-p256",
      validityDays: 1825,
      pathLen: 0,
      issuerName: "root",
      certificatePem: pem,
      keyPem: proxy.unknownStringValue,
    });
    const { fleet, urns } = contextFromResources([ca]);
    expect(fleet.declared.cas![0]!.parent).toBe("root");
    expect(fleet.deployed!.certificates).toEqual([{ id: "issuing", role: "issuing", pem }]);
    expect(urns.get("cert:issuing")).toBe(urn("issuing"));
  });

  it("reads batches (declared object or flat), rotation, AWS and Azure declarations; ignores other resources", () => {
    const ca = res("issuing", {
      kind: "fleetguard:ca",
      name: "issuing",
      role: "issuing",
      algorithm: "ecdsa-p256",
      validityDays: 1825,
    });
    const batch = res(
      "gw",
      {
        kind: "fleetguard:batch",
        declared: {
          id: "gw-2026",
          identitySource: "injected",
          count: 100,
          hsmCounter: { limit: 100 },
          profile: { algorithm: "ecdsa-p256", validityDays: 3650 },
        },
        summary: proxy.unknownObjectValue,
      },
      [ca],
    );
    const rot = res("nightly", { kind: "fleetguard:rotation", batches: ["gw-2026"], waveFraction: 0.5 });
    const log = res("log", { kind: "fleetguard:aws-logging", enabled: false });
    const pol = res("pol", {
      kind: "fleetguard:aws-iot-policy",
      name: "dev",
      document: JSON.stringify({ Statement: [{ Effect: "Allow", Action: "iot:*", Resource: "*" }] }),
    });
    const grp = res("grp", { kind: "fleetguard:azure-enrollment-group", attestation: "symmetric-key" });
    const other = {
      type: "aws:s3/bucket:Bucket",
      urn: "urn:x",
      name: "b",
      props: unknownCheckingProxy({ bucket: "x" }),
    };
    const { fleet, urns } = contextFromResources([ca, batch, rot, log, pol, grp, other]);
    expect(fleet.declared.batches).toEqual([
      {
        id: "gw-2026",
        issuingCa: "issuing",
        identitySource: "injected",
        count: 100,
        hsmCounter: { limit: 100 },
        profile: { algorithm: "ecdsa-p256", validityDays: 3650 },
      },
    ]);
    expect(fleet.declared.rotation).toEqual([{ name: "nightly", batches: ["gw-2026"], waveFraction: 0.5 }]);
    expect(fleet.declared.hubs).toEqual({
      aws: {
        logging: { enabled: false },
        policies: [
          { name: "dev", document: { Statement: [{ Effect: "Allow", Action: "iot:*", Resource: "*" }] } },
        ],
      },
      azure: { enrollmentGroups: [{ name: "grp", attestation: "symmetric-key" }] },
    });
    // the same engine then names the check and the resource
    const ev = evaluate(
      { name: "p", spec: { validity: { maxDays: { device: 730 } }, rotation: { maxWaveFraction: 0.1 } } },
      fleet,
      { checks: catalog },
    );
    const f = ev.blocking.find((x) => x.checkId === "FG-CERT-001")!;
    expect(f.subject).toBe("batch:gw-2026");
    expect(urns.get(f.subject)).toBe(urn("gw"));
    expect(ev.advisory.map((x) => x.checkId)).toContain("FG-ROT-001");
  });
});
