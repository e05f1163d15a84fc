import { clientIpIdentity } from './client-ip.js';
import { cookieIdentity } from './cookie.js';
import { headerIdentity } from './header.js';
import { jwtIdentity } from './jwt.js';
import { queryIdentity } from './query.js';
import { tokenLookupIdentity } from './token-lookup.js';

/** Every identity source, by config key; the schema, the chain and the docs are built from it. */
export const identitySources = {
  header: headerIdentity,
  cookie: cookieIdentity,
  tokenLookup: tokenLookupIdentity,
  jwt: jwtIdentity,
  query: queryIdentity,
  clientIp: clientIpIdentity,
} as const;

export type IdentitySourceKind = keyof typeof identitySources;
