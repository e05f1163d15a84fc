import { z } from 'zod';
import { CookieName } from '../config/primitives.js';
import { acceptUserId, defineIdentitySource, MAX_USER_ID_LENGTH, oversizedIdCounter } from './source.js';


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
    return (facts) => acceptUserId(facts.cookie(name), oversized);
  },
});
