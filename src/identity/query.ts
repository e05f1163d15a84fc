import { z } from 'zod';
import { QueryParamName } from '../config/primitives.js';
import { acceptUserId, defineIdentitySource, MAX_USER_ID_LENGTH, oversizedIdCounter } from './source.js';

/**
 * The caller's id from a query parameter (`?uid=42`): for links that pin a tester to a version,
 * or clients that cannot send headers. Anyone can type a query string: use it for previews and
 * tests, not to gate who may reach a candidate.
 */
const QueryIdentityConfig = z
  .strictObject({
    name: QueryParamName.meta({ description: 'Query parameter carrying the user id (case-sensitive).' }),
  })
  .meta({ description: `User id from a query parameter (its first value). A value longer than ${MAX_USER_ID_LENGTH} characters is not an id (the caller goes to stable) and is counted in graygate_identity_lookups_total{source="query", result="invalid"}.` });

export const queryIdentity = defineIdentitySource({
  kind: 'query',
  schema: QueryIdentityConfig,
  inputs: (config) => [{ kind: 'query', name: config.name }],
  create(config, context) {
    const name = config.name;
    const oversized = oversizedIdCounter(context, 'query');
    return (facts) => acceptUserId(facts.query(name), oversized);
  },
});
