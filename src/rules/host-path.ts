import type { CompiledService } from './snapshot.js';

/**
 * Which service takes a request, by host and path prefix. Precedence: exact host, then wildcard
 * hosts (longest suffix first), then services without a host; within a host tier the longest
 * whole-segment path prefix wins, and a tier with no matching prefix falls through to the next.
 */

/** A compiled service and where it matches: its host (exact, `*.suffix`, or any) and normalized path prefix. */
export interface ServiceRoute {
  readonly host: string | undefined;
  readonly prefix: string;
  readonly service: CompiledService;
}

/**
 * Services sharing one host pattern. Few prefixes: a linear scan, longest first (cheapest for
 * the common case). Many: a map by prefix, probed at the path's segment boundaries from the
 * longest down, so the cost follows the path's depth instead of the number of services.
 */
interface PrefixTable {
  readonly prefixes: readonly string[];
  readonly services: readonly CompiledService[];
  readonly byPrefix: ReadonlyMap<string, CompiledService> | undefined;
  readonly longest: number;
  readonly root: CompiledService | undefined;
}

/** Tables with more prefixes than this are looked up by segment boundary instead of scanned. */
const LINEAR_SCAN_MAX = 4;

/** True when `path` starts with `prefix` on a whole segment boundary (`/api` takes `/api/x`, not `/apix`). */
export function prefixMatches(prefix: string, path: string): boolean {
  if (prefix.length === 1) return true; // the root `/` takes every path
  if (!path.startsWith(prefix)) return false;
  return path.length === prefix.length || path.charCodeAt(prefix.length) === 47 /* / */;
}

function buildPrefixTable(entries: { prefix: string; service: CompiledService }[]): PrefixTable {
  const sorted = [...entries].sort((a, b) => b.prefix.length - a.prefix.length);
  const prefixes = sorted.map((e) => e.prefix);
  const services = sorted.map((e) => e.service);
  const byPrefix = sorted.length > LINEAR_SCAN_MAX ? new Map(sorted.map((e) => [e.prefix, e.service])) : undefined;
  return { prefixes, services, byPrefix, longest: prefixes[0]?.length ?? 0, root: byPrefix?.get('/') };
}

function lookupPrefix(table: PrefixTable, path: string): CompiledService | undefined {
  const byPrefix = table.byPrefix;
  if (byPrefix === undefined) {
    const prefixes = table.prefixes;
    for (let i = 0; i < prefixes.length; i++) if (prefixMatches(prefixes[i]!, path)) return table.services[i];
    return undefined;
  }
  const longest = table.longest;
  if (path.length <= longest) {
    const whole = byPrefix.get(path);
    if (whole !== undefined) return whole;
  }
  // Each '/' at index i ends the candidate prefix path[0, i); no prefix is longer than `longest`.
  for (let i = path.lastIndexOf('/', Math.min(path.length - 1, longest)); i > 0; i = path.lastIndexOf('/', i - 1)) {
    const found = byPrefix.get(path.slice(0, i));
    if (found !== undefined) return found;
  }
  return table.root;
}

/** The `matchService` of a snapshot: the service that takes (host, path), or undefined. No I/O. */
export function serviceMatcher(routes: readonly ServiceRoute[]): (host: string, path: string) => CompiledService | undefined {
  const exact = new Map<string, { prefix: string; service: CompiledService }[]>();
  const wildcard = new Map<string, { prefix: string; service: CompiledService }[]>();
  const anyHost: { prefix: string; service: CompiledService }[] = [];
  for (const { host, prefix, service } of routes) {
    const entry = { prefix, service };
    if (host === undefined) anyHost.push(entry);
    else if (host.startsWith('*.')) {
      const suffix = host.slice(1); // keep the dot: `*.example.com` takes `a.example.com`, not `example.com`
      (wildcard.get(suffix) ?? wildcard.set(suffix, []).get(suffix)!).push(entry);
    } else (exact.get(host) ?? exact.set(host, []).get(host)!).push(entry);
  }

  const exactTables = new Map<string, PrefixTable>();
  for (const [host, entries] of exact) exactTables.set(host, buildPrefixTable(entries));
  const wildcardSorted = [...wildcard.entries()].sort((a, b) => b[0].length - a[0].length);
  const wildcardSuffixes = wildcardSorted.map(([suffix]) => suffix);
  const wildcardTables = wildcardSorted.map(([, entries]) => buildPrefixTable(entries));
  const anyTable = buildPrefixTable(anyHost);
  const wildcardCount = wildcardSuffixes.length;

  return (host: string, path: string): CompiledService | undefined => {
    const exactTable = exactTables.get(host);
    if (exactTable !== undefined) {
      const found = lookupPrefix(exactTable, path);
      if (found !== undefined) return found;
    }
    for (let i = 0; i < wildcardCount; i++) {
      const suffix = wildcardSuffixes[i]!;
      // Longer than the suffix, so `*.example.com` needs at least one label in front.
      if (host.length > suffix.length && host.endsWith(suffix)) {
        const found = lookupPrefix(wildcardTables[i]!, path);
        if (found !== undefined) return found;
      }
    }
    return lookupPrefix(anyTable, path);
  };
}
