// `--json` of every read command (docs/cli.md), on the real CLI in child processes against real
// things: a SQLite registry, a signed manifest, an emulated device farm, and a Pulumi stack read by
// the real `pulumi` with every chain checked by OpenSSL. Each document is compared field by field.
import { createPublicKey, generateKeyPairSync, X509Certificate } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { batchCommand } from "../../cli/batch";
import { issueCa } from "../../core/ca";
import { buildManifest, createManifestSigner } from "../../core/manifest";
import { openRegistry } from "../../core/registry";
import { LATEST_VERSION } from "../../core/registry/schema";
import { DEVICE_STATES } from "../../core/registry/types";
import { deviceId } from "../../core/station/ids";
import { randomSerial } from "../../core/x509/cert";
import { makeDevices, makePki, templateFor } from "../core/manifest/fixtures";
import { farmFor } from "../devices/farm/helpers";
import { PulumiStack } from "../helpers/pulumi";
import { clean, fleetAsync, fleetMany } from "./cli-run";

const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "fleet-json-")));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const zero = Object.fromEntries(DEVICE_STATES.map((s) => [s, 0]));

async function seeded(name: string): Promise<string> {
  const loc = path.join(dir, `${name}.db`);
  const reg = await openRegistry(loc);
  await reg.putBatch({ name: "lot-a", model: "fg100", source: "puf", spec: "{}" });
  await reg.putBatch({ name: "lot-b", model: "fg200", source: "injected", spec: "{}" });
  await reg.addDevices("lot-a", ["a-0", "a-1", "a-2"]);
  await reg.addDevices("lot-b", ["b-0", "b-1"]);
  await reg.apply([
    { deviceId: "a-0", batch: "lot-a", from: "pending", to: "attested", detail: { station: "s1" } },
    { deviceId: "a-1", batch: "lot-a", from: "pending", to: "quarantined", reason: "clone" },
    { deviceId: "b-0", batch: "lot-b", from: "pending", to: "decommissioned", reason: "scrapped" },
    { deviceId: "b-1", batch: "lot-b", from: "pending", to: "decommissioned", reason: "scrapped" },
  ]);
  await reg.close();
  return loc;
}

describe("fleet batch --json", () => {
  it("status: one document, every state of every batch, done and (no) rate", async () => {
    const loc = await seeded("status");
    const [all, done] = await fleetMany([
      ["batch", "status", "--registry", loc, "--json"],
      ["batch", "status", "--registry", loc, "--batch", "lot-b", "--watch", "0.1", "--json"],
    ]);
    expect(all!.code, all!.stderr).toBe(0);
    const doc = JSON.parse(all!.stdout);
    expect(Object.keys(doc)).toEqual(["registry", "kind", "schema", "at", "batches"]);
    expect(doc).toMatchObject({ registry: loc, kind: "sqlite", schema: LATEST_VERSION });
    expect(Number.isNaN(Date.parse(doc.at))).toBe(false);
    expect(doc.batches).toEqual([
      {
        name: "lot-a",
        model: "fg100",
        source: "puf",
        deletedAt: null,
        devices: 3,
        done: 1,
        counts: { ...zero, pending: 1, attested: 1, quarantined: 1 },
        ratePerSecond: null,
        etaSeconds: null,
      },
      {
        name: "lot-b",
        model: "fg200",
        source: "injected",
        deletedAt: null,
        devices: 2,
        done: 2,
        counts: { ...zero, decommissioned: 2 },
        ratePerSecond: null,
        etaSeconds: 0,
      },
    ]);
    expect(Object.keys(doc.batches[0].counts)).toEqual([...DEVICE_STATES]);
    // --watch --json: JSON Lines, and a batch already done ends after its first sample
    expect(done!.code, done!.stderr).toBe(0);
    const lines = done!.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!).batches.map((b: { name: string }) => b.name)).toEqual(["lot-b"]);
  });

  it("status --watch --json: one line per sample, with the rate and ETA between samples", async () => {
    const loc = await seeded("watch");
    const reg = await openRegistry(loc);
    const lines: string[] = [];
    let clock = Date.parse("2026-12-01T00:00:00Z");
    // each sleep (2 s) one more device of lot-a is done: a-2, then a-0
    const moves = [
      { deviceId: "a-2", batch: "lot-a", from: "pending", to: "quarantined", reason: "x" },
      { deviceId: "a-0", batch: "lot-a", from: "attested", to: "quarantined", reason: "x" },
    ] as const;
    let slept = 0;
    const io = {
      out: (l: string) => lines.push(l),
      now: () => clock,
      sleep: async (ms: number) => {
        clock += ms;
        await reg.apply([moves[slept++]!]);
      },
    };
    try {
      expect(
        await batchCommand(["status", "--registry", loc, "--batch", "lot-a", "--watch", "2", "--json"], io),
      ).toBe(0);
    } finally {
      await reg.close();
    }
    // three samples, then every device is done and the watch ends
    expect(lines).toHaveLength(3);
    const [first, second, third] = lines.map((l) => JSON.parse(l));
    expect(first.at).toBe("2026-12-01T00:00:00.000Z");
    expect(first.batches[0]).toMatchObject({ done: 1, ratePerSecond: null, etaSeconds: null });
    expect(second.at).toBe("2026-12-01T00:00:02.000Z");
    // one more done in 2 s: 0.5/s, and one left at that rate: 2 s
    expect(second.batches[0]).toMatchObject({ done: 2, ratePerSecond: 0.5, etaSeconds: 2 });
    expect(third.batches[0]).toMatchObject({ done: 3, devices: 3, ratePerSecond: 0.5, etaSeconds: 0 });
  });

  it("audit: the device and its trail, oldest first; an unknown device prints no JSON (exit 1)", async () => {
    const loc = await seeded("audit");
    const [a0, a1, none] = await fleetMany([
      ["batch", "audit", "--registry", loc, "--device", "a-0", "--json"],
      ["batch", "audit", "--registry", loc, "--device=a-1", "--json"],
      ["batch", "audit", "--registry", loc, "--device", "zz", "--json"],
    ]);
    expect(a0!.code, a0!.stderr).toBe(0);
    const doc = JSON.parse(a0!.stdout);
    expect(doc.registry).toBe(loc);
    expect(doc.device).toEqual({
      deviceId: "a-0",
      batch: "lot-a",
      state: "attested",
      reason: null,
      certSerial: null,
    });
    expect(doc.audit.map((a: Record<string, unknown>) => [a.from, a.to, a.reason, a.detail])).toEqual([
      [null, "pending", null, null],
      ["pending", "attested", null, { station: "s1" }],
    ]);
    for (const a of doc.audit) {
      expect(Object.keys(a)).toEqual(["seq", "at", "batch", "from", "to", "reason", "detail"]);
      expect(a.batch).toBe("lot-a");
    }
    expect(doc.audit[1].seq).toBeGreaterThan(doc.audit[0].seq);
    expect(JSON.parse(a1!.stdout).device).toMatchObject({ state: "quarantined", reason: "clone" });
    expect(none!.code).toBe(1);
    expect(none!.stdout).toBe("");
    expect(none!.stderr).toMatch(/^fleet batch: --device: got "zz", want a device recorded in /);
    clean(none!);
  });
});

describe("fleet registry verify --json", () => {
  it("clean: ok and the head to anchor; a wrong anchor: the finding, ok false, exit 1", async () => {
    const loc = await seeded("verify");
    const ok = await fleetAsync(["registry", "verify", "--registry", loc, "--json"]);
    expect(ok.code, ok.stderr).toBe(0);
    const doc = JSON.parse(ok.stdout);
    expect(doc).toMatchObject({
      registry: loc,
      ok: true,
      count: 0,
      findings: [],
      truncated: false,
      devices: 5,
    });
    expect(doc.head.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(doc.rows).toBe(doc.head.seq);
    const bad = await fleetAsync([
      "registry",
      "verify",
      "--registry",
      loc,
      "--anchor",
      `${doc.head.seq}:${"0".repeat(64)}`,
      "--json",
    ]);
    expect(bad.code).toBe(1);
    const b = JSON.parse(bad.stdout);
    expect(b.ok).toBe(false);
    expect(b.count).toBeGreaterThan(0);
    expect(b.findings.map((f: { kind: string }) => f.kind)).toContain("anchor");
    for (const f of b.findings) expect(typeof f.message).toBe("string");
  });
});

describe("fleet manifest verify --json", () => {
  it("every entry verified; a forged signature named by index, reason and device (exit 1)", async () => {
    const pki = makePki("Json");
    const signer = createManifestSigner(pki.manifests);
    const devices = makeDevices(pki.devices, 3, "json");
    const entries = buildManifest(devices, signer);
    const root = path.join(dir, "root.pem");
    const signerPem = path.join(dir, "signer.pem");
    const good = path.join(dir, "good.manifest.json");
    const forged = path.join(dir, "forged.manifest.json");
    fs.writeFileSync(root, pki.root.certificatePem);
    fs.writeFileSync(signerPem, signer.signerChainPem);
    // the layout writeManifest streams: "[", one entry a line, "]"
    const text = (es: unknown[]) => `[\n${es.map((e) => JSON.stringify(e)).join(",\n")}\n]\n`;
    fs.writeFileSync(good, text(entries));
    fs.writeFileSync(
      forged,
      text([entries[0], { ...entries[1]!, signature: entries[2]!.signature }, entries[2]]),
    );
    const args = (m: string) => [
      "manifest",
      "verify",
      "--manifest",
      m,
      "--signer",
      signerPem,
      "--root",
      root,
    ];
    const [g, gText, f] = await fleetMany([
      [...args(good), "--json"],
      args(good),
      [...args(forged), "--json"],
    ]);
    expect(g!.code, g!.stderr).toBe(0);
    const doc = JSON.parse(g!.stdout);
    expect(Object.keys(doc)).toEqual(["manifest", "ok", "count", "verified", "digest", "failures"]);
    expect(doc).toMatchObject({ manifest: good, ok: true, count: 3, verified: 3, failures: [] });
    // the same digest as the text output
    expect(gText!.stdout).toContain(`3 of 3 entries verified; digest ${doc.digest}`);
    expect(f!.code).toBe(1);
    const fd = JSON.parse(f!.stdout);
    expect(fd).toMatchObject({ ok: false, count: 3, verified: 2 });
    expect(fd.failures).toHaveLength(1);
    expect(fd.failures[0]).toMatchObject({ index: 1, uniqueId: devices[1]!.deviceId, reason: "signature" });
    expect(typeof fd.failures[0].detail).toBe("string");
  });
});

describe("fleet devices --json", () => {
  it("ping, stats, identify, status: the station's reply as JSON, the same with and without --json", async () => {
    const farmDir = path.join(dir, "farm");
    const farm = await farmFor(farmDir);
    try {
      const port = String(farm.port);
      const id = deviceId("fg100", 2);
      const cmds = [["ping"], ["stats"], ["identify", id], ["status", id]];
      // first contact provisions the device; the runs below go two at a time, so a STATUS could
      // otherwise see it blank or provisioned depending on which command got there first
      const first = await fleetMany([["devices", "identify", "--port", port, id]]);
      expect(first[0]!.code, first[0]!.stderr).toBe(0);
      const runs = await fleetMany([
        ...cmds.map((c) => ["devices", c[0]!, "--port", port, "--json", ...c.slice(1)]),
        ...cmds.map((c) => ["devices", c[0]!, "--port", port, ...c.slice(1)]),
      ]);
      for (const r of runs) expect(r.code, `${r.args.join(" ")}: ${r.stderr}`).toBe(0);
      const [ping, stats, identify, status] = runs.slice(0, 4).map((r) => JSON.parse(r.stdout));
      expect(Object.keys(ping).sort()).toEqual(["count", "farmId", "model", "protocol", "vendorCa"]);
      expect(ping).toMatchObject({ model: "fg100", count: 1000 });
      expect(ping.vendorCa).toMatch(/^30[0-9a-f]+$/);
      for (const k of ["requests", "reconstructions", "enrollments", "changedDevices", "uptimeMs"])
        expect(typeof stats[k], k).toBe("number");
      expect(identify).toMatchObject({ device: id, model: "fg100", lifecycle: "provisioned" });
      expect(identify.publicKey).toMatch(/^3059301306072a8648ce3d0201/);
      expect(status).toMatchObject({ device: id, lifecycle: "provisioned" });
      expect(Array.isArray(status.otp)).toBe(true);
      for (const o of status.otp)
        expect(Object.keys(o).sort()).toEqual([
          "data",
          "locked",
          "name",
          "offset",
          "programmed",
          "secret",
          "words",
        ]);
      // without --json: the same documents; stats counts the requests in between, and the farm
      // signs a chip certificate afresh on each identify (ECDSA), so those two are left out
      const { chipCertificate, ...identity } = identify;
      expect(chipCertificate).toMatch(/^30[0-9a-f]+$/);
      expect(JSON.parse(runs[4]!.stdout)).toEqual(ping);
      expect(JSON.parse(runs[6]!.stdout)).toMatchObject(identity);
      expect(JSON.parse(runs[7]!.stdout)).toEqual(status);
    } finally {
      await farm.close();
    }
  });
});

describe("fleet ca summary --json", () => {
  it("every CA of a stack read by the real pulumi, OpenSSL's verdict each; a broken chain is ok false, exit 1", async () => {
    const root = issueCa({
      name: "root",
      role: "root",
      algorithm: "ecdsa-p256",
      subject: { commonName: "Json Root", organization: "Acme" },
      validityDays: 3650,
    });
    const lineA = issueCa(
      {
        name: "line-a",
        role: "issuing",
        algorithm: "ecdsa-p384",
        subject: { commonName: "Json Line A" },
        validityDays: 730,
      },
      { name: "root", ...root },
    );
    const stranger = issueCa({
      name: "other",
      role: "root",
      algorithm: "ecdsa-p256",
      subject: { commonName: "Other Root" },
      validityDays: 3650,
    });
    const summary = (ca: typeof root, role: string, chainPem: string) => ({
      role,
      fingerprintSha256: ca.fingerprintSha256,
      subjectKeyId: ca.subjectKeyId,
      notAfter: ca.notAfter,
      chainPem,
      certificatePem: ca.certificatePem,
      crlPem: "",
      crlNextUpdate: ca.notAfter,
    });
    const good = {
      root: summary(root, "root", root.certificatePem),
      "line-a": summary(lineA, "issuing", `${lineA.certificatePem}${root.certificatePem}`),
    };
    const program = path.join(dir, "program");
    fs.mkdirSync(program);
    fs.writeFileSync(path.join(program, "Pulumi.yaml"), "name: cajson\nruntime: nodejs\n");
    const stack = new PulumiStack(program, "t");
    await stack.init();
    const load = async (cas: Record<string, unknown>) => {
      const file = path.join(dir, "deployment.json");
      const urn = "urn:pulumi:t::cajson::pulumi:pulumi:Stack::cajson-t";
      fs.writeFileSync(
        file,
        JSON.stringify({
          version: 3,
          deployment: {
            manifest: { time: new Date().toISOString(), magic: "", version: "" },
            resources: [{ urn, custom: false, type: "pulumi:pulumi:Stack", outputs: { cas } }],
          },
        }),
      );
      await stack.run(["stack", "import", "--file", file]);
    };
    const out = path.join(dir, "pki");
    const args = ["ca", "summary", "--stack", "t", "--cwd", program, "--out", out, "--json"];
    try {
      await load(good);
      const r = await fleetAsync(args, { env: stack.env });
      expect(r.code, r.stderr).toBe(0);
      const doc = JSON.parse(r.stdout);
      expect(doc).toMatchObject({ stack: "t", out, ok: true, batches: null });
      // pulumi returns the map's keys sorted; the CLI keeps the stack's order
      expect(doc.cas.map((c: { name: string }) => c.name)).toEqual(["line-a", "root"]);
      expect([...doc.cas].sort((a, b) => (a.name < b.name ? 1 : -1))).toEqual([
        {
          name: "root",
          role: "root",
          subject: "O=Acme, CN=Json Root",
          algorithm: "ecdsa prime256v1",
          notAfter: root.notAfter,
          fingerprintSha256: root.fingerprintSha256,
          verify: "OK",
          ok: true,
        },
        {
          name: "line-a",
          role: "issuing",
          subject: "CN=Json Line A",
          algorithm: "ecdsa secp384r1",
          notAfter: lineA.notAfter,
          fingerprintSha256: lineA.fingerprintSha256,
          verify: "OK",
          ok: true,
        },
      ]);
      expect(fs.readFileSync(path.join(out, "line-a.pem"), "utf8")).toBe(lineA.certificatePem);

      // --registry: the batch's live device certificates, each checked by openssl verify
      const loc = path.join(dir, "ca.db");
      const reg = await openRegistry(loc);
      await reg.putBatch({ name: "lot-c", model: "fg300", source: "puf", spec: "{}" });
      await reg.addDevices("lot-c", ["c-0", "c-1", "c-2"]);
      const certify = async (
        reg: Awaited<ReturnType<typeof openRegistry>>,
        id: string,
        issuer: typeof root,
      ) => {
        const pub = createPublicKey(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey);
        const spki = pub.export({ type: "spki", format: "der" });
        const der = templateFor(issuer).issue(randomSerial(), id, spki);
        const x = new X509Certificate(der);
        await reg.apply([
          { deviceId: id, batch: "lot-c", from: "pending", to: "attested", publicKey: spki, epoch: 0 },
        ]);
        await reg.apply([
          {
            deviceId: id,
            batch: "lot-c",
            from: "attested",
            to: "issued",
            certificate: {
              serial: x.serialNumber.toLowerCase().replace(/^(00)+/, ""),
              deviceId: id,
              batch: "lot-c",
              issuer: issuer.fingerprintSha256,
              der,
              notBefore: new Date(x.validFrom),
              notAfter: new Date(x.validTo),
              issuedAt: new Date(),
            },
          },
        ]);
      };
      await certify(reg, "c-0", lineA);
      await certify(reg, "c-1", lineA);
      await reg.close();
      const withReg = await fleetAsync([...args, "--registry", loc], { env: stack.env });
      expect(withReg.code, withReg.stderr).toBe(0);
      const w = JSON.parse(withReg.stdout);
      expect(w.ok).toBe(true);
      expect(w.batches).toEqual([
        {
          batch: "lot-c",
          model: "fg300",
          source: "puf",
          counts: { ...zero, pending: 1, issued: 2 },
          live: 2,
          verified: 2,
          ok: true,
          failure: null,
          dir: path.join(out, "batch-lot-c"),
        },
      ]);
      // a device certificate from a CA the stack does not hold: the batch is not ok, exit 1
      const again = await openRegistry(loc);
      try {
        await certify(again, "c-2", stranger);
      } finally {
        await again.close();
      }
      const foreign = await fleetAsync([...args, "--registry", loc], { env: stack.env });
      expect(foreign.code, foreign.stderr).toBe(1);
      const fj = JSON.parse(foreign.stdout);
      expect(fj.ok).toBe(false);
      expect(fj.cas.every((c: { ok: boolean }) => c.ok)).toBe(true);
      expect(fj.batches[0]).toMatchObject({ live: 3, verified: 2, ok: false });
      expect(fj.batches[0].failure).toBe(
        `issuer ${stranger.fingerprintSha256.slice(0, 16)}… is not in stack`,
      );

      // line-a's chain ends at a root that did not sign it: OpenSSL refuses it
      await load({
        ...good,
        "line-a": summary(lineA, "issuing", `${lineA.certificatePem}${stranger.certificatePem}`),
      });
      const bad = await fleetAsync(args, { env: stack.env });
      expect(bad.code, bad.stderr).toBe(1);
      const b = JSON.parse(bad.stdout);
      expect(b.ok).toBe(false);
      expect(b.cas.map((c: { name: string; ok: boolean }) => [c.name, c.ok])).toEqual([
        ["line-a", false],
        ["root", true],
      ]);
      expect(b.cas[0].verify).toMatch(/^FAILED: /);
    } finally {
      fs.rmSync(stack.backend, { recursive: true, force: true });
    }
  }, 120_000);
});
