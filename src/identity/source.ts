import type { z } from 'zod';
import type { Logger } from '../observe/log.js';
import type { RequestFacts } from '../rules/facts.js';
import type { RequestInput } from '../rules/strategy.js';

/**
 * Finds the caller's id for one request. Synchronous when the answer is at hand (headers,
 * cookies, a warm cache); returns a Promise only when it must wait (a store lookup on a cache
 * miss), so the steady-state hot path has no await. `undefined` means "no identity from here".
 */
export type IdentityResolver = (facts: RequestFacts) => string | undefined | Promise<string | undefined>;

/** What a source may use besides its config. Long-lived: it outlives config snapshots. */
export interface IdentityContext {
  /**
   * Reads one key from the store with a deadline (token → user id). Rejects on timeout or
   * store failure; the caller then treats the identity as unknown (the request goes to stable).
   * Its errors never name the key: the key is built from a login token, and errors get logged.
   */
  readKey?(key: string, deadlineMs: number): Promise<string | undefined>;
  /** Where sources log faults they swallow (garbage values, failed lookups), at a bounded rate. */
  logger?: Logger;
}

/** One way to learn who the caller is. Adding one: its file, one line in `identity/index.ts`, its test. */
export interface IdentitySource<C> {
  /** Config key; its file is the kebab-case form. */
  readonly kind: string;
  readonly schema: z.ZodType<C>;
  /** Called on every config change; what can be prepared is prepared here. */
  create(config: C, context: IdentityContext): IdentityResolver;
  /** The request inputs it reads (for `Vary`). */
  inputs(config: C): readonly RequestInput[];
}

export function defineIdentitySource<const K extends string, C>(
  source: IdentitySource<C> & { kind: K },
): IdentitySource<C> & { kind: K } {
  return source;
}

import { MAX_USER_ID_LENGTH } from '../rules/facts.js';
export { MAX_USER_ID_LENGTH };

/** Per IdentityContext (kept for the gateway's life), so counts survive config changes. */
const oversizedByContext = new WeakMap<IdentityContext, Record<string, { count: number }>>();

/**
 * The counter a source bumps when a request's id is longer than MAX_USER_ID_LENGTH (the id is
 * then ignored). One object per source kind and context, fetched at create time, so the hot path
 * only increments a field.
 */
export function oversizedIdCounter(context: IdentityContext, kind: string): { count: number } {
  let counters = oversizedByContext.get(context);
  if (counters === undefined) oversizedByContext.set(context, (counters = {}));
  return (counters[kind] ??= { count: 0 });
}

/** Ids ignored for being too long, per source kind, of every source created for `context`. */
export function oversizedIdStats(context: IdentityContext): Record<string, number> {
  const counters = oversizedByContext.get(context) ?? {};
  return Object.fromEntries(Object.entries(counters).map(([kind, counter]) => [kind, counter.count]));
}

/**
 * The id a request value gives: none when absent or empty; none, and counted in `oversized`,
 * when longer than MAX_USER_ID_LENGTH. Shared by the sources that read one request value
 * (header, cookie, query); a plain function of its arguments, so each source's resolver does the
 * same per-request work as when it was written out inline.
 */
export function acceptUserId(value: string | undefined, oversized: { count: number }): string | undefined {
  if (value === undefined || value.length === 0) return undefined;
  if (value.length > MAX_USER_ID_LENGTH) {
    oversized.count++;
    return undefined;
  }
  return value;
}
