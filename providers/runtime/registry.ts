/**
 * The registry as every dynamic provider opens it: one rule for where it may be (a file path under
 * the program directory or a postgres:// URL, nothing else) and one way to open it (errors name
 * the field `registry`, a password in a URL is never shown).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { FleetError, invalid, phrase } from "../../core/errors";
import { openRegistry, parseLocation, redactUrl } from "../../core/registry";
import type { Registry } from "../../core/registry/types";

/**
 * Registry location as the provider process sees it: a file path (relative paths are under the
 * program directory) or a postgres:// URL. Anything else (`mysql://u:p@h/db`, `file:x`) is
 * refused naming the field, never taken for a file name (which would put a password in a path
 * and enroll the whole lot again into an empty registry).
 */
export function registryLocation(r: unknown): string {
  const want = "a SQLite file path or a postgres://user@host:port/database URL";
  if (typeof r !== "string" || !r.trim() || r.includes("\0")) throw invalid("registry", r, want);
  if (/^postgres(ql)?:\/\//i.test(r)) {
    parseLocation(r); // host and database present, else a clear error
    return r;
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(r)?.[1]?.toLowerCase();
  if (scheme && scheme !== "sqlite") throw invalid("registry", phrase(`a ${scheme}: location`), want);
  const file = path.resolve(process.cwd(), r.replace(/^sqlite:/i, ""));
  // a folder or a file this process cannot write would only fail half-way through a run
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(file);
  } catch {
    // not there yet: created on first use
  }
  if (st?.isDirectory()) throw invalid("registry", phrase(`the folder ${file}`), want);
  try {
    fs.accessSync(st ? file : path.dirname(file), fs.constants.R_OK | fs.constants.W_OK);
  } catch (e) {
    if (st || fs.existsSync(path.dirname(file)))
      throw invalid(
        "registry",
        phrase(`${file}, which this process cannot write (${(e as NodeJS.ErrnoException).code})`),
        want,
      );
  }
  return file;
}

/** The location for messages: a password in a URL is never shown. */
export const shown = (r: string) => (/^postgres(ql)?:\/\//i.test(r) ? redactUrl(r) : r);

export async function withRegistry<T>(i: { registry: string }, f: (r: Registry) => Promise<T>): Promise<T> {
  const where = registryLocation(i.registry);
  let reg: Registry;
  try {
    reg = await openRegistry(where);
  } catch (e) {
    if (e instanceof FleetError && e.field === "registry") throw e;
    // a folder, a read-only file, a wrong password, a server down: the run stops, naming the field
    const why =
      e instanceof FleetError ? e.message : ((e as NodeJS.ErrnoException).code ?? (e as Error).message);
    throw new FleetError(
      "UNAVAILABLE",
      `registry: got ${shown(where)} that cannot be opened for writing (${String(why).replaceAll(where, "<registry>")}), want a registry fleetguard can read and write`,
      "registry",
    );
  }
  try {
    return await f(reg);
  } finally {
    await reg.close();
  }
}
