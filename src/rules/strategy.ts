import type { z } from 'zod';
import type { RequestFacts } from './facts.js';

/** Per request: synchronous, no I/O, no allocation. Whatever can be prepared, compile prepared. */
export type Matcher = (facts: RequestFacts) => boolean;

/**
 * A request input a matcher reads. Used for `Vary` (caches must not mix versions) and by
 * explain to say what decided.
 */
export type RequestInput =
  | { readonly kind: 'header' | 'cookie' | 'query'; readonly name: string }
  | { readonly kind: 'identity' | 'clientIp' | 'time' };

/** What compiling may read besides the rule's own config. Pure: no I/O happens in compile. */
export interface CompileContext {
  /**
   * A value held in the store under `key` (for example the seed's `Grayscale_Range`), as
   * fetched for this snapshot; `undefined` when the key is absent or not fetched.
   */
  storeValue(key: string): string | undefined;
  /** A seed unique to the release, for sticky hashing. */
  readonly releaseSeed: string;
}

/** One kind of condition. Adding a strategy: its file, one line in `strategies/index.ts`, its test. */
export interface Strategy<C> {
  /** Config key; its file is the kebab-case form: `uidRange` → `uid-range.ts`. */
  readonly kind: string;
  /** Its slice of the config schema; refinements here report paths relative to it. */
  readonly schema: z.ZodType<C>;
  /** Called on every config change; throws `ConfigError` for what the schema cannot see. */
  compile(config: C, context: CompileContext): Matcher;
  /** The request inputs the compiled matcher reads. */
  inputs(config: C): readonly RequestInput[];
  /** Store keys this config reads (fetched and watched by the gateway); none by default. */
  storeKeys?(config: C): readonly string[];
}

/** Identity function that keeps the strategy's config type attached to its definition. */
export function defineStrategy<const K extends string, C>(strategy: Strategy<C> & { kind: K }): Strategy<C> & { kind: K } {
  return strategy;
}
