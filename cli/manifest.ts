/**
 * `fleet manifest verify`: check a signed device manifest the way a hub registration does before
 * a bulk import: every entry's JWS signature under the manifest-signer certificate, the signer
 * issued by the fleet PKI (with the manifest-signer EKU), each device's key equal to its
 * certificate's, each chain up to the root. Streams the file, with progress on stderr.
 */
import * as fs from "node:fs";
import { invalid } from "../core/errors";

function parseArgs(argv: string[]): { manifest: string; signer: string; root: string } {
  const o: Record<string, string> = {};
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i]!;
    const v = argv[i + 1];
    if (!["--manifest", "--signer", "--root"].includes(k) || !v)
      throw invalid("argument", k, "--manifest FILE --signer SIGNER.pem --root ROOT.pem");
    o[k.slice(2)] = v;
  }
  for (const k of ["manifest", "signer", "root"]) if (!o[k]) throw invalid(`--${k}`, undefined, "a file");
  return o as { manifest: string; signer: string; root: string };
}

async function verify(argv: string[]): Promise<number> {
  const o = parseArgs(argv);
  const { readManifest, verifyManifestStream } = await import("../core/manifest/verify");
  const t0 = performance.now();
  const res = await verifyManifestStream(
    readManifest(fs.createReadStream(o.manifest)),
    {
      trustAnchorsPem: [fs.readFileSync(o.root, "utf8")],
      signerCertificatePem: fs.readFileSync(o.signer, "utf8"),
    },
    (n) => {
      if (n % 10_000 === 0) {
        const s = (performance.now() - t0) / 1000;
        process.stderr.write(
          `\rverified ${n.toLocaleString("en-US")} entries, ${Math.round(n / s).toLocaleString("en-US")}/s`,
        );
      }
    },
  );
  process.stderr.write("\n");
  console.log(
    `${o.manifest}: ${res.okCount.toLocaleString("en-US")} of ${res.count.toLocaleString("en-US")} entries verified; digest ${res.digest}`,
  );
  for (const f of res.failures.slice(0, 20))
    console.log(`  entry ${f.index} (${f.uniqueId ?? "?"}): ${f.reason}: ${f.detail}`);
  if (res.failures.length > 20) console.log(`  ... and ${res.failures.length - 20} more`);
  return res.failures.length || res.count === 0 ? 1 : 0;
}

export async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === "verify") return verify(rest);
  console.error("usage: fleet manifest verify --manifest FILE --signer SIGNER.pem --root ROOT.pem");
  return 2;
}
