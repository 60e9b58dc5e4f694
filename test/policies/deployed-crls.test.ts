/**
 * `fleet audit` reads the CRL folder (policies/deployed.ts readCrls): a CRL is attributed to the
 * CA whose key signed it. During an issuing-CA rollover the predecessor and its successor share a
 * name and subject, so the subject alone would hand the successor's CRL to the predecessor.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readCas, readCrls } from "../../policies/deployed";
import { tmpdir } from "../helpers/openssl";
import { makePki } from "../hub/pki";

const dir = tmpdir("fleetguard-audit-crls-");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("the audit's CRLs during a CA rollover", () => {
  it("attributes each of two same-name CAs' CRLs to the CA that signed it", () => {
    const g1 = makePki("line");
    const g2 = makePki("line", { successorOf: g1 });
    const cas = path.join(dir, "cas");
    const crls = path.join(dir, "crl");
    fs.mkdirSync(cas);
    fs.mkdirSync(crls);
    fs.writeFileSync(path.join(cas, "root.pem"), g1.root.certificatePem);
    fs.writeFileSync(path.join(cas, "line@g1.pem"), g1.issuing.certificatePem);
    fs.writeFileSync(path.join(cas, "line.pem"), g2.issuing.certificatePem);
    const [i1] = g1.crlPems();
    const [i2] = g2.crlPems();
    // the successor's CRL is read first (file order): a match by subject would give it to either
    fs.writeFileSync(path.join(crls, "a-successor.crl.pem"), i2!);
    fs.writeFileSync(path.join(crls, "b-predecessor.crl.pem"), i1!);
    const entries = readCas({ caDir: cas });
    const byId = Object.fromEntries(entries.map((c) => [c.id, c.fingerprint]));
    expect(byId["line@g1"]).toBe(g1.issuing.fingerprintSha256);
    expect(byId.line).toBe(g2.issuing.fingerprintSha256);
    const got = Object.fromEntries(readCrls(crls, entries).map((c) => [path.basename(c.file), c.issuer]));
    expect(got).toEqual({ "a-successor.crl.pem": "line", "b-predecessor.crl.pem": "line@g1" });
  });
});
