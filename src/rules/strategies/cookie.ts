import { CookieName } from '../../config/primitives.js';
import { defineValueStrategy } from './value-match.js';

/** Matches on a request cookie's value: present, equals, oneOf, prefix or regex. */
export const cookie = defineValueStrategy({
  kind: 'cookie',
  name: CookieName.meta({ description: 'Cookie name (case-sensitive).' }),
  what: 'cookie',
  description: 'A request cookie: present, equal to a value, one of several values, starting with a prefix, or matching a regex.',
  read: (facts, name) => facts.cookie(name),
});
