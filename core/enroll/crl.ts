/**
 * One CRL per CA (RFC 5280 section 5), with one cRLNumber sequence, published in a CRL folder that
 * every writer of that CA's CRL shares: the CA provider (CA-level revocations: revoked subordinate
 * CAs) and the batch providers under an issuing CA (the registry's revoked device certificates).
 *
 * Layout of the folder, per CA (fingerprint = SHA-256 of its certificate, hex):
 *   <fingerprint>.crl       the CRL, DER (what RFC 5280 4.2.1.13 HTTP distribution points serve)
 *   <fingerprint>.crl.pem   the same CRL, PEM (the name batches used before: old readers keep working)
 *   <name> and <name>.pem   the same CRL again under each name a distribution point gives it, the
 *                           last path segment of the URL (`http://pki.example.com/crl/root.crl` ->
 *                           `root.crl`), so that `fleet crl serve` answers at that URL path
 *   <fingerprint>.json      the sidecar: cRLNumber, state, names and URL paths, each writer's entries
 *   <fingerprint>.lock      held while one writer publishes (two processes may publish at once)
 *
 * Sequence rule: the next cRLNumber is max(sidecar cRLNumber, floor) + 1, where floor is a number a
 * writer knows was used elsewhere (an old CA state's crlNumber, from before this folder). The
 * sidecar is written (number reserved, state "signing") before any CRL file and again after them
 * (state "published"): a kill -9 anywhere in between skips a number at worst, never reuses one,
 * and the next run sees the unfinished state and publishes again. Each writer owns one source of
 * entries in the sidecar and replaces only that one, so the CA's and the batch's revocations
 * always appear together on the one CRL. A sidecar from before (a batch's `{crlNumber, ...,
 * revokedDigest}`) is read as the start of the sequence, and the revocations of the CRL it
 * describes are carried over, so an upgrade never un-revokes a certificate.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { signCrl } from "../ca";
import { ensurePrivateDir, PUBLIC_FILE, writeFileDurably } from "../durable";
import { FleetError } from "../errors";
import type { Registry } from "../registry/types";
import { REVOCATION_REASONS, type RevocationReason } from "../x509/crl";
import { children, content, decodeOid, read } from "../x509/der";
import type { SigningKey } from "../x509/keys";
import { pemBlocks, pemOne } from "../x509/pem";

/**
 * Who wrote entries of a CA's CRL: the CA provider, the batches (from the registry), or a
 * subordinate CA declared revoked (`subordinate:<its fingerprint>`: the child's own provider puts
 * its certificate on its issuer's CRL, signed with the issuer's key, which it opens anyway).
 */
export type CrlSource = "ca" | "registry" | `subordinate:${string}`;

/** The CRL source of a subordinate CA that revokes itself on its issuer's CRL. */
export const subordinateSource = (fingerprint: string): CrlSource => `subordinate:${fingerprint}`;

export interface CrlEntry {
  /** serial number, lowercase hex */
  serial: string;
  /** ISO 8601, whole seconds */
  revokedAt: string;
  reason?: RevocationReason;
}

export interface PublishedCrl {
  /** the PEM file `<fingerprint>.crl.pem` (as before) */
  path: string;
  /** the DER file `<fingerprint>.crl` */
  derPath: string;
  /** the files named by distribution points (DER), e.g. `<dir>/root.crl` */
  namedPaths: string[];
  crlNumber: number;
  /** entries on the CRL (every source) */
  revoked: number;
  /** SHA-256 over the serials of this writer's source: what it held when it signed */
  revokedDigest: string;
  thisUpdate: string;
  nextUpdate: string;
}

export interface CrlMeta {
  version?: number;
  crlNumber: number;
  state?: "signing" | "published";
  thisUpdate?: string;
  nextUpdate?: string;
  intervalHours?: number;
  names?: string[];
  /** the CA's declared name (CaHierarchy): a successor under the same name takes the names over */
  caName?: string;
  /** the URL paths of the distribution points that name this CRL (`/crl/root.crl`): what the server answers at */
  paths?: string[];
  sources?: { [K in CrlSource]?: { digest: string; entries: CrlEntry[] } };
  /** a sidecar from before (version 1): the batch's digest */
  revokedDigest?: string;
}

export const DEFAULT_CRL_DIR = ".fleetguard/crl";
const LOCK_WAIT_MS = 30_000;

export const crlFilesOf = (dir: string, fingerprint: string) => ({
  der: path.join(dir, `${fingerprint}.crl`),
  pem: path.join(dir, `${fingerprint}.crl.pem`),
  meta: path.join(dir, `${fingerprint}.json`),
  lock: path.join(dir, `${fingerprint}.lock`),
});

/** SHA-256 (hex) of a CA certificate, the key of its files. */
export const caFingerprint = (certificatePem: string): string =>
  crypto
    .createHash("sha256")
    .update(pemOne(certificatePem, "CERTIFICATE", "ca.certificatePem"))
    .digest("hex");

/**
 * The file a distribution-point URL names: its last path segment, a plain file name ending in
 * `.crl` (`http://pki.example.com/crl/root.crl` -> `root.crl`).
 */
export function crlNameOf(url: string, field = "crlDistributionPoint"): string {
  let seg = "";
  try {
    const u = new URL(url);
    seg = decodeURIComponent(u.pathname.split("/").pop() ?? "");
  } catch {
    seg = "";
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*\.crl$/.test(seg) || seg.endsWith(".pem.crl"))
    throw new FleetError(
      "INVALID_INPUT",
      `${field}: got ${JSON.stringify(url)}, want an http(s) URL whose last path segment is a file name ending in .crl (letters, digits, . _ -)`,
      field,
    );
  return seg;
}

/**
 * The file names of the distribution points among `urls` whose last segment is a `.crl` file
 * (others, such as an LDAP URL or a path without a file name, name no file: the CRL is then
 * published as `<fingerprint>.crl` only).
 */
export function crlNamesFrom(urls: readonly unknown[] | undefined): string[] {
  return [...new Set(crlUrlsFrom(urls).map((u) => u.name))];
}

/** The usable distribution points among `urls`: file name and URL path (`/crl/root.crl`). */
export function crlUrlsFrom(urls: readonly unknown[] | undefined): { name: string; path: string }[] {
  const out: { name: string; path: string }[] = [];
  for (const u of urls ?? []) {
    try {
      const name = crlNameOf(String(u));
      const p = new URL(String(u)).pathname;
      if (!out.some((o) => o.path === p)) out.push({ name, path: p });
    } catch {}
  }
  return out;
}

export function readCrlMeta(dir: string, fingerprint: string): CrlMeta | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(crlFilesOf(dir, fingerprint).meta, "utf8")) as CrlMeta;
    return typeof m === "object" && m !== null ? m : undefined;
  } catch {
    return undefined;
  }
}

export const digestOf = (serials: string[]) =>
  crypto
    .createHash("sha256")
    .update(
      [...serials]
        .map((s) => s.toLowerCase())
        .sort()
        .join("\n"),
    )
    .digest("hex");

/** Create the CRL folder, or say which field is wrong (a file in the way, no permission). */
function ensureDir(dir: string): void {
  try {
    ensurePrivateDir(dir);
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new FleetError(
      "INVALID_INPUT",
      `crlDir: got ${JSON.stringify(dir)} that cannot be a folder (${why}), want a folder fleetguard can write CRLs into`,
      "crlDir",
    );
  }
}

const sleep = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

function alive(pid: number): boolean {
  if (pid === process.pid) return false; // our critical sections are synchronous: never ours
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Run `fn` (synchronous: nothing else of this process runs inside) holding `lock`, a file created
 * exclusively with our pid. A lock whose process is gone (kill -9) is taken over: renamed aside
 * first, so of two processes that both saw it stale only one takes it.
 */
export function withCrlLock<T>(lock: string, fn: () => T, waitMs = LOCK_WAIT_MS): T {
  const deadline = Date.now() + waitMs;
  for (;;) {
    let fd: number | undefined;
    try {
      fd = fs.openSync(lock, "wx", 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    if (fd !== undefined) {
      try {
        fs.writeSync(fd, `${process.pid}\n`);
      } finally {
        fs.closeSync(fd);
      }
      break;
    }
    let holder = "";
    let age = 0;
    try {
      holder = fs.readFileSync(lock, "utf8").trim();
      age = Date.now() - fs.statSync(lock).mtimeMs;
    } catch {
      continue; // released meanwhile
    }
    const pid = Number(holder);
    const stale = Number.isInteger(pid) && pid > 0 ? !alive(pid) : age > 5_000;
    if (stale) {
      const aside = `${lock}.stale-${process.pid}-${crypto.randomBytes(4).toString("hex")}`;
      try {
        fs.renameSync(lock, aside);
        if (fs.readFileSync(aside, "utf8").trim() !== holder) {
          // it was a fresh lock taken meanwhile: give it back (unless yet another one exists)
          try {
            fs.linkSync(aside, lock);
          } catch {}
        }
        fs.unlinkSync(aside);
      } catch {}
      continue;
    }
    if (Date.now() > deadline)
      throw new FleetError(
        "UNAVAILABLE",
        `crlDir: got ${lock} held by process ${holder} for ${Math.round(age / 1000)} s, want it released (another run publishing this CRL)`,
        "crlDir",
      );
    sleep(20);
  }
  try {
    return fn();
  } finally {
    try {
      fs.unlinkSync(lock);
    } catch {}
  }
}

/** The revoked entries of a DER CRL (serial, date, reason): to carry an old CRL's over. */
export function crlEntriesOf(der: Uint8Array): CrlEntry[] {
  const root = read(der);
  const tbs = children(der, children(der, root)[0]!);
  let i = 0;
  if (tbs[0]!.tag === 0x02) i++; // version
  i += 3; // signature, issuer, thisUpdate
  if (tbs[i] && (tbs[i]!.tag === 0x17 || tbs[i]!.tag === 0x18)) i++; // nextUpdate
  const list = tbs[i];
  if (list?.tag !== 0x30) return [];
  const byCode = Object.fromEntries(Object.entries(REVOCATION_REASONS).map(([k, v]) => [v, k]));
  return children(der, list!).map((e) => {
    const parts = children(der, e);
    const serial = content(der, parts[0]!)
      .toString("hex")
      .replace(/^(00)+(?=.)/, "");
    const t = content(der, parts[1]!).toString("ascii");
    const full = parts[1]!.tag === 0x17 ? `${Number(t.slice(0, 2)) >= 50 ? "19" : "20"}${t}` : t;
    const revokedAt = new Date(
      `${full.slice(0, 4)}-${full.slice(4, 6)}-${full.slice(6, 8)}T${full.slice(8, 10)}:${full.slice(10, 12)}:${full.slice(12, 14)}Z`,
    ).toISOString();
    let reason: RevocationReason | undefined;
    if (parts[2]) {
      for (const x of children(der, parts[2])) {
        const xp = children(der, x);
        if (decodeOid(content(der, xp[0]!)) === "2.5.29.21") {
          const v = content(der, xp[xp.length - 1]!);
          reason = byCode[v[v.length - 1]!] as RevocationReason | undefined;
        }
      }
    }
    return { serial, revokedAt, ...(reason ? { reason } : {}) };
  });
}

/** Sources of a sidecar; a sidecar from before brings the entries of the CRL it describes. */
function sourcesOf(
  m: CrlMeta | undefined,
  files: ReturnType<typeof crlFilesOf>,
): NonNullable<CrlMeta["sources"]> {
  if (m?.version === 2) return { ...(m.sources ?? {}) };
  if (!m) return {};
  try {
    const der = pemBlocks(fs.readFileSync(files.pem, "utf8"), "X509 CRL", "crl")[0]!;
    const entries = crlEntriesOf(der);
    return { registry: { digest: m.revokedDigest ?? "", entries } };
  } catch {
    return {};
  }
}

/** Names claimed by other CAs' sidecars in `dir` (two CAs must never publish under one name). */
function claimedElsewhere(
  dir: string,
  fingerprint: string,
  names: string[],
): Map<string, { fingerprint: string; caName?: string }> {
  const out = new Map<string, { fingerprint: string; caName?: string }>();
  if (!names.length) return out;
  for (const f of fs.readdirSync(dir)) {
    if (!/^[0-9a-f]{64}\.json$/.test(f) || f.startsWith(fingerprint)) continue;
    const m = readCrlMeta(dir, f.slice(0, 64));
    for (const n of m?.names ?? [])
      if (names.includes(n)) out.set(n, { fingerprint: f.slice(0, 64), caName: m?.caName });
  }
  return out;
}

/**
 * A CA replaced by its successor under the same declared name (a new key, a changed subject)
 * takes its names over: they leave the old CA's sidecar (under its lock), whose files under the
 * fingerprint stay published for the certificates it issued.
 */
function releaseNames(dir: string, fingerprint: string, names: string[]): void {
  withCrlLock(crlFilesOf(dir, fingerprint).lock, () => {
    const m = readCrlMeta(dir, fingerprint);
    if (!m) return;
    const keep = (m.names ?? []).filter((n) => !names.includes(n));
    const paths = (m.paths ?? []).filter((p) => !names.includes(p.split("/").pop() ?? ""));
    writeFileDurably(crlFilesOf(dir, fingerprint).meta, JSON.stringify({ ...m, names: keep, paths }), {
      tmp: `${crlFilesOf(dir, fingerprint).meta}.tmp-${process.pid}`,
    });
  });
}

export interface PublishOptions {
  source: CrlSource;
  /** this writer's revoked certificates: they replace what this source wrote before */
  entries: CrlEntry[];
  /**
   * the distribution points that name this CRL (the URLs in the certificates the CA issues): it is
   * published under their last path segment too (`root.crl`), and served at their URL path
   */
  urls?: readonly string[];
  /** the CA's declared name: a CA replaced under the same name hands its file names to this one */
  caName?: string;
  /** the field names come from, for errors (`crlDistributionPoint`, `profile.crlUrls`) */
  namesField?: string;
  /** a cRLNumber already used for this CA elsewhere (an old state's): the next is above it */
  floor?: number;
  /** the CA's CRL interval; a writer that is not the CA (a batch) leaves it to the sidecar's */
  intervalHours?: number;
  now?: () => Date;
  /** called after each durable step ("reserved": sidecar; "written": CRL files), for crash tests */
  onStep?: (step: "reserved" | "written") => void;
}

/**
 * Publish the CRL of `issuer` with this writer's entries and every other writer's (synchronous:
 * held under the CA's lock). Returns what was written.
 */
export function publishCaCrl(
  dir: string,
  issuer: { certificatePem: string; key: SigningKey; fingerprint?: string },
  opts: PublishOptions,
): PublishedCrl {
  ensureDir(dir);
  const fingerprint = issuer.fingerprint ?? caFingerprint(issuer.certificatePem);
  const files = crlFilesOf(dir, fingerprint);
  const dps = crlUrlsFrom(opts.urls);
  const wanted = [...new Set(dps.map((d) => d.name))];
  const taken = claimedElsewhere(dir, fingerprint, wanted);
  // a batch writer does not name its CA: the CA's own sidecar does (written at its creation)
  const self = opts.caName ?? readCrlMeta(dir, fingerprint)?.caName;
  for (const [n, other] of taken) {
    if (self && other.caName === self) continue; // a predecessor: released below
    const field = opts.namesField ?? "crlDistributionPoint";
    throw new FleetError(
      "INVALID_INPUT",
      `${field}: got ${JSON.stringify(n)}, already the CRL of CA ${other.caName ? `'${other.caName}' ` : ""}${other.fingerprint.slice(0, 16)}, want a name no other CA publishes under`,
      field,
    );
  }
  for (const [n, other] of taken) releaseNames(dir, other.fingerprint, [n]);
  return withCrlLock(files.lock, () => {
    const meta = readCrlMeta(dir, fingerprint);
    const sources = sourcesOf(meta, files);
    const entries = opts.entries.map((e) => ({ ...e, serial: e.serial.toLowerCase() }));
    const own = { digest: digestOf(entries.map((e) => e.serial)), entries };
    sources[opts.source] = own;
    const names = [...new Set([...(meta?.version === 2 ? (meta.names ?? []) : []), ...wanted])].sort();
    const intervalHours =
      opts.source === "ca"
        ? (opts.intervalHours ?? meta?.intervalHours ?? 168)
        : (meta?.intervalHours ?? opts.intervalHours ?? 168);
    const previous = Math.max(Number(meta?.crlNumber) || 0, Number(opts.floor) || 0);
    const crlNumber = previous + 1;
    const paths = [
      ...new Set([...(meta?.version === 2 ? (meta.paths ?? []) : []), ...dps.map((d) => d.path)]),
    ].sort();
    const caName = opts.caName ?? meta?.caName;
    const base = {
      version: 2,
      crlNumber,
      intervalHours,
      names,
      paths,
      sources,
      ...(caName ? { caName } : {}),
    };
    // the number is reserved first: a crash from here on skips it, never reuses it
    writeFileDurably(files.meta, JSON.stringify({ ...base, state: "signing" }), {
      tmp: `${files.meta}.tmp-${process.pid}`,
    });
    opts.onStep?.("reserved");
    const seen = new Set<string>();
    const all: CrlEntry[] = [];
    const order = [
      "ca",
      "registry",
      ...Object.keys(sources)
        .filter((k) => k !== "ca" && k !== "registry")
        .sort(),
    ] as CrlSource[];
    for (const s of order)
      for (const e of sources[s]?.entries ?? [])
        if (!seen.has(e.serial)) {
          seen.add(e.serial);
          all.push(e);
        }
    const crl = signCrl(
      { certificatePem: issuer.certificatePem, key: issuer.key },
      {
        previousNumber: previous,
        intervalHours,
        revoked: all.map((e) => ({
          serialHex: e.serial,
          revokedAt: new Date(Math.floor(Date.parse(e.revokedAt) / 1000) * 1000),
          ...(e.reason && e.reason in REVOCATION_REASONS ? { reason: e.reason } : {}),
        })),
      },
      opts.now ? { now: opts.now } : undefined,
    );
    const der = pemOne(crl.crlPem, "X509 CRL", "crl");
    const put = (file: string, data: string | Buffer) =>
      writeFileDurably(file, data, { tmp: `${file}.tmp-${process.pid}`, mode: PUBLIC_FILE }); // public
    put(files.der, der);
    put(files.pem, crl.crlPem);
    const namedPaths = names.map((n) => path.join(dir, n));
    for (const p of namedPaths) {
      put(p, der);
      put(`${p}.pem`, crl.crlPem);
    }
    opts.onStep?.("written");
    writeFileDurably(
      files.meta,
      JSON.stringify({ ...base, state: "published", thisUpdate: crl.thisUpdate, nextUpdate: crl.nextUpdate }),
      { tmp: `${files.meta}.tmp-${process.pid}` },
    );
    return {
      path: files.pem,
      derPath: files.der,
      namedPaths,
      crlNumber,
      revoked: all.length,
      revokedDigest: own.digest,
      thisUpdate: crl.thisUpdate,
      nextUpdate: crl.nextUpdate,
    };
  });
}

/**
 * Is the published CRL of `fingerprint` current for `source`? False when it is missing or
 * unfinished, was signed with other entries of this source (`digest`), lacks one of `names`, is
 * below `floor`, or is past half of its validity: every run republishes then, so a failed publish
 * is retried and a CRL never goes stale.
 */
export function caCrlCurrent(
  dir: string,
  fingerprint: string,
  want: {
    source: CrlSource;
    digest: string;
    urls?: readonly string[];
    floor?: number;
    intervalHours?: number;
  },
  now = new Date(),
): boolean {
  const files = crlFilesOf(dir, fingerprint);
  const m = readCrlMeta(dir, fingerprint);
  if (m?.version !== 2 || m.state !== "published" || !m.nextUpdate) return false;
  if (!fs.existsSync(files.der) || !fs.existsSync(files.pem)) return false;
  const hours = m.intervalHours ?? want.intervalHours ?? 168;
  if (want.source === "ca" && want.intervalHours !== undefined && want.intervalHours !== m.intervalHours)
    return false;
  if (Date.parse(m.nextUpdate) - now.getTime() < (hours * 3_600_000) / 2) return false;
  if ((want.floor ?? 0) > m.crlNumber) return false;
  if ((m.sources?.[want.source]?.digest ?? digestOf([])) !== want.digest) return false;
  for (const d of crlUrlsFrom(want.urls))
    if (!m.names?.includes(d.name) || !m.paths?.includes(d.path) || !fs.existsSync(path.join(dir, d.name)))
      return false;
  return true;
}

const registryEntries = async (registry: Registry, fingerprint: string): Promise<CrlEntry[]> =>
  (await registry.revokedBy(fingerprint)).map((r) => ({
    serial: r.serial.toLowerCase(),
    revokedAt: new Date(Math.floor(r.revokedAt.getTime() / 1000) * 1000).toISOString(),
    ...(r.reason && r.reason in REVOCATION_REASONS ? { reason: r.reason as RevocationReason } : {}),
  }));

/**
 * Is the issuing CA's published CRL what the registry holds now (every revoked certificate of
 * every batch under it), under every distribution point of `urls`, and fresh?
 */
export async function crlCurrent(
  registry: Registry,
  issuer: { fingerprint: string },
  dir: string,
  intervalHours = 168,
  now = new Date(),
  urls: readonly string[] = [],
): Promise<boolean> {
  const m = readCrlMeta(dir, issuer.fingerprint);
  if (m?.version !== 2 || m.state !== "published") return false;
  const entries = await registryEntries(registry, issuer.fingerprint);
  return caCrlCurrent(
    dir,
    issuer.fingerprint,
    { source: "registry", digest: digestOf(entries.map((e) => e.serial)), urls, intervalHours },
    now,
  );
}

/** Publish the issuing CA's CRL with the registry's revocations of every batch under it. */
export async function publishCrl(
  registry: Registry,
  issuer: { certificatePem: string; key: SigningKey; fingerprint: string },
  dir: string,
  intervalHours = 168,
  urls: readonly string[] = [],
  caName?: string,
): Promise<PublishedCrl> {
  const entries = await registryEntries(registry, issuer.fingerprint);
  return publishCaCrl(dir, issuer, {
    source: "registry",
    entries,
    urls,
    namesField: "profile.crlUrls",
    ...(caName ? { caName } : {}),
    intervalHours,
  });
}

/**
 * The published CRLs (PEM) of the CAs of `chainPem` (after the first `skip`) found in `dir`, and
 * the fingerprints of those without one.
 */
export function publishedCrlPems(
  dir: string,
  chainPem: string,
  skip = 0,
): { pems: string[]; missing: string[] } {
  const pems: string[] = [];
  const missing: string[] = [];
  for (const der of pemBlocks(chainPem, "CERTIFICATE", "chainPem").slice(skip)) {
    const fp = crypto.createHash("sha256").update(der).digest("hex");
    try {
      pems.push(fs.readFileSync(crlFilesOf(dir, fp).pem, "utf8"));
    } catch {
      missing.push(fp);
    }
  }
  return { pems, missing };
}
