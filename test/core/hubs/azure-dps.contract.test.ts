/**
 * AzureDpsDriver against the DPS contract service (test/helpers/dps-contract): a local HTTPS
 * service that checks every request and response against the vendored OpenAPI document
 * (api-version 2021-10-01) and enforces SAS signatures, If-Match, paging, the bulk limit and
 * throttling. It is a contract test, not the service: no allocation to an IoT hub, no device
 * registration flow (see docs/hub-azure.md). Certificates are made by OpenSSL.
 */
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AzureDpsDriver,
  type AzureDpsOptions,
  dpsCertificateName,
  enrollmentGroupId,
  registrationId,
} from "../../../core/hubs/azure-dps";
import { hubDrift, removeHub, syncHub } from "../../../core/hubs/sync";
import type { DeviceCert, RemoteRef, TrustedCa } from "../../../core/hubs/types";
import { openRegistry } from "../../../core/registry";
import type { Registry } from "../../../core/registry/types";
import { type DpsContractService, sasToken, startDpsContract } from "../../helpers/dps-contract/server";
import {
  CORRECTED_ID_PATTERN,
  loadSpec,
  operations,
  PUBLISHED_ID_PATTERN,
} from "../../helpers/dps-contract/spec";
import { tmpdir } from "../../helpers/openssl";

const KEY = crypto.randomBytes(32).toString("base64");
const POLICY = "provisioningserviceowner";
const dir = tmpdir("dps-contract-test-");

function openssl(args: string[]): void {
  execFileSync("openssl", args, { stdio: "pipe" });
}

/** A self-signed CA; `file` apart from `name` makes a rollover's successor (same subject, new key). */
function makeCa(name: string, file = name): TrustedCa & { key: string; pemPath: string } {
  const pemPath = path.join(dir, `${file}.pem`);
  const key = path.join(dir, `${file}.key`);
  openssl([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "30",
    "-subj",
    `/O=Example Devices Ltd/CN=${name}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-keyout",
    key,
    "-out",
    pemPath,
  ]);
  const certificatePem = fs.readFileSync(pemPath, "utf8");
  const x = new crypto.X509Certificate(certificatePem);
  return {
    name,
    fingerprint: x.fingerprint256.replace(/:/g, "").toLowerCase(),
    certificatePem,
    chainPem: certificatePem,
    crlPems: [],
    key,
    pemPath,
  };
}

function makeDevice(
  ca: ReturnType<typeof makeCa>,
  deviceId: string,
  batch = "lot-1",
  serial?: string,
): DeviceCert {
  const out = path.join(dir, `${deviceId}-${crypto.randomBytes(4).toString("hex")}.pem`);
  openssl([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "10",
    "-subj",
    `/CN=${deviceId}`,
    "-CA",
    ca.pemPath,
    "-CAkey",
    ca.key,
    ...(serial ? ["-set_serial", `0x${serial}`] : []),
    "-keyout",
    "/dev/null",
    "-out",
    out,
  ]);
  const x = new crypto.X509Certificate(fs.readFileSync(out));
  return {
    deviceId,
    batch,
    serial: x.serialNumber.toLowerCase(),
    der: x.raw,
    sha256: crypto.createHash("sha256").update(x.raw).digest("hex"),
    issuer: ca.fingerprint,
  };
}

/** Virtual time: sleeps are recorded and advance the clock at once (no waiting, no thresholds). */
function virtualClock() {
  let t = 0;
  const sleeps: number[] = [];
  return {
    sleeps,
    clock: {
      now: () => t,
      sleep: async (ms: number) => {
        sleeps.push(ms);
        t += ms;
      },
    },
  };
}

const ref = (c: DeviceCert): RemoteRef => ({
  deviceId: c.deviceId,
  serial: c.serial,
  remoteId: registrationId(c.deviceId),
});
const ids = (n: number, from = 0) =>
  Array.from({ length: n }, (_, i) => `Line-A-${String(i + from).padStart(4, "0")}`);

let svc: DpsContractService;
let caA: ReturnType<typeof makeCa>;
let caB: ReturnType<typeof makeCa>;
let foreign: ReturnType<typeof makeCa>;
let devices: DeviceCert[];
const drivers: AzureDpsDriver[] = [];

function driver(o: Partial<AzureDpsOptions> = {}): AzureDpsDriver {
  const d = new AzureDpsDriver({
    label: "Azure DPS 'contract'",
    endpoint: svc.url,
    sasKeyName: POLICY,
    sasKey: KEY,
    mode: "individual",
    ratePerSecond: 0,
    tls: { ca: svc.ca },
    ...o,
  });
  drivers.push(d);
  return d;
}
const count = (op: string, from = 0) => svc.requests.slice(from).filter((r) => r.operationId === op).length;

beforeAll(async () => {
  caA = makeCa("issuing-a");
  caB = makeCa("issuing-b");
  foreign = makeCa("someone-else");
  devices = ids(25).map((id) => makeDevice(caA, id));
  svc = await startDpsContract({
    policies: { [POLICY]: KEY },
    certificates: [dpsCertificateName("issuing-a")],
    maxPageSize: 100,
  });
});

afterAll(async () => {
  for (const d of drivers) await d.close();
  await svc?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("the vendored OpenAPI document", () => {
  it("is the published 2021-10-01 service API, with the one erratum applied in memory", () => {
    const { doc, patched } = loadSpec();
    expect(doc.info.version).toBe("2021-10-01");
    expect(patched).toBe(7);
    expect(JSON.stringify(doc)).not.toContain(PUBLISHED_ID_PATTERN);
    const raw = fs.readFileSync(path.join(__dirname, "../../fixtures/azure-dps/service.json"), "utf8");
    expect(crypto.createHash("sha256").update(raw).digest("hex")).toBe(
      "ea36cc86142d29f79238a27572a8e02f62560bf63b9e447189f5c6af71ef1803",
    );
    expect(raw.split(PUBLISHED_ID_PATTERN).length - 1).toBe(7);
    expect(new RegExp(CORRECTED_ID_PATTERN).test("line-a-0001")).toBe(true);
    const ops = operations(doc).map((o) => o.operationId);
    for (const op of [
      "EnrollmentGroup_CreateOrUpdate",
      "EnrollmentGroup_Get",
      "EnrollmentGroup_Delete",
      "EnrollmentGroup_Query",
      "IndividualEnrollment_CreateOrUpdate",
      "IndividualEnrollment_Get",
      "IndividualEnrollment_Delete",
      "IndividualEnrollment_Query",
      "IndividualEnrollment_RunBulkOperation",
    ])
      expect(ops).toContain(op);
  });
});

describe("group mode: one enrollment group per issuing CA", () => {
  it("ensureTrust creates the group with a CA reference, and a second run writes nothing", async () => {
    const d = driver({
      mode: "group",
      iotHubs: ["hub-1.azure-devices.net"],
      allocationPolicy: "hashed",
      idScope: "0ne00000001",
    });
    expect(d.mode).toBe("ca");
    const t = await d.ensureTrust([caA]);
    expect(t).toEqual({
      endpoint: "global.azure-devices-provisioning.net (id scope 0ne00000001)",
      caIds: ["fleetguard-issuing-a"],
    });
    const g = svc.groups.get(enrollmentGroupId("issuing-a"));
    expect(g.attestation.x509.caReferences).toEqual({ primary: "fleetguard-issuing-a" });
    expect(g.reprovisionPolicy).toEqual({ updateHubAssignment: true, migrateDeviceData: true });
    expect(g.iotHubs).toEqual(["hub-1.azure-devices.net"]);
    const puts = count("EnrollmentGroup_CreateOrUpdate");
    await d.ensureTrust([caA]);
    expect(count("EnrollmentGroup_CreateOrUpdate")).toBe(puts);
  });

  it("attests with the CA certificate itself (signingCertificates) when asked; the service answers its info", async () => {
    const d = driver({ mode: "group", groupAttestation: "signingCertificates" });
    const t = await d.ensureTrust([caB]);
    expect(t.caIds).toEqual([caB.fingerprint]);
    const info = svc.groups.get("fleetguard-issuing-b").attestation.x509.signingCertificates.primary.info;
    expect(info.sha256Thumbprint.toLowerCase()).toBe(caB.fingerprint);
    const puts = count("EnrollmentGroup_CreateOrUpdate");
    await d.ensureTrust([caB]);
    expect(count("EnrollmentGroup_CreateOrUpdate")).toBe(puts);
    await d.removeTrust([caB]);
    expect(svc.groups.has("fleetguard-issuing-b")).toBe(false);
  });

  it("a CA reference to a certificate the service does not hold is refused, naming the group", async () => {
    const d = driver({ mode: "group" });
    await expect(d.ensureTrust([caB])).rejects.toThrow(
      /enrollment group fleetguard-issuing-b for CA 'issuing-b' refused: .*no certificate named "fleetguard-issuing-b"/,
    );
  });

  it("register makes no call; disable writes DISABLED individual enrollments in bulk; read, rerun and remove converge", async () => {
    const d = driver({ mode: "group" });
    await d.ensureTrust([caA]);
    const before = svc.requests.length;
    const reg = await d.register(devices);
    expect(svc.requests.length).toBe(before);
    expect(reg.every((o) => o.ok)).toBe(true);
    expect(reg.map((o) => (o.ok ? o.remoteId : ""))).toEqual(devices.map((c) => c.deviceId.toLowerCase()));

    const gone = devices.slice(0, 3);
    const dis = await d.disable(gone.map(ref));
    expect(dis.every((o) => o.ok)).toBe(true);
    expect(count("IndividualEnrollment_RunBulkOperation", before)).toBe(1);
    for (const c of gone)
      expect(svc.enrollments.get(registrationId(c.deviceId)).provisioningStatus).toBe("disabled");
    const st = await d.read(devices.map(ref));
    expect(st.filter((s) => s.status === "inactive").map((s) => s.serial)).toEqual(gone.map((c) => c.serial));
    expect(st.filter((s) => s.status === "active")).toHaveLength(22);

    // a later run (a new driver: nothing remembered) finds the certificates through lookupCertificate
    const der = new Map(devices.map((c) => [c.serial, c.der]));
    const d2 = driver({ mode: "group", lookupCertificate: async (r) => der.get(r.serial) });
    expect((await d2.disable(gone.map(ref))).every((o) => o.ok)).toBe(true);
    expect(svc.enrollments.size).toBe(3);
    const none = driver({ mode: "group" });
    const [o] = await none.disable([ref(devices[5])]);
    expect(o).toMatchObject({ ok: false, retryable: false });
    expect(!o.ok && o.reason).toMatch(/needs its certificate/);

    const rm = await d2.remove(devices.map(ref));
    expect(rm.every((x) => x.ok)).toBe(true);
    expect(svc.enrollments.size).toBe(0);
  });
});

describe("CA rollover: the successor in the primary slot, the predecessor in the secondary", () => {
  const group = () => svc.groups.get(enrollmentGroupId("issuing-a"));
  const puts = () => svc.requests.filter((r) => r.operationId === "EnrollmentGroup_CreateOrUpdate");

  it("caReferences: both trusted (two DPS certificates, one group with both slots), then the predecessor dropped; If-Match every time", async () => {
    const succ = { ...makeCa("issuing-a", "issuing-a-g2"), generation: 2 };
    const pred = { ...caA, generation: 1 };
    expect(new crypto.X509Certificate(succ.certificatePem).subject).toBe(
      new crypto.X509Certificate(caA.certificatePem).subject,
    );
    expect(succ.fingerprint).not.toBe(caA.fingerprint);
    // the generations' DPS certificates do not collide; the first keeps its name
    expect(dpsCertificateName("issuing-a", 1)).toBe("fleetguard-issuing-a");
    expect(dpsCertificateName("issuing-a", 2)).toBe("fleetguard-issuing-a-g2");
    // what components/hub-azure.ts uploads for the successor (DpsCertificate `<hub>-ca-issuing-a-g2`)
    svc.certificates.add(dpsCertificateName("issuing-a", 2));

    const d = driver({ mode: "group" });
    await d.ensureTrust([caA]);
    expect(group().attestation.x509.caReferences).toEqual({ primary: "fleetguard-issuing-a" });
    const before = group().etag;

    // the overlap: the order of the list does not matter, the higher generation is primary
    const overlap = await d.ensureTrust([pred, succ]);
    expect(overlap.caIds).toEqual(["fleetguard-issuing-a", "fleetguard-issuing-a-g2"]);
    expect(group().attestation.x509.caReferences).toEqual({
      primary: "fleetguard-issuing-a-g2",
      secondary: "fleetguard-issuing-a",
    });
    // written over the group it read: If-Match with that ETag
    expect(puts().at(-1)).toMatchObject({ status: 200, ifMatch: before });
    expect(group().etag).not.toBe(before);
    // one group for the CA name, not one per generation
    expect([...svc.groups.keys()].filter((k) => k.startsWith("fleetguard-issuing-a"))).toEqual([
      "fleetguard-issuing-a",
    ]);
    // a rerun of the overlap writes nothing
    const n = puts().length;
    await driver({ mode: "group" }).ensureTrust([succ, pred]);
    expect(puts().length).toBe(n);

    // the predecessor dropped, with the group changed by someone else between read and write: the
    // stale ETag is refused (412), the group read again and written with the current one
    const overlapEtag = group().etag;
    let touched: string | undefined;
    svc.beforeHandle = (op, id) => {
      if (op === "EnrollmentGroup_CreateOrUpdate" && touched === undefined) {
        svc.touch("group", id as string);
        touched = group().etag;
      }
      return undefined;
    };
    const after = await driver({ mode: "group" })
      .ensureTrust([succ])
      .finally(() => {
        svc.beforeHandle = undefined;
      });
    expect(after.caIds).toEqual(["fleetguard-issuing-a-g2"]);
    expect(puts().slice(-2)).toMatchObject([
      { status: 412, ifMatch: overlapEtag },
      { status: 200, ifMatch: touched },
    ]);
    expect(group().attestation.x509.caReferences).toEqual({ primary: "fleetguard-issuing-a-g2" });
    const m = puts().length;
    await driver({ mode: "group" }).ensureTrust([succ]);
    expect(puts().length).toBe(m);
    // the service itself: a write with the ETag from before the drop is refused
    const { etag: _e, createdDateTimeUtc: _c, lastUpdatedDateTimeUtc: _u, ...body } = group();
    const stale = await direct("PUT", "/enrollmentGroups/fleetguard-issuing-a", body, { "if-match": before });
    expect(stale.status).toBe(412);
    // back to generation 1 alone for the tests after this one
    await driver({ mode: "group" }).ensureTrust([caA]);
    expect(group().attestation.x509.caReferences).toEqual({ primary: "fleetguard-issuing-a" });
  });

  it("signingCertificates: both CA certificates in the group's slots, then the secondary emptied", async () => {
    const succ = { ...makeCa("issuing-b", "issuing-b-g3"), generation: 3 };
    const pred = { ...caB, generation: 2 };
    const d = driver({ mode: "group", groupAttestation: "signingCertificates" });
    const t = await d.ensureTrust([succ, pred]);
    expect(t.caIds).toEqual([succ.fingerprint, caB.fingerprint]);
    const sc = () => svc.groups.get("fleetguard-issuing-b").attestation.x509.signingCertificates;
    expect(sc().primary.info.sha256Thumbprint.toLowerCase()).toBe(succ.fingerprint);
    expect(sc().secondary.info.sha256Thumbprint.toLowerCase()).toBe(caB.fingerprint);
    const n = puts().length;
    await d.ensureTrust([succ, pred]);
    expect(puts().length).toBe(n);
    await d.ensureTrust([succ]);
    expect(sc().primary.info.sha256Thumbprint.toLowerCase()).toBe(succ.fingerprint);
    expect(sc().secondary).toBeUndefined();
    // destroy: one group for the CA name, whatever the generations
    await d.removeTrust([succ, pred]);
    expect(svc.groups.has("fleetguard-issuing-b")).toBe(false);
  });

  it("refuses more than two generations of one CA, or two CAs of one generation", async () => {
    const d = driver({ mode: "group" });
    const g2 = { ...makeCa("issuing-a", "issuing-a-x2"), generation: 2 };
    const g3 = { ...makeCa("issuing-a", "issuing-a-x3"), generation: 3 };
    const before = svc.requests.length;
    await expect(d.ensureTrust([caA, g2, g3])).rejects.toThrow(
      /^cas: got "3 generations of CA 'issuing-a' \(3, 2, 1\)", want at most two: the successor and its predecessor \(an enrollment group has a primary and a secondary slot\)$/,
    );
    await expect(d.ensureTrust([caA, { ...g2, generation: undefined }])).rejects.toThrow(
      "cas[1].generation: got 1, want a generation other than that of the other CA named 'issuing-a'",
    );
    expect(() => dpsCertificateName("issuing-a", 0)).toThrow(
      "ca.generation: got 0, want a whole number >= 1",
    );
    expect(svc.requests.length).toBe(before);
  });
});

describe("individual mode: one enrollment per device", () => {
  it("registers 25 devices in 3 bulk calls; a rerun adds no duplicate; disable 3; drift; remove", async () => {
    const d = driver();
    expect(d.mode).toBe("per-device");
    await d.ensureTrust([caA]);
    let from = svc.requests.length;
    const progress: number[] = [];
    const reg = await d.register(devices, (n) => progress.push(n));
    expect(reg.filter((o) => o.ok)).toHaveLength(25);
    expect(svc.requests.slice(from).map((r) => [r.operationId, r.items])).toEqual([
      ["IndividualEnrollment_RunBulkOperation", 10],
      ["IndividualEnrollment_RunBulkOperation", 10],
      ["IndividualEnrollment_RunBulkOperation", 5],
    ]);
    expect(progress).toEqual([10, 20, 25]);
    expect(svc.enrollments.size).toBe(25);
    const e0 = svc.enrollments.get("line-a-0000");
    expect(e0.attestation.x509.clientCertificates.primary.info.sha256Thumbprint.toLowerCase()).toBe(
      devices[0].sha256,
    );

    // rerun (a run killed after the hub answered): conflicts, read back, nothing written twice
    from = svc.requests.length;
    const again = await driver().register(devices);
    expect(again.filter((o) => o.ok)).toHaveLength(25);
    expect(svc.enrollments.size).toBe(25);
    expect(count("IndividualEnrollment_CreateOrUpdate", from)).toBe(0);
    expect(count("IndividualEnrollment_RunBulkOperation", from)).toBe(3);

    const gone = devices.slice(0, 3);
    const dis = await d.disable(gone.map(ref));
    expect(dis.every((o) => o.ok)).toBe(true);
    for (const c of gone)
      expect(svc.enrollments.get(registrationId(c.deviceId)).provisioningStatus).toBe("disabled");
    expect((await d.disable(gone.map(ref))).every((o) => o.ok)).toBe(true);

    const st = await d.read(devices.map(ref));
    expect(st.filter((s) => s.status === "inactive")).toHaveLength(3);
    expect(st.filter((s) => s.status === "active")).toHaveLength(22);

    // drift: an enrollment under our CA the registry does not know; one of a foreign CA is not ours
    const stray = makeDevice(caA, "stray-0001");
    const other = makeDevice(foreign, "other-0001");
    await driver().register([stray, other]);
    const known = new Set(devices.map((c) => registrationId(c.deviceId)));
    expect(await d.unknown(known)).toEqual(["stray-0001"]);
    svc.touch("enrollment", "line-a-0010", (r) => {
      r.provisioningStatus = "disabled";
    });
    expect((await d.read([ref(devices[10])]))[0].status).toBe("inactive");

    from = svc.requests.length;
    const rm = await d.remove([...devices, stray, other].map(ref));
    expect(rm.every((o) => o.ok)).toBe(true);
    expect(count("IndividualEnrollment_RunBulkOperation", from)).toBe(3);
    expect(svc.enrollments.size).toBe(0);
    expect((await d.remove(devices.slice(0, 2).map(ref))).every((o) => o.ok)).toBe(true);
  });

  it("a rotation: the next certificate takes the secondary slot; disabling the old one drops its slot", async () => {
    const d = driver();
    const [old] = await Promise.all([makeDevice(caA, "rot-0001")]);
    const next = makeDevice(caA, "rot-0001");
    await d.register([old]);
    await d.register([next]);
    const cc = svc.enrollments.get("rot-0001").attestation.x509.clientCertificates;
    expect(cc.primary.info.sha256Thumbprint.toLowerCase()).toBe(old.sha256);
    expect(cc.secondary.info.sha256Thumbprint.toLowerCase()).toBe(next.sha256);
    expect((await d.disable([ref(old)]))[0].ok).toBe(true);
    const e = svc.enrollments.get("rot-0001");
    expect(e.provisioningStatus).toBe("enabled");
    expect(e.attestation.x509.clientCertificates.primary.info.sha256Thumbprint.toLowerCase()).toBe(
      next.sha256,
    );
    expect(e.attestation.x509.clientCertificates.secondary).toBeUndefined();
    expect((await d.read([ref(old), ref(next)])).map((s) => s.status)).toEqual(["missing", "active"]);
    // a rerun of that disable (killed before the registry recorded it) leaves the live certificate alone
    expect((await driver().disable([ref(old)]))[0].ok).toBe(true);
    expect(svc.enrollments.get("rot-0001").provisioningStatus).toBe("enabled");
    await d.remove([ref(next)]);
  });

  it("a device id that is no DPS registration id is refused for that device only", async () => {
    const bad = { ...devices[0], deviceId: "has space", serial: "01" };
    const out = await driver().register([bad]);
    expect(out[0]).toMatchObject({ ok: false, retryable: false });
    expect(!out[0].ok && out[0].reason).toMatch(/deviceId: got "has space"/);
  });
});

describe("paging", () => {
  it("reads more enrollments than one page through x-ms-continuation", async () => {
    const small = await startDpsContract({ policies: { [POLICY]: KEY }, maxPageSize: 5 });
    try {
      const d = new AzureDpsDriver({
        label: "Azure DPS 'paged'",
        endpoint: small.url,
        sasKeyName: POLICY,
        sasKey: KEY,
        mode: "individual",
        ratePerSecond: 0,
        tls: { ca: small.ca },
        pageSize: 7,
      });
      drivers.push(d);
      await d.register(devices);
      const from = small.requests.length;
      const st = await d.read(devices.map(ref));
      expect(st.every((s) => s.status === "active")).toBe(true);
      // 25 records, pages of 5 (the service lowers the asked 7): 5 queries
      expect(
        small.requests.slice(from).filter((r) => r.operationId === "IndividualEnrollment_Query"),
      ).toHaveLength(5);
      expect(await d.unknown(new Set())).toHaveLength(25);
      expect(small.violations).toEqual([]);
    } finally {
      await small.close();
    }
  });
});

describe("ETags", () => {
  it("a group changed once between read and write is read again and written", async () => {
    const d = driver({ mode: "group", iotHubs: ["hub-2.azure-devices.net"] });
    let touched = 0;
    svc.beforeHandle = (op, id) => {
      if (op === "EnrollmentGroup_CreateOrUpdate" && touched++ === 0) svc.touch("group", id as string);
      return undefined;
    };
    try {
      await d.ensureTrust([caA]);
    } finally {
      svc.beforeHandle = undefined;
    }
    expect(touched).toBe(2);
    expect(svc.groups.get("fleetguard-issuing-a").iotHubs).toEqual(["hub-2.azure-devices.net"]);
    expect(
      svc.requests
        .filter((r) => r.operationId === "EnrollmentGroup_CreateOrUpdate")
        .slice(-2)
        .map((r) => r.status),
    ).toEqual([412, 200]);
  });

  it("a group changed at every attempt is a CONFLICT that tells the ETag story", async () => {
    const d = driver({ mode: "group", iotHubs: ["hub-3.azure-devices.net"] });
    svc.beforeHandle = (op, id) => {
      if (op === "EnrollmentGroup_CreateOrUpdate") svc.touch("group", id as string);
      return undefined;
    };
    try {
      await expect(d.ensureTrust([caA])).rejects.toMatchObject({
        code: "CONFLICT",
        message: expect.stringMatching(
          /Azure DPS 'contract': enrollment group fleetguard-issuing-a changed while fleetguard updated it \(If-Match ".+", then ".+": 412 twice\)/,
        ),
      });
    } finally {
      svc.beforeHandle = undefined;
    }
  });

  it("the service's If-Match semantics: a stale ETag and '*' on a missing record are 412", async () => {
    const c = makeDevice(caA, "etag-0001");
    const d = driver();
    await d.register([c]);
    const body = {
      registrationId: "etag-0001",
      attestation: {
        type: "x509",
        x509: { clientCertificates: { primary: { certificate: c.der.toString("base64") } } },
      },
    };
    const stale = await direct("PUT", "/enrollments/etag-0001", body, { "if-match": '"stale"' });
    expect(stale.status).toBe(412);
    const star = await direct(
      "PUT",
      "/enrollments/etag-0002",
      { ...body, registrationId: "etag-0002" },
      { "if-match": "*" },
    );
    expect(star.status).toBe(412);
    const ok = await direct("PUT", "/enrollments/etag-0001", body, {
      "if-match": svc.enrollments.get("etag-0001").etag,
    });
    expect(ok.status).toBe(200);
    await d.remove([ref(c)]);
  });
});

describe("faults", () => {
  it("a bad SAS key is a credentials error that does not show the key", async () => {
    const wrong = crypto.randomBytes(32).toString("base64");
    const d = driver({ sasKey: wrong });
    const e = await d.register(devices.slice(0, 3)).catch((x) => x);
    expect(e).toMatchObject({ code: "INVALID_INPUT", field: "sasKey" });
    expect(e.message).toMatch(
      /sasKey: got credentials Azure DPS 'contract' refuses \(401: Unauthorized: the signature does not match\), want a current key of its shared access policy 'provisioningserviceowner'/,
    );
    expect(e.message).not.toContain(wrong);
    expect(e.message).not.toContain(KEY);
    const unknownPolicy = await driver({ sasKeyName: "nobody" })
      .register(devices.slice(0, 1))
      .catch((x) => x);
    expect(unknownPolicy.message).toMatch(/no shared access policy named "nobody"/);
  });

  it("the service checks the token's expiry and resource URI", async () => {
    const host = new URL(svc.url).host;
    const expired = await direct("GET", "/enrollments/x1", undefined, {
      authorization: sasToken(host, POLICY, KEY, Math.floor(Date.now() / 1000) - 10),
    });
    expect([expired.status, expired.body.message]).toEqual([401, "Unauthorized: the token has expired"]);
    const elsewhere = await direct("GET", "/enrollments/x1", undefined, {
      authorization: sasToken(
        "other.azure-devices-provisioning.net",
        POLICY,
        KEY,
        Math.floor(Date.now() / 1000) + 60,
      ),
    });
    expect(elsewhere.status).toBe(401);
    expect(elsewhere.body.message).toMatch(/not this service/);
  });

  it("throttling: 429 with Retry-After is waited out and the registration completes", async () => {
    const d = driver();
    const from = svc.requests.length;
    svc.throttleNext(2, 1);
    const out = await d.register(devices.slice(0, 10));
    expect(out.every((o) => o.ok)).toBe(true);
    expect(svc.requests.slice(from).map((r) => r.status)).toEqual([429, 429, 200]);
    await d.remove(devices.slice(0, 10).map(ref));
  });

  it("throttling on virtual time: each 429 waits its Retry-After; a quota that never lifts gives up clearly", async () => {
    const v = virtualClock();
    const d = driver({ clock: v.clock });
    svc.throttleNext(3, 7);
    expect((await d.register(devices.slice(0, 5))).every((o) => o.ok)).toBe(true);
    expect(v.sleeps.filter((ms) => ms === 7000)).toHaveLength(3);
    await d.remove(devices.slice(0, 5).map(ref));
    const w = virtualClock();
    svc.throttleNext(1000, 1);
    try {
      const e = await driver({ clock: w.clock, maxAttempts: 4 })
        .register(devices.slice(0, 5))
        .catch((x) => x);
      expect(e).toMatchObject({ code: "UNAVAILABLE" });
      expect(e.message).toMatch(
        /^Azure DPS 'contract': still throttled \(429\) after 4 attempts; .* lower ratePerSecond \(0 of 5 registered by then\)$/,
      );
    } finally {
      svc.throttleNext(0, 1);
    }
  });

  it("holds the default rate, 1,000 enrollments a minute, one token per enrollment written", async () => {
    const v = virtualClock();
    const d = driver({ clock: v.clock, ratePerSecond: undefined });
    expect(d.ratePerSecond).toBeCloseTo(1000 / 60, 10);
    expect((await d.register(devices)).every((o) => o.ok)).toBe(true);
    // a burst of 17 tokens, then 8 more at 16.67/s: 0.48 s of waiting (virtual)
    expect(v.sleeps.reduce((a, b) => a + b, 0)).toBeCloseTo((8 * 1000 * 60) / 1000, 6);
    await driver().remove(devices.map(ref));
  });

  it("a certificate the service refuses fails that device only; the rest are registered", async () => {
    const broken = { ...makeDevice(caA, "broken-0001"), der: Buffer.from("not a certificate") };
    const out = await driver().register([broken, ...devices.slice(0, 4)]);
    expect(out.filter((o) => o.ok)).toHaveLength(4);
    const bad = out.find((o) => !o.ok);
    expect(bad).toMatchObject({ serial: broken.serial, ok: false, retryable: false });
    expect(!bad?.ok && bad?.reason).toMatch(
      /Azure DPS 'contract' refused broken-0001: .*not an X\.509 certificate/,
    );
    expect(svc.enrollments.has("broken-0001")).toBe(false);
    await driver().remove(devices.slice(0, 4).map(ref));
  });

  it("an unreachable service: UNAVAILABLE naming the hub and the count done", async () => {
    const d = driver();
    let bulks = 0;
    svc.beforeHandle = (op) =>
      op === "IndividualEnrollment_RunBulkOperation" && ++bulks > 1 ? "drop" : undefined;
    try {
      const e = await d.register(devices).catch((x) => x);
      expect(e).toMatchObject({ code: "UNAVAILABLE" });
      expect(e.message).toMatch(
        /^Azure DPS 'contract': unreachable at 127\.0\.0\.1:\d+ \(.+\) \(10 of 25 registered by then\)$/,
      );
    } finally {
      svc.beforeHandle = undefined;
    }
    expect(svc.enrollments.size).toBe(10);
    await d.remove(devices.map(ref));
    const closed = driver({ endpoint: "https://127.0.0.1:1", mode: "group" });
    await expect(closed.ensureTrust([caA])).rejects.toThrow(
      /Azure DPS 'contract': unreachable at 127\.0\.0\.1:1 \(ECONNREFUSED\)/,
    );
  });

  it("refuses options it cannot honour", () => {
    expect(() => driver({ batch: 11 })).toThrow(/batch: got 11, want an integer 1\.\.10/);
    expect(() => driver({ endpoint: "http://x" })).toThrow(
      /endpoint: got "http:\/\/x", want an https:\/\/ URL/,
    );
    expect(() => driver({ sasKey: "short" })).toThrow(/sasKey: got 5 characters/);
    expect(() => driver({ mode: "both" as "group" })).toThrow(/mode: got "both", want group or individual/);
  });
});

describe("hub sync (core/hubs/sync.ts) with the driver, against a real SQLite registry", () => {
  let serial = 0x7000;
  /** a device's certificate made by OpenSSL with the serial the registry records */
  async function enroll(
    reg: Registry,
    id: string,
    from: "pending" | "active",
    ca: ReturnType<typeof makeCa> = caA,
  ): Promise<DeviceCert> {
    const c = makeDevice(ca, id, "lot", (++serial).toString(16));
    const now = new Date();
    const cert = {
      serial: c.serial,
      deviceId: id,
      batch: "lot",
      issuer: ca.fingerprint,
      der: c.der,
      notBefore: now,
      notAfter: new Date(now.getTime() + 864e5),
      issuedAt: now,
    };
    const steps =
      from === "pending"
        ? [
            {
              deviceId: id,
              batch: "lot",
              from: "pending",
              to: "attested",
              publicKey: crypto.randomBytes(91),
              epoch: 0,
            },
            { deviceId: id, batch: "lot", from: "attested", to: "issued", certificate: cert },
          ]
        : [{ deviceId: id, batch: "lot", from: "active", to: "issued", certificate: cert }];
    await reg.apply([
      ...steps,
      { deviceId: id, batch: "lot", from: "issued", to: "installed" },
      { deviceId: id, batch: "lot", from: "installed", to: "active" },
    ] as never);
    return c;
  }
  async function fleet(n: number, file: string): Promise<Registry> {
    const reg = await openRegistry(path.join(dir, file));
    await reg.putBatch({ name: "lot", model: "fg100", source: "puf", spec: "{}" });
    const list = Array.from({ length: n }, (_, i) => `fg100-${String(i).padStart(7, "0")}`);
    await reg.addDevices("lot", list);
    for (const id of list) await enroll(reg, id, "pending");
    return reg;
  }
  const decommission = (reg: Registry, id: string) =>
    reg.apply([
      {
        deviceId: id,
        batch: "lot",
        from: "active",
        to: "decommissioned",
        revoke: { at: new Date(), reason: "cessationOfOperation" },
      },
    ] as never);

  it("individual mode: register, decommission and re-issue, a run killed mid-registration converges, destroy", async () => {
    const reg = await fleet(25, "sync-individual.db");
    const spec = { hub: "azure-prod", batch: "lot" };
    let from = svc.requests.length;
    const r = await syncHub(reg, driver(), spec, [caA]);
    expect([r.registered, r.failed.length]).toEqual([25, 0]);
    expect(count("IndividualEnrollment_RunBulkOperation", from)).toBe(3);
    expect(svc.enrollments.size).toBe(25);

    await decommission(reg, "fg100-0000003");
    const next = await enroll(reg, "fg100-0000004", "active");
    const r2 = await syncHub(reg, driver(), spec, [caA]);
    expect([r2.registered, r2.disabled, r2.failed.length]).toEqual([1, 2, 0]);
    expect(svc.enrollments.get("fg100-0000003").provisioningStatus).toBe("disabled");
    const e4 = svc.enrollments.get("fg100-0000004");
    expect(e4.provisioningStatus).toBe("enabled");
    expect(e4.attestation.x509.clientCertificates.primary.info.sha256Thumbprint.toLowerCase()).toBe(
      next.sha256,
    );
    expect(e4.attestation.x509.clientCertificates.secondary).toBeUndefined();
    expect(await hubDrift(reg, driver(), spec)).toEqual({ deactivated: [], reactivated: [], unknown: [] });

    from = svc.requests.length;
    const { removed } = await removeHub(reg, driver(), spec);
    expect(removed).toBe(26); // 25 first certificates and the re-issued one
    expect(svc.enrollments.size).toBe(0);
    expect((await reg.verify()).ok).toBe(true);
    await reg.close();

    // an answer lost after the service applied the call: the driver's retry finds the enrollments
    // there (bulk create answers "exists"), reads them back and writes nothing twice
    const regLost = await fleet(25, "sync-lost.db");
    let lost = 0;
    svc.beforeHandle = (op) =>
      op === "IndividualEnrollment_RunBulkOperation" && ++lost === 2 ? "drop-after" : undefined;
    try {
      const rl = await syncHub(regLost, driver(), spec, [caA], { wave: 10 });
      expect([rl.registered, rl.failed.length]).toEqual([25, 0]);
    } finally {
      svc.beforeHandle = undefined;
    }
    expect(svc.enrollments.size).toBe(25);
    expect(count("IndividualEnrollment_CreateOrUpdate", from)).toBe(0);
    await removeHub(regLost, driver(), spec);
    await regLost.close();

    // killed mid-registration: from the second bulk call on the service never answers
    const reg2 = await fleet(25, "sync-kill.db");
    let bulks = 0;
    svc.beforeHandle = (op) =>
      op === "IndividualEnrollment_RunBulkOperation" && ++bulks >= 2 ? "drop" : undefined;
    try {
      await expect(syncHub(reg2, driver(), spec, [caA], { wave: 10 })).rejects.toThrow(
        /^Azure DPS 'contract': 10 of 25 registered, then: Azure DPS 'contract': unreachable at 127\.0\.0\.1:\d+/,
      );
    } finally {
      svc.beforeHandle = undefined;
    }
    // the registry holds 10 active and 10 intents; the service holds the 10 it answered for
    expect(svc.enrollments.size).toBe(10);
    const c = await reg2.hubCounts("azure-prod", "lot");
    expect([c.active, c.registering]).toEqual([10, 10]);
    const r3 = await syncHub(reg2, driver(), spec, [caA], { wave: 10 });
    expect([r3.registered, r3.failed.length]).toEqual([15, 0]);
    expect(svc.enrollments.size).toBe(25);
    expect((await reg2.hubCounts("azure-prod", "lot")).active).toBe(25);
    await removeHub(reg2, driver(), spec);
    await reg2.close();
  });

  /** what the provider passes in group mode: certificates from the registry */
  const fromRegistry = (reg: Registry): Partial<AzureDpsOptions> => ({
    mode: "group",
    lookupCertificate: async (r) =>
      (await reg.certificates({ deviceId: r.deviceId })).find((c) => c.serial === r.serial)?.der,
    liveCertificates: async (deviceId) => {
      const d = await reg.getDevice(deviceId);
      if (!d || !["issued", "installed", "active"].includes(d.state)) return [];
      return (await reg.certificates({ deviceId, status: ["live"] })).filter(
        (c) => c.serial === d.certSerial,
      );
    },
  });

  it("group mode: no per-device call; a decommissioned device is blocked, a re-issued one pinned to its new certificate", async () => {
    const reg = await fleet(12, "sync-group.db");
    const spec = { hub: "azure-group", batch: "lot" };
    const from = svc.requests.length;
    const r = await syncHub(reg, driver({ mode: "group" }), spec, [caA]);
    expect(r.registered).toBe(12);
    expect(svc.requests.slice(from).filter((x) => x.operationId.startsWith("IndividualEnrollment"))).toEqual(
      [],
    );

    await decommission(reg, "fg100-0000003");
    const next = await enroll(reg, "fg100-0000004", "active");
    const r2 = await syncHub(reg, driver(fromRegistry(reg)), spec, [caA]);
    expect([r2.registered, r2.disabled, r2.failed.length]).toEqual([1, 2, 0]);
    expect(svc.enrollments.get("fg100-0000003").provisioningStatus).toBe("disabled");
    const e4 = svc.enrollments.get("fg100-0000004");
    expect(e4.provisioningStatus).toBe("enabled");
    expect(e4.attestation.x509.clientCertificates.primary.info.sha256Thumbprint.toLowerCase()).toBe(
      next.sha256,
    );
    expect(svc.enrollments.size).toBe(2);

    // a later run that only disables (the successor registered earlier) pins through liveCertificates
    const e4etag = svc.enrollments.get("fg100-0000004").etag;
    svc.enrollments.delete("fg100-0000004");
    const old4 = (await reg.certificates({ deviceId: "fg100-0000004" })).find(
      (c) => c.serial !== next.serial,
    );
    const [o] = await driver(fromRegistry(reg)).disable([
      { deviceId: "fg100-0000004", serial: old4?.serial as string, remoteId: "fg100-0000004" },
    ]);
    expect(o.ok).toBe(true);
    const again = svc.enrollments.get("fg100-0000004");
    expect([again.provisioningStatus, again.etag === e4etag]).toEqual(["enabled", false]);
    expect(again.attestation.x509.clientCertificates.primary.info.sha256Thumbprint.toLowerCase()).toBe(
      next.sha256,
    );
    expect(await hubDrift(reg, driver({ mode: "group" }), spec)).toEqual({
      deactivated: [],
      reactivated: [],
      unknown: [],
    });
    await removeHub(reg, driver({ mode: "group" }), spec);
    expect(svc.enrollments.size).toBe(0);
    await reg.close();
  });

  it("group mode through a CA rollover: both slots while the predecessor has live certificates, re-issued devices pinned under the successor, the secondary dropped after", async () => {
    const reg = await fleet(6, "sync-rollover.db");
    const spec = { hub: "azure-rollover", batch: "lot" };
    const succ = { ...makeCa("issuing-a", "issuing-a-sync-g2"), generation: 2 };
    const pred = { ...caA, generation: 1 };
    svc.certificates.add(dpsCertificateName("issuing-a", 2));
    // what the hub provider trusts (providers/runtime/hub.ts trustedOf): the predecessor while a
    // live certificate of the batch is its
    const trusted = async () =>
      (await reg.certificates({ batch: "lot", issuer: pred.fingerprint, status: ["live"], limit: 1 })).length
        ? [succ, pred]
        : [succ];
    const slots = () => svc.groups.get(enrollmentGroupId("issuing-a")).attestation.x509.caReferences;
    const ids = Array.from({ length: 6 }, (_, i) => `fg100-${String(i).padStart(7, "0")}`);

    const r1 = await syncHub(reg, driver(fromRegistry(reg)), spec, await trusted());
    expect(r1.registered).toBe(6);
    expect(r1.trust.caIds).toEqual(["fleetguard-issuing-a-g2", "fleetguard-issuing-a"]);
    expect(slots()).toEqual({ primary: "fleetguard-issuing-a-g2", secondary: "fleetguard-issuing-a" });

    // wave 1 re-issues half the devices under the successor
    const wave1 = await Promise.all(ids.slice(0, 3).map((id) => enroll(reg, id, "active", succ)));
    const r2 = await syncHub(reg, driver(fromRegistry(reg)), spec, await trusted());
    expect([r2.registered, r2.disabled, r2.failed.length]).toEqual([3, 3, 0]);
    expect(slots()).toEqual({ primary: "fleetguard-issuing-a-g2", secondary: "fleetguard-issuing-a" });
    for (const c of wave1) {
      const e = svc.enrollments.get(registrationId(c.deviceId));
      expect(e.provisioningStatus).toBe("enabled");
      expect(e.attestation.x509.clientCertificates.primary.info.sha256Thumbprint.toLowerCase()).toBe(
        c.sha256,
      );
    }

    // wave 2 moves the rest: no live certificate is the predecessor's, the secondary slot goes
    await Promise.all(ids.slice(3).map((id) => enroll(reg, id, "active", succ)));
    expect(await trusted()).toEqual([succ]);
    const r3 = await syncHub(reg, driver(fromRegistry(reg)), spec, await trusted());
    expect([r3.registered, r3.disabled, r3.failed.length]).toEqual([3, 3, 0]);
    expect(r3.trust.caIds).toEqual(["fleetguard-issuing-a-g2"]);
    expect(slots()).toEqual({ primary: "fleetguard-issuing-a-g2" });
    // a run with nothing to do writes nothing
    const puts = count("EnrollmentGroup_CreateOrUpdate");
    const r4 = await syncHub(reg, driver(fromRegistry(reg)), spec, await trusted());
    expect([r4.registered, r4.disabled]).toEqual([0, 0]);
    expect(count("EnrollmentGroup_CreateOrUpdate")).toBe(puts);
    expect(await hubDrift(reg, driver(fromRegistry(reg)), spec)).toEqual({
      deactivated: [],
      reactivated: [],
      unknown: [],
    });
    await removeHub(reg, driver({ mode: "group" }), spec);
    // back to generation 1 alone for the tests after this one
    await driver({ mode: "group" }).ensureTrust([caA]);
    await reg.close();
  });
});

describe("the contract service itself", () => {
  it("catches a request that violates the document (400, recorded), and enforces the bulk limit", async () => {
    const neg = await startDpsContract({ policies: { [POLICY]: KEY } });
    try {
      const c = devices[0];
      const bad = await direct(
        "PUT",
        "/enrollments/line-a-0000",
        {
          registrationId: "line-a-0000",
          attestation: {
            type: "x509",
            x509: { clientCertificates: { primary: { certificate: c.der.toString("base64") } } },
          },
          provisioningStatus: "paused",
          createdDateTimeUtc: "2026-01-01T00:00:00Z",
        },
        {},
        neg,
      );
      expect(bad.status).toBe(400);
      expect(neg.violations).toHaveLength(1);
      const errs = JSON.stringify(neg.violations[0].errors);
      expect(errs).toContain("provisioningStatus");
      expect(errs).toContain("a read-only property in a request");
      const noApi = await direct("GET", "/enrollments/line-a-0000", undefined, {}, neg, "");
      expect(noApi.status).toBe(400);
      expect(JSON.stringify(neg.violations[1].errors)).toContain("api-version");
      const item = {
        registrationId: "x1",
        attestation: {
          type: "x509",
          x509: { clientCertificates: { primary: { certificate: c.der.toString("base64") } } },
        },
      };
      const eleven = Array.from({ length: 11 }, (_, i) => ({ ...item, registrationId: `x${i}` }));
      const big = await direct("POST", "/enrollments", { enrollments: eleven, mode: "create" }, {}, neg);
      expect([big.status, big.body.message]).toEqual([
        400,
        "enrollments: got 11 items, want at most 10 per bulk operation",
      ]);
      expect(neg.violations).toHaveLength(2);
      expect(neg.enrollments.size).toBe(0);
    } finally {
      await neg.close();
    }
  });

  it("every request and response of this file's driver runs was valid: zero violations", () => {
    expect(svc.violations).toEqual([]);
    const seen = new Set(svc.requests.map((r) => r.operationId));
    for (const op of [
      "EnrollmentGroup_CreateOrUpdate",
      "EnrollmentGroup_Get",
      "EnrollmentGroup_Delete",
      "EnrollmentGroup_Query",
      "IndividualEnrollment_CreateOrUpdate",
      "IndividualEnrollment_Get",
      "IndividualEnrollment_Query",
      "IndividualEnrollment_RunBulkOperation",
    ])
      expect(seen).toContain(op);
    expect(svc.requests.length).toBeGreaterThan(60);
  });
});

/** One request to a contract service, signed with the good key unless told otherwise. */
async function direct(
  method: string,
  p: string,
  body?: unknown,
  headers: Record<string, string> = {},
  s: DpsContractService = svc,
  query = "?api-version=2021-10-01",
  // biome-ignore lint/suspicious/noExplicitAny: the service's JSON answers
): Promise<{ status: number; body: any }> {
  const https = await import("node:https");
  const host = new URL(s.url).host;
  const text = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = https.request(
      `${s.url}${p}${query}`,
      {
        method,
        ca: s.ca,
        headers: {
          authorization: sasToken(host, POLICY, KEY, Math.floor(Date.now() / 1000) + 600),
          ...(text ? { "content-type": "application/json" } : {}),
          ...headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const raw = Buffer.concat(chunks).toString();
          resolve({ status: res.statusCode ?? 0, body: raw ? JSON.parse(raw) : undefined });
        });
      },
    );
    req.on("error", reject);
    if (text) req.write(text);
    req.end();
  });
}
