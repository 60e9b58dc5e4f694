/**
 * Files fleetguard writes: durable, and private unless their content is public.
 *
 * Durable: replacing a file so that a crash (kill -9, power loss) leaves either the old or the
 * new content, never a mix: write a temporary file, fsync it, rename it over the target, fsync
 * the directory so the rename itself is on disk. Used for CRLs, manifests, the HSM counter, the
 * key store and the farm's identity files.
 *
 * Private: the registry, the farm's seed and device states, the HSM's secrets and the key store
 * are readable by whoever can read them, so every file fleetguard creates is 0600 and every
 * folder it creates 0700. The mode is given explicitly at creation (and set again with fchmod on a
 * temporary file a crash may have left with another mode), not through the process umask: a
 * library must not change the umask of the program that loads it, and a umask can only narrow
 * what is given here. Folders that exist already are left as they are: they may be the user's.
 *
 * CRLs and manifests are public documents (signed, meant to be served and imported), so their
 * writers may pass PUBLIC_FILE; the folders fleetguard creates for them are private like the
 * rest, because by default they sit in the state folder beside the registry and the key store.
 * Who may read a published CRL is then decided by one thing, the mode of its folder: a crlDir
 * that a web server of another user serves is a folder the operator creates with that access.
 */
import * as fs from "node:fs";
import * as path from "node:path";

/** Mode of the files fleetguard creates: the owner reads and writes, nobody else. */
export const PRIVATE_FILE = 0o600;
/** Mode of the folders fleetguard creates. */
export const PRIVATE_DIR = 0o700;
/** Mode for files whose content is public (CRLs, signed manifests, certificate chains). */
export const PUBLIC_FILE = 0o644;

/** Create `dir` and its missing parents with mode 0700; an existing folder keeps its mode. */
export function ensurePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR });
}

/**
 * Create `file` empty with mode 0600 (and its missing folders 0700) unless it exists, so that a
 * library that then opens it (SQLite creates its -wal and -shm files with the mode of the
 * database file) never creates it with the umask's default. Returns whether it was created.
 * Whatever prevents it (a file or folder already there, a parent that is a file, no permission)
 * is left for the caller's real open to find and report in its own words.
 */
export function createPrivateFile(file: string): boolean {
  let fd: number;
  try {
    ensurePrivateDir(path.dirname(file));
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, PRIVATE_FILE);
  } catch {
    return false;
  }
  // no fsync: an empty file lost to a power cut is created again by the next open, and the
  // database's first write syncs what it needs
  fs.closeSync(fd);
  return true;
}

function fsyncPath(p: string, flags: string): void {
  const fd = fs.openSync(p, flags);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Make an already written temporary file the new `file`: set its mode (default 0600), fsync it,
 * rename, fsync the directory.
 */
export function commitFile(tmp: string, file: string, mode: number = PRIVATE_FILE): void {
  const fd = fs.openSync(tmp, "r+");
  try {
    fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  fsyncPath(path.dirname(file), "r");
}

/**
 * Write `data` to `file` atomically and durably, with mode `opts.mode` (default 0600).
 * `tmp` defaults to `<file>.tmp`; pass a unique name where two processes may write the same file
 * at once.
 */
export function writeFileDurably(
  file: string,
  data: string | Uint8Array,
  opts: { mode?: number; tmp?: string } = {},
): void {
  const tmp = opts.tmp ?? `${file}.tmp`;
  const mode = opts.mode ?? PRIVATE_FILE;
  const fd = fs.openSync(tmp, "w", mode);
  try {
    // a temporary file left by a crash keeps the mode it was created with: set it again
    fs.fchmodSync(fd, mode);
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  fsyncPath(path.dirname(file), "r");
}
