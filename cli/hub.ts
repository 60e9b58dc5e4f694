/**
 * `fleet hub`: run the embedded local MQTT hub (hub/local/server.ts).
 *
 *   fleet hub serve --port P --state DIR [--host H] [--hostname NAME]... [--topic-prefix T]
 *
 * It serves until SIGINT or SIGTERM: mutual TLS, MQTT 3.1.1, trusting exactly the CAs of the
 * registrations in DIR/registrations (written by HubRegistration's local driver), reloading them
 * without a restart. One ready line on stdout; reloads, refusals and closed sessions on stderr
 * (device ID and reason, never key material). See docs/hub-local.md.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { FleetError, invalid } from "../core/errors";
import { makeDirs } from "../core/hubs/local-state";
import { answer, type Flags, type GroupSpec, route } from "./args";

export const spec: GroupSpec = {
  name: "hub",
  summary: "run the embedded local MQTT hub (mutual TLS, registrations reloaded live)",
  commands: [
    {
      name: "serve",
      summary: "serve MQTT over mutual TLS to registered devices until SIGINT or SIGTERM",
      options: [
        {
          name: "port",
          arg: "P",
          help: "TCP port to listen on (0: any free port; MQTT over TLS is 8883)",
          required: true,
        },
        {
          name: "state",
          arg: "DIR",
          help: "the hub's state folder (registrations, trust bundles, its own TLS identity); created if missing",
          required: true,
        },
        { name: "host", arg: "H", help: "address to bind (default 127.0.0.1)" },
        {
          name: "hostname",
          arg: "NAME",
          help: "a name or address devices reach the hub by, added to its server certificate",
          repeat: true,
        },
        {
          name: "topic-prefix",
          arg: "T",
          help: "the topics a device may use, with {deviceId} (default devices/{deviceId}/)",
        },
      ],
      details:
        "prints one line once it listens; logs reloads and refusals on stderr; SIGHUP reloads the state folder at once. Devices verify the hub with DIR/hub-ca.pem.",
    },
  ],
};

function port(v: string | undefined): number {
  if (v === undefined || !/^\d+$/.test(v) || Number(v) > 65535)
    throw invalid("--port", v, "an integer in 0..65535");
  return Number(v);
}

/** --state: say what is wrong with it at once (a file in the way, no permission), never hang. */
function stateDir(v: string | undefined): string {
  if (!v) throw invalid("--state", v, "the hub's state folder");
  const dir = path.resolve(v);
  const st = fs.statSync(dir, { throwIfNoEntry: false });
  if (st && !st.isDirectory()) throw invalid("--state", v, "a folder (a file is in the way)");
  if (!st) {
    try {
      makeDirs(dir);
    } catch (e) {
      throw invalid("--state", v, `a folder that can be created (${(e as NodeJS.ErrnoException).code})`);
    }
  }
  try {
    fs.accessSync(dir, fs.constants.R_OK | fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    throw invalid("--state", v, "a folder this user can read and write (permission denied)");
  }
  return dir;
}

async function serve(flags: Flags, lists: Readonly<Record<string, readonly string[]>>): Promise<number> {
  const dir = stateDir(flags.state);
  const p = port(flags.port);
  const { startLocalHub } = await import("../hub/local/server");
  const err = (line: string) => process.stderr.write(`${line}\n`);
  let hub: Awaited<ReturnType<typeof startLocalHub>>;
  try {
    hub = await startLocalHub({
      stateDir: dir,
      port: p,
      host: flags.host ?? "127.0.0.1",
      topicPrefix: flags["topic-prefix"],
      hosts: lists.hostname ?? [],
      log: err,
    });
  } catch (e) {
    // the server names its options; the command line calls them by their flags
    if (e instanceof FleetError && e.field) {
      const flag = {
        stateDir: "--state",
        port: "--port",
        host: "--host",
        topicPrefix: "--topic-prefix",
        hosts: "--hostname",
      }[e.field];
      if (flag) throw new FleetError(e.code, e.message.replace(new RegExp(`^${e.field}`), flag), flag);
    }
    throw e;
  }
  const s = hub.stats();
  const where = hub.host.includes(":") ? `[${hub.host}]:${hub.port}` : `${hub.host}:${hub.port}`;
  console.log(
    `hub: listening on ${where} (mutual TLS, MQTT 3.1.1), trusting ${s.cas} CAs, ${s.devices} devices; ` +
      `devices verify the hub with ${path.join(flags.state!, "hub-ca.pem")}`,
  );
  return new Promise<number>((resolve) => {
    const stop = (sig: string) => {
      err(`hub: ${sig}, closing`);
      hub.close().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
    // as Mosquitto does: SIGHUP re-reads the state folder now (the watch and the poll do it anyway)
    process.on("SIGHUP", () => {
      err("hub: SIGHUP, reloading");
      void hub.reload();
    });
  });
}

export async function run(argv: string[]): Promise<number> {
  const r = route(spec, argv);
  if (r.kind !== "run") return answer(r)!;
  return serve(r.parsed.flags, r.parsed.lists);
}
