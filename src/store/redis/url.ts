import { ConfigError } from '../../errors.js';

/** A host and port of a Redis node or sentinel. */
export interface RedisAddress {
  readonly host: string;
  readonly port: number;
}

/** What a Redis connection string names: one server, a Sentinel group or a Cluster. */
export type RedisTarget =
  | {
      readonly topology: 'standalone';
      /** The `redis://` or `rediss://` URL, handed to ioredis as is. */
      readonly url: string;
      readonly display: string;
    }
  | {
      readonly topology: 'sentinel';
      readonly sentinels: readonly RedisAddress[];
      readonly masterName: string;
      readonly username: string | undefined;
      readonly password: string | undefined;
      readonly sentinelPassword: string | undefined;
      readonly db: number;
      readonly display: string;
    }
  | {
      readonly topology: 'cluster';
      readonly nodes: readonly RedisAddress[];
      readonly username: string | undefined;
      readonly password: string | undefined;
      readonly display: string;
    };

const MULTI_HOST = /^(redis\+sentinel|redis\+cluster):\/\/(?:([^@/]*)@)?([^/?#]+)(\/[^?#]*)?(?:\?([^#]*))?$/;

function refuse(field: string, message: string): never {
  throw new ConfigError([`${field}: ${message}`]);
}

function parseAddress(text: string, defaultPort: number, field: string): RedisAddress {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/.exec(text);
  const port = match?.[3] === undefined ? defaultPort : Number(match[3]);
  if (!match || !(port >= 1 && port <= 65535)) refuse(field, `expected host:port, got ${JSON.stringify(text)}`);
  return { host: match[1] ?? match[2]!, port };
}

function parseUserInfo(userInfo: string | undefined): { username: string | undefined; password: string | undefined } {
  if (userInfo === undefined || userInfo === '') return { username: undefined, password: undefined };
  const colon = userInfo.indexOf(':');
  const user = colon < 0 ? userInfo : userInfo.slice(0, colon);
  const password = colon < 0 ? undefined : userInfo.slice(colon + 1);
  // `redis://:secret@host` (no user) is the classic form; a bare `redis://secret@host` is a password too.
  if (colon < 0) return { username: undefined, password: decodeURIComponent(user) };
  return { username: user === '' ? undefined : decodeURIComponent(user), password: password === undefined ? undefined : decodeURIComponent(password) };
}

/** The URL with any password replaced by `***`, for logs and messages. */
export function redactRedisUrl(text: string): string {
  return text.replace(/^([a-z+]+:\/\/)([^@/]*)@/i, (_all, scheme: string, userInfo: string) => {
    const colon = userInfo.indexOf(':');
    return `${scheme}${colon < 0 ? '***' : `${userInfo.slice(0, colon)}:***`}@`;
  });
}

/**
 * Parses a graygate Redis connection string: `redis://[user:password@]host:port[/db]`,
 * `rediss://…` (TLS), `redis+sentinel://[:password@]host:port[,host:port…]/masterName[/db]
 * [?sentinelPassword=…]` or `redis+cluster://[:password@]host:port[,host:port…]`.
 * Throws ConfigError naming `field`.
 */
export function parseRedisUrl(text: string, field = 'store.url'): RedisTarget {
  const display = redactRedisUrl(text);
  if (text.startsWith('redis://') || text.startsWith('rediss://')) {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      refuse(field, `not a valid URL: ${display}`);
    }
    if (!url.hostname) refuse(field, `names no host: ${display}`);
    const db = url.pathname.replace(/^\//, '');
    if (db !== '' && !/^\d{1,2}$/.test(db)) refuse(field, `the path must be a database number (redis://host:port/0), got ${JSON.stringify(url.pathname)}`);
    return { topology: 'standalone', url: text, display };
  }
  const match = MULTI_HOST.exec(text);
  if (!match) {
    refuse(
      field,
      `expected redis://[:password@]host:port[/db], rediss://…, redis+sentinel://host:port[,host:port]/masterName or redis+cluster://host:port[,host:port], got ${JSON.stringify(display)}`,
    );
  }
  const [, scheme, userInfo, hosts, path = '', query = ''] = match;
  const { username, password } = parseUserInfo(userInfo);
  const params = new URLSearchParams(query);
  if (scheme === 'redis+cluster') {
    if (path !== '' && path !== '/') refuse(field, `a cluster URL has no path (a Cluster has only database 0), got ${JSON.stringify(path)}`);
    const nodes = hosts!.split(',').map((host) => parseAddress(host, 6379, field));
    return { topology: 'cluster', nodes, username, password, display };
  }
  const segments = path.split('/').filter((segment) => segment !== '');
  if (segments.length === 0 || segments.length > 2) refuse(field, `a sentinel URL ends with /masterName or /masterName/db, got ${JSON.stringify(display)}`);
  const db = segments[1] === undefined ? 0 : Number(segments[1]);
  if (!Number.isInteger(db) || db < 0) refuse(field, `the database must be a number, got ${JSON.stringify(segments[1])}`);
  const sentinels = hosts!.split(',').map((host) => parseAddress(host, 26379, field));
  return {
    topology: 'sentinel',
    sentinels,
    masterName: decodeURIComponent(segments[0]!),
    username,
    password,
    sentinelPassword: params.get('sentinelPassword') ?? undefined,
    db,
    display,
  };
}
