/**
 * The device agent: the firmware of an emulated device, answering the station protocol's
 * device operations (core/station/messages.ts) over a DeviceState. One agent serves every
 * device of a farm; what differs per device is its ID, its state and its fault flags.
 * Operations are synchronous and never mutate the state they are given: a changing operation
 * returns the next state, which the farm makes durable before it answers.
 *
 * Lifecycle (lifecycle.ts): the first use of the identity key enrolls the PUF (helper data is
 * created and stored: blank -> provisioned); installing a certificate chain that validates to
 * a fused trust anchor closes the device (provisioned -> closed); key injection burns the OEM
 * secrets and closes it in one step; decommissioning zeroizes (any -> decommissioned).
 * Signatures are ECDSA P-256 with SHA-256 (FIPS 186-5); attestation messages are domain
 * separated (core/station/attest.ts).
 *
 * Ownership (command.ts): a closed device changes its anchors, chain or key, or zeroizes, only on
 * a command signed under the trust anchor it holds; it hands out the challenge such a command is
 * signed for in ATTEST, STATUS and the commands' results.
 */
import { createECDH, createHash, createPublicKey, sign, X509Certificate } from "node:crypto";
import { FleetError } from "../../core/errors";
import { attestationMessage } from "../../core/station/attest";
import { decode, encode, isMap } from "../../core/station/cbor";
import { StationError, Status } from "../../core/station/frame";
import type * as M from "../../core/station/messages";
import { decodeSecrets } from "../injection/hsm";
import { deriveRaw, P256_SPKI_PREFIX, privateKeyObject } from "../injection/keys";
import { open as openLicense } from "../injection/license";
import type { SiliconVendor } from "../injection/vendor";
import { CaCache, type LeafCheck, leafCertifies, leafCheckOf, parseLeaf, verifyChainWith } from "./chain";
import { challengeOf, checkCommand } from "./command";
import type { Credentials } from "./connect";
import {
  contextOf,
  type DeviceKey,
  defaultPuf,
  Lru,
  type PufApi,
  type PufConditions,
  type PufDevice,
} from "./identity";
import { lifecycleOf, transition } from "./lifecycle";
import { CONFIG } from "./otp";
import { buildCsr } from "./pkix";
import { cloneState, type DeviceState } from "./state";

export interface DeviceRef {
  id: string;
  index: number;
  state: DeviceState;
  /** an existing device ID without its PUF (and chip key): a counterfeit */
  clone?: boolean;
  /** PUF noise beyond what the fuzzy extractor corrects */
  noisy?: boolean;
}

export interface Outcome<R> {
  result: R;
  /** the state to persist, if the operation changed it */
  next?: DeviceState;
}

export interface AgentOptions {
  seed: Uint8Array;
  model: string;
  vendor: SiliconVendor;
  puf?: PufApi;
  conditions?: PufConditions;
  /** bit error rate forced on noisy devices (default 0.35) */
  noisyBer?: number;
  /** keys kept "in RAM" across operations (default 4096; 0 disables) */
  keyCache?: number;
  /** PUF cells per device (devices/puf default if unset) */
  cells?: number;
  clock?: () => Date;
  /** memo of parsed CA certificates and verified CA links (default: one per agent) */
  caCache?: CaCache;
}

/** INSTALL after its first part: what the chain check needs. */
export interface InstallBegun {
  chain: Buffer[];
  anchors: Buffer[];
  lc: "provisioned" | "closed";
  /** a closed device's authorization of the install, checked with the leaf (installLeaf) */
  auth?: M.CommandAuth;
}

/** INSTALL's leaf: the epoch whose key it certifies (if any) and the check of it. */
export interface InstallLeaf {
  target: number;
  check: LeafCheck;
}

export interface AgentCounters {
  reconstructions: number;
  reconstructionFailures: number;
  enrollments: number;
}

const TRUST_SLOTS = 2;
const OEM_BYTES = 256;

const fail = (status: number, message: string): never => {
  throw new StationError(status, message);
};

export class DeviceAgent {
  readonly counters: AgentCounters = { reconstructions: 0, reconstructionFailures: 0, enrollments: 0 };
  private readonly puf: PufApi;
  private readonly conditions: PufConditions;
  private readonly noisyBer: number;
  private readonly keys: Lru<DeviceKey>;
  private readonly cloneSeed: Buffer;
  private readonly clock: () => Date;
  readonly caCache: CaCache;

  constructor(private readonly o: AgentOptions) {
    this.caCache = o.caCache ?? new CaCache();
    this.puf = o.puf ?? defaultPuf;
    this.conditions = o.conditions ?? this.puf.NOMINAL;
    this.noisyBer = o.noisyBer ?? 0.35;
    this.keys = new Lru(o.keyCache ?? 4096);
    this.cloneSeed = createHash("sha256").update("fleetguard/clone").update(o.seed).digest();
    this.clock = o.clock ?? (() => new Date());
  }

  // ------------------------------------------------------------------ keys

  private pufOf(dev: DeviceRef): PufDevice {
    const opts = this.o.cells ? { cells: this.o.cells } : undefined;
    return this.puf.createPufDevice(dev.clone ? this.cloneSeed : this.o.seed, dev.id, opts);
  }

  /**
   * Make sure the device has PUF helper data, enrolling it into `next` if not. The helper is
   * always that of the genuine chip: a clone carries a copy of the genuine helper data (it is
   * public) but reads its own, different PUF.
   */
  private ensureHelper(dev: DeviceRef, next: () => DeviceState): { helper: Buffer; genuine?: PufDevice } {
    const cur = next().helper;
    if (cur) return { helper: cur };
    if (next().otp.words[1]! & CONFIG.PUF_DISABLED)
      fail(Status.INVALID_STATE, "puf: got a zeroized PUF, want a live one");
    const genuine = this.puf.createPufDevice(
      this.o.seed,
      dev.id,
      this.o.cells ? { cells: this.o.cells } : undefined,
    );
    const helper = Buffer.from(this.puf.enroll(genuine).helper);
    this.counters.enrollments++;
    const s = next();
    s.helper = helper;
    if (lifecycleOf(s.otp) === "blank") transition(s.otp, "provisioned");
    return { helper, genuine };
  }

  /**
   * The key of `epoch`, from the key cache or by reconstruction. `genuine` is the device's
   * own PUF object if this call already made it (first contact: enroll, then reconstruct from
   * the same silicon); a clone always reads its own, other PUF.
   */
  private pufKey(dev: DeviceRef, helper: Buffer, epoch: number, genuine?: PufDevice): DeviceKey {
    const cacheable = !dev.clone && !dev.noisy;
    const ck = `${dev.index}/${epoch}`;
    if (cacheable) {
      const hit = this.keys.get(ck);
      if (hit) return hit;
    }
    const conditions = dev.noisy ? { ...this.conditions, berOverride: this.noisyBer } : this.conditions;
    let secret: Uint8Array;
    this.counters.reconstructions++;
    try {
      const device = genuine !== undefined && !dev.clone ? genuine : this.pufOf(dev);
      secret = this.puf.reconstruct(device, helper, conditions);
    } catch (e) {
      this.counters.reconstructionFailures++;
      const why = e instanceof FleetError ? e.code : "error";
      return fail(Status.KEY_FAILURE, `puf: key reconstruction failed (${why}), want a stable key`);
    }
    const { privateKey, publicKey, spki } = this.puf.deriveP256(secret, contextOf(epoch));
    secret.fill(0);
    const key = { privateKey, publicKey, spki: spki ?? publicKey.export({ type: "spki", format: "der" }) };
    if (cacheable) this.keys.set(ck, key);
    return key;
  }

  private injectedKey(dev: DeviceRef, state: DeviceState): DeviceKey | undefined {
    if (!(state.otp.words[1]! & CONFIG.INJECTED)) return undefined;
    const ck = `${dev.index}/i`;
    const hit = this.keys.get(ck);
    if (hit) return hit;
    const blob = readOem(state);
    if (!blob.k) return undefined;
    const ecdh = createECDH("prime256v1");
    ecdh.setPrivateKey(blob.k);
    const point = ecdh.getPublicKey();
    const spki = Buffer.concat([P256_SPKI_PREFIX, point]);
    const privateKey = privateKeyObject({ d: blob.k, point, spki });
    blob.k.fill(0);
    const key = { privateKey, publicKey: createPublicKey(privateKey), spki };
    this.keys.set(ck, key);
    return key;
  }

  /**
   * The key of `epoch` (default: the current one), enrolling the PUF into a state copy if
   * needed. Returns the key and the changed state, if any.
   */
  private keyFor(
    dev: DeviceRef,
    epoch?: number,
  ): { key: DeviceKey; source: M.IdentitySource; next?: DeviceState } {
    const lc = lifecycleOf(dev.state.otp);
    if (lc === "decommissioned")
      fail(Status.INVALID_STATE, "lifecycle: got decommissioned, want a live device");
    const e = epoch ?? dev.state.epoch;
    if (e === 0) {
      const inj = this.injectedKey(dev, dev.state);
      if (inj) return { key: inj, source: "injected" };
    }
    let copy: DeviceState | undefined;
    const next = () => {
      if (!copy) copy = cloneState(dev.state);
      return copy;
    };
    const { helper, genuine } = dev.state.helper
      ? { helper: dev.state.helper }
      : this.ensureHelper(dev, next);
    return { key: this.pufKey(dev, helper, e, genuine), source: "puf", next: copy };
  }

  /**
   * Activate a blank chip's PUF before any station sees it, as a silicon vendor does at wafer sort
   * (`fleet devices serve --activate-pufs`): the helper data made and kept in NVM, the lifecycle
   * `provisioned`, exactly what the first contact would otherwise do (ensureHelper). No key is
   * derived here. A device that has helper data or is past `blank` is left as it is.
   */
  activate(dev: DeviceRef): Outcome<{ activated: boolean }> {
    if (dev.state.helper || lifecycleOf(dev.state.otp) !== "blank") return { result: { activated: false } };
    const copy = cloneState(dev.state);
    this.ensureHelper(dev, () => copy);
    return { result: { activated: true }, next: copy };
  }

  /** The device's command challenge in `state` (none once decommissioned). */
  challenge(dev: DeviceRef, state: DeviceState = dev.state): Buffer | undefined {
    if (lifecycleOf(state.otp) === "decommissioned") return undefined;
    return challengeOf(dev.clone ? this.cloneSeed : this.o.seed, dev.id, state.commands);
  }

  /** Refuse a command to a closed device that its authorization does not cover (command.ts). */
  private authorize(
    dev: DeviceRef,
    payload: Parameters<typeof checkCommand>[0]["payload"],
    auth?: M.CommandAuth,
  ) {
    checkCommand({
      device: dev.id,
      payload,
      auth,
      anchors: trustAnchors(dev.state),
      challenge: this.challenge(dev)!,
      now: this.clock(),
      cache: this.caCache,
    });
  }

  private sourceOf(state: DeviceState): M.IdentitySource {
    return state.epoch === 0 && state.otp.words[1]! & CONFIG.INJECTED && readOem(state).k
      ? "injected"
      : "puf";
  }

  forget(index: number, maxEpoch: number): void {
    this.keys.delete(`${index}/i`);
    for (let e = 0; e <= maxEpoch; e++) this.keys.delete(`${index}/${e}`);
  }

  // ------------------------------------------------------------------ operations

  identify(dev: DeviceRef, req: M.IdentifyRequest): Outcome<M.IdentifyResult> {
    const chipCertificate = req.chipCert ? this.o.vendor.chipCertificate(dev.id) : undefined;
    const lc = lifecycleOf(dev.state.otp);
    if (lc === "decommissioned") {
      return {
        result: {
          device: dev.id,
          model: this.o.model,
          lifecycle: lc,
          epoch: dev.state.epoch,
          source: "puf",
          chipCertificate,
        },
      };
    }
    const { key, source, next } = this.keyFor(dev);
    const s = next ?? dev.state;
    return {
      result: {
        device: dev.id,
        model: this.o.model,
        lifecycle: lifecycleOf(s.otp),
        epoch: s.epoch,
        source,
        publicKey: key.spki,
        chipCertificate,
      },
      next,
    };
  }

  attest(dev: DeviceRef, req: M.AttestRequest): Outcome<M.AttestResult> {
    const { key, next } = this.keyFor(dev);
    const epoch = dev.state.epoch;
    const signature = sign("sha256", attestationMessage(dev.id, epoch, req.nonce), key.privateKey);
    return {
      result: { device: dev.id, epoch, signature, challenge: this.challenge(dev, next ?? dev.state) },
      next,
    };
  }

  csr(dev: DeviceRef, req: M.CsrRequest): Outcome<M.CsrResult> {
    const { key, next } = this.keyFor(dev);
    return {
      result: {
        device: dev.id,
        epoch: dev.state.epoch,
        csr: buildCsr(req.subject, key.spki, key.privateKey),
      },
      next,
    };
  }

  setTrust(dev: DeviceRef, req: M.SetTrustRequest): Outcome<M.SetTrustResult> {
    if (lifecycleOf(dev.state.otp) === "decommissioned")
      fail(Status.INVALID_STATE, "lifecycle: got decommissioned, want a live device");
    const cert = this.caCache.entry(req.anchor);
    if (!cert)
      return fail(Status.BAD_CERTIFICATE, "anchor: got bytes that do not parse, want a DER certificate");
    if (!cert.x509Ca) fail(Status.BAD_CERTIFICATE, "anchor: got an end-entity certificate, want a CA");
    // issued by itself (names) and signed by its own key: the (memoized) link anchor -> anchor
    if (this.caCache.link(cert, cert) !== "ok")
      fail(Status.BAD_SIGNATURE, "anchor: got a certificate that is not self-signed, want a root");
    const h = cert.hash;
    const anchors = trustAnchors(dev.state);
    const at = anchors.findIndex((a) => a.equals(h));
    if (at >= 0) return { result: { device: dev.id, slot: at, challenge: this.challenge(dev) } };
    // a closed device that holds no anchor yet (key injection closes it on the line) has no
    // trust to check a command against: it takes its first anchor as a device on the line does
    const closed = lifecycleOf(dev.state.otp) === "closed" && anchors.length > 0;
    if (closed) this.authorize(dev, { op: "SET_TRUST", anchor: req.anchor }, req.auth);
    const slot = anchors.length;
    if (slot >= TRUST_SLOTS)
      fail(Status.INVALID_STATE, `trust: got ${slot} slots fused, want a free one of ${TRUST_SLOTS}`);
    const next = cloneState(dev.state);
    next.otp.program("trust", h, slot * 8);
    if (closed) next.commands++;
    return { result: { device: dev.id, slot, challenge: this.challenge(dev, next) }, next };
  }

  install(dev: DeviceRef, req: M.InstallRequest): Outcome<M.InstallResult> {
    const begun = this.installBegin(dev, req);
    if ("done" in begun) return begun.done;
    return this.installEnd(dev, begun, this.installLeaf(dev, begun.chain, begun.auth));
  }

  /**
   * INSTALL, first part (no key needed): the lifecycle, the trust anchors, and a repeat of the
   * installed chain.
   */
  private installBegin(
    dev: DeviceRef,
    req: M.InstallRequest,
  ): { done: Outcome<M.InstallResult> } | InstallBegun {
    const lc = lifecycleOf(dev.state.otp);
    if (lc !== "provisioned" && lc !== "closed")
      fail(Status.INVALID_STATE, `lifecycle: got ${lc}, want provisioned or closed`);
    const anchors = trustAnchors(dev.state);
    if (anchors.length === 0)
      fail(Status.INVALID_STATE, "trust: got no fused trust anchor, want one (SET_TRUST first)");
    const chain = req.chain.map((c) => Buffer.from(c));
    if (lc === "closed" && sameChain(chain, dev.state.chain))
      return {
        done: {
          result: { device: dev.id, lifecycle: lc, epoch: dev.state.epoch, challenge: this.challenge(dev) },
        },
      };
    // refused here, before any cryptography, when there is nothing to verify
    if (lc === "closed" && !req.auth) this.authorize(dev, { op: "INSTALL", chain }, undefined);
    return { chain, anchors, lc: lc as InstallBegun["lc"], auth: req.auth };
  }

  /**
   * INSTALL, the leaf: a closed device's authorization first (`auth`: the whole chain is needed),
   * then parse the leaf, find which of the device's keys it certifies (the current epoch's, else
   * the pending rotation's), and hand back the leaf check for that key.
   */
  private installLeaf(dev: DeviceRef, chain: Buffer[], auth?: M.CommandAuth): InstallLeaf {
    if (lifecycleOf(dev.state.otp) === "closed") this.authorize(dev, { op: "INSTALL", chain }, auth);
    const leaf = parseLeaf(chain[0]!);
    let target = dev.state.epoch;
    let key = this.keyFor(dev, target).key;
    if (!leafCertifies(leaf, chain[0]!, key.spki) && dev.state.pendingEpoch !== null) {
      const pending = this.keyFor(dev, dev.state.pendingEpoch).key;
      if (leafCertifies(leaf, chain[0]!, pending.spki)) {
        target = dev.state.pendingEpoch;
        key = pending;
      }
    }
    return { target, check: leafCheckOf(leaf, chain[0]!, key.spki) };
  }

  /** INSTALL, last part: the chain check against the fused anchors, then the new state. */
  private installEnd(dev: DeviceRef, begun: InstallBegun, leaf: InstallLeaf): Outcome<M.InstallResult> {
    const { chain, anchors, lc } = begun;
    verifyChainWith(chain, anchors, this.clock(), this.caCache, leaf.check);
    const next = cloneState(dev.state);
    // installBegin's copies of the request's certificates; the farm's store keeps one copy of
    // each CA certificate for all devices (farm/pack.ts)
    next.chain = chain;
    if (leaf.target !== next.epoch) {
      next.epoch = leaf.target;
      next.pendingEpoch = null;
    }
    if (lc === "provisioned") transition(next.otp, "closed");
    else next.commands++; // a closed device's install was a command (installLeaf checked it)
    return {
      result: {
        device: dev.id,
        lifecycle: lifecycleOf(next.otp),
        epoch: next.epoch,
        challenge: this.challenge(dev, next),
      },
      next,
    };
  }

  rotate(dev: DeviceRef, req: M.RotateRequest): Outcome<M.RotateResult> {
    const lc = lifecycleOf(dev.state.otp);
    if (lc !== "provisioned" && lc !== "closed")
      fail(Status.INVALID_STATE, `lifecycle: got ${lc}, want provisioned or closed`);
    const epoch = dev.state.pendingEpoch ?? dev.state.epoch + 1;
    // starting a re-key changes the device; repeating it (same pending epoch) does not
    const starts = dev.state.pendingEpoch !== epoch;
    if (starts && lc === "closed") this.authorize(dev, { op: "ROTATE", subject: req.subject }, req.auth);
    const { key, next: enrolled } = this.keyFor(dev, epoch);
    let next = enrolled;
    if (starts) {
      next = next ?? cloneState(dev.state);
      next.pendingEpoch = epoch;
      if (lc === "closed") next.commands++;
    }
    return {
      result: {
        device: dev.id,
        epoch,
        csr: buildCsr(req.subject, key.spki, key.privateKey),
        challenge: this.challenge(dev, next ?? dev.state),
      },
      next,
    };
  }

  /**
   * CONNECT: the device's current key and installed chain, for its own MQTT session
   * (connect.ts), which runs in this thread. Only an enrolled (closed) device with a chain connects.
   */
  credentials(dev: DeviceRef): Credentials {
    const lc = lifecycleOf(dev.state.otp);
    if (lc !== "closed" || dev.state.chain.length === 0)
      return {
        ok: false,
        stage: "device",
        reason: `lifecycle ${lc}, want closed (enrolled, chain installed)`,
      };
    try {
      return { ok: true, key: this.keyFor(dev).key.privateKey, chain: dev.state.chain };
    } catch (e) {
      const why = e instanceof StationError ? e.detail : "key unavailable";
      return { ok: false, stage: "key", reason: why };
    }
  }

  status(dev: DeviceRef): Outcome<M.DeviceStatus> {
    const s = dev.state;
    return {
      result: {
        device: dev.id,
        model: this.o.model,
        lifecycle: lifecycleOf(s.otp),
        epoch: s.epoch,
        pendingEpoch: s.pendingEpoch,
        source: this.sourceOf(s),
        helperBytes: s.helper?.length ?? 0,
        trustAnchors: trustAnchors(s),
        chain: s.chain,
        otp: s.otp.map(),
        challenge: this.challenge(dev),
      },
    };
  }

  decommission(dev: DeviceRef, req: M.DecommissionRequest): Outcome<M.DecommissionResult> {
    if (req.confirm !== dev.id)
      fail(Status.BAD_REQUEST, "confirm: got another ID, want the device ID repeated");
    const lc = lifecycleOf(dev.state.otp);
    if (lc === "decommissioned") return { result: { device: dev.id, lifecycle: lc } };
    if (lc === "closed") this.authorize(dev, { op: "DECOMMISSION", confirm: req.confirm }, req.auth);
    const next = cloneState(dev.state);
    next.otp.zeroize("oem");
    next.otp.program("config", Buffer.from([0, 0, 0, CONFIG.PUF_DISABLED]));
    next.helper = null;
    next.chain = [];
    next.pendingEpoch = null;
    transition(next.otp, "decommissioned");
    this.forget(dev.index, Math.max(dev.state.epoch, dev.state.pendingEpoch ?? 0));
    return { result: { device: dev.id, lifecycle: "decommissioned" }, next };
  }

  inject(dev: DeviceRef, req: M.InjectRequest): Outcome<M.InjectResult> {
    const lc = lifecycleOf(dev.state.otp);
    if (lc === "closed" || lc === "decommissioned")
      fail(
        Status.INVALID_STATE,
        `lifecycle: got ${lc}, want blank or provisioned (a closed chip takes no secrets)`,
      );
    const chip = deriveRaw(dev.clone ? this.cloneSeed : this.o.seed, "fleetguard/chip", dev.id);
    let opened: ReturnType<typeof openLicense>;
    try {
      opened = openLicense(req.license, req.payload, dev.id, chip.d);
    } finally {
      chip.d.fill(0);
    }
    let secrets: ReturnType<typeof decodeSecrets>;
    try {
      secrets = decodeSecrets(opened.secrets);
    } catch (e) {
      return fail(Status.BAD_REQUEST, `payload: ${(e as Error).message}`);
    } finally {
      opened.secrets.fill(0);
    }
    const blob = encode({ s: secrets.secrets, k: secrets.identityKey });
    if (blob.length + 2 > OEM_BYTES)
      fail(
        Status.BAD_REQUEST,
        `payload: got ${blob.length} bytes of secrets, want at most ${OEM_BYTES - 2} (OTP size)`,
      );
    if (secrets.identityKey) {
      let spki: Buffer;
      try {
        const ecdh = createECDH("prime256v1");
        ecdh.setPrivateKey(secrets.identityKey);
        spki = Buffer.concat([P256_SPKI_PREFIX, ecdh.getPublicKey()]);
      } catch {
        return fail(
          Status.BAD_REQUEST,
          "payload.identityKey: got an invalid scalar, want a P-256 private key",
        );
      }
      if (secrets.chain?.length) {
        let leaf: Buffer;
        try {
          leaf = new X509Certificate(secrets.chain[0]!).publicKey.export({ type: "spki", format: "der" });
        } catch {
          return fail(
            Status.BAD_CERTIFICATE,
            "payload.chain[0]: got bytes that do not parse, want a certificate",
          );
        }
        if (!leaf.equals(spki))
          fail(Status.BAD_CERTIFICATE, "payload.chain[0]: got another key, want the injected key");
      }
    }
    const next = cloneState(dev.state);
    const oem = Buffer.alloc(blob.length + 2);
    oem.writeUInt16BE(blob.length, 0);
    blob.copy(oem, 2);
    const inj = Buffer.alloc(12);
    createHash("sha256").update(opened.productId).digest().copy(inj, 0, 0, 8);
    inj.writeUInt32BE(opened.counter, 8);
    next.otp.program("oem", oem);
    next.otp.lock("oem");
    next.otp.program("inject", inj);
    next.otp.lock("inject");
    next.otp.program("config", Buffer.from([0, 0, 0, CONFIG.INJECTED]));
    if (lc === "blank") transition(next.otp, "provisioned");
    transition(next.otp, "closed");
    if (secrets.chain?.length) next.chain = secrets.chain;
    oem.fill(0);
    blob.fill(0);
    secrets.identityKey?.fill(0);
    return { result: { device: dev.id, lifecycle: "closed", counter: opened.counter }, next };
  }
}

function trustAnchors(s: DeviceState): Buffer[] {
  const region = s.otp.read("trust");
  const out: Buffer[] = [];
  for (let i = 0; i < TRUST_SLOTS; i++) {
    const h = region.subarray(i * 32, i * 32 + 32);
    if (h.some((b) => b !== 0)) out.push(Buffer.from(h));
  }
  return out;
}

function sameChain(a: Buffer[], b: Buffer[]): boolean {
  return a.length === b.length && a.every((c, i) => c.equals(b[i]!));
}

function readOem(s: DeviceState): { s: Record<string, Buffer>; k?: Buffer } {
  const raw = s.otp.read("oem");
  const n = raw.readUInt16BE(0);
  if (n === 0 || n === 0xffff || n + 2 > raw.length) return { s: {} };
  const v = decode(raw.subarray(2, 2 + n));
  raw.fill(0);
  if (!isMap(v)) return { s: {} };
  return { s: {}, k: v.k instanceof Uint8Array ? Buffer.from(v.k) : undefined };
}

/** Run one device operation on `a` (the farm's main thread and its workers share this). */
export function runDeviceOp(
  a: DeviceAgent,
  op: M.DeviceOpName,
  dev: DeviceRef,
  req: unknown,
): Outcome<unknown> {
  switch (op) {
    case "IDENTIFY":
      return a.identify(dev, req as never);
    case "ATTEST":
      return a.attest(dev, req as never);
    case "CSR":
      return a.csr(dev, req as never);
    case "SET_TRUST":
      return a.setTrust(dev, req as never);
    case "INSTALL":
      return a.install(dev, req as never);
    case "ROTATE":
      return a.rotate(dev, req as never);
    case "STATUS":
      return a.status(dev);
    case "DECOMMISSION":
      return a.decommission(dev, req as never);
    case "INJECT":
      return a.inject(dev, req as never);
  }
}
