/**
 * Acme's sensor fleet: one CA hierarchy and one production lot of PUF-keyed sensors, declared
 * with fleetguard's components and checked against this repository's own policy
 * (policies/sensors.yaml, which tightens the organisation baseline it extends).
 *
 *   pulumi config set stationPort 7070   # the device station of the production line
 *   pulumi up
 */
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { CaHierarchy, DeviceIdentityBatch } from "fleetguard";

const config = new pulumi.Config();
const policy = path.join(__dirname, "policies", "sensors.yaml");

// one CRL folder for the CAs and the batch: each CA has one CRL with one cRLNumber sequence
const crlDir = config.get("crlDir") ?? ".fleetguard/crl";
const pki = new CaHierarchy("acme", {
  crlDir,
  // the embedded key store under .fleetguard/keys, sealed with the stack's passphrase;
  // `{ kind: "pkcs11", uri }` puts the keys in an HSM
  custody: { kind: "embedded", store: `.fleetguard/keys/${pulumi.getStack()}` },
  policy,
  root: {
    name: "root",
    algorithm: "ecdsa-p384",
    subject: { commonName: "Acme Fleet Root CA", organization: "Acme Sensors GmbH", country: "DE" },
    validityDays: 3650,
    pathLen: 1,
  },
  issuing: [
    {
      name: "plant-1",
      algorithm: "ecdsa-p256",
      subject: { commonName: "Acme Plant 1 Issuing CA", organization: "Acme Sensors GmbH" },
      validityDays: 730,
      crlIntervalHours: 24,
    },
  ],
});

const lot = new DeviceIdentityBatch("plant-1-lot-1", {
  model: "fg100",
  serials: { first: 0, count: config.getNumber("lotSize") ?? 20 },
  identitySource: "puf",
  puf: { keyFailureRate: 7.9e-7 },
  issuingCa: pki.issuingCa("plant-1"),
  profile: {
    subject: { organization: "Acme Sensors GmbH", organizationalUnit: "Plant 1" },
    validityDays: 365,
    extKeyUsage: ["clientAuth"],
  },
  station: { port: config.requireNumber("stationPort") },
  registry: config.get("registry") ?? ".fleetguard/registry.db",
  crlDir,
  manifestPath: config.get("manifestPath") ?? ".fleetguard/manifests/plant-1-lot-1.json",
  policy,
});

export const cas = pki.summary;
export const batch = lot.summary;
