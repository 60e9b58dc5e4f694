/**
 * A SQLite registry's verify on a worker thread (issue 13: a no-change preview verifies its
 * registry and plans from it; one after the other they kept one core busy and the other idle).
 * The thread opens the file itself, read-only (a better-sqlite3 connection cannot cross threads),
 * and runs the same verify as SqliteRegistry.verify (sqlite.ts verifySnapshot): one read
 * transaction, a WAL snapshot, so the report is the one the calling thread would have computed.
 *
 * The thread is ended once it has answered, and whatever goes wrong (it cannot start, it throws,
 * it exits without a report) rejects the promise with an error that says so: never a hang, never
 * a thread left behind keeping the process alive.
 */
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { FleetError, type FleetErrorCode } from "../errors";
import type { VerifyOptions, VerifyReport } from "./types";

// the entry (.js) loads the compiled body beside it, or registers tsx for the TypeScript one
const ENTRY = path.join(__dirname, "verify-worker-entry.js");

/** What the thread is given: the file and the options that can cross (no onProgress function). */
export interface VerifyJob {
  location: string;
  opts: Omit<VerifyOptions, "onProgress" | "thread">;
  progress: boolean;
}

/** What the thread answers. */
export type VerifyMessage =
  | { type: "progress"; done: number; total: number }
  | { type: "report"; report: VerifyReport }
  | { type: "error"; name: string; code?: string; field?: string; message: string; stack?: string };

const failed = (location: string, what: string) =>
  new FleetError(
    "UNAVAILABLE",
    `registry verify of ${location}: got a verify thread that ${what}, want its report (run it again; FLEETGUARD_DEBUG=1 keeps the stack)`,
    "registry",
  );

/** Verify the SQLite registry at `location` on a worker thread; `entry` is for tests only. */
export function verifyOnThread(
  location: string,
  opts: VerifyOptions,
  entry: string = ENTRY,
): Promise<VerifyReport> {
  const { onProgress, thread: _thread, ...rest } = opts;
  const job: VerifyJob = { location, opts: rest, progress: onProgress !== undefined };
  return new Promise<VerifyReport>((resolve, reject) => {
    let w: Worker;
    try {
      w = new Worker(entry, { workerData: { fleetVerifyJob: job } });
    } catch (err) {
      reject(failed(location, `could not start (${(err as Error).message})`));
      return;
    }
    let settled = false;
    const settle = (f: () => void) => {
      if (settled) return;
      settled = true;
      f();
      // it has answered (or failed): nothing it does from here on is wanted
      void w.terminate();
    };
    w.on("message", (m: VerifyMessage) => {
      if (m.type === "progress") {
        if (!settled) onProgress?.(m.done, m.total);
      } else if (m.type === "report") settle(() => resolve(m.report));
      else
        settle(() => {
          if (m.name === "FleetError" && m.code) {
            reject(new FleetError(m.code as FleetErrorCode, m.message, m.field));
            return;
          }
          const e = failed(location, `threw ${m.name}: ${m.message}`);
          if (process.env.FLEETGUARD_DEBUG && m.stack) e.stack = m.stack;
          reject(e);
        });
    });
    w.on("error", (err) => settle(() => reject(failed(location, `failed (${err.message})`))));
    w.on("exit", (code) =>
      settle(() => reject(failed(location, `exited with code ${code} before it reported`))),
    );
  });
}
