import { z } from 'zod';
import { HeaderName } from '../config/primitives.js';
import { defineIdentitySource, MAX_USER_ID_LENGTH } from './source.js';

/**
 * The caller's id from a request header set by something in front of graygate (an auth proxy,
 * an API gateway). With `trustedProxiesOnly`, the header is read only when the peer is one of
 * the configured trusted proxies, so a client cannot pick its own id.
 */
const HeaderIdentityConfig = z
  .strictObject({
    name: HeaderName.meta({ description: 'Header carrying the user id, e.g. x-user-id.' }),
    trustedProxiesOnly: z
      .boolean()
      .default(false)
      .meta({ description: 'Read the header only from peers listed in trustedProxies; from anyone else it is ignored.' }),
  })
  .meta({ description: 'User id from a request header.' });

export const headerIdentity = defineIdentitySource({
  kind: 'header',
  schema: HeaderIdentityConfig,
  inputs: (config) => [{ kind: 'header', name: config.name }],
  create(config) {
    const name = config.name;
    const trustedOnly = config.trustedProxiesOnly;
    return (facts) => {
      if (trustedOnly && !facts.isFromTrustedProxy) return undefined;
      const value = facts.header(name);
      return value === undefined || value.length === 0 || value.length > MAX_USER_ID_LENGTH ? undefined : value;
    };
  },
});
