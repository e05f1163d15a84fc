import { existsSync, mkdirSync, readdirSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Settings } from '../config/schema.js';
import { GraygateError } from '../errors.js';
import { redisStoreKeys } from '../store/redis/names.js';
import { accessLogFormat, accessLogVariableDeclarations } from './access-log.js';
import { accessLogWritten } from '../observe/access-log.js';
import { metricsInitLua } from './metrics.js';
import { normalizeSettings } from './normalize.js';
import { clientCertificateMap, tlsServerDirectives } from './tls.js';
import { tokenDictSize } from './token-memory.js';
import { nginxTimeouts } from './envelope.js';
import { Upstream } from '../config/schema.js';

/**
 * What graygate writes for nginx: two files an existing nginx.conf includes (one in `http {}`,
 * one in a `server {}`), and, for `graygate start --data-plane openresty`, a whole nginx.conf
 * around them. Nothing in them depends on the routing document: upstreams, rules and timeouts
 * reach nginx at run time (config.lua), so a routing change never needs a reload.
 */

/** The package's `openresty/` directory (holds graygate/*.lua), from dist/openresty or src/openresty. */
export const LUA_DIR = fileURLToPath(new URL('../../openresty', import.meta.url));

/** Where Debian's lua-resty-core, lua-resty-lrucache and lua-cjson put their modules. */
const SYSTEM_LUA_PATH = '/usr/share/lua/5.1/?.lua';
const SYSTEM_LUA_CPATH = '/usr/lib/x86_64-linux-gnu/lua/5.1/?.so';

/** The modules Debian's libnginx-mod-http-lua installs (OpenResty has them built in). */
export const LUA_MODULES = ['/usr/lib/nginx/modules/ndk_http_module.so', '/usr/lib/nginx/modules/ngx_http_lua_module.so'];

/** How many login tokens the shared token cache holds without evicting one. */
const TOKEN_CAPACITY = 1_000_000;

/** File names written into the output directory. */
export const HTTP_INCLUDE = 'graygate-http.conf';
export const SERVER_INCLUDE = 'graygate-server.conf';
export const CONTROL_SOCKET = 'graygate-control.sock';

/** The Redis key graygate writes the delivery envelope to, and the channel it announces it on. */
export function openRestyKeys(namespace: string): { envelope: string; meta: string; channel: string } {
  const keys = redisStoreKeys(namespace);
  return { envelope: `${keys.doc.replace(/:doc$/, '')}:openresty`, meta: `${keys.doc.replace(/:doc$/, '')}:openresty:meta`, channel: `${keys.channel}:openresty` };
}

export interface ConfOptions {
  readonly settings: Settings;
  /** Directory the files are written to (absolute). */
  readonly outDir: string;
  /** Where the `openresty/` Lua directory is (default: this package's). */
  readonly luaDir?: string;
  /**
   * Whether the http include loads graygate's Lua modules in nginx's master (its own
   * `init_by_lua_block`; default true). Off for an nginx.conf that has an init_by_lua* of its own
   * (nginx takes one per http block), which then calls `require("graygate.preload")()` itself.
   */
  readonly initByLua?: boolean;
}

/** The settings config.lua reads at init_worker (written into the conf as JSON). */
export interface LuaSettings {
  readonly preserve_host: boolean;
  readonly normalized: ReturnType<typeof normalizeSettings>;
  readonly redis?: { readonly url: string; readonly key: string; readonly channel: string; readonly poll_ms: number; readonly ping_ms: number; readonly timeout_ms: number };
}

/**
 * Whether nginx can read the routing straight from the store: Redis standalone (`redis://`). Other
 * stores (the file store, Sentinel, Cluster, TLS) get it pushed by graygate to the control socket,
 * which needs `graygate start --data-plane openresty` beside nginx.
 */
export function readsRedis(settings: Settings): boolean {
  return settings.store.kind === 'redis' && settings.store.url.startsWith('redis://');
}

export function luaSettings(settings: Settings): LuaSettings {
  const store = settings.store;
  const redis =
    store.kind === 'redis' && readsRedis(settings)
      ? (() => {
          const keys = openRestyKeys(store.namespace);
          return { url: store.url, key: keys.envelope, channel: keys.channel, poll_ms: store.pollMs, ping_ms: store.pingMs, timeout_ms: store.commandTimeoutMs };
        })()
      : undefined;
  return {
    preserve_host: settings.proxy.preserveHost,
    normalized: normalizeSettings(settings),
    ...(redis ? { redis } : {}),
  };
}

/** A Lua long string holding `text` (its level chosen so that the text cannot close it). */
function luaLongString(text: string): string {
  let level = 1;
  while (text.includes(`]${'='.repeat(level)}]`)) level++;
  const eq = '='.repeat(level);
  return `[${eq}[${text}]${eq}]`;
}

/** A directory nginx's directives can name (written in double quotes, so no quotes, $ or braces). */
function checkedDir(dir: string, what: string): string {
  if (/["\\$\s;{}]/.test(dir)) throw new GraygateError('GG_CONFIG_INVALID', `${what}: nginx cannot take the path ${JSON.stringify(dir)} (no quotes, backslashes, $, spaces, ; or braces)`);
  return dir;
}

/**
 * The timeouts of an upstream that keeps the config's defaults, as nginx's: the conf's proxied
 * location has them, and balancer.lua sets an upstream's own only when they differ (setting them
 * makes nginx copy its upstream settings for the request).
 */
export function defaultUpstreamTimeouts(): { connect: number; send: number; read: number } {
  return nginxTimeouts(Upstream.shape.timeouts.parse({}));
}

/** nginx's spelling of a time in seconds, to the millisecond. */
const ms = (secondsValue: number) => `${Math.round(secondsValue * 1000)}ms`;

const seconds = (ms: number) => `${Math.max(1, Math.ceil(ms / 1000))}s`;

/** The `http {}` part: Lua paths, shared dicts, worker init, the balancer's upstream, the control socket. */
export function httpConf(options: ConfOptions): string {
  const luaDir = checkedDir(options.luaDir ?? LUA_DIR, 'the package\'s openresty directory');
  checkedDir(options.outDir, '--out');
  const settings = luaSettings(options.settings);
  const socket = path.join(options.outDir, CONTROL_SOCKET);
  const timeouts = defaultUpstreamTimeouts();
  return `# Written by \`graygate openresty conf\`: include it once inside http { }.
# Routing (services, rules, upstream servers, timeouts) is not in here: graygate delivers it at run
# time to every worker (${settings.redis ? `read from Redis key ${settings.redis.key}, announced on ${settings.redis.channel}` : 'pushed to the control socket below'}), so a change needs no reload.
lua_package_path "${luaDir}/?.lua;${SYSTEM_LUA_PATH};;";
lua_package_cpath "${SYSTEM_LUA_CPATH};;";
# The Redis subscriber waits for messages with a read timeout; a timeout there is not an error.
lua_socket_log_errors off;

# The last good routing (the delivery envelope), the servers' passive health, the metrics, and
# the token cache (sized for ${TOKEN_CAPACITY.toLocaleString('en')} tokens; shared memory is only used as it fills).
lua_shared_dict graygate_config 64m;
lua_shared_dict graygate_health 1m;
lua_shared_dict graygate_metrics 4m;
lua_shared_dict graygate_tokens ${tokenDictSize(TOKEN_CAPACITY)};
# The TLS certificates graygate pushes (PEM texts of every pair; a few KB each).
lua_shared_dict graygate_tls 4m;

# The access log line (service, served version, upstream, rule, identity source): use it with
# access_log <file> graygate buffer=64k flush=1s;
# (buffered: unbuffered, it costs a write() system call per request). graygate's own
# nginx also sets \`lua_malloc_trim 0;\` (no malloc_trim() every 1000 requests in the log phase).
${accessLogFormat()}

${preloadLines(options.initByLua ?? true)}

init_worker_by_lua_block {
    require("graygate.config").init_worker(${luaLongString(JSON.stringify(settings))})
    require("graygate.balancer").init_worker({ connect = ${timeouts.connect}, send = ${timeouts.send}, read = ${timeouts.read} })
    -- Loaded now rather than by the first request: each worker then prepares every new routing
    -- version as soon as it arrives, off the request path.
    require("graygate.access")
    ${metricsInitLua()}
}

# The servers of every upstream are set per attempt by balancer.lua; nginx keeps idle connections
# per server address in this pool.
upstream graygate_upstream {
    server 0.0.0.1;
    balancer_by_lua_block { require("graygate.balancer").balance() }
    keepalive 128;
    keepalive_timeout 4s;
    keepalive_requests 10000;
}

map $http_upgrade $graygate_connection {
    default upgrade;
    ""      "";
}

# graygate's control plane pushes the routing here and reads what nginx serves; a unix socket, so
# nothing on the network reaches it.
server {
    listen unix:${socket};
    access_log off;
    client_max_body_size 64m;
    client_body_buffer_size 64m;
    location /graygate/ {
        content_by_lua_block { require("graygate.config").serve_control() }
    }
    location = /graygate/metrics {
        content_by_lua_block { require("graygate.metrics").dump() }
    }
    location = /graygate/tls {
        content_by_lua_block { require("graygate.tls").serve_control() }
    }
}
`;
}

/** The Lua call that loads every graygate module (in an init_by_lua* of nginx's master). */
export const PRELOAD_CALL = 'require("graygate.preload")()';

/** The http include's preload: an init_by_lua_block, or how to call it from the operator's own. */
function preloadLines(initByLua: boolean): string {
  const why = `# Every graygate Lua module is loaded in nginx's master, before it forks its workers: they inherit
# them and never open graygate's files, which nginx's workers cannot read when nginx starts as root
# (they run as another user, e.g. nobody or www-data) and graygate sits in an owner-only directory.`;
  return initByLua
    ? `${why}
# nginx takes one init_by_lua* per http block: if your nginx.conf has its own, write these files
# with \`graygate openresty conf --no-init-by-lua\` and call ${PRELOAD_CALL} from yours.
init_by_lua_block {
    ${PRELOAD_CALL}
}`
    : `${why}
# Written with --no-init-by-lua: call ${PRELOAD_CALL} from your own init_by_lua* (in http { }).`;
}

/** The `server {}` part: the variables the phases write, the proxied location and the error location. */
export function serverConf(settings: Settings): string {
  const timeouts = defaultUpstreamTimeouts();
  return `# Written by \`graygate openresty conf\`: include it inside the server { } that takes the traffic
# (it defines location /).
# The variables the phases write, read by the access log line, the error location and the metrics.
# Declared in a location no request enters: nginx knows them (Lua can write only a declared
# variable), and no request pays for setting them empty. One never written reads as empty (nil in
# Lua, "" in the access log line), without a warning.
uninitialized_variable_warn off;
location @graygate_variables {
    ${accessLogVariableDeclarations().split(' set ').join('\n    set ')}
}
set $gg_scheme "http";
set $gg_xff $remote_addr;
set $gg_host $http_host;

location / {
    access_by_lua_block { require("graygate.access").access() }
    header_filter_by_lua_block { require("graygate.access").header_filter() }
    log_by_lua_block { require("graygate.access").log() }

    proxy_http_version 1.1;
    proxy_set_header Host $gg_host;
    proxy_set_header Connection $graygate_connection;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header X-Forwarded-For $gg_xff;
    # Attempts: balancer.lua decides each one (the next server, stable, or none).
    proxy_next_upstream error timeout;
    proxy_next_upstream_tries 0;
    # An upstream with the config's default timeouts; balancer.lua sets other ones per attempt.
    proxy_connect_timeout ${ms(timeouts.connect)}; proxy_send_timeout ${ms(timeouts.send)}; proxy_read_timeout ${ms(timeouts.read)};
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_pass $gg_scheme://graygate_upstream;
    error_page 500 502 503 504 = @graygate_error;
}

location @graygate_error {
    content_by_lua_block { require("graygate.access").error_page() }
    # The log phase runs the handlers of the location that answered: without it here, a request
    # answered by this location would stay in flight forever (a drain would never end) and count nowhere.
    log_by_lua_block { require("graygate.access").log() }
}
`;
}

/** nginx's directives to load the Lua module, when it is a dynamic module (Debian); OpenResty has it built in. */
export function loadModuleLines(): string {
  return LUA_MODULES.every((file) => existsSync(file)) ? LUA_MODULES.map((file) => `load_module ${file};`).join('\n') : '';
}

export interface WrittenConf {
  readonly httpInclude: string;
  readonly serverInclude: string;
  /** The two lines to add to an existing nginx.conf. */
  readonly lines: readonly [string, string];
}

/** Writes the two include files into `outDir`. */
export function writeConf(options: ConfOptions): WrittenConf {
  mkdirSync(options.outDir, { recursive: true });
  const httpInclude = path.join(options.outDir, HTTP_INCLUDE);
  const serverInclude = path.join(options.outDir, SERVER_INCLUDE);
  writeFileSync(httpInclude, httpConf(options));
  writeFileSync(serverInclude, serverConf(options.settings));
  return { httpInclude, serverInclude, lines: [`include ${httpInclude};`, `include ${serverInclude};`] };
}

/**
 * The access log of graygate's own nginx, under the same settings as the Node data plane's: off
 * when disabled, sampled to nothing or written below `log.level`; `log.access.sample` is nginx's
 * `split_clients` on `$request_id` (random per request, made only when a sampled log asks for it),
 * whose shares are whole hundredths of a percent, so a sample under 0.0001 is one in ten thousand.
 */
function accessLogDirectives(log: Settings['log'], file: string): string {
  if (!accessLogWritten(log)) return '# No access log (log.access: disabled, sample 0, or its level below log.level).\naccess_log off;';
  const buffered = `access_log ${file} graygate buffer=64k flush=1s`;
  const why = '# One JSON line per request (log.access), written in 64 KiB batches and at least once a\n# second: an unbuffered access log costs a write() system call per request.';
  if (log.access.sample >= 1) return `${why}\n${buffered};`;
  const percent = Math.max(0.01, Math.round(log.access.sample * 10_000) / 100);
  return `${why}\n# log.access.sample: ${String(log.access.sample)}.\nsplit_clients "$request_id" $graygate_access_sampled {\n    ${String(percent)}% 1;\n    * "";\n}\n${buffered} if=$graygate_access_sampled;`;
}

/** A whole nginx.conf for `graygate start --data-plane openresty`: nginx in the foreground, its own prefix dir. */
export function mainConf(options: ConfOptions & { readonly listen: { host: string; port: number } | undefined; readonly tlsListen?: { host: string; port: number }; readonly workers: number; readonly metricsPort: number }): string {
  const address = ({ host, port }: { host: string; port: number }) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);
  const tls = options.settings.tls;
  const listenLines = [
    ...(options.listen ? [`listen ${address(options.listen)} backlog=4096;`] : []),
    ...(tls && options.tlsListen
      ? [
          // nginx 1.22 spells HTTP/2 as a listen parameter; HTTP/1.1 stays on the same port (ALPN).
          `listen ${address(options.tlsListen)} ssl${tls.http2.enabled ? ' http2' : ''} backlog=4096;`,
          ...tlsServerDirectives(tls, options.outDir).split('\n'),
        ]
      : []),
  ];
  const keepAlive = seconds(options.settings.proxy.keepAliveTimeoutMs);
  return `# Written by \`graygate start --data-plane openresty\`; rewritten at each start.
${loadModuleLines()}
worker_processes ${options.workers};
daemon off;
pid ${path.join(options.outDir, 'nginx.pid')};
error_log stderr warn;

events { worker_connections 4096; }

http {
    keepalive_timeout ${keepAlive};
    client_header_timeout ${seconds(options.settings.proxy.clientHeadersTimeoutMs)};
    client_body_temp_path ${path.join(options.outDir, 'client_body')};
    proxy_temp_path ${path.join(options.outDir, 'proxy')};
    fastcgi_temp_path ${path.join(options.outDir, 'fastcgi')};
    uwsgi_temp_path ${path.join(options.outDir, 'uwsgi')};
    scgi_temp_path ${path.join(options.outDir, 'scgi')};
    include ${path.join(options.outDir, HTTP_INCLUDE)};
    ${tls ? clientCertificateMap(tls).split('\n').join('\n    ') : ''}
    # lua-nginx-module's log phase otherwise calls malloc_trim() every 1000 requests: returning
    # freed memory to the system costs an madvise and a TLB flush on every core, each time.
    lua_malloc_trim 0;
    ${accessLogDirectives(options.settings.log, path.join(options.outDir, 'logs', 'access.log')).split('\n').join('\n    ')}
    # graygate reads nginx's metrics here (loopback only).
    server {
        listen 127.0.0.1:${options.metricsPort};
        access_log off;
        allow 127.0.0.1;
        deny all;
        location = /graygate/metrics {
            content_by_lua_block { require("graygate.metrics").dump() }
        }
    }
    server {
${listenLines.map((line) => `        ${line}`).join('\n')}
        include ${path.join(options.outDir, SERVER_INCLUDE)};
    }
}
`;
}

/** A path on the way to graygate's Lua files that users other than its owner cannot pass. */
export interface LuaAccessProblem {
  readonly path: string;
  /** Its permission bits (e.g. 0o700). */
  readonly mode: number;
  /** What others lack: searching a directory (x), or reading a Lua file (r). */
  readonly lacks: 'search' | 'read';
}

/**
 * The first directory from `/` down to `<luaDir>/graygate` that others cannot search, else the
 * first Lua file there others cannot read; undefined when every user can read the Lua files.
 * nginx started as root runs its workers as another user, who reads them only this way (unless
 * the master preloads them). The real path is checked: a symlink's target is what is opened.
 */
export function luaAccessProblem(luaDir: string = LUA_DIR): LuaAccessProblem | undefined {
  let dir: string;
  try {
    dir = realpathSync(path.join(luaDir, 'graygate'));
  } catch {
    return undefined;
  }
  const chain: string[] = [];
  for (let at = dir; ; at = path.dirname(at)) {
    chain.unshift(at);
    if (path.dirname(at) === at) break;
  }
  for (const at of chain) {
    const mode = statSync(at).mode & 0o7777;
    if ((mode & 0o001) === 0) return { path: at, mode, lacks: 'search' };
  }
  for (const file of readdirSync(dir).filter((name) => name.endsWith('.lua')).sort()) {
    const mode = statSync(path.join(dir, file)).mode & 0o7777;
    if ((mode & 0o004) === 0) return { path: path.join(dir, file), mode, lacks: 'read' };
  }
  return undefined;
}

/** `problem` in words: "/root is not searchable by other users (mode 0700)". */
export function describeLuaAccess(problem: LuaAccessProblem): string {
  return `${problem.path} is not ${problem.lacks === 'search' ? 'searchable' : 'readable'} by other users (mode 0${problem.mode.toString(8)})`;
}
