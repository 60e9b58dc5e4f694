/**
 * Messages from a dynamic provider to the Pulumi engine's log (the `Engine.Log` RPC that
 * language hosts use): progress of a long enrollment appears in `pulumi up` as the resource's
 * status line (ephemeral messages) and as info diagnostics. The dynamic provider host is started
 * with the engine's address as its first argument; without it (unit tests) messages go to stderr.
 */
type EngineClient = {
  log(req: unknown, cb: (err: Error | null) => void): void;
  close(): void;
};

let client: EngineClient | null | undefined;

function engine(): EngineClient | null {
  if (client !== undefined) return client;
  const addr = process.argv[2];
  if (!addr || !/^[\w.-]+:\d+$/.test(addr)) {
    client = null;
    return client;
  }
  try {
    const grpc = require("@grpc/grpc-js");
    const svc = require("@pulumi/pulumi/proto/engine_grpc_pb");
    client = new svc.EngineClient(addr, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 4 * 1024 * 1024,
    }) as EngineClient;
  } catch {
    client = null;
  }
  return client;
}

export type Severity = "debug" | "info" | "warning" | "error";
const SEVERITY: Record<Severity, number> = { debug: 0, info: 1, warning: 2, error: 3 };

/** Send one message; resolves when the engine took it (never rejects: logging must not fail a run). */
export function engineLog(
  message: string,
  o: { urn?: string; ephemeral?: boolean; severity?: Severity } = {},
) {
  const c = engine();
  if (!c) {
    if (!o.ephemeral) process.stderr.write(`${message}\n`);
    return Promise.resolve();
  }
  const pb = require("@pulumi/pulumi/proto/engine_pb");
  const req = new pb.LogRequest();
  req.setSeverity(SEVERITY[o.severity ?? "info"]);
  req.setMessage(message);
  if (o.urn) req.setUrn(o.urn);
  req.setEphemeral(!!o.ephemeral);
  // one at a time, so the engine shows messages in the order they were sent
  queue = queue.then(() => new Promise<void>((resolve) => c.log(req, () => resolve())));
  return queue;
}

let queue: Promise<void> = Promise.resolve();
