// Shared helpers for device tests: a throwaway two-level CA (root -> issuing) built with the
// device-side DER builder, temp directories, and an in-process farm.
import { createPublicKey, generateKeyPairSync, type KeyObject, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { signCommand } from "../../../core/enroll/authorize";
import type { CommandPayload } from "../../../core/station/command";
import type { CommandAuth, Subject } from "../../../core/station/messages";
import { type RunningFarm, type StartOptions, startFarm } from "../../../devices/farm/serve";
import { buildCertificate } from "../../../devices/firmware/pkix";

export interface TestCa {
  root: Buffer;
  issuing: Buffer;
  issue(spki: Uint8Array, cn: string, opts?: { notAfter?: Date; notBefore?: Date }): Buffer;
  /** the chain to install for a leaf: leaf, issuing, root */
  chainFor(spki: Uint8Array, cn: string): Buffer[];
  /** a command to a closed device, signed by the issuing CA for the device's challenge */
  command(device: string, payload: CommandPayload, challenge: Uint8Array): CommandAuth;
}

function keyPair(): { privateKey: KeyObject; spki: Buffer } {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { privateKey, spki: createPublicKey(privateKey).export({ type: "spki", format: "der" }) };
}

export function makeCa(name = "Test"): TestCa {
  const rootKey = keyPair();
  const issKey = keyPair();
  const rootName: Subject = [
    ["O", "fleetguard tests"],
    ["CN", `${name} Root CA`],
  ];
  const issName: Subject = [
    ["O", "fleetguard tests"],
    ["CN", `${name} Issuing CA`],
  ];
  const now = Date.now();
  const root = buildCertificate({
    serial: randomBytes(8),
    issuer: rootName,
    subject: rootName,
    notBefore: new Date(now - 86400_000),
    notAfter: new Date(now + 10 * 365 * 86400_000),
    spki: rootKey.spki,
    issuerSpki: rootKey.spki,
    ca: true,
    signer: rootKey.privateKey,
  });
  const issuing = buildCertificate({
    serial: randomBytes(8),
    issuer: rootName,
    subject: issName,
    notBefore: new Date(now - 86400_000),
    notAfter: new Date(now + 5 * 365 * 86400_000),
    spki: issKey.spki,
    issuerSpki: rootKey.spki,
    ca: true,
    pathLen: 0,
    signer: rootKey.privateKey,
  });
  const issue = (spki: Uint8Array, cn: string, o: { notAfter?: Date; notBefore?: Date } = {}) =>
    buildCertificate({
      serial: randomBytes(12),
      issuer: issName,
      subject: [
        ["O", "fleetguard tests"],
        ["CN", cn],
      ],
      notBefore: o.notBefore ?? new Date(now - 3600_000),
      notAfter: o.notAfter ?? new Date(now + 365 * 86400_000),
      spki,
      issuerSpki: issKey.spki,
      ca: false,
      signer: issKey.privateKey,
    });
  const material = { certificate: issuing, chain: [root], key: issKey.privateKey, fingerprint: "" };
  return {
    root,
    issuing,
    issue,
    chainFor: (spki, cn) => [issue(spki, cn), issuing, root],
    command: (device, payload, challenge) => signCommand(material, device, payload, challenge),
  };
}

export function tempDir(prefix = "fg-dev-"): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export const SEED = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

export async function farmFor(dir: string, o: Partial<StartOptions> = {}): Promise<RunningFarm> {
  return startFarm({
    stateDir: dir,
    count: 1000,
    seed: SEED,
    model: "fg100",
    log: () => {},
    ...o,
  });
}
