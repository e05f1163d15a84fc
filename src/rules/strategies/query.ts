import { z } from 'zod';
import type { RequestFacts } from '../facts.js';
import { defineStrategy } from '../strategy.js';
import { compileValueTest, refineOneValueTest, valueTestShape } from './value-match.js';

/** A query parameter compared with exactly one of: present, equals, oneOf, prefix, regex. */
const QueryConfig = z
  .strictObject({
    name: z.string().min(1, { message: 'expected a query parameter name' }).max(256).meta({ description: 'Query parameter name (case-sensitive, as decoded).' }),
    ...valueTestShape('query parameter'),
  })
  .superRefine(refineOneValueTest)
  .meta({
    description: 'A query parameter (its first value): present, equal to a value, one of several values, starting with a prefix, or matching a regex.',
  });

export type QueryConfig = z.infer<typeof QueryConfig>;

const readQuery = (facts: RequestFacts, name: string) => facts.query(name);

/** Matches on a query parameter's first value. */
export const query = defineStrategy({
  kind: 'query',
  schema: QueryConfig,
  inputs: (config) => [{ kind: 'query', name: config.name }],
  compile: (config) => compileValueTest(config, config.name, readQuery),
});
