/** Fleet files are read bounded and non-blocking, like policy files (issue 9, finding 9). */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { loadFleet } from "../../policies/fleet";
import { tmpdir } from "../helpers/openssl";

describe("loadFleet reads what it is given, within limits", () => {
  it("refuses a FIFO without waiting for a writer, and says why it cannot read", () => {
    const dir = tmpdir();
    const fifo = path.join(dir, "fleet.yaml");
    execFileSync("mkfifo", [fifo]);
    const r = loadFleet(fifo);
    expect(r.diagnostics[0]!.message).toMatch(/^cannot read the fleet file: not a regular file/);
  });

  it("refuses a file over the size limit and names a missing one", () => {
    const dir = tmpdir();
    const big = path.join(dir, "big.yaml");
    fs.writeFileSync(big, `kind: Fleet\n# ${"x".repeat(2 * 1024 * 1024)}\n`);
    expect(loadFleet(big).diagnostics[0]!.message).toMatch(
      /^cannot read the fleet file: .*(MiB|bytes|large)/,
    );
    expect(loadFleet(path.join(dir, "nope.yaml")).diagnostics[0]!.message).toMatch(
      /^cannot read the fleet file: .+/,
    );
  });
});
