import { QueryParamName } from '../../config/primitives.js';
import { defineValueStrategy } from './value-match.js';

/** Matches on a query parameter's first value: present, equals, oneOf, prefix or regex. */
export const query = defineValueStrategy({
  kind: 'query',
  name: QueryParamName.meta({ description: 'Query parameter name (case-sensitive, as decoded).' }),
  what: 'query parameter',
  description: 'A query parameter (its first value): present, equal to a value, one of several values, starting with a prefix, or matching a regex.',
  read: (facts, name) => facts.query(name),
});
