import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

/**
 * The fenced code block between `<!-- graygate-workflow:NAME -->` and
 * `<!-- /graygate-workflow:NAME -->` in a file under the repository root (e.g. docs/workflow.md):
 * documentation whose commands a test runs as written. Throws naming the marker when absent.
 */
export function docBlock(file: string, name: string): string {
  const text = readFileSync(path.join(root, file), 'utf8');
  const open = `<!-- graygate-workflow:${name} -->`;
  const close = `<!-- /graygate-workflow:${name} -->`;
  const start = text.indexOf(open);
  const end = text.indexOf(close, start);
  if (start < 0 || end < 0) throw new Error(`${file}: no block marked ${open} … ${close}`);
  const fenced = /```[a-z]*\n([\s\S]*?)```/.exec(text.slice(start + open.length, end));
  if (!fenced) throw new Error(`${file}: the block marked ${open} holds no fenced code`);
  return fenced[1]!;
}

/** The commands of a shell block: one per line, `\`-continued lines joined, blank lines dropped. */
export function shellCommands(block: string): string[] {
  return block
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.trim().startsWith('#'));
}

/**
 * Replaces every `127.0.0.1:PORT` in `text` by `127.0.0.1:<ports[PORT]>`; throws on a port the
 * map does not know, so a page cannot name an address its test does not provide.
 */
export function mapPorts(text: string, ports: Readonly<Record<number, number>>): string {
  return text.replace(/127\.0\.0\.1:(\d+)/g, (_all, port: string) => {
    const mapped = ports[Number(port)];
    if (mapped === undefined) throw new Error(`the page names 127.0.0.1:${port}, which the test does not provide`);
    return `127.0.0.1:${mapped}`;
  });
}
