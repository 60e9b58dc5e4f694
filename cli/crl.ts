/**
 * `fleet crl`: serve the CRL folder over HTTP (hub/crl/server.ts), at the URL paths the
 * certificates' CRL distribution points name.
 *
 *   fleet crl serve --dir DIR --port P [--host H]
 *
 * It serves until SIGINT or SIGTERM. One ready line on stdout (the address, the port it bound,
 * the CRLs it serves); refused requests on stderr. See docs/crl.md.
 */
import * as path from "node:path";
import { FleetError, invalid } from "../core/errors";
import { answer, type Flags, type GroupSpec, route } from "./args";

export const spec: GroupSpec = {
  name: "crl",
  summary: "serve the CRL folder over HTTP at the CRL distribution points' URL paths",
  commands: [
    {
      name: "serve",
      summary: "serve every CA's CRL (DER /<name>.crl, PEM /<name>.crl.pem) until SIGINT or SIGTERM",
      options: [
        {
          name: "dir",
          arg: "DIR",
          help: "the CRL folder (the program's crlDir, e.g. .state/crl or .fleetguard/crl)",
          required: true,
        },
        {
          name: "port",
          arg: "P",
          help: "TCP port to listen on (0: any free port; HTTP is 80)",
          required: true,
        },
        { name: "host", arg: "H", help: "address to bind (default 127.0.0.1)" },
      ],
      details:
        "prints one line once it listens; files are read at each request, so a CRL re-signed by `pulumi up` is served at once. Only *.crl and *.crl.pem files directly in DIR are served (no listing, no other files).",
    },
  ],
};

function port(v: string | undefined): number {
  if (v === undefined || !/^\d+$/.test(v) || Number(v) > 65535)
    throw invalid("--port", v, "an integer in 0..65535");
  return Number(v);
}

async function serve(flags: Flags): Promise<number> {
  if (!flags.dir) throw invalid("--dir", flags.dir, "the CRL folder");
  const p = port(flags.port);
  const { servedNames, startCrlServer } = await import("../hub/crl/server");
  const err = (line: string) => process.stderr.write(`${line}\n`);
  let server: Awaited<ReturnType<typeof startCrlServer>>;
  try {
    server = await startCrlServer({
      dir: path.resolve(flags.dir),
      port: p,
      host: flags.host ?? "127.0.0.1",
      log: err,
    });
  } catch (e) {
    // the server names its options; the command line calls them by their flags
    if (e instanceof FleetError && e.field) {
      const flag = { dir: "--dir", port: "--port", host: "--host" }[e.field];
      if (flag) {
        const msg = e.message
          .replace(new RegExp(`^${e.field}`), flag)
          .replace(path.resolve(flags.dir), flags.dir);
        throw new FleetError(e.code, msg, flag);
      }
    }
    throw e;
  }
  const names = servedNames(path.resolve(flags.dir));
  const shown = names.filter((n) => !n.endsWith(".pem"));
  console.log(
    `crl: serving ${flags.dir} on ${server.url}/ (port ${server.port}), ${shown.length} CRLs` +
      (shown.length ? `: ${shown.slice(0, 8).join(", ")}${shown.length > 8 ? ", ..." : ""}` : ""),
  );
  return new Promise<number>((resolve) => {
    const stop = (sig: string) => {
      err(`crl: ${sig}, closing`);
      server.close().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });
}

export async function run(argv: string[]): Promise<number> {
  const r = route(spec, argv);
  if (r.kind !== "run") return answer(r)!;
  return serve(r.parsed.flags);
}
