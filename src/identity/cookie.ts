import { z } from 'zod';
import { defineIdentitySource, MAX_USER_ID_LENGTH } from './source.js';

const CookieName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { message: 'expected a cookie name (token characters)' });

/** The caller's id from a cookie, e.g. one the application sets at login. */
const CookieIdentityConfig = z
  .strictObject({
    name: CookieName.meta({ description: 'Cookie carrying the user id.' }),
  })
  .meta({ description: 'User id from a cookie.' });

export const cookieIdentity = defineIdentitySource({
  kind: 'cookie',
  schema: CookieIdentityConfig,
  inputs: (config) => [{ kind: 'cookie', name: config.name }],
  create(config) {
    const name = config.name;
    return (facts) => {
      const value = facts.cookie(name);
      return value === undefined || value.length === 0 || value.length > MAX_USER_ID_LENGTH ? undefined : value;
    };
  },
});
