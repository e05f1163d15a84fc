import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

// semver ships no types of its own; these are the two calls used here.
const semver = createRequire(import.meta.url)('semver') as {
  minVersion(range: string): { version: string } | null;
  satisfies(version: string, range: string): boolean;
};

const root = new URL('../', import.meta.url);
const readJson = (name: string) => JSON.parse(readFileSync(new URL(name, root), 'utf8')) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * `npm ci` on the oldest Node that package.json's `engines` admits must print no EBADENGINE
 * warning: every locked package (dev and optional ones included, `npm ci` installs those too)
 * whose `engines.node` is set must admit that version.
 */
describe('locked dependencies and the stated minimum Node', () => {
  const pkg = readJson('package.json');
  const lock = readJson('package-lock.json');
  const minimum = semver.minVersion(pkg.engines.node)?.version;

  it('package.json states a minimum Node, and the lockfile records the same one', () => {
    expect(minimum).toMatch(/^\d+\.\d+\.\d+$/);
    expect(lock.packages[''].engines?.node).toBe(pkg.engines.node);
  });

  it(`every locked package's engines.node admits the minimum`, () => {
    const excluding: string[] = [];
    let checked = 0;
    for (const [where, entry] of Object.entries(lock.packages as Record<string, { version?: string; engines?: unknown }>)) {
      if (where === '') continue;
      // Old packages wrote engines as a list of strings; npm ignores that form when it warns.
      const range = entry.engines && !Array.isArray(entry.engines) ? (entry.engines as { node?: unknown }).node : undefined;
      if (typeof range !== 'string') continue;
      checked += 1;
      if (!semver.satisfies(minimum!, range)) excluding.push(`${where.replace(/^.*node_modules\//, '')}@${entry.version}: engines.node ${range}`);
    }
    expect(checked).toBeGreaterThan(0);
    expect(excluding, `these packages exclude Node ${minimum} (package.json engines.node ${pkg.engines.node}): pin an older version in "overrides", or raise the minimum`).toEqual([]);
  });
});
