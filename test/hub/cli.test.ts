/** `fleet hub serve` as a person runs it: a child process, its ready line, a device, SIGTERM. */
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { LocalHubDriver } from "../../core/hubs/local";
import { fleetAsync, ROOT } from "../cli/cli-run";
import { tmpdir } from "../helpers/openssl";
import { connectDevice, waitFor } from "./mqtt";
import { makePki } from "./pki";

const dir = tmpdir("fleetguard-hubcli-");
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  fs.rmSync(dir, { recursive: true, force: true });
});

function serve(args: string[]) {
  const loader = pathToFileURL(path.join(ROOT, "node_modules/tsx/dist/loader.mjs")).href;
  const child = spawn(
    process.execPath,
    ["--import", loader, path.join(ROOT, "cli/fleet.ts"), "hub", "serve", ...args],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NO_COLOR: "1" },
    },
  );
  children.push(child);
  const out = { stdout: "", stderr: "" };
  child.stdout!.setEncoding("utf8").on("data", (c: string) => {
    out.stdout += c;
  });
  child.stderr!.setEncoding("utf8").on("data", (c: string) => {
    out.stderr += c;
  });
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return { child, out, exited };
}

describe("fleet hub serve", () => {
  it("prints one ready line, serves a registered device, logs refusals and reloads, exits 0 on SIGTERM", async () => {
    const pki = makePki("cli");
    const dev = pki.device("fg100-1");
    const stranger = pki.device("fg100-2");
    const d = new LocalHubDriver({ stateDir: dir, registration: "demo", batch: "b1" });
    await d.ensureTrust([pki.trusted()]);
    await d.register([dev.cert]);
    await d.flush();
    const s = serve(["--port", "0", "--state", dir]);
    await waitFor(() => s.out.stdout.includes("\n"), 30_000, "the ready line");
    const m =
      /^hub: listening on 127\.0\.0\.1:(\d+) \(mutual TLS, MQTT 3\.1\.1\), trusting 2 CAs, 1 devices; devices verify the hub with (.+)\/hub-ca\.pem\n$/.exec(
        s.out.stdout,
      );
    expect(m, s.out.stdout).not.toBeNull();
    const port = Number(m![1]);
    const hubCa = fs.readFileSync(path.join(dir, "hub-ca.pem"), "utf8");
    const a = await connectDevice(port, hubCa, dev);
    expect(a.error).toBeUndefined();
    await a.client!.publishAsync("devices/fg100-1/telemetry", "{}", { qos: 1 });
    expect((await connectDevice(port, hubCa, stranger)).code).toBe(5);
    await waitFor(
      () => s.out.stderr.includes("hub: refused 'fg100-2': certificate not registered"),
      10_000,
      "the log",
    );
    // revoke: the live session is closed and the log says so
    const closed = new Promise<void>((resolve) => a.client!.once("close", () => resolve()));
    await d.disable([{ deviceId: dev.id, serial: dev.serial, remoteId: dev.sha256 }]);
    await d.flush();
    await closed;
    await waitFor(
      () => /hub: closed the session of 'fg100-1': certificate disabled/.test(s.out.stderr),
      10_000,
      "log",
    );
    await waitFor(
      () => /hub: reloaded: trusting 2 CAs, 0 devices; closed 1 sessions/.test(s.out.stderr),
      10_000,
      "log",
    );
    expect(s.out.stderr).not.toMatch(/PRIVATE KEY/);
    s.child.kill("SIGHUP");
    await waitFor(
      () => /hub: SIGHUP, reloading\nhub: reloaded: trusting 2 CAs, 0 devices\n/.test(s.out.stderr),
      10_000,
      "log",
    );
    s.child.kill("SIGTERM");
    expect(await s.exited).toBe(0);
    expect(s.out.stderr).toMatch(/hub: SIGTERM, closing/);
  }, 60_000);

  it("refuses a port in use (exit 3) and a bad --state (exit 2) at once", async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", () => r()));
    const busy = (blocker.address() as net.AddressInfo).port;
    const file = path.join(dir, "a-file");
    fs.writeFileSync(file, "x");
    const [inUse, aFile, noDir, badPort, noState] = await Promise.all([
      fleetAsync(["hub", "serve", "--port", String(busy), "--state", dir]),
      fleetAsync(["hub", "serve", "--port", "0", "--state", file]),
      fleetAsync(["hub", "serve", "--port", "0", "--state", "/proc/no/such"]),
      fleetAsync(["hub", "serve", "--port", "99999", "--state", dir]),
      fleetAsync(["hub", "serve", "--port", "0"]),
    ]);
    blocker.close();
    expect(inUse.code).toBe(3);
    expect(inUse.stderr).toBe(`fleet hub: --port: got ${busy} in use on 127.0.0.1, want a free port\n`);
    expect(aFile.code).toBe(2);
    expect(aFile.stderr).toBe(
      `fleet hub: --state: got ${JSON.stringify(file)}, want a folder (a file is in the way)\n`,
    );
    expect(noDir.code).toBe(2);
    expect(noDir.stderr).toBe(
      'fleet hub: --state: got "/proc/no/such", want a folder that can be created (ENOENT)\n',
    );
    expect(badPort.code).toBe(2);
    expect(badPort.stderr).toBe('fleet hub: --port: got "99999", want an integer in 0..65535\n');
    expect(noState.code).toBe(2);
    expect(noState.stderr).toMatch(/^fleet hub: --state: got undefined, want the hub's state folder\n/);
  }, 60_000);
});
