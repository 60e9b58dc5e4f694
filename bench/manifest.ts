/**
 * Signed manifest throughput (core/manifest), one thread: sign N device entries and stream them
 * to a file, read the file back and verify every entry; beside each, the raw bound measured in
 * the same run on the very same bytes (crypto.sign / crypto.verify over each entry's JWS
 * signing input with a ready KeyObject). Devices get fresh P-256 keys and certificates from a
 * test CA first (not timed). Progress and ETA go to stderr.
 *
 *   npx tsx bench/manifest.ts [--count 100000]
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { issueCa } from "../core/ca";
import {
  createManifestSigner,
  createManifestVerifier,
  type DeviceManifestInput,
  ManifestDigest,
  readManifest,
  verifyManifestStream,
  writeManifest,
} from "../core/manifest";
import { LeafTemplate, randomSerial } from "../core/x509/cert";
import { EKU } from "../core/x509/ext";
import { spkiDer } from "../core/x509/keys";
import { parseCertificate } from "../core/x509/parse";
import { pemOne } from "../core/x509/pem";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const COUNT = arg("count", 100_000);
const BATCH = 10_000;

let peakRss = 0;
const sampleRss = () => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
};

function progress(label: string, i: number, n: number, t0: number) {
  // process.memoryUsage() reads /proc: sampling it per entry would cost more than signing
  if (i % 1_000 === 0) sampleRss();
  if (i % 10_000 !== 0 || i === 0) return;
  const rate = i / ((performance.now() - t0) / 1000);
  process.stderr.write(`  ${label}: ${i}/${n} ${rate.toFixed(0)}/s ETA ${((n - i) / rate).toFixed(1)}s\n`);
}

async function main() {
  const root = issueCa({
    name: "root",
    role: "root",
    algorithm: "ecdsa-p256",
    subject: { commonName: "Bench Root" },
    validityDays: 3650,
  });
  const under = (name: string, commonName: string) =>
    issueCa(
      { name, role: "issuing", algorithm: "ecdsa-p256", subject: { commonName }, validityDays: 730 },
      { name: "root", ...root },
    );
  const devCa = under("devices", "Bench Devices");
  const manCa = under("manifests", "Bench Manifests");
  const devCaDer = pemOne(devCa.certificatePem, "CERTIFICATE", "devCa");
  const tpl = new LeafTemplate(
    {
      algorithm: "ecdsa-p256",
      key: crypto.createPrivateKey(devCa.keyPem),
      subject: parseCertificate(devCaDer).subject,
      keyId: Buffer.from(devCa.subjectKeyId, "hex"),
    },
    {
      organization: "Bench",
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 365 * 86_400_000),
      keyUsage: ["digitalSignature"],
      extKeyUsage: [EKU.clientAuth],
    },
  );

  process.stderr.write(`preparing ${COUNT} devices (P-256 keys + certificates, not timed)\n`);
  const devices: DeviceManifestInput[] = [];
  let t0 = performance.now();
  const issuedAt = new Date();
  for (let i = 0; i < COUNT; i++) {
    const spki = spkiDer(crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey);
    const id = `dev-${String(i).padStart(7, "0")}`;
    devices.push({
      deviceId: id,
      model: "BENCH-SENSOR-1",
      batch: "LOT-BENCH",
      publicKeySpki: spki,
      chain: [tpl.issue(randomSerial(), id, spki), devCaDer],
      issuedAt,
    });
    progress("devices", i, COUNT, t0);
  }

  const signer = createManifestSigner(manCa);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fleetguard-manifest-"));
  const file = path.join(dir, "manifest.json");
  try {
    // 1. sign + stream to a file (JSON, base64, hashing for the digest, file I/O included)
    process.stderr.write("signing and writing\n");
    const digest = new ManifestDigest();
    t0 = performance.now();
    let n = 0;
    function* feed() {
      for (const d of devices) {
        yield d;
        progress("sign+write", ++n, COUNT, t0);
      }
    }
    const out = fs.createWriteStream(file);
    const { count } = await writeManifest(feed(), signer, out, digest);
    await new Promise<void>((res, rej) => out.end((e?: Error | null) => (e ? rej(e) : res())));
    const signSecs = (performance.now() - t0) / 1000;
    const size = fs.statSync(file).size;
    const writtenDigest = digest.digest();

    // 2. signer.sign and verifier.check alone, each batch followed by the raw bound on the same
    //    bytes (crypto.sign / crypto.verify over each entry's signing input with a ready key):
    //    interleaved, so both see the same machine load
    process.stderr.write("sign / verify against the raw bound, batch by batch\n");
    const verifier = createManifestVerifier({
      trustAnchorsPem: [root.certificatePem],
      signerCertificatePem: signer.signerChainPem,
    });
    const rawKey = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const ms = { sign: 0, rawSign: 0, check: 0, rawVerify: 0 };
    let bad = 0;
    for (let b = 0; b < COUNT; b += BATCH) {
      const slice = devices.slice(b, b + BATCH);
      let t = performance.now();
      const es = slice.map((d) => signer.sign(d));
      ms.sign += performance.now() - t;
      const inputs = es.map((e) => Buffer.from(`${e.protected}.${e.payload}`));
      t = performance.now();
      const sigs = inputs.map((x) =>
        crypto.sign("sha256", x, { key: rawKey.privateKey, dsaEncoding: "ieee-p1363" }),
      );
      ms.rawSign += performance.now() - t;
      t = performance.now();
      for (let i = 0; i < es.length; i++) if (!verifier.check(es[i], b + i).ok) bad++;
      ms.check += performance.now() - t;
      t = performance.now();
      for (let i = 0; i < inputs.length; i++)
        crypto.verify("sha256", inputs[i]!, { key: rawKey.publicKey, dsaEncoding: "ieee-p1363" }, sigs[i]!);
      ms.rawVerify += performance.now() - t;
      sampleRss();
      process.stderr.write(`  batches: ${Math.min(b + BATCH, COUNT)}/${COUNT}\n`);
    }

    // 3. verify end to end: read the file back, check every entry, recompute the digest
    process.stderr.write("reading and verifying the file\n");
    t0 = performance.now();
    const v = await verifyManifestStream(
      readManifest(fs.createReadStream(file, { highWaterMark: 1 << 20 })),
      { trustAnchorsPem: [root.certificatePem], signerCertificatePem: signer.signerChainPem },
      (i) => progress("verify", i, COUNT, t0),
    );
    const verifySecs = (performance.now() - t0) / 1000;

    const per = (msTotal: number) => COUNT / (msTotal / 1000);
    const fmt = (r: number) => Math.round(r).toLocaleString("en-US");
    console.log(
      `entries: ${count.toLocaleString("en-US")}, file ${(size / 1e6).toFixed(1)} MB (${Math.round(size / count)} B/entry)`,
    );
    console.log(
      `verified ok: ${v.okCount}, failures: ${v.failures.length} (batch checks failed: ${bad}), digest equal: ${v.digest === writtenDigest}`,
    );
    console.log("| step | entries/s | raw bound, same bytes, same batches | ratio |");
    console.log("|---|---|---|---|");
    console.log(
      `| signer.sign | ${fmt(per(ms.sign))} | crypto.sign ${fmt(per(ms.rawSign))}/s | ${(ms.rawSign / ms.sign).toFixed(2)} |`,
    );
    console.log(
      `| verifier.check | ${fmt(per(ms.check))} | crypto.verify ${fmt(per(ms.rawVerify))}/s | ${(ms.rawVerify / ms.check).toFixed(2)} |`,
    );
    console.log(
      `| sign + stream to file (writeManifest, with digest) | ${fmt(COUNT / signSecs)} (${signSecs.toFixed(1)} s) | | |`,
    );
    console.log(
      `| read file + verify (readManifest + verifyManifestStream, with digest) | ${fmt(COUNT / verifySecs)} (${verifySecs.toFixed(1)} s) | | |`,
    );
    console.log(
      `peak RSS ${(peakRss / 1e6).toFixed(0)} MB (the ${COUNT.toLocaleString("en-US")} prepared device inputs included); load average ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")}`,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
