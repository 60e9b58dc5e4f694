/**
 * Shared by the AWS IoT driver tests: a CA pair made with the core (root + issuing), device
 * certificates from a LeafTemplate (CN and SAN = device ID, clientAuth), the CA registered through
 * the SDK (standing in for aws.iot.CaCertificate), and the policy, thing type and group (standing
 * in for aws.iot.Policy / ThingType / ThingGroup), a CA rollover's successor (successorOf), plus a
 * small HTTP proxy that can throttle, fail or drop calls on their way to an emulator.
 */
import * as crypto from "node:crypto";
import * as http from "node:http";
import type * as net from "node:net";
import {
  CreatePolicyCommand,
  CreateThingGroupCommand,
  CreateThingTypeCommand,
  IoTClient,
  RegisterCACertificateCommand,
} from "@aws-sdk/client-iot";
import { awsDevicePolicyDocument } from "../../../components/hub-aws";
import { type IssuedCa, issueCa } from "../../../core/ca";
import type { DeviceCert, TrustedCa } from "../../../core/hubs/types";
import { LeafTemplate, randomSerial } from "../../../core/x509/cert";
import { EKU } from "../../../core/x509/ext";
import { spkiDer } from "../../../core/x509/keys";
import { parseCertificate } from "../../../core/x509/parse";
import { pemOne, toPem } from "../../../core/x509/pem";

export const sha256 = (b: Uint8Array) => crypto.createHash("sha256").update(b).digest("hex");
export const creds = { accessKeyId: "test", secretAccessKey: "test" };
export const region = "us-east-1";

export interface Pki {
  root: IssuedCa;
  issuing: IssuedCa;
  trusted: TrustedCa;
  template: LeafTemplate;
}

export function makePki(name = "iss"): Pki {
  const root = issueCa({
    name: "root",
    role: "root",
    algorithm: "ecdsa-p256",
    subject: { commonName: `Test Root ${name}`, organization: "Acme" },
    validityDays: 365,
  });
  const issuing = issueCa(
    {
      name,
      role: "issuing",
      algorithm: "ecdsa-p256",
      subject: { commonName: `Test Issuing ${name}`, organization: "Acme" },
      validityDays: 180,
    },
    { name: "root", ...root },
  );
  const pc = parseCertificate(pemOne(issuing.certificatePem, "CERTIFICATE", "issuing"));
  const template = new LeafTemplate(
    {
      algorithm: "ecdsa-p256",
      key: crypto.createPrivateKey(issuing.keyPem),
      subject: pc.subject,
      keyId: Buffer.from(issuing.subjectKeyId, "hex"),
    },
    {
      organization: "Acme",
      notBefore: new Date(Date.now() - 3600_000),
      notAfter: new Date(Date.now() + 30 * 86400_000),
      keyUsage: ["digitalSignature"],
      extKeyUsage: [EKU.clientAuth],
    },
  );
  const trusted: TrustedCa = {
    name,
    fingerprint: issuing.fingerprintSha256.replace(/:/g, "").toLowerCase(),
    certificatePem: issuing.certificatePem,
    chainPem: issuing.chainPem,
    crlPems: [],
  };
  return { root, issuing, trusted, template };
}

export interface Device {
  cert: DeviceCert;
  keyPem: string;
  certPem: string;
}

export function makeDevice(pki: Pki, deviceId: string, batch = "b1"): Device {
  const kp = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const serial = randomSerial();
  const der = pki.template.issue(serial, deviceId, spkiDer(kp.publicKey), {
    dns: [`${deviceId}.devices.acme.example`],
  });
  return {
    cert: {
      deviceId,
      batch,
      serial: serial.toString("hex"),
      der,
      sha256: sha256(der),
      issuer: pki.trusted.fingerprint,
    },
    keyPem: kp.privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    certPem: toPem("CERTIFICATE", der),
  };
}

export function sdk(endpoint: string, credentials = creds): IoTClient {
  return new IoTClient({ region, endpoint, credentials, maxAttempts: 1 });
}

/** What the Pulumi resources make (aws.iot.CaCertificate, Policy, ThingType, ThingGroup), through the SDK. */
export async function provisionHub(
  iot: IoTClient,
  pki: Pki,
  o: { autoRegistration?: boolean; active?: boolean; policyName?: string } = {},
): Promise<{ caId: string; policyName: string; thingTypeName: string; thingGroupName: string }> {
  const ca = await iot.send(
    new RegisterCACertificateCommand({
      caCertificate: pki.issuing.certificatePem,
      setAsActive: o.active ?? true,
      allowAutoRegistration: o.autoRegistration ?? false,
      certificateMode: "SNI_ONLY",
    }),
  );
  const policyName = o.policyName ?? "fleetguard-devices";
  await iot.send(
    new CreatePolicyCommand({
      policyName,
      policyDocument: JSON.stringify(awsDevicePolicyDocument({ region, account: "*", topicPrefix: "fleet" })),
    }),
  );
  await iot.send(new CreateThingTypeCommand({ thingTypeName: "fleetguard-device" }));
  await iot.send(new CreateThingGroupCommand({ thingGroupName: "fleetguard-b1" }));
  return {
    caId: ca.certificateId as string,
    policyName,
    thingTypeName: "fleetguard-device",
    thingGroupName: "fleetguard-b1",
  };
}

export interface Proxy {
  url: string;
  /** requests seen, by X-Amz-Target or path */
  calls: string[];
  throttled: number;
  /** return 429 ThrottlingException for a call when this says so */
  throttle: (nth: number, path: string) => boolean;
  /** answer every call with this AWS error (status, type, message) */
  failWith?: { status: number; type: string; message: string };
  /** drop every request's connection */
  down: boolean;
  close(): Promise<void>;
}

/** An HTTP proxy in front of an emulator (the SDK's endpoint) that can throttle, fail or drop calls. */
export async function startProxy(upstream: string): Promise<Proxy> {
  const up = new URL(upstream);
  const sockets = new Set<net.Socket>();
  const p: Proxy = {
    url: "",
    calls: [],
    throttled: 0,
    throttle: () => false,
    down: false,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const server = http.createServer((req, res) => {
    if (p.down) {
      req.socket.destroy();
      return;
    }
    const nth = p.calls.push(`${req.method} ${req.url}`);
    if (p.failWith) {
      const f = p.failWith;
      res.writeHead(f.status, { "content-type": "application/json", "x-amzn-errortype": f.type });
      res.end(JSON.stringify({ message: f.message }));
      return;
    }
    if (p.throttle(nth, req.url ?? "")) {
      p.throttled++;
      res.writeHead(429, { "content-type": "application/json", "x-amzn-errortype": "ThrottlingException" });
      res.end(JSON.stringify({ message: "Rate exceeded" }));
      return;
    }
    const fwd = http.request(
      { host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    fwd.on("error", () => res.destroy());
    req.pipe(fwd);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  p.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return p;
}

/**
 * A CA rollover's successor (CaHierarchy generation 2): a new key, the same subject, signed by the
 * same root; its device certificates come from its own template.
 */
export function successorOf(pki: Pki): Pki {
  const pred = parseCertificate(pemOne(pki.issuing.certificatePem, "CERTIFICATE", "predecessor"));
  const issuing = issueCa(
    {
      name: pki.trusted.name,
      role: "issuing",
      algorithm: "ecdsa-p256",
      subject: { commonName: `Test Issuing ${pki.trusted.name}`, organization: "Acme" },
      validityDays: 180,
    },
    { name: "root", ...pki.root },
  );
  const pc = parseCertificate(pemOne(issuing.certificatePem, "CERTIFICATE", "successor"));
  if (!pc.subject.equals(pred.subject)) throw new Error("successorOf: the subject changed");
  const template = new LeafTemplate(
    {
      algorithm: "ecdsa-p256",
      key: crypto.createPrivateKey(issuing.keyPem),
      subject: pc.subject,
      keyId: Buffer.from(issuing.subjectKeyId, "hex"),
    },
    {
      organization: "Acme",
      notBefore: new Date(Date.now() - 3600_000),
      notAfter: new Date(Date.now() + 30 * 86400_000),
      keyUsage: ["digitalSignature"],
      extKeyUsage: [EKU.clientAuth],
    },
  );
  const trusted: TrustedCa = {
    name: pki.trusted.name,
    generation: 2,
    fingerprint: issuing.fingerprintSha256.replace(/:/g, "").toLowerCase(),
    certificatePem: issuing.certificatePem,
    chainPem: issuing.chainPem,
    crlPems: [],
  };
  return { root: pki.root, issuing, trusted, template };
}
