/**
 * Device-certificate issuance throughput: fleetguard's DER template (core/x509 LeafTemplate)
 * against full per-certificate encoding, a generation library (@peculiar/x509) and the raw
 * bound (crypto.sign alone over a TBS of the same size), one thread, same run. A sample of
 * each method's output is checked with `openssl verify`.
 *
 *   npx tsx bench/x509-issue.ts [--count 20000] [--lib-count 1000]
 */
import "reflect-metadata";
import * as crypto from "node:crypto";
import * as os from "node:os";
import * as x509 from "@peculiar/x509";
import { issueCa } from "../core/ca";
import { encodeTbs, LeafTemplate, randomSerial, signTbs } from "../core/x509/cert";
import {
  authorityKeyIdentifier,
  basicConstraints,
  EKU,
  extKeyUsage,
  keyIdentifier,
  keyUsage,
  subjectAltName,
  subjectKeyIdentifier,
} from "../core/x509/ext";
import { spkiDer } from "../core/x509/keys";
import { encodeSubject } from "../core/x509/names";
import { parseCertificate } from "../core/x509/parse";
import { pemOne, toPem } from "../core/x509/pem";
import { verifyChain } from "../test/helpers/openssl";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const COUNT = arg("count", 20_000);
const LIB_COUNT = arg("lib-count", 1_000);

const root = issueCa({
  name: "root",
  role: "root",
  algorithm: "ecdsa-p256",
  subject: { commonName: "Bench Root" },
  validityDays: 3650,
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
const issKey = crypto.createPrivateKey(iss.keyPem);
const issParsed = parseCertificate(pemOne(iss.certificatePem, "CERTIFICATE", "iss"));
const notBefore = new Date(Date.now() - 60_000);
const notAfter = new Date(Date.now() + 365 * 86_400_000);

// device public keys prepared up front: issuance alone is measured
const keys = Array.from(
  { length: Math.max(COUNT, LIB_COUNT) },
  () => crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey,
);
const spkis = keys.map((k) => spkiDer(k));

function progress(label: string, i: number, n: number, t0: number) {
  if (i % 5000 !== 0 || i === 0) return;
  const rate = i / ((performance.now() - t0) / 1000);
  process.stderr.write(`  ${label}: ${i}/${n} ${rate.toFixed(0)}/s ETA ${((n - i) / rate).toFixed(1)}s\n`);
}

function measure(
  label: string,
  n: number,
  one: (i: number) => Buffer,
): { label: string; rate: number; sample: Buffer } {
  const t0 = performance.now();
  let last: Buffer = Buffer.alloc(0);
  for (let i = 0; i < n; i++) {
    last = one(i);
    progress(label, i, n, t0);
  }
  const rate = n / ((performance.now() - t0) / 1000);
  return { label, rate, sample: last };
}

function verify(der: Buffer): string {
  return verifyChain(root.certificatePem, iss.certificatePem, toPem("CERTIFICATE", der)).ok ? "OK" : "FAIL";
}

async function main() {
  const tpl = new LeafTemplate(
    {
      algorithm: "ecdsa-p256",
      key: issKey,
      subject: issParsed.subject,
      keyId: Buffer.from(iss.subjectKeyId, "hex"),
    },
    {
      organization: "Bench",
      notBefore,
      notAfter,
      keyUsage: ["digitalSignature"],
      extKeyUsage: [EKU.clientAuth],
    },
  );
  const name = (i: number) => `dev-${String(i).padStart(7, "0")}`;
  const san = (i: number) => ({ dns: [`${name(i)}.devices.example.com`] });

  const sampleTbs = tpl.tbs(randomSerial(), name(0), spkis[0]!, san(0));
  const bound = measure("raw bound: crypto.sign over a TBS", COUNT, () =>
    crypto.sign("sha256", sampleTbs, issKey),
  );
  const template = measure("fleetguard LeafTemplate (DER template + crypto.sign)", COUNT, (i) =>
    tpl.issue(randomSerial(), name(i), spkis[i]!, san(i)),
  );
  const full = measure("full DER encoding per certificate + crypto.sign", COUNT, (i) =>
    signTbs(
      encodeTbs(
        {
          serial: randomSerial(),
          issuer: issParsed.subject,
          subject: encodeSubject({ organization: "Bench", commonName: name(i) }),
          notBefore,
          notAfter,
          spki: spkis[i]!,
          extensions: [
            basicConstraints(false),
            keyUsage(["digitalSignature"]),
            extKeyUsage([EKU.clientAuth]),
            authorityKeyIdentifier(Buffer.from(iss.subjectKeyId, "hex")),
            subjectKeyIdentifier(keyIdentifier(spkis[i]!)),
            subjectAltName(san(i)),
          ],
        },
        "ecdsa-p256",
      ),
      "ecdsa-p256",
      issKey,
    ),
  );

  // library baseline: @peculiar/x509 over WebCrypto
  x509.cryptoProvider.set(crypto.webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const wIssKey = await crypto.webcrypto.subtle.importKey(
    "pkcs8",
    issKey.export({ type: "pkcs8", format: "der" }),
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["sign"],
  );
  const wPubs = await Promise.all(
    spkis
      .slice(0, LIB_COUNT)
      .map((s) =>
        crypto.webcrypto.subtle.importKey("spki", s, { name: "ECDSA", namedCurve: "P-256" }, true, [
          "verify",
        ]),
      ),
  );
  const issuerName = new crypto.X509Certificate(iss.certificatePem).subject.split("\n").reverse().join(", ");
  const t0 = performance.now();
  let libSample: Buffer = Buffer.alloc(0);
  for (let i = 0; i < LIB_COUNT; i++) {
    const c = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial().toString("hex"),
      subject: `O=Bench, CN=${name(i)}`,
      issuer: issuerName,
      notBefore,
      notAfter,
      signingAlgorithm: alg,
      publicKey: wPubs[i]!,
      signingKey: wIssKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([EKU.clientAuth]),
        new x509.AuthorityKeyIdentifierExtension(iss.subjectKeyId),
        await x509.SubjectKeyIdentifierExtension.create(wPubs[i]!),
        new x509.SubjectAlternativeNameExtension([{ type: "dns", value: san(i).dns[0]! }]),
      ],
    });
    libSample = Buffer.from(c.rawData);
    progress("@peculiar/x509", i, LIB_COUNT, t0);
  }
  const lib = {
    label: "@peculiar/x509 2.2.0 (library baseline, WebCrypto)",
    rate: LIB_COUNT / ((performance.now() - t0) / 1000),
    sample: libSample,
  };

  const rows = [bound, template, full, lib];
  console.log(`\n| method | certificates/s | vs. raw bound | vs. library | openssl verify of a sample |`);
  console.log(`|---|---|---|---|---|`);
  for (const r of rows) {
    const v = r === bound ? "n/a (signature only)" : verify(r.sample);
    console.log(
      `| ${r.label} | ${r.rate.toFixed(0)} | ${(r.rate / bound.rate).toFixed(2)} | ${(r.rate / lib.rate).toFixed(1)}x | ${v} |`,
    );
  }
  console.log(
    `\nN=${COUNT} (library: ${LIB_COUNT}); P-256 issuer; Node ${process.version}; ${os.cpus().length} cores ${os.cpus()[0]?.model}; load ${os
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(" ")}`,
  );
}

main();
