import { z } from 'zod';
import type { RequestFacts } from '../facts.js';
import { defineStrategy } from '../strategy.js';
import { compileValueTest, refineOneValueTest, valueTestShape } from './value-match.js';

/** A cookie name as RFC 6265 allows it (an HTTP token); case-sensitive. */
const CookieName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { message: 'expected a cookie name (letters, digits and token characters)' });

/** A request cookie compared with exactly one of: present, equals, oneOf, prefix, regex. */
const CookieConfig = z
  .strictObject({
    name: CookieName.meta({ description: 'Cookie name (case-sensitive).' }),
    ...valueTestShape('cookie'),
  })
  .superRefine(refineOneValueTest)
  .meta({ description: 'A request cookie: present, equal to a value, one of several values, starting with a prefix, or matching a regex.' });

export type CookieConfig = z.infer<typeof CookieConfig>;

// One shared reader, so compiling allocates no closure per rule and the matcher none per call.
const readCookie = (facts: RequestFacts, name: string) => facts.cookie(name);

/** Matches on a request cookie's value. */
export const cookie = defineStrategy({
  kind: 'cookie',
  schema: CookieConfig,
  inputs: (config) => [{ kind: 'cookie', name: config.name }],
  compile: (config) => compileValueTest(config, config.name, readCookie),
});
