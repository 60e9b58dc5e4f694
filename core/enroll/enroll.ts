/**
 * Enrollment, the engine's first step (engine.ts): one wave of devices in working states through
 * identify -> attest -> CSR -> issue -> record -> set trust -> install -> confirm. A closed device
 * gets set-trust and install as commands signed by the issuing CA for its challenge; one that
 * trusts another root, or refuses them, is quarantined owned-elsewhere.
 */
import * as crypto from "node:crypto";
import type { DeviceRecord, Transition } from "../registry/types";
import { importP256Spki, verifyAttestation } from "../station/attest";
import type { CommandPayload } from "../station/command";
import { verifyCsr } from "../station/csr";
import type { CommandAuth, IdentifyResult, Lifecycle } from "../station/messages";
import { randomSerial } from "../x509/cert";
import { crossSigner, signCommand } from "./authorize";
import { type CompiledTemplate, deviceNames } from "./profile";
import { type BatchRun, quarantine, serialHex, sha } from "./run";

/** A certificate on its way to a device, with what a command to a closed device needs. */
export interface ToInstall {
  d: DeviceRecord;
  chain: Buffer[];
  /** unknown for a resumed device (install asks STATUS) */
  lifecycle?: Lifecycle;
  challenge?: Buffer;
}

export interface Attested {
  d: DeviceRecord;
  id: IdentifyResult;
  key: crypto.KeyObject;
  challenge?: Buffer;
}

/** One wave of devices in working states; returns how many reached a final state. */
export async function wave(run: BatchRun, page: DeviceRecord[], template: CompiledTemplate): Promise<number> {
  const fresh = page.filter((d) => d.state === "pending" || d.state === "attested");
  const resume = page.filter((d) => d.state === "issued" || d.state === "installed");
  const toInstall: ToInstall[] = [];
  let final = 0;

  if (fresh.length) {
    // one registry transaction for attest and issue: attested (with the key) and issued (with the
    // certificate) commit together, still before any certificate leaves this process; a wave cut
    // off between the two leaves its devices pending, and the next run attests them again
    const deferred: Transition[] = [];
    const attested = await attest(run, fresh, deferred);
    final += fresh.length - attested.length;
    const issued = await issue(run, attested, template, deferred);
    final += attested.length - issued.length;
    toInstall.push(...issued);
  }
  for (const d of resume) {
    const cert = await run.liveCert(d);
    if (cert) toInstall.push({ d, chain: [cert.der, ...run.chainDer] });
    else {
      // an issued state without its certificate cannot happen through this engine; start over
      await run.ctx.registry.apply([
        quarantine(d, d.state, "registry: no live certificate recorded for an issued device"),
      ]);
      final++;
    }
  }
  if (toInstall.length) final += await install(run, toInstall);
  return final;
}

/**
 * identify + attest; records attested (with the key) or quarantined. Returns the attested. With
 * `defer`, the transitions are pushed there for the caller to commit (issue's `carry`) instead.
 */
export async function attest(run: BatchRun, devs: DeviceRecord[], defer?: Transition[]): Promise<Attested[]> {
  const st = await run.station();
  const opts = { deviceTimeoutMs: run.ctx.deviceTimeoutMs };
  const ident = await st.identifyBatch(
    devs.map((d) => d.deviceId),
    opts,
  );
  const tx: Transition[] = [];
  const q = (d: DeviceRecord, reason: string) => tx.push(quarantine(d, d.state, reason));
  let candidates: Array<{ d: DeviceRecord; id: IdentifyResult; nonce: Buffer; kh: string }> = [];
  // the wave's nonces in one draw (32 fresh bytes each)
  const nonces = crypto.randomBytes(32 * ident.length);
  for (let i = 0; i < ident.length; i++)
    ((res: (typeof ident)[number]): unknown => {
      const d = devs[i]!;
      if (!res.ok) return run.failed(d, res, q, "identify");
      const id = res.value;
      if (id.model !== run.spec.model)
        return q(d, `model-mismatch: device reports ${id.model}, batch declares ${run.spec.model}`);
      if (id.source !== run.spec.source)
        return q(
          d,
          `source-mismatch: device identity comes from ${id.source}, batch declares ${run.spec.source}`,
        );
      if (id.lifecycle === "decommissioned" || !id.publicKey)
        return q(d, "no-identity-key: the device has no identity key (decommissioned or never provisioned)");
      if (d.publicKey && !d.publicKey.equals(id.publicKey))
        return q(
          d,
          "key-mismatch: the device presents another identity key than the one recorded for it (clone or swapped part)",
        );
      const kh = sha(id.publicKey).toString("hex");
      const owner = run.keys?.get(kh);
      if (owner && owner !== d.deviceId)
        return q(d, `duplicate-key: same identity key as ${owner} (cloned key)`);
      candidates.push({ d, id, nonce: nonces.subarray(32 * i, 32 * i + 32), kh });
      return undefined;
    })(ident[i]!);
  // a closed device that trusts other roots than ours belongs to another CA: say so before
  // certifying anything for it (what it reports is a hint; its refusal of our commands is the proof)
  const closed = candidates.filter((c) => c.id.lifecycle === "closed");
  if (closed.length) {
    const status = await st.statusBatch(
      closed.map((c) => c.d.deviceId),
      opts,
    );
    // ours: the batch's root, and after a root rollover the old root its cross certificate chains to
    const ours = [run.rootDer, ...(run.ctx.issuer.cross ?? []).slice(-1)].map(sha);
    const dropped = new Set<string>();
    closed.forEach((c, i) => {
      const r = status[i]!;
      if (!r.ok) {
        run.failed(c.d, r, q, "status");
        dropped.add(c.d.deviceId);
      } else if (
        r.value.trustAnchors.length > 0 &&
        !r.value.trustAnchors.some((a) => ours.some((o) => o.equals(a)))
      ) {
        q(
          c.d,
          "owned-elsewhere: identify: the device is closed under a trust anchor other than this batch's root",
        );
        dropped.add(c.d.deviceId);
      }
    });
    if (dropped.size) candidates = candidates.filter((c) => !dropped.has(c.d.deviceId));
  }
  const att = candidates.length
    ? await st.attestBatch(
        candidates.map((c) => ({ device: c.d.deviceId, nonce: c.nonce })),
        opts,
      )
    : [];
  const out: Attested[] = [];
  for (let i = 0; i < att.length; i++)
    ((res: (typeof att)[number]): unknown => {
      const c = candidates[i]!;
      if (!res.ok) return run.failed(c.d, res, q, "attest");
      let key: crypto.KeyObject;
      try {
        key = importP256Spki(c.id.publicKey!);
      } catch {
        return q(c.d, "bad-key: the identity key is not a valid P-256 key");
      }
      if (
        res.value.epoch !== c.id.epoch ||
        !verifyAttestation(key, c.d.deviceId, res.value.epoch, c.nonce, res.value.signature)
      )
        return q(c.d, "attestation-failed: the answer is not signed by the identified key (clone suspected)");
      run.keys?.set(c.kh, c.d.deviceId);
      if (c.d.state === "pending")
        tx.push({
          deviceId: c.d.deviceId,
          batch: c.d.batch,
          from: "pending",
          to: "attested",
          publicKey: c.id.publicKey,
          epoch: c.id.epoch,
        });
      // the state the registry now holds: pending became attested; attested or active stay
      out.push({
        d: { ...c.d, state: c.d.state === "pending" ? "attested" : c.d.state },
        id: c.id,
        key,
        challenge: res.value.challenge,
      });
      return undefined;
    })(att[i]!);
  if (defer) defer.push(...tx);
  else if (tx.length) await run.ctx.registry.apply(tx, run.now());
  return out;
}

/**
 * CSR, verify, issue, and record `issued` with the certificate. Returns what to install. `carry`:
 * transitions of an earlier step (attest's deferred ones) committed first, in the same transaction.
 */
export async function issue(
  run: BatchRun,
  devs: Attested[],
  template: CompiledTemplate,
  carry: readonly Transition[] = [],
): Promise<ToInstall[]> {
  if (!devs.length) {
    if (carry.length) await run.ctx.registry.apply(carry, run.now());
    return [];
  }
  const names = devs.map((x) =>
    deviceNames(run.spec.profile, x.d.deviceId, run.spec.name, run.spec.model, run.spec.names),
  );
  const csrs = await (await run.station()).csrBatch(
    devs.map((x, i) => ({ device: x.d.deviceId, subject: names[i]!.subject })),
    { deviceTimeoutMs: run.ctx.deviceTimeoutMs },
  );
  const tx: Transition[] = [...carry];
  // a carried pending -> attested becomes, for a device issued here, one pending -> issued with
  // the key and the certificate (one compare-and-set and one audit row, not two)
  const carried = new Map<string, number>();
  tx.forEach((t, i) => {
    if (t.from === "pending" && t.to === "attested") carried.set(t.deviceId, i);
  });
  const out: ToInstall[] = [];
  const now = run.now();
  const q = (d: DeviceRecord, reason: string) => tx.push(quarantine(d, d.state, reason));
  for (let i = 0; i < csrs.length; i++)
    ((res: (typeof csrs)[number]): unknown => {
      const { d, id, key, challenge } = devs[i]!;
      if (!res.ok) return run.failed(d, res, q, "csr");
      if (res.value.epoch !== id.epoch)
        return q(d, `csr-refused: epoch ${res.value.epoch}, identified ${id.epoch}`);
      let spki: Buffer;
      try {
        spki = verifyCsr(res.value.csr, id.publicKey, key).spki;
      } catch (e) {
        return q(d, `csr-invalid: ${(e as Error).message.slice(0, 160)}`);
      }
      const serial = randomSerial();
      const n = names[i]!;
      const der = template.issue(
        serial,
        n.commonName,
        spki,
        n.san.uri.length || n.san.dns.length ? n.san : undefined,
      );
      const at = d.state === "attested" ? carried.get(d.deviceId) : undefined;
      const t: Transition = {
        ...(at === undefined ? { from: d.state } : tx[at]!),
        deviceId: d.deviceId,
        batch: d.batch,
        to: "issued",
        certificate: {
          serial: serialHex(serial),
          deviceId: d.deviceId,
          batch: d.batch,
          issuer: run.ctx.issuer.fingerprint,
          der,
          notBefore: template.notBefore,
          notAfter: template.notAfter,
          issuedAt: now,
        },
      };
      if (at === undefined) tx.push(t);
      else tx[at] = t;
      out.push({
        d: { ...d, state: "issued" },
        chain: [der, ...run.chainDer],
        lifecycle: id.lifecycle,
        challenge,
      });
      return undefined;
    })(csrs[i]!);
  // recorded before any of these certificates leaves this process
  if (tx.length) await run.ctx.registry.apply(tx, now);
  return out;
}

/**
 * set trust + install; records active (issued -> active with the confirmed epoch) or quarantined, in one transaction. Returns how many ended
 * final. A closed device gets both as signed commands, the install for the challenge the
 * set-trust answer hands on; a resumed device's lifecycle and challenge come from STATUS.
 */
export async function install(run: BatchRun, items: ToInstall[]): Promise<number> {
  const st = await run.station();
  const opts = { deviceTimeoutMs: run.ctx.deviceTimeoutMs };
  const tx: Transition[] = [];
  let quarantined = 0;
  const q = (d: DeviceRecord, reason: string) => {
    quarantined++;
    tx.push(quarantine(d, d.state, reason));
  };
  let live = items;
  const unknown = items.filter((x) => x.lifecycle === undefined);
  if (unknown.length) {
    const res = await st.statusBatch(
      unknown.map((x) => x.d.deviceId),
      opts,
    );
    const gone = new Set<ToInstall>();
    unknown.forEach((x, i) => {
      const r = res[i]!;
      if (!r.ok) {
        run.failed(x.d, r, q, "status");
        gone.add(x);
        return;
      }
      x.lifecycle = r.value.lifecycle;
      x.challenge = r.value.challenge;
    });
    live = items.filter((x) => !gone.has(x));
  }
  const trust = live.length
    ? await st.setTrustAnchorBatch(
        live.map((x) => ({
          device: x.d.deviceId,
          anchor: run.rootDer,
          // after a root rollover the new anchor is set under the old one (the cross certificate)
          auth: command(run, x, { op: "SET_TRUST", anchor: run.rootDer }, crossSigner(run.ctx.issuer)),
        })),
        opts,
      )
    : [];
  const ready = live.filter((x, i) => {
    const r = trust[i]!;
    if (!r.ok) run.failed(x.d, r, q, "set-trust");
    else if (r.value.challenge) x.challenge = r.value.challenge;
    return r.ok;
  });
  const inst = ready.length
    ? await st.installBatch(
        ready.map((x) => ({
          device: x.d.deviceId,
          chain: x.chain,
          auth: command(run, x, { op: "INSTALL", chain: x.chain }),
        })),
        opts,
      )
    : [];
  const installed: DeviceRecord[] = [];
  for (let i = 0; i < inst.length; i++)
    ((r: (typeof inst)[number]): unknown => {
      const { d } = ready[i]!;
      if (!r.ok) return run.failed(d, r, q, "install");
      if (r.value.lifecycle !== "closed")
        return q(d, `install-unconfirmed: device lifecycle ${r.value.lifecycle}, want closed`);
      // issued: installed and active in one step, with the epoch the device confirmed; a device an
      // interrupted run left installed becomes active
      tx.push({
        deviceId: d.deviceId,
        batch: d.batch,
        from: d.state,
        to: "active",
        ...(d.state === "issued" ? { epoch: r.value.epoch } : {}),
      });
      installed.push(d);
      return undefined;
    })(inst[i]!);
  if (tx.length) await run.ctx.registry.apply(tx, run.now());
  run.enrolled += installed.length;
  return installed.length + quarantined;
}

/** The signed command a closed device needs (none for a device still on the line). */
export function command(
  run: BatchRun,
  x: ToInstall,
  payload: CommandPayload,
  signer?: Buffer[],
): CommandAuth | undefined {
  if (x.lifecycle !== "closed" || !x.challenge) return undefined;
  return signCommand(run.ctx.issuer, x.d.deviceId, payload, x.challenge, signer);
}
