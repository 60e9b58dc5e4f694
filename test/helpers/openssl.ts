/** Run OpenSSL as the independent verifier of what core/ produces. */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export function tmpdir(prefix = "fleetguard-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function openssl(args: string[], input?: string): { status: number; out: string } {
  const r = spawnSync("openssl", args, { input, encoding: "utf8" });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

/** `openssl verify -x509_strict -CAfile root -untrusted <intermediates> leaf` */
export function verifyChain(
  rootPem: string,
  intermediatesPem: string,
  leafPem: string,
): { ok: boolean; out: string } {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, "root.pem"), rootPem);
  fs.writeFileSync(path.join(dir, "inter.pem"), intermediatesPem || rootPem);
  fs.writeFileSync(path.join(dir, "leaf.pem"), leafPem);
  const r = openssl([
    "verify",
    "-x509_strict",
    "-CAfile",
    path.join(dir, "root.pem"),
    "-untrusted",
    path.join(dir, "inter.pem"),
    path.join(dir, "leaf.pem"),
  ]);
  fs.rmSync(dir, { recursive: true, force: true });
  return { ok: r.status === 0 && /: OK/.test(r.out), out: r.out };
}

/**
 * `openssl verify -x509_strict -crl_check_all` of one leaf: `chainPem` is the issuing CA up to its
 * root (the root trusted, the others untrusted), `crlPems` a CRL for every CA of it.
 */
export function verifyWithCrls(
  leafPem: string,
  chainPem: string,
  crlPems: string[],
): { ok: boolean; out: string } {
  const blocks = chainPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  const dir = tmpdir("fleetguard-verify-crl-");
  try {
    fs.writeFileSync(path.join(dir, "root.pem"), `${blocks[blocks.length - 1]}\n`);
    fs.writeFileSync(path.join(dir, "untrusted.pem"), `${blocks.slice(0, -1).join("\n")}\n`);
    fs.writeFileSync(path.join(dir, "leaf.pem"), leafPem);
    fs.writeFileSync(path.join(dir, "crls.pem"), crlPems.join(""));
    const r = openssl([
      "verify",
      "-x509_strict",
      "-crl_check_all",
      "-CRLfile",
      path.join(dir, "crls.pem"),
      "-CAfile",
      path.join(dir, "root.pem"),
      "-untrusted",
      path.join(dir, "untrusted.pem"),
      path.join(dir, "leaf.pem"),
    ]);
    return { ok: r.status === 0 && /: OK/.test(r.out), out: r.out };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export function x509Text(pem: string): string {
  return execFileSync("openssl", ["x509", "-noout", "-text"], { input: pem, encoding: "utf8" });
}

/**
 * `openssl verify` of many DER leaves under `rootPem` (trusted) and `untrustedPem` (the CAs between),
 * 500 files per call, optionally with a CRL (`-crl_check`). Returns how many said OK, and the output.
 */
export function verifyLeaves(
  rootPem: string,
  untrustedPem: string,
  leaves: Uint8Array[],
  crlPem?: string,
): { ok: number; out: string } {
  const dir = tmpdir("fleetguard-verify-");
  try {
    fs.writeFileSync(path.join(dir, "root.pem"), rootPem);
    fs.writeFileSync(path.join(dir, "untrusted.pem"), untrustedPem);
    const files = leaves.map((l, i) => {
      const f = path.join(dir, `leaf${i}.pem`);
      const b64 = Buffer.from(l)
        .toString("base64")
        .replace(/.{64}(?=.)/g, "$&\n");
      fs.writeFileSync(f, `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`);
      return f;
    });
    const args = [
      "verify",
      "-x509_strict",
      "-CAfile",
      path.join(dir, "root.pem"),
      "-untrusted",
      path.join(dir, "untrusted.pem"),
    ];
    if (crlPem) {
      fs.writeFileSync(path.join(dir, "crl.pem"), crlPem);
      args.push("-crl_check", "-CRLfile", path.join(dir, "crl.pem"));
    }
    let ok = 0;
    let out = "";
    for (let i = 0; i < files.length; i += 500) {
      const r = openssl([...args, ...files.slice(i, i + 500)]);
      ok += (r.out.match(/: OK$/gm) ?? []).length;
      out += r.out;
    }
    return { ok, out };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
