import { readFileSync } from 'node:fs';

/** graygate's own version, from its package.json (dist/cli/ → ../../package.json). */
export function readPackageVersion(): string {
  try {
    const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
    return (JSON.parse(text) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
