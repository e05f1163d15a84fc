import { z } from 'zod';
import { HeaderName } from '../../config/primitives.js';
import type { RequestFacts } from '../facts.js';
import { defineStrategy } from '../strategy.js';
import { compileValueTest, refineOneValueTest, valueTestShape } from './value-match.js';

/** A request header compared with exactly one of: present, equals, oneOf, prefix, regex. */
const HeaderConfig = z
  .strictObject({
    name: HeaderName.meta({ description: 'Header name (case-insensitive).' }),
    ...valueTestShape('header'),
  })
  .superRefine(refineOneValueTest)
  .meta({ description: 'A request header: present, equal to a value, one of several values, starting with a prefix, or matching a regex.' });

export type HeaderConfig = z.infer<typeof HeaderConfig>;

// One shared reader, so compiling allocates no closure per rule and the matcher none per call.
const readHeader = (facts: RequestFacts, name: string) => facts.header(name);

/** Matches on a request header's (first) value. */
export const header = defineStrategy({
  kind: 'header',
  schema: HeaderConfig,
  inputs: (config) => [{ kind: 'header', name: config.name }],
  compile: (config) => compileValueTest(config, config.name, readHeader),
});
