import { z } from 'zod';
import { HeaderName } from '../config/primitives.js';
import { acceptUserId, defineIdentitySource, MAX_USER_ID_LENGTH, oversizedIdCounter } from './source.js';

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
  .meta({ description: `User id from a request header. A value longer than ${MAX_USER_ID_LENGTH} characters is not an id (the caller goes to stable) and is counted in graygate_identity_lookups_total{source="header", result="invalid"}.` });

export const headerIdentity = defineIdentitySource({
  kind: 'header',
  schema: HeaderIdentityConfig,
  inputs: (config) => [{ kind: 'header', name: config.name }],
  create(config, context) {
    const name = config.name;
    const trustedOnly = config.trustedProxiesOnly;
    const oversized = oversizedIdCounter(context, 'header');
    return (facts) => (trustedOnly && !facts.isFromTrustedProxy ? undefined : acceptUserId(facts.header(name), oversized));
  },
});
