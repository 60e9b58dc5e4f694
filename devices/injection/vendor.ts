/**
 * The emulated silicon vendor, in the role ST plays for STM32MP1 Secure Secret Provisioning:
 * it derives each chip's key pair at "wafer test" and signs a chip certificate binding the
 * chip ID to the chip public key. OEMs (our HSM emulation) trust the vendor CA certificate and
 * refuse to encrypt secrets to a chip whose certificate it did not sign. All keys derive from
 * the farm seed (keys.ts); the vendor CA certificate is made once and kept by the farm in its
 * state directory, since ECDSA signatures (and so certificate bytes) differ run to run.
 */
import { createHash, type KeyObject, X509Certificate } from "node:crypto";
import { invalid } from "../../core/errors";
import type { Subject } from "../../core/station/messages";
import { buildCertificate } from "../firmware/pkix";
import { deriveRaw, privateKeyObject, type RawP256 } from "./keys";

export const VENDOR_SUBJECT: Subject = [
  ["O", "fleetguard emulated silicon"],
  ["CN", "Emulated Silicon Vendor Root CA"],
];
const NOT_BEFORE = new Date("2020-01-01T00:00:00Z");
// RFC 5280 4.1.2.5: 99991231235959Z for "no well-defined expiration" (device certificates)
const NO_EXPIRY = new Date("9999-12-31T23:59:59Z");

export class SiliconVendor {
  readonly certificate: Buffer;
  private readonly key: RawP256;
  private readonly signer: KeyObject;

  /** `certificate`: a vendor CA certificate made earlier for the same seed, to reuse. */
  constructor(
    private readonly seed: Uint8Array,
    certificate?: Uint8Array,
  ) {
    this.key = deriveRaw(seed, "fleetguard/vendor", "vendor-ca");
    this.signer = privateKeyObject(this.key);
    if (certificate) {
      const c = new X509Certificate(Buffer.from(certificate));
      if (!c.publicKey.export({ type: "spki", format: "der" }).equals(this.key.spki))
        throw invalid(
          "vendorCa",
          "a certificate for another key",
          "the vendor CA certificate of this farm seed",
        );
      this.certificate = Buffer.from(certificate);
    } else {
      this.certificate = buildCertificate({
        serial: 1n,
        issuer: VENDOR_SUBJECT,
        subject: VENDOR_SUBJECT,
        notBefore: NOT_BEFORE,
        notAfter: NO_EXPIRY,
        spki: this.key.spki,
        issuerSpki: this.key.spki,
        ca: true,
        pathLen: 0,
        signer: this.signer,
      });
    }
  }

  /** The chip's key pair, as burned at wafer test. Never leaves the (emulated) chip. */
  chipKey(chipId: string): RawP256 {
    return deriveRaw(this.seed, "fleetguard/chip", chipId);
  }

  /** The vendor-signed chip certificate: subject CN = chip ID, key = chip public key. */
  chipCertificate(chipId: string, chipSpki?: Buffer): Buffer {
    const spki = chipSpki ?? this.chipKey(chipId).spki;
    const serial = createHash("sha256").update(chipId).digest().subarray(0, 16);
    serial[0]! &= 0x7f;
    return buildCertificate({
      serial,
      issuer: VENDOR_SUBJECT,
      subject: [
        ["O", "fleetguard emulated silicon"],
        ["CN", chipId],
      ],
      notBefore: NOT_BEFORE,
      notAfter: NO_EXPIRY,
      spki,
      issuerSpki: this.key.spki,
      ca: false,
      signer: this.signer,
    });
  }
}
