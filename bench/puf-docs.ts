/**
 * Writes generated blocks into docs: each block sits between `<!-- name:begin -->` and
 * `<!-- name:end -->` markers; in docs/benchmarks.md the blocks live under this team's own
 * `## PUF and fuzzy extractor` heading, which is created (with the file) when absent, and
 * nothing outside that section is touched.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";

export const SECTION = "## PUF and fuzzy extractor";

export function machineLine(): string {
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  return `Machine: ${cpus().length} cores (${cpu}), Node ${process.version}, OpenSSL ${process.versions.openssl}; shared with other engineers' jobs while measured.`;
}

function replaceBlock(text: string, name: string, content: string): string | undefined {
  const begin = `<!-- ${name}:begin -->`;
  const end = `<!-- ${name}:end -->`;
  const i = text.indexOf(begin);
  const j = text.indexOf(end);
  if (i < 0 || j < i) return undefined;
  return `${text.slice(0, i + begin.length)}\n${content.trimEnd()}\n${text.slice(j)}`;
}

/** Replace (or append) block `name` in a document fully owned by this team. */
export function writeOwnDocBlock(path: string, name: string, content: string): void {
  const text = existsSync(path) ? readFileSync(path, "utf8") : "";
  const replaced = replaceBlock(text, name, content);
  writeFileSync(
    path,
    replaced ?? `${text.trimEnd()}\n\n<!-- ${name}:begin -->\n${content.trimEnd()}\n<!-- ${name}:end -->\n`,
  );
}

/** Replace (or add) block `name` inside this team's section of docs/benchmarks.md. */
export function writeBenchmarksBlock(path: string, name: string, content: string): void {
  let text = existsSync(path) ? readFileSync(path, "utf8") : "# Benchmarks\n";
  let start = text.indexOf(`\n${SECTION}\n`);
  if (start < 0) {
    text = `${text.trimEnd()}\n\n${SECTION}\n`;
    start = text.indexOf(`\n${SECTION}\n`);
  }
  const bodyStart = start + SECTION.length + 2;
  const next = text.indexOf("\n## ", bodyStart);
  const sectionEnd = next < 0 ? text.length : next + 1;
  const section = text.slice(bodyStart, sectionEnd);
  const replaced = replaceBlock(section, name, content);
  const newSection =
    replaced ??
    `${section.trimEnd()}\n\n<!-- ${name}:begin -->\n${content.trimEnd()}\n<!-- ${name}:end -->\n`.replace(
      /^\n+/,
      "\n",
    );
  const tail = text.slice(sectionEnd);
  writeFileSync(path, `${text.slice(0, bodyStart)}${newSection.trimEnd()}\n${tail ? `\n${tail}` : ""}`);
}
