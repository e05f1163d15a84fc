import { parseRoutingDocument } from '../config/load.js';
import type { RoutingDocument } from '../config/schema.js';

export interface DropInOptions {
  stable: string;
  candidate: string;
  tokenHeader: string;
  tokenKey: string;
  rangeKey: string;
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
          release: { candidate: 'candidate', state: 'canary', rules: [{ name: 'gray-range', uidRange: { fromKey: options.rangeKey } }] },
        },
      ],
    },
    'the command line (--stable, --candidate, --token-header, --token-key, --range-key)',
  );
}
