/**
 * Generates the TypeScript types of policy and fleet files from their JSON Schemas, so the schema stays
 * the single source of truth (types are never written twice). Run `npm run gen:policy-types`;
 * test/policies/schema.test.ts fails when a generated file is stale.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { compile, type JSONSchema } from "json-schema-to-typescript";

const here = __dirname;

export const generatedFiles: ReadonlyArray<{ schema: string; out: string }> = [
  { schema: "fleet-policy.schema.json", out: "fleet-policy.gen.ts" },
  { schema: "fleet.schema.json", out: "fleet.gen.ts" },
];

/** Render every generated file; returns path -> content without touching the disk. */
export async function renderTypes(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const f of generatedFiles) {
    const schema = JSON.parse(readFileSync(join(here, f.schema), "utf8")) as JSONSchema;
    const body = await compile(schema, schema.title ?? f.schema, {
      bannerComment: "",
      additionalProperties: false,
      strictIndexSignatures: true,
      unreachableDefinitions: true,
      ignoreMinAndMaxItems: true,
      style: { printWidth: 110, singleQuote: false },
    });
    const banner =
      `// GENERATED FILE, do not edit: produced from policies/schema/${f.schema} by \`npm run gen:policy-types\`.\n` +
      "/* biome-ignore-all lint: generated */\n";
    out.set(join(here, f.out), banner + body);
  }
  return out;
}

if (require.main === module) {
  renderTypes().then(
    (files) => {
      for (const [path, text] of files) {
        writeFileSync(path, text);
        console.log(`wrote ${path}`);
      }
    },
    (err) => {
      console.error(`gen:policy-types: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(1);
    },
  );
}
