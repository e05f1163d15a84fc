import { z } from 'zod';
import { defineIdentitySource, MAX_USER_ID_LENGTH, oversizedIdCounter } from './source.js';

const CookieName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { message: 'expected a cookie name (token characters)' });

/** The caller's id from a cookie, e.g. one the application sets at login. */
const CookieIdentityConfig = z
  .strictObject({
    name: CookieName.meta({ description: 'Cookie carrying the user id.' }),
  })
  .meta({ description: `User id from a cookie. A value longer than ${MAX_USER_ID_LENGTH} characters is not an id (the caller goes to stable) and is counted in graygate_identity_lookups_total{source="cookie", result="invalid"}.` });

export const cookieIdentity = defineIdentitySource({
  kind: 'cookie',
  schema: CookieIdentityConfig,
  inputs: (config) => [{ kind: 'cookie', name: config.name }],
  create(config, context) {
    const name = config.name;
    const oversized = oversizedIdCounter(context, 'cookie');
    return (facts) => {
      const value = facts.cookie(name);
      if (value === undefined || value.length === 0) return undefined;
      if (value.length > MAX_USER_ID_LENGTH) {
        oversized.count++;
        return undefined;
      }
      return value;
    };
  },
});
