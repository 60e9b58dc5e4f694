/**
 * Issuance speed through each CA key custody, one thread: device certificates per second by the
 * enrollment's own path (core/enroll/profile resolveProfile + compileTemplate, a core/x509
 * LeafTemplate) and CRLs per second (core/x509 buildCrl), signing with
 *   (1) a private KeyObject in memory: what the embedded key store and the pulumi-secret custody
 *       both hand the provider once the key is opened;
 *   (2) a PKCS#11 ExternalSigner (core/custody/pkcs11) on a SoftHSM2 token: every signature is a
 *       C_SignInit + C_Sign into the token, hashing in software for ECDSA.
 * Beside each, the raw signature rate of the same key (crypto.sign, or signer.sign) over the first
 * certificate's TBS. Device public keys are made up front, so issuance alone is measured. Rates
 * are per CPU-second of this process (SoftHSM2 runs inside it) and per wall second; on a shared
 * machine the first is the one to compare. A sample of each run's certificates and its CRL are
 * checked with OpenSSL.
 *
 *   bash scripts/ensure-softhsm && npx tsx bench/custody.ts [--count 5000] [--rsa-count 500]
 *     [--crl-count 200] [--crl-entries 1000] [--algs ecdsa-p256,ecdsa-p384,ed25519,rsa-3072]
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { closePkcs11, generatePkcs11Key, openPkcs11Signer } from "../core/custody/pkcs11";
import { compileTemplate, deviceNames, resolveProfile } from "../core/enroll/profile";
import { encodeTbs, randomSerial, signTbs } from "../core/x509/cert";
import { buildCrl, type RevokedEntry } from "../core/x509/crl";
import { children, read, whole } from "../core/x509/der";
import {
  authorityKeyIdentifier,
  basicConstraints,
  keyIdentifier,
  keyUsage,
  subjectKeyIdentifier,
} from "../core/x509/ext";
import {
  generateKey,
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  publicKeyOf,
  type SigningKey,
  signWith,
  spkiDer,
} from "../core/x509/keys";
import { encodeSubject } from "../core/x509/names";
import { toPem } from "../core/x509/pem";
import { openssl, tmpdir } from "../test/helpers/openssl";
import { softToken } from "../test/helpers/softhsm";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const COUNT = Number(arg("count", "5000"));
const RSA_COUNT = Number(arg("rsa-count", "500"));
const CRL_COUNT = Number(arg("crl-count", "200"));
const CRL_ENTRIES = Number(arg("crl-entries", "1000"));
const ALGS = arg("algs", "ecdsa-p256,ecdsa-p384,ed25519,rsa-3072").split(",") as KeyAlgorithm[];
for (const a of ALGS) if (!KEY_ALGORITHMS.includes(a)) throw new Error(`--algs: unknown ${a}`);

interface Rate {
  /** per second of wall time */
  wall: number;
  /** per second of this process's CPU time (user + system): steadier on a shared machine, and
   * SoftHSM2 runs inside the process, so its work is counted too */
  cpu: number;
}

function rate(n: number, one: (i: number) => void): Rate {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) one(i);
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { wall: n / wall, cpu: n / ((c.user + c.system) / 1e6) };
}

/** A self-signed issuing CA certificate for `key` (the bench needs a real issuer to verify under). */
function caCert(alg: KeyAlgorithm, key: SigningKey): Buffer {
  const spki = spkiDer(publicKeyOf(key));
  const kid = keyIdentifier(spki);
  const subject = encodeSubject({ commonName: `Bench ${alg}`, organization: "fleetguard bench" });
  return signTbs(
    encodeTbs(
      {
        serial: randomSerial(),
        issuer: subject,
        subject,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 30 * 86_400_000),
        spki,
        extensions: [
          basicConstraints(true, 0),
          keyUsage(["digitalSignature", "keyCertSign", "cRLSign"]),
          subjectKeyIdentifier(kid),
          authorityKeyIdentifier(kid),
        ],
      },
      alg,
    ),
    alg,
    key,
  );
}

interface Row {
  alg: KeyAlgorithm;
  custody: string;
  certs: Rate;
  raw: Rate;
  crls: Rate;
  verified: string;
}

function run(alg: KeyAlgorithm, custody: string, key: SigningKey, spkis: Buffer[], n: number): Row {
  const cert = caCert(alg, key);
  const profile = resolveProfile({
    subject: { organization: "fleetguard bench" },
    sans: { uri: ["urn:fleetguard:device:{deviceId}"] },
  });
  const tpl = compileTemplate(profile, { certificate: cert, key, chain: [], fingerprint: "" }, new Date());
  const names = spkis
    .slice(0, n)
    .map((_, i) => deviceNames(profile, `BENCH-${String(i).padStart(7, "0")}`, "b1", "m1"));
  const out: Buffer[] = [];
  const certs = rate(n, (i) => {
    const d = names[i]!;
    const der = tpl.issue(randomSerial(), d.commonName, spkis[i]!, { uri: d.san.uri });
    if (i % Math.max(1, Math.floor(n / 50)) === 0) out.push(der);
  });
  const first = out[0]!;
  const sampleTbs = whole(first, children(first, read(first))[0]!);
  const raw = rate(n, () => signWith(alg, key, sampleTbs));
  const revoked: RevokedEntry[] = Array.from({ length: CRL_ENTRIES }, () => ({
    serialHex: randomSerial().toString("hex"),
    revokedAt: new Date(),
    reason: "keyCompromise",
  }));
  const caPem = toPem("CERTIFICATE", cert);
  const crlAt = (i: number) =>
    buildCrl({
      issuerName: encodeSubject({ commonName: `Bench ${alg}`, organization: "fleetguard bench" }),
      issuerKeyId: keyIdentifier(spkiDer(publicKeyOf(key))),
      signer: alg,
      key,
      thisUpdate: new Date(Date.now() - 60_000),
      nextUpdate: new Date(Date.now() + 86_400_000),
      crlNumber: i + 1,
      revoked,
    });
  let crl: Buffer = Buffer.alloc(0);
  const crls = rate(Math.min(CRL_COUNT, n), (i) => {
    crl = crlAt(i);
  });
  const dir = tmpdir("fleetguard-bench-");
  fs.writeFileSync(path.join(dir, "ca.pem"), caPem);
  const files = out.map((der, i) => {
    const f = path.join(dir, `leaf${i}.pem`);
    fs.writeFileSync(f, toPem("CERTIFICATE", der));
    return f;
  });
  const v = openssl(["verify", "-x509_strict", "-CAfile", path.join(dir, "ca.pem"), ...files]);
  const ok = (v.out.match(/: OK$/gm) ?? []).length;
  if (ok !== out.length) process.stderr.write(`  openssl verify said:\n${v.out}\n`);
  fs.writeFileSync(path.join(dir, "crl.pem"), toPem("X509 CRL", crl));
  const crlOk = /verify OK/.test(
    openssl(["crl", "-in", path.join(dir, "crl.pem"), "-CAfile", path.join(dir, "ca.pem"), "-noout"]).out,
  );
  fs.rmSync(dir, { recursive: true, force: true });
  const row = {
    alg,
    custody,
    certs,
    raw,
    crls,
    verified: `${ok}/${out.length} certs, CRL ${crlOk ? "OK" : "FAIL"}`,
  };
  process.stderr.write(
    `  ${alg} ${custody}: ${certs.cpu.toFixed(0)} certs/CPU-s, ${crls.cpu.toFixed(1)} CRLs/CPU-s\n`,
  );
  return row;
}

function main() {
  const softhsm = (() => {
    try {
      return execFileSync("softhsm2-util", ["--version"], { encoding: "utf8" }).trim();
    } catch {
      return "absent";
    }
  })();
  const cpu = os.cpus()[0]?.model ?? "unknown cpu";
  const machine =
    `${os.availableParallelism()} cores (${cpu}), node ${process.version}, OpenSSL ${process.versions.openssl}, ` +
    `SoftHSM ${softhsm}, load ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`;
  process.stderr.write(`custody bench: ${machine}\n`);
  const max = Math.max(COUNT, RSA_COUNT);
  const spkis = Array.from({ length: max }, () => spkiDer(generateKey("ecdsa-p256").publicKey));
  const token = softToken("bench");
  const rows: Row[] = [];
  try {
    for (const alg of ALGS) {
      const n = alg === "rsa-3072" ? RSA_COUNT : COUNT;
      rows.push(
        run(alg, "KeyObject in memory (embedded, pulumi-secret)", generateKey(alg).privateKey, spkis, n),
      );
      const g = generatePkcs11Key(token.keyUri(`bench-${alg}`), alg);
      rows.push(run(alg, "PKCS#11 on SoftHSM2", openPkcs11Signer(g.uri, alg), spkis, n));
    }
  } finally {
    closePkcs11();
    token.cleanup();
  }
  const f0 = (x: number) => x.toLocaleString("en-US", { maximumFractionDigits: 0 });
  const f1 = (x: number) => x.toLocaleString("en-US", { maximumFractionDigits: 1 });
  console.log(`Machine: ${machine}; ${new Date().toISOString().slice(0, 16)}Z`);
  console.log(
    `Counts: ${COUNT} device certificates per row (${RSA_COUNT} for rsa-3072), ` +
      `${CRL_COUNT} CRLs of ${CRL_ENTRIES} entries; one thread.\n`,
  );
  console.log(
    "| CA key | custody | device certs per CPU-s (wall) | raw signatures per CPU-s (wall) | CRLs per CPU-s (wall) | OpenSSL |",
  );
  console.log("|---|---|---|---|---|---|");
  const both = (r: Rate, f: (x: number) => string) => `${f(r.cpu)} (${f(r.wall)})`;
  for (const r of rows)
    console.log(
      `| ${r.alg} | ${r.custody} | ${both(r.certs, f0)} | ${both(r.raw, f0)} | ${both(r.crls, f1)} | ${r.verified} |`,
    );
  const ratio = ALGS.map((a) => {
    const [mem, hsm] = rows.filter((r) => r.alg === a);
    return `${a} ${(hsm!.certs.cpu / mem!.certs.cpu).toFixed(2)}x`;
  });
  console.log(`\nPKCS#11 / in-memory issuance (per CPU-s): ${ratio.join(", ")}`);
}

main();
