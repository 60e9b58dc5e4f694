/**
 * Replacing a file so that a crash (kill -9, power loss) leaves either the old or the new
 * content, never a mix: write a temporary file, fsync it, rename it over the target, fsync the
 * directory so the rename itself is on disk. Used for CRLs, manifests, the HSM counter and the
 * farm's identity files.
 */
import * as fs from "node:fs";
import * as path from "node:path";

function fsyncPath(p: string, flags: string): void {
  const fd = fs.openSync(p, flags);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Make an already written temporary file the new `file`: fsync it, rename, fsync the directory. */
export function commitFile(tmp: string, file: string): void {
  fsyncPath(tmp, "r+");
  fs.renameSync(tmp, file);
  fsyncPath(path.dirname(file), "r");
}

/**
 * Write `data` to `file` atomically and durably. `tmp` defaults to `<file>.tmp`; pass a unique
 * name where two processes may write the same file at once.
 */
export function writeFileDurably(
  file: string,
  data: string | Uint8Array,
  opts: { mode?: number; tmp?: string } = {},
): void {
  const tmp = opts.tmp ?? `${file}.tmp`;
  fs.writeFileSync(tmp, data, { mode: opts.mode ?? 0o644 });
  commitFile(tmp, file);
}
