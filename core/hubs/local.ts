/**
 * The driver of the embedded local MQTT hub (hub/local/server.ts): a HubDriver (./types.ts) that
 * speaks to the hub through its state folder (./local-state.ts) rather than a network API. A
 * registration is one file, `<state>/registrations/<registration>--<batch>.json`, holding the
 * CAs the hub trusts for this batch, their CRLs and the certificates allowed to connect (keyed by
 * the certificate's SHA-256, which is the remote id the registry records). The running hub
 * watches the folder and reloads: new trust, new CRLs, sessions of revoked or disabled
 * certificates closed.
 *
 * register/disable/remove change an in-memory copy and return their outcomes; flush() writes it
 * once, atomically and durably, and rebuilds the bundles: one write per wave, not per device. A
 * run killed before flush() leaves the previous file, and the registry's intents make the next
 * run do it again (idempotent: a certificate already allowed is reported allowed). As AWS does,
 * the driver refuses a certificate whose CA the registration does not trust (ensureTrust first),
 * and one that a stored CRL lists: a revoked certificate is never made active again.
 */
import * as path from "node:path";
import { FleetError, invalid } from "../errors";
import { parseCertificate } from "../x509/parse";
import { pemBlocks } from "../x509/pem";
import {
  deleteRegistration,
  emptyRegistration,
  parseCrl,
  type RegistrationFile,
  readEndpoint,
  readRegistration,
  rebuildBundles,
  registrationPath,
  revocationKey,
  sha256Hex,
  writeRegistration,
} from "./local-state";
import type {
  DeviceCert,
  HubDriver,
  HubTrustSummary,
  Outcome,
  RemoteRef,
  RemoteStatus,
  TrustedCa,
} from "./types";

export interface LocalHubOptions {
  /** the hub's state folder (what `fleet hub serve --state` is given) */
  stateDir: string;
  /** the HubRegistration's name */
  registration: string;
  batch: string;
  label?: string;
}

const HEX = /^[0-9a-f]{1,64}$/;

/** What a registration file knows, indexed for the driver's questions. */
interface Index {
  bySerial: Map<string, string>;
  /** CA fingerprint -> revocationKey prefix input (the CA's subject name) */
  caNames: Map<string, Buffer>;
  revoked: Set<string>;
}

function indexOf(reg: RegistrationFile): Index {
  const bySerial = new Map<string, string>();
  for (const [sha, d] of Object.entries(reg.disabled)) bySerial.set(d.serial, sha);
  for (const [sha, d] of Object.entries(reg.devices)) bySerial.set(d.serial, sha);
  const caNames = new Map<string, Buffer>();
  for (const ca of reg.cas) {
    const der = pemBlocks(ca.certificatePem, "CERTIFICATE", "certificatePem")[0]!;
    caNames.set(ca.fingerprint, parseCertificate(der).subject);
  }
  const revoked = new Set<string>();
  for (const pem of reg.crls) {
    const c = parseCrl(pemBlocks(pem, "X509 CRL", "crls")[0]!);
    for (const s of c.revoked) revoked.add(revocationKey(c.issuer, s));
  }
  return { bySerial, caNames, revoked };
}

export class LocalHubDriver implements HubDriver {
  readonly kind = "local" as const;
  readonly mode = "per-device" as const;
  readonly ratePerSecond = Number.POSITIVE_INFINITY;
  readonly label: string;
  readonly stateDir: string;
  readonly registration: string;
  readonly batch: string;
  /** the registration file this driver writes */
  readonly file: string;
  private reg: RegistrationFile | undefined;
  private index: Index | undefined;
  private dirty = false;
  private removed = false;
  private closed = false;

  constructor(opts: LocalHubOptions) {
    if (!opts || typeof opts.stateDir !== "string" || !opts.stateDir)
      throw invalid("hub.local.stateDir", opts?.stateDir, "the local hub's state folder");
    this.stateDir = path.resolve(opts.stateDir);
    this.registration = opts.registration;
    this.batch = opts.batch;
    this.file = registrationPath(this.stateDir, opts.registration, opts.batch);
    this.label = opts.label ?? `local hub '${opts.registration}'`;
  }

  private load(): { reg: RegistrationFile; index: Index } {
    if (this.closed) throw new FleetError("INTERNAL", `${this.label}: got a call after close(), want none`);
    if (!this.reg) {
      this.reg = readRegistration(this.file) ?? emptyRegistration(this.registration, this.batch);
      this.index = indexOf(this.reg);
    }
    return { reg: this.reg, index: this.index! };
  }

  private write(reg: RegistrationFile): void {
    reg.updatedAt = new Date().toISOString();
    try {
      writeRegistration(this.stateDir, reg);
      rebuildBundles(this.stateDir);
    } catch (e) {
      if (e instanceof FleetError) throw e;
      const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      throw new FleetError(
        "UNAVAILABLE",
        `${this.label}: got ${code} writing ${this.file}, want a state folder fleetguard can write`,
      );
    }
  }

  async ensureTrust(cas: readonly TrustedCa[]): Promise<HubTrustSummary> {
    const { reg } = this.load();
    if (!Array.isArray(cas) || cas.length === 0)
      throw invalid(`${this.label}: cas`, cas, "at least one CA to trust");
    const crls = new Set<string>();
    reg.cas = cas.map((c, i) => {
      const f = `cas[${i}]`;
      const der = pemBlocks(c.certificatePem, "CERTIFICATE", `${f}.certificatePem`)[0]!;
      if (sha256Hex(der) !== c.fingerprint)
        throw invalid(`${f}.fingerprint`, c.fingerprint, "the SHA-256 of certificatePem");
      pemBlocks(c.chainPem, "CERTIFICATE", `${f}.chainPem`);
      for (const [j, pem] of c.crlPems.entries()) {
        const [crl] = pemBlocks(pem, "X509 CRL", `${f}.crlPems[${j}]`);
        parseCrl(crl!, `${f}.crlPems[${j}]`);
        crls.add(pem);
      }
      return {
        name: c.name,
        fingerprint: c.fingerprint,
        certificatePem: c.certificatePem,
        chainPem: c.chainPem,
      };
    });
    reg.crls = [...crls];
    this.index = indexOf(reg);
    // a certificate the new CRLs list is refused from now on: move it out of the allowed set
    for (const [sha, d] of Object.entries(reg.devices)) {
      if (this.isRevoked(d.serial)) {
        delete reg.devices[sha];
        reg.disabled[sha] = { ...d, disabledAt: new Date().toISOString() };
      }
    }
    this.write(reg);
    this.dirty = false;
    const ep = readEndpoint(this.stateDir);
    return {
      endpoint: ep ? `${ep.host}:${ep.port}` : `local:${this.stateDir}`,
      caIds: reg.cas.map((c) => c.fingerprint),
    };
  }

  /** Is this serial on one of the registration's CRLs (under any of its CAs)? */
  private isRevoked(serial: string): boolean {
    const { index } = this;
    if (!index) return false;
    for (const name of index.caNames.values())
      if (index.revoked.has(revocationKey(name, serial))) return true;
    return false;
  }

  async register(certs: readonly DeviceCert[], onProgress?: (done: number) => void): Promise<Outcome[]> {
    const { reg, index } = this.load();
    const out: Outcome[] = [];
    for (const c of certs) {
      out.push(this.registerOne(reg, index, c));
      this.dirty = true;
      if (onProgress && out.length % 1000 === 0) onProgress(out.length);
    }
    onProgress?.(out.length);
    return out;
  }

  private registerOne(reg: RegistrationFile, index: Index, c: DeviceCert): Outcome {
    const serial = String(c.serial ?? "").toLowerCase();
    const refuse = (reason: string): Outcome => ({ serial: c.serial, ok: false, reason, retryable: false });
    if (!HEX.test(serial)) return refuse(`serial: got ${JSON.stringify(c.serial)}, want lowercase hex`);
    if (typeof c.deviceId !== "string" || !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(c.deviceId))
      return refuse(`deviceId: got ${JSON.stringify(c.deviceId)}, want one MQTT topic level`);
    const sha = sha256Hex(c.der);
    if (c.sha256 && c.sha256 !== sha)
      return refuse(`sha256: got ${c.sha256}, want the SHA-256 of der (${sha})`);
    const caName = index.caNames.get(c.issuer);
    if (!caName)
      return refuse(
        `issuer: got ${c.issuer.slice(0, 16)}..., want a CA this registration trusts (ensureTrust first)`,
      );
    if (index.revoked.has(revocationKey(caName, serial)))
      return refuse(
        "revoked: the certificate is on its CA's CRL; a revoked certificate is never registered again",
      );
    const other = index.bySerial.get(serial);
    if (other && other !== sha) {
      delete reg.devices[other];
      delete reg.disabled[other];
    }
    delete reg.disabled[sha];
    reg.devices[sha] = { deviceId: c.deviceId, serial };
    index.bySerial.set(serial, sha);
    return { serial: c.serial, ok: true, remoteId: sha };
  }

  private shaOf(index: Index, ref: RemoteRef): string | undefined {
    if (ref.remoteId) return ref.remoteId;
    return index.bySerial.get(String(ref.serial).toLowerCase());
  }

  async disable(refs: readonly RemoteRef[], onProgress?: (done: number) => void): Promise<Outcome[]> {
    const { reg, index } = this.load();
    const at = new Date().toISOString();
    const out: Outcome[] = refs.map((ref) => {
      const sha = this.shaOf(index, ref);
      if (sha && reg.devices[sha]) {
        reg.disabled[sha] = { ...reg.devices[sha], disabledAt: at };
        delete reg.devices[sha];
        this.dirty = true;
      }
      // not allowed to connect already (disabled before, or never written): that is what was asked
      return { serial: ref.serial, ok: true, remoteId: sha ?? ref.serial };
    });
    onProgress?.(out.length);
    return out;
  }

  async remove(refs: readonly RemoteRef[], onProgress?: (done: number) => void): Promise<Outcome[]> {
    const { reg, index } = this.load();
    const out: Outcome[] = refs.map((ref) => {
      const sha = this.shaOf(index, ref);
      if (sha) {
        delete reg.devices[sha];
        delete reg.disabled[sha];
        index.bySerial.delete(String(ref.serial).toLowerCase());
      }
      this.dirty = true;
      this.removed = true;
      return { serial: ref.serial, ok: true, remoteId: sha ?? ref.serial };
    });
    onProgress?.(out.length);
    return out;
  }

  /**
   * Write what register/disable/remove changed. After remove() has emptied the registration (no
   * certificate allowed or disabled left), the file itself is deleted: destroy leaves no trust.
   */
  async flush(): Promise<void> {
    if (!this.dirty || !this.reg) return;
    const reg = this.reg;
    if (this.removed && !Object.keys(reg.devices).length && !Object.keys(reg.disabled).length) {
      deleteRegistration(this.stateDir, this.registration, this.batch);
      rebuildBundles(this.stateDir);
      this.reg = undefined;
      this.index = undefined;
    } else this.write(reg);
    this.dirty = false;
    this.removed = false;
  }

  /** What the file on disk holds now (not the unflushed buffer): refresh sees changes made behind our back. */
  private onDisk(): { reg: RegistrationFile; index: Index } {
    const reg = readRegistration(this.file) ?? emptyRegistration(this.registration, this.batch);
    return { reg, index: indexOf(reg) };
  }

  async read(refs: readonly RemoteRef[]): Promise<RemoteStatus[]> {
    if (this.closed) throw new FleetError("INTERNAL", `${this.label}: got a call after close(), want none`);
    const { reg, index } = this.onDisk();
    return refs.map((ref) => {
      const sha = this.shaOf(index, ref);
      const serial = String(ref.serial).toLowerCase();
      const revoked = [...index.caNames.values()].some((n) => index.revoked.has(revocationKey(n, serial)));
      let status: RemoteStatus["status"] = "missing";
      if (sha && reg.devices[sha]) status = revoked ? "revoked" : "active";
      else if (sha && reg.disabled[sha]) status = revoked ? "revoked" : "inactive";
      return { serial: ref.serial, remoteId: sha ?? ref.remoteId ?? "", status };
    });
  }

  /** Certificates in the file (allowed or disabled) whose SHA-256 and serial `known` both lack. */
  async unknown(known: ReadonlySet<string>): Promise<string[]> {
    if (this.closed) throw new FleetError("INTERNAL", `${this.label}: got a call after close(), want none`);
    const { reg } = this.onDisk();
    const out: string[] = [];
    for (const [sha, d] of [...Object.entries(reg.devices), ...Object.entries(reg.disabled)])
      if (!known.has(sha) && !known.has(d.serial)) out.push(sha);
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.reg = undefined;
    this.index = undefined;
  }
}
