import { cookieIdentity } from './cookie.js';
import { headerIdentity } from './header.js';

/** Every identity source, by config key; the schema, the chain and the docs are built from it. */
export const identitySources = {
  header: headerIdentity,
  cookie: cookieIdentity,
} as const;

export type IdentitySourceKind = keyof typeof identitySources;
