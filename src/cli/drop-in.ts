import { parseRoutingDocument } from '../config/load.js';
import type { RoutingDocument } from '../config/schema.js';
import { diffValues } from '../control/diff.js';
import { ConfigError } from '../errors.js';

export interface DropInOptions {
  stable: string;
  candidate: string;
  tokenHeader: string;
  tokenKey: string;
  rangeKey: string;
  /** `exclusive`: the recipe's own `UserId > idStart`; default inclusive, like every graygate range. */
  rangeStart?: 'inclusive' | 'exclusive';
}

/**
 * The OpenResty + Lua + Redis recipe as a routing document: the login token in a header is
 * looked up as `TOKEN_<token>` for the user id; a user id inside the range held by the
 * `Grayscale_Range` key ({"idStart":N,"idEnd":M}, inclusive) goes to the candidate, everyone
 * else (no token, unknown token, out of range, Redis trouble) to stable.
 */
export function dropInDocument(options: DropInOptions): RoutingDocument {
  return parseRoutingDocument(
    {
      upstreams: {
        stable: { servers: [options.stable] },
        candidate: { servers: [options.candidate] },
      },
      identity: { sources: [{ tokenLookup: { header: options.tokenHeader, keyTemplate: options.tokenKey } }] },
      services: [
        {
          name: 'default',
          stable: 'stable',
          release: {
            candidate: 'candidate',
            state: 'canary',
            rules: [{ name: 'gray-range', uidRange: { fromKey: options.rangeKey, ...(options.rangeStart === 'exclusive' ? { rangeStart: 'exclusive' } : {}) } }],
          },
        },
      ],
    },
    'the command line (--stable, --candidate, --token-header, --token-key, --range-key, --range-start)',
  );
}

/** The environment variable the drop-in's admin token is read from unless --admin-token-env names another: the one the CLI sends. */
export const DROP_IN_TOKEN_ENV = 'GRAYGATE_ADMIN_TOKEN';

/**
 * The admin section of the drop-in's config (`--admin ADDR`): one token, named `admin`, read from
 * the environment variable `tokenEnv` when it is set. With none the API takes requests without a
 * token and may listen on loopback only, as `admin: {}` in a config file. A variable named
 * explicitly (--admin-token-env) must be set.
 */
export function dropInAdmin(listen: string, tokenEnv: string | undefined, env: NodeJS.ProcessEnv): { listen: string; tokens: { name: string; tokenEnv: string }[] } {
  const name = tokenEnv ?? DROP_IN_TOKEN_ENV;
  if (tokenEnv !== undefined && !env[tokenEnv]) throw new ConfigError([`--admin-token-env: environment variable ${tokenEnv} is not set`]);
  return { listen, tokens: env[name] ? [{ name: 'admin', tokenEnv: name }] : [] };
}

/**
 * What the store's routing says differently from the drop-in's flags (upstreams, identity): the
 * store wins (it may hold a release in progress), so a restart with other flags is announced.
 */
export function flagsIgnored(stored: RoutingDocument, flags: RoutingDocument): string[] {
  return diffValues({ upstreams: stored.upstreams, identity: stored.identity }, { upstreams: flags.upstreams, identity: flags.identity }).map((change) => change.path);
}
