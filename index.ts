/**
 * The reference fleet program: what a platform team's Pulumi program looks like. The demo
 * (`npm run demo`) runs it on the local file:// backend with embedded defaults.
 */
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { CaHierarchy } from "./components/CaHierarchy";

const DEMO_PASSPHRASE = "fleetguard-demo-passphrase-not-a-secret";
if (pulumi.getStack() !== "demo" && process.env.PULUMI_CONFIG_PASSPHRASE === DEMO_PASSPHRASE) {
  throw new Error(
    `stack '${pulumi.getStack()}': got the throwaway demo passphrase, want your own PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE (the demo one protects only the 'demo' stack)`,
  );
}

const config = new pulumi.Config("fleetguard");
const org = config.get("organization") ?? "Example Devices Ltd";

const pki = new CaHierarchy("fleet", {
  // the organisation baseline: a mandatory violation stops `pulumi preview` with the check id
  policy: path.join(__dirname, "policies", "baseline.yaml"),
  root: {
    name: "root",
    algorithm: "ecdsa-p384",
    subject: { commonName: "Example Fleet Root CA", organization: org, country: "DE" },
    validityDays: 3650,
    pathLen: 2,
    nameConstraints: { permittedDNS: ["devices.example.com"] },
    description: "offline root; key custody: Pulumi secret (demo)",
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

export const rootCertificatePem = pki.rootCertificatePem;
export const cas = pki.summary;
