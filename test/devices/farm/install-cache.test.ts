// INSTALL and SET_TRUST through a farm whose CA cache is warm: the farm (its one worker thread,
// where every device operation runs) remembers verified CA links across devices, and tampered
// chains and anchors are still refused, leaving the device as it was.
import { createPublicKey, generateKeyPairSync, type KeyObject, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StationClient } from "../../../core/station/client";
import { StationError, Status } from "../../../core/station/frame";
import { deviceId } from "../../../core/station/ids";
import type { Subject } from "../../../core/station/messages";
import type { RunningFarm } from "../../../devices/farm/serve";
import { buildCertificate } from "../../../devices/firmware/pkix";
import { farmFor, tempDir } from "./helpers";

interface Key {
  privateKey: KeyObject;
  spki: Buffer;
}
function key(curve = "P-256"): Key {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: curve });
  return { privateKey, spki: createPublicKey(privateKey).export({ type: "spki", format: "der" }) };
}
const name = (cn: string): Subject => [["CN", cn]];
const now = Date.now();
function cert(
  subject: string,
  spki: Buffer,
  issuer: string,
  signer: Key,
  ca: boolean,
  akiOf = signer,
): Buffer {
  return buildCertificate({
    serial: randomBytes(8),
    issuer: name(issuer),
    subject: name(subject),
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + 86400_000),
    spki,
    issuerSpki: akiOf.spki,
    ca,
    signer: signer.privateKey,
  });
}

const rootKey = key("P-384");
const interKey = key("P-384");
const issKey = key();
const root = cert("Root", rootKey.spki, "Root", rootKey, true);
const inter = cert("Inter", interKey.spki, "Root", rootKey, true);
const iss = cert("Issuing", issKey.spki, "Inter", interKey, true);
const id = (i: number) => deviceId("fg100", i);

async function refusal(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    if (e instanceof StationError) return e.status;
    throw e;
  }
  throw new Error("expected a refusal");
}

describe("install with a warm CA cache", () => {
  const dir = tempDir();
  let farm: RunningFarm;
  let client: StationClient;
  beforeAll(async () => {
    // one worker: each worker has its own cache, and which worker a device goes to is a hash
    farm = await farmFor(dir.path, { workers: 1 });
    client = new StationClient({ port: farm.port, timeoutMs: 5000 });
  });
  afterAll(async () => {
    await client.close();
    await farm.close();
    dir.remove();
  });

  const ready = async (i: number) => {
    const ident = await client.identify(id(i));
    await client.setTrustAnchor(id(i), root);
    return ident.publicKey!;
  };

  it("installs good chains, checking each CA link once for the whole farm", async () => {
    for (let i = 0; i < 4; i++) {
      const spki = await ready(i);
      const leaf = cert(id(i), spki, "Issuing", issKey, false);
      expect((await client.install(id(i), [leaf, iss, inter, root])).lifecycle).toBe("closed");
    }
    // with workers, the farm's agent holds the sums of the workers' cache stats
    const s = farm.farm.agent.caCache.stats;
    expect(s.parses).toBe(3); // root, intermediate, issuing
    // anchor issued by itself (SET_TRUST), root self-signature (INSTALL), inter <- root, issuing <- inter
    expect(s.linkChecks).toBe(4);
    expect(s.linkHits).toBe(4 * 3); // the same four for each later device
  });

  it("still refuses a forged leaf, a forged intermediate and a non-root anchor", async () => {
    const spki = await ready(10);
    const forgedLeaf = cert(id(10), spki, "Issuing", key(), false, issKey);
    expect(await refusal(client.install(id(10), [forgedLeaf, iss, inter, root]))).toBe(Status.BAD_SIGNATURE);
    const good = cert(id(10), spki, "Issuing", issKey, false);
    const forgedInter = cert("Inter", interKey.spki, "Root", key("P-384"), true, rootKey);
    expect(await refusal(client.install(id(10), [good, iss, forgedInter, root]))).toBe(Status.BAD_SIGNATURE);
    expect(await refusal(client.install(id(10), [good, iss, inter]))).toBe(Status.BAD_CERTIFICATE);
    expect(await refusal(client.setTrustAnchor(id(11), inter))).toBe(Status.BAD_SIGNATURE);
    const st = await client.status(id(10));
    expect(st.lifecycle).toBe("provisioned");
    expect(st.chain).toEqual([]);
    expect((await client.status(id(11))).trustAnchors).toEqual([]);
    // and the genuine chain goes in
    expect((await client.install(id(10), [good, iss, inter, root])).lifecycle).toBe("closed");
  });
});
