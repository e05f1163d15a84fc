import { z } from 'zod';
import { defineIdentitySource, MAX_USER_ID_LENGTH } from './source.js';

/**
 * The caller's id from a query parameter (`?uid=42`): for links that pin a tester to a version,
 * or clients that cannot send headers. Anyone can type a query string: use it for previews and
 * tests, not to gate who may reach a candidate.
 */
const QueryIdentityConfig = z
  .strictObject({
    name: z.string().min(1, { message: 'expected a query parameter name' }).max(256).meta({ description: 'Query parameter carrying the user id (case-sensitive).' }),
  })
  .meta({ description: 'User id from a query parameter (its first value).' });

export const queryIdentity = defineIdentitySource({
  kind: 'query',
  schema: QueryIdentityConfig,
  inputs: (config) => [{ kind: 'query', name: config.name }],
  create(config) {
    const name = config.name;
    return (facts) => {
      const value = facts.query(name);
      return value === undefined || value.length === 0 || value.length > MAX_USER_ID_LENGTH ? undefined : value;
    };
  },
});
