/**
 * `fleet manifest verify`: check a signed device manifest the way a hub registration does before
 * a bulk import: every entry's JWS signature under the manifest-signer certificate, the signer
 * issued by the fleet PKI (with the manifest-signer EKU), each device's key equal to its
 * certificate's, each chain up to the root. Streams the file, with progress on stderr; --json
 * prints the result as one document (docs/cli.md).
 */
import * as fs from "node:fs";
import { invalid } from "../core/errors";
import { answer, type Flags, type GroupSpec, JSON_OPTION, jsonDocument, route } from "./args";

export const spec: GroupSpec = {
  name: "manifest",
  summary: "verify a signed device manifest before a bulk import",
  commands: [
    {
      name: "verify",
      summary: "every entry's signature, the signer's chain and EKU, each device's key and chain",
      options: [
        { name: "manifest", arg: "FILE", help: "the manifest (a JSON list of JWS entries)", required: true },
        { name: "signer", arg: "SIGNER.pem", help: "the manifest-signer certificate", required: true },
        {
          name: "root",
          arg: "ROOT.pem",
          help: "the fleet's root CA certificate (the trust anchor)",
          required: true,
        },
        JSON_OPTION,
      ],
      json: "{manifest, ok, count, verified, digest, failures: [{index, uniqueId, reason, detail}]}",
      details: "exit 1 when any entry fails, or the manifest has no entries",
    },
  ],
};

async function verify(flags: Flags): Promise<number> {
  for (const k of ["manifest", "signer", "root"]) if (!flags[k]) throw invalid(`--${k}`, undefined, "a file");
  const o = flags as { manifest: string; signer: string; root: string };
  const json = flags.json === "true";
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
  const ok = res.failures.length === 0 && res.count > 0;
  if (json) {
    console.log(
      jsonDocument({
        manifest: o.manifest,
        ok,
        count: res.count,
        verified: res.okCount,
        digest: res.digest,
        failures: res.failures.map((f) => ({
          index: f.index,
          uniqueId: f.uniqueId ?? null,
          reason: f.reason,
          detail: f.detail,
        })),
      }),
    );
    return ok ? 0 : 1;
  }
  console.log(
    `${o.manifest}: ${res.okCount.toLocaleString("en-US")} of ${res.count.toLocaleString("en-US")} entries verified; digest ${res.digest}`,
  );
  for (const f of res.failures.slice(0, 20))
    console.log(`  entry ${f.index} (${f.uniqueId ?? "?"}): ${f.reason}: ${f.detail}`);
  if (res.failures.length > 20) console.log(`  ... and ${res.failures.length - 20} more`);
  return ok ? 0 : 1;
}

export async function run(argv: string[]): Promise<number> {
  const r = route(spec, argv);
  if (r.kind !== "run") return answer(r)!;
  return verify(r.parsed.flags);
}
