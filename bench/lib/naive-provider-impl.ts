/**
 * `create` of the naive design's per-device dynamic resource: the same per-device work as the
 * raw bound (bench/lib/enroll.ts). The issuer is imported once per provider process (cached by
 * digest), so what the naive benchmark measures on top of the bound is Pulumi's per-resource
 * cost, not a key import per device.
 */
import * as crypto from "node:crypto";
import { invalid } from "../../core/errors";
import { toPem } from "../../core/x509/pem";
import { type EnrollContext, enrollContext, enrollDevice } from "./enroll";

export interface NaiveDeviceInputs {
  deviceId: string;
  issuerCertificatePem: string;
  issuerKeyPem: string;
}

const contexts = new Map<string, EnrollContext>();

function contextFor(i: NaiveDeviceInputs): EnrollContext {
  const k = crypto
    .createHash("sha256")
    .update(i.issuerCertificatePem)
    .update("\0")
    .update(i.issuerKeyPem)
    .digest("hex");
  let c = contexts.get(k);
  if (!c) {
    c = enrollContext({ certificatePem: i.issuerCertificatePem, keyPem: i.issuerKeyPem });
    contexts.set(k, c);
  }
  return c;
}

export async function create(
  inputs: NaiveDeviceInputs,
): Promise<{ id: string; outs: Record<string, string> }> {
  if (typeof inputs.deviceId !== "string" || !/^[A-Za-z0-9._-]{1,64}$/.test(inputs.deviceId))
    throw invalid("deviceId", inputs.deviceId, "1..64 characters of A-Z a-z 0-9 . _ -");
  const e = enrollDevice(contextFor(inputs), inputs.deviceId);
  return {
    id: inputs.deviceId,
    outs: {
      kind: "naive-device",
      deviceId: inputs.deviceId,
      certificatePem: toPem("CERTIFICATE", e.certificate),
      serialNumber: e.serial.toString("hex"),
      fingerprintSha256: crypto.createHash("sha256").update(e.certificate).digest("hex"),
    },
  };
}
