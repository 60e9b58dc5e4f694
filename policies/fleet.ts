/**
 * Loads a fleet file (fleet.yaml, kind Fleet): schema-validated with file:line:column diagnostics, then
 * cross-checked (unique names, parents and issuing CAs that exist, no CA cycles, inventory PEMs that
 * parse) and turned into the FleetContext the checks evaluate. Files are read through an injectable
 * reader so `fleet policy review` can load the fleet as it was at a git ref.
 */
import { X509Certificate } from "node:crypto";
import { dirname, join, normalize } from "node:path";
import type { DeployedCertificate, DeployedCrl, FleetContext } from "./context";
import { isValidDay } from "./layering";
import type { FleetDeclaration } from "./schema/fleet.gen";
import {
  type Diagnostic,
  type PathSegment,
  readProblem,
  readSourceText,
  SourceFile,
  sortDiagnostics,
  validateAgainstSchema,
} from "./source";

export interface FleetLoad {
  fleet?: FleetContext;
  /** The declaration as written (valid when `fleet` is set). */
  declaration?: FleetDeclaration;
  /** The policy file the fleet names, resolved against the fleet file's folder. */
  policyPath?: string;
  diagnostics: Diagnostic[];
}

export function loadFleet(file: string, opts: { readFile?: (path: string) => string } = {}): FleetLoad {
  // bounded and non-blocking like policy files: a FIFO, a device or a huge file is refused
  const read = opts.readFile ?? ((p: string) => readSourceText(p));
  let text: string;
  try {
    text = read(file);
  } catch (err) {
    return {
      diagnostics: [
        {
          kind: "input",
          file,
          line: 1,
          column: 1,
          path: "(file)",
          message: `cannot read the fleet file: ${readProblem(err)}`,
        },
      ],
    };
  }
  const src = new SourceFile(file, text);
  const diagnostics = validateAgainstSchema(src, "fleet");
  if (src.parseDiagnostics.length || typeof src.data !== "object" || src.data === null)
    return { diagnostics };
  const schemaValid = diagnostics.length === 0;
  const decl = src.data as FleetDeclaration;
  const spec = (
    typeof decl.spec === "object" && decl.spec !== null ? decl.spec : {}
  ) as FleetDeclaration["spec"];
  try {
    return crossCheck(file, src, decl, spec, diagnostics, schemaValid, read);
  } catch {
    // Cross-checks assume the schema's shapes; on a schema-invalid file a shape they did not expect is
    // already reported by the schema errors.
    return { diagnostics: sortDiagnostics(diagnostics) };
  }
}

function crossCheck(
  file: string,
  src: SourceFile,
  decl: FleetDeclaration,
  spec: FleetDeclaration["spec"],
  diagnostics: Diagnostic[],
  schemaValid: boolean,
  read: (path: string) => string,
): FleetLoad {
  const err = (path: PathSegment[], message: string, at: "key" | "value" = "value") =>
    diagnostics.push(src.diagnostic("input", path, message, at));
  const dir = dirname(file);

  const cas = spec.cas ?? [];
  const caNames = new Map<string, number>();
  cas.forEach((ca, i) => {
    if (caNames.has(ca.name))
      err(
        ["spec", "cas", i, "name"],
        `got ${ca.name} again (also cas[${caNames.get(ca.name)}]), want unique CA names`,
      );
    else caNames.set(ca.name, i);
  });
  cas.forEach((ca, i) => {
    if (ca.parent !== undefined && !caNames.has(ca.parent))
      err(
        ["spec", "cas", i, "parent"],
        `got ${ca.parent}, want one of the declared CAs (${[...caNames.keys()].join(", ")})`,
      );
    if (typeof ca !== "object" || ca === null) return;
    const seen = new Set<string>([ca.name]);
    for (let p = ca.parent; p !== undefined; p = cas[caNames.get(p) ?? -1]?.parent) {
      if (seen.has(p)) {
        err(["spec", "cas", i, "parent"], `got ${ca.parent}, which leads back to ${ca.name} (cycle)`);
        break;
      }
      seen.add(p);
    }
  });
  const batches = spec.batches ?? [];
  const batchIds = new Map<string, number>();
  batches.forEach((b, i) => {
    if (batchIds.has(b.id))
      err(
        ["spec", "batches", i, "id"],
        `got ${b.id} again (also batches[${batchIds.get(b.id)}]), want unique batch ids`,
      );
    else batchIds.set(b.id, i);
    if (!caNames.has(b.issuingCa))
      err(
        ["spec", "batches", i, "issuingCa"],
        `got ${b.issuingCa}, want one of the declared CAs (${[...caNames.keys()].join(", ") || "none declared"})`,
      );
  });
  const knownBatch = (path: PathSegment[], id: string) => {
    if (!batchIds.has(id))
      err(
        path,
        `got ${id}, want one of the declared batches (${[...batchIds.keys()].join(", ") || "none declared"})`,
      );
  };
  for (const [i, r] of (spec.rotation ?? []).entries())
    for (const [j, b] of r.batches.entries()) knownBatch(["spec", "rotation", i, "batches", j], b);
  for (const [i, p] of (spec.hubs?.aws?.policies ?? []).entries())
    for (const [j, b] of (p.batches ?? []).entries())
      knownBatch(["spec", "hubs", "aws", "policies", i, "batches", j], b);

  const pemOf = (
    path: PathSegment[],
    entry: { pem?: string; pemFile?: string },
    label: string,
  ): string | undefined => {
    if ((entry.pem === undefined) === (entry.pemFile === undefined)) {
      err(
        path,
        `got ${entry.pem === undefined ? "neither pem nor pemFile" : "both pem and pemFile"}, want exactly one`,
      );
      return undefined;
    }
    if (entry.pem !== undefined) return entry.pem;
    const p = normalize(join(dir, entry.pemFile!));
    try {
      const pem = read(p);
      if (!pem.includes(`-----BEGIN ${label}-----`)) {
        err([...path, "pemFile"], `got ${entry.pemFile}, want a PEM file with a ${label}`);
        return undefined;
      }
      return pem;
    } catch {
      err([...path, "pemFile"], `got ${entry.pemFile}, want a readable file (${p})`);
      return undefined;
    }
  };
  const certificates: DeployedCertificate[] = [];
  const inv = spec.inventory;
  (inv?.certificates ?? []).forEach((c, i) => {
    const path: PathSegment[] = ["spec", "inventory", "certificates", i];
    const pem = pemOf(path, c, "CERTIFICATE");
    if (c.keyCreatedAt !== undefined && !isValidDay(c.keyCreatedAt.slice(0, 10)))
      err([...path, "keyCreatedAt"], `got ${c.keyCreatedAt}, want a real date`);
    if (pem === undefined) return;
    try {
      new X509Certificate(pem);
    } catch {
      err(
        [...path, c.pem !== undefined ? "pem" : "pemFile"],
        "got text that is not an X.509 certificate, want a PEM certificate",
      );
      return;
    }
    const { pemFile: _f, ...rest } = c;
    certificates.push({ ...rest, pem });
  });
  const crls: DeployedCrl[] = [];
  (inv?.crls ?? []).forEach((c, i) => {
    const path: PathSegment[] = ["spec", "inventory", "crls", i];
    const pem = pemOf(path, c, "X509 CRL");
    if (
      !certificates.some((x) => x.id === c.issuer) &&
      !(inv?.certificates ?? []).some((x) => x.id === c.issuer)
    )
      err([...path, "issuer"], `got ${c.issuer}, want the inventory id of the CA certificate that signed it`);
    if (pem !== undefined) crls.push({ issuer: c.issuer, pem });
  });

  if (diagnostics.length || !schemaValid) return { diagnostics: sortDiagnostics(diagnostics) };
  const fleet: FleetContext = {
    name: decl.metadata.name,
    declared: { cas, batches, rotation: spec.rotation ?? [], hubs: spec.hubs },
  };
  if (inv) fleet.deployed = { certificates, crls, batches: inv.batches ?? [], hubs: inv.hubs };
  return {
    fleet,
    declaration: decl,
    policyPath: spec.policy !== undefined ? normalize(join(dir, spec.policy)) : undefined,
    diagnostics: [],
  };
}
