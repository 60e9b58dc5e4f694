/**
 * Cost per device of the certificate-name checks (issue 9, finding 7): a profile's expansion for
 * one device (deviceNames, the batch's templates checked once and reused) against the plain
 * expansion that checked nothing and against a full RFC 5280 check of every device's names; then
 * the name-constraint check the certificate template runs before each signature, and the whole
 * guarded issue against the unguarded LeafTemplate (the signature dominates both).
 *
 *   npx tsx bench/profile-names.ts [--count 100000]
 */
import * as crypto from "node:crypto";
import { issueCa } from "../core/ca";
import { compileTemplate, deviceNames, resolveProfile } from "../core/enroll/profile";
import { LeafTemplate, randomSerial } from "../core/x509/cert";
import { EKU, keyIdentifier } from "../core/x509/ext";
import { loadPrivateKey, spkiDer } from "../core/x509/keys";
import { parseCertificate, subjectKeyIdOf } from "../core/x509/parse";
import { pemBlocks } from "../core/x509/pem";
import {
  chainNameConstraints,
  checkDirectoryString,
  checkDnsName,
  checkNameConstraints,
  checkUri,
} from "../core/x509/validate-names";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const COUNT = arg("count", 100_000);
const SIGN_COUNT = Math.min(COUNT, 20_000);
const ROUNDS = 5;

const declared = {
  subject: { organization: "Acme GmbH", organizationalUnit: "Sensors", commonName: "{deviceId}" },
  sans: {
    dns: ["{deviceId}.devices.example.com"],
    uri: ["urn:acme:device:{deviceId}", "spiffe://devices.example.com/lot-1/{deviceId}"],
  },
};
const profile = resolveProfile(declared);
const MODEL = "fg100";
const BATCH = "lot-1";
const ids = Array.from({ length: COUNT }, (_, i) => `${MODEL}-${String(i).padStart(7, "0")}`);

const root = issueCa({
  name: "root",
  role: "root",
  algorithm: "ecdsa-p256",
  subject: { commonName: "Bench Root" },
  validityDays: 3650,
  nameConstraints: { permittedDNS: ["devices.example.com"], excludedDNS: ["lab.devices.example.com"] },
});
const iss = issueCa(
  {
    name: "iss",
    role: "issuing",
    algorithm: "ecdsa-p256",
    subject: { commonName: "Bench Issuing" },
    validityDays: 730,
  },
  { name: "root", ...root },
);
const chain = pemBlocks(iss.chainPem, "CERTIFICATE", "chain");
const key = loadPrivateKey(iss.keyPem, "key");
const issuer = { certificate: chain[0]!, chain: chain.slice(1), key, fingerprint: "bench" };
const constraints = chainNameConstraints([issuer.certificate, ...issuer.chain]);

/**
 * Median over ROUNDS of the CPU microseconds (user + system) per call of `one` over `n` items:
 * CPU time, not wall time, since this machine is shared and a busy neighbour only stretches
 * the wall clock.
 */
function usPer(n: number, one: (i: number) => unknown): number {
  const times: number[] = [];
  let sink = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.cpuUsage();
    for (let i = 0; i < n; i++) if (one(i)) sink++;
    const d = process.cpuUsage(t0);
    times.push((d.user + d.system) / n);
  }
  if (sink < 0) console.log(sink);
  return times.sort((a, b) => a - b)[Math.floor(ROUNDS / 2)]!;
}

const fill = (t: string, id: string) =>
  t.replace(/\{(\w+)\}/g, (_, k: string) => (k === "deviceId" ? id : k === "batch" ? BATCH : MODEL));

const plain = usPer(COUNT, (i) => {
  const id = ids[i]!;
  return [
    fill(declared.subject.commonName, id),
    ...declared.sans.dns.map((d) => fill(d, id)),
    ...declared.sans.uri.map((u) => fill(u, id)),
  ];
});
const planned = usPer(COUNT, (i) => deviceNames(profile, ids[i]!, BATCH, MODEL));
const full = usPer(COUNT, (i) => {
  const id = ids[i]!;
  return [
    checkDirectoryString(fill(declared.subject.commonName, id), "cn", 64),
    ...declared.sans.dns.map((d) => checkDnsName(fill(d, id), "dns")),
    ...declared.sans.uri.map((u) => checkUri(fill(u, id), "uri")),
  ];
});
const names = ids.map((id) => deviceNames(profile, id, BATCH, MODEL));
const fields = { dns: "dns", uri: "uri", commonName: "cn" };
const hosts = [undefined, "devices.example.com"];
const nc = usPer(COUNT, (i) => {
  const n = names[i]!;
  checkNameConstraints(
    { dns: n.san.dns, uris: n.san.uri, hosts, commonName: n.commonName, fields },
    constraints,
  );
  return n;
});

// the guard inside the template, against the bare LeafTemplate, over the same devices and keys
const spkis = Array.from({ length: 256 }, () =>
  spkiDer(crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey),
);
const guarded = compileTemplate(profile, issuer, new Date());
const c = parseCertificate(issuer.certificate);
const bare = new LeafTemplate(
  { algorithm: "ecdsa-p256", key, subject: c.subject, keyId: subjectKeyIdOf(c) ?? keyIdentifier(c.spki) },
  {
    organization: declared.subject.organization,
    organizationalUnit: declared.subject.organizationalUnit,
    notBefore: guarded.notBefore,
    notAfter: guarded.notAfter,
    keyUsage: ["digitalSignature"],
    extKeyUsage: [EKU.clientAuth],
  },
);
const serial = randomSerial();
const issueBare = usPer(SIGN_COUNT, (i) =>
  bare.issue(serial, names[i]!.commonName, spkis[i & 255]!, names[i]!.san),
);
const issueGuarded = usPer(SIGN_COUNT, (i) =>
  guarded.issue(serial, names[i]!.commonName, spkis[i & 255]!, names[i]!.san),
);

const f = (x: number) => x.toFixed(2).padStart(8);
console.log(
  `profile: CN, O, OU, 1 DNS and 2 URI SANs; chain with DNS name constraints; ${COUNT} devices, CPU time, median of ${ROUNDS}`,
);
console.log(`  plain expansion, no checks (before)      ${f(plain)} us/device`);
console.log(`  deviceNames (checked once per batch)     ${f(planned)} us/device`);
console.log(`  full RFC 5280 check of every device      ${f(full)} us/device`);
console.log(`  name constraints per certificate         ${f(nc)} us/device`);
console.log(`  issue, bare LeafTemplate (${SIGN_COUNT})         ${f(issueBare)} us/device`);
console.log(`  issue, guarded template (${SIGN_COUNT})          ${f(issueGuarded)} us/device`);
console.log(
  `  => names + checks: ${(planned + nc).toFixed(2)} us/device; ${(((planned + nc) * 100_000) / 1e6).toFixed(3)} s for 100k devices`,
);
