/**
 * The reference fleet program: what a platform team's Pulumi program looks like. The demo
 * (`npm run demo`) runs it on the local file:// backend with embedded defaults.
 */
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { CaHierarchy } from "./components/CaHierarchy";
import { DeviceIdentityBatch } from "./components/DeviceIdentityBatch";
import { HubRegistration } from "./components/HubRegistration";

const DEMO_PASSPHRASE = "fleetguard-demo-passphrase-not-a-secret";
if (pulumi.getStack() !== "demo" && process.env.PULUMI_CONFIG_PASSPHRASE === DEMO_PASSPHRASE) {
  throw new Error(
    `stack '${pulumi.getStack()}': got the throwaway demo passphrase, want your own PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE (the demo one protects only the 'demo' stack)`,
  );
}

const config = new pulumi.Config("fleetguard");
const org = config.get("organization") ?? "Example Devices Ltd";
// one CRL folder for every CA and batch: each CA has one CRL with one cRLNumber sequence (docs/crl.md)
const crlDir = config.get("crlDir") ?? ".state/crl";

const pki = new CaHierarchy("fleet", {
  crlDir,
  // CA keys are made and kept in a key store sealed with the stack's passphrase: the state and
  // the engine's logs hold only references (docs/custody.md); `pkcs11` puts them in an HSM
  custody: { kind: "embedded", store: config.get("keyStore") ?? `.state/keys/${pulumi.getStack()}` },
  // the organisation baseline: a mandatory violation stops `pulumi preview` with the check id
  policy: path.join(__dirname, "policies", "baseline.yaml"),
  root: {
    name: "root",
    algorithm: "ecdsa-p384",
    subject: { commonName: "Example Fleet Root CA", organization: org, country: "DE" },
    validityDays: 3650,
    pathLen: 2,
    nameConstraints: { permittedDNS: ["devices.example.com"] },
    description: "offline root; key custody: the embedded key store (demo)",
  },
  intermediates: [
    {
      name: "manufacturing",
      algorithm: "ecdsa-p384",
      pathLen: 1,
      subject: { commonName: "Example Manufacturing CA", organization: org },
      validityDays: 1825,
      crlDistributionPoint: "http://pki.devices.example.com/crl/root.crl",
    },
  ],
  issuing: [
    {
      name: "line-a",
      algorithm: "ecdsa-p256",
      subject: { commonName: "Example Line A Issuing CA", organization: org, organizationalUnit: "Plant 1" },
      validityDays: 730,
      crlDistributionPoint: "http://pki.devices.example.com/crl/manufacturing.crl",
      crlIntervalHours: 24,
    },
  ],
});

// One production lot of line A: PUF-keyed fg100 sensors, enrolled through the device station
// (the emulated device farm that `npm run demo` starts) and recorded in the device registry.
const stationPort =
  config.getNumber("stationPort") ?? Number(process.env.FLEETGUARD_STATION_PORT ?? Number.NaN);
if (!Number.isInteger(stationPort)) {
  throw new Error(
    "fleetguard:stationPort: got nothing, want the device station's TCP port (config fleetguard:stationPort or FLEETGUARD_STATION_PORT; `npm run demo` starts a farm and sets it)",
  );
}
const lot = new DeviceIdentityBatch("line-a-lot-1", {
  model: "fg100",
  serials: { first: 0, count: config.getNumber("batchSize") ?? 1000 },
  identitySource: "puf",
  // the fuzzy extractor's computed key failure rate at a 20% bit-error corner (docs/puf.md)
  puf: { keyFailureRate: 7.9e-7 },
  issuingCa: pki.issuingCa("line-a"),
  profile: {
    subject: { organization: org, organizationalUnit: "Line A" },
    // inside the root's name constraints (permitted DNS: devices.example.com)
    sans: {
      dns: ["{deviceId}.devices.example.com"],
      uri: ["urn:example:device:{deviceId}"],
    },
    validityDays: 365,
    extKeyUsage: ["clientAuth"],
    crlUrls: ["http://pki.devices.example.com/crl/line-a.crl"],
  },
  station: { port: stationPort },
  registry: config.get("registry") ?? ".state/registry.db",
  crlDir,
  // a signed manifest (Trust&GO style) a hub registration can bulk-import
  manifestPath: config.get("manifestPath") ?? ".state/manifests/line-a-lot-1.json",
  policy: path.join(__dirname, "policies", "baseline.yaml"),
});

// The lot's devices registered with the embedded local MQTT hub (mutual TLS): `fleet hub serve
// --state .state/hub` serves what this writes; decommissioned or revoked devices are refused there
// in the same run. `kind: "aws"` or `kind: "azure"` register with AWS IoT Core or Azure DPS instead.
const hub = new HubRegistration("local-hub", {
  batches: [lot],
  hub: { kind: "local", stateDir: config.get("hubState") ?? ".state/hub" },
  policy: path.join(__dirname, "policies", "baseline.yaml"),
});

export const rootCertificatePem = pki.rootCertificatePem;
export const cas = pki.summary;
export const batch = lot.summary;
export const hubRegistration = hub.summary;
