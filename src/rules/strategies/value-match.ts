import { z } from 'zod';
import { RegexSource } from '../../config/primitives.js';
import { defineStrategy, type Matcher } from '../strategy.js';
import type { RequestFacts } from '../facts.js';

/**
 * The value tests shared by the header, cookie and query strategies:
 * exactly one of present, equals, oneOf, prefix, regex. Not a strategy itself.
 */

const valueTests = ['present', 'equals', 'oneOf', 'prefix', 'regex'] as const;

/** The value-test keys of a request-value condition, with descriptions for the reference docs. */
export function valueTestShape(what: string) {
  return {
    present: z.literal(true).optional().meta({ description: `Matches when the ${what} is sent at all (even empty).` }),
    equals: z.string().optional().meta({ description: 'Matches the exact value (case-sensitive).' }),
    oneOf: z.array(z.string()).min(1).optional().meta({ description: 'Matches any of these exact values.' }),
    prefix: z.string().min(1).optional().meta({ description: 'Matches a value that starts with this text (case-sensitive).' }),
    regex: RegexSource.optional().meta({
      description: 'Matches when this regular expression finds a match anywhere in the value; anchor it with ^…$ for a whole match.',
    }),
  };
}

export interface ValueTestConfig {
  present?: true | undefined;
  equals?: string | undefined;
  oneOf?: string[] | undefined;
  prefix?: string | undefined;
  regex?: string | undefined;
}

/** Refinement: exactly one value test, reported at the strategy's own path. */
export function refineOneValueTest(config: ValueTestConfig, ctx: z.RefinementCtx): void {
  const given = valueTests.filter((key) => config[key] !== undefined);
  if (given.length !== 1) {
    ctx.addIssue({
      code: 'custom',
      message: given.length === 0 ? `give one of ${valueTests.join(', ')}` : `give only one of ${given.join(', ')}`,
    });
  }
}

/**
 * A matcher over one request value read by `read(facts, name)`. Everything is prepared here:
 * the Set for oneOf, the RegExp for regex (no flags, so `test` keeps no lastIndex state).
 */
export function compileValueTest(
  config: ValueTestConfig,
  name: string,
  read: (facts: RequestFacts, name: string) => string | undefined,
): Matcher {
  if (config.present) return (facts) => read(facts, name) !== undefined;
  if (config.equals !== undefined) {
    const expected = config.equals;
    return (facts) => read(facts, name) === expected;
  }
  if (config.oneOf) {
    const allowed = new Set(config.oneOf);
    return (facts) => {
      const value = read(facts, name);
      return value !== undefined && allowed.has(value);
    };
  }
  if (config.prefix !== undefined) {
    const prefix = config.prefix;
    return (facts) => {
      const value = read(facts, name);
      return value !== undefined && value.startsWith(prefix);
    };
  }
  if (config.regex === undefined) throw new Error(`give one of ${valueTests.join(', ')}`);
  const pattern = new RegExp(config.regex);
  return (facts) => {
    const value = read(facts, name);
    return value !== undefined && pattern.test(value);
  };
}

/**
 * A strategy that tests one named request value (a header, a cookie or a query parameter) with
 * one of the value tests. `read` is defined once per strategy module and shared by every rule,
 * so compiling allocates no closure per rule beyond the matcher, and the matcher none per call.
 */
export function defineValueStrategy<const K extends 'header' | 'cookie' | 'query'>(spec: {
  kind: K;
  /** The name's schema, with its description for the reference docs. */
  name: z.ZodType<string, string>;
  /** What the value is called in the value tests' descriptions ("header", "query parameter"). */
  what: string;
  description: string;
  read: (facts: RequestFacts, name: string) => string | undefined;
}) {
  const { kind, read } = spec;
  const schema = z
    .strictObject({ name: spec.name, ...valueTestShape(spec.what) })
    .superRefine(refineOneValueTest)
    .meta({ description: spec.description });
  return defineStrategy({
    kind,
    schema,
    inputs: (config) => [{ kind, name: config.name }],
    compile: (config) => compileValueTest(config, config.name, read),
  });
}
