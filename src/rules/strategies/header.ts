import { HeaderName } from '../../config/primitives.js';
import { defineValueStrategy } from './value-match.js';

/** Matches on a request header's (first) value: present, equals, oneOf, prefix or regex. */
export const header = defineValueStrategy({
  kind: 'header',
  name: HeaderName.meta({ description: 'Header name (case-insensitive).' }),
  what: 'header',
  description: 'A request header: present, equal to a value, one of several values, starting with a prefix, or matching a regex.',
  read: (facts, name) => facts.header(name),
});
