import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { request } from 'undici';
import { accessLogFormat, accessLogVariableDeclarations } from '../../src/openresty/access-log.js';
import { latencyBoundsInitArgs, METRICS_DUMP_PATH } from '../../src/openresty/metrics.js';
import { startNginx } from '../helpers/nginx.js';
import { freePort } from '../helpers/redis.js';

/**
 * A real nginx with the Lua module, for the token and metrics tests: token.lua and metrics.lua
 * wired as the data plane wires them, with a stand-in for the evaluator (the seed rule: the
 * token's uid in 1..5000 goes to the candidate) so these tests need only the modules they test.
 * Started by test/helpers/nginx.ts (its own process group, tracked, so it dies with the test file).
 */


export interface ObserveNginx {
  readonly port: number;
  readonly dir: string;
  readonly url: string;
  readonly dumpUrl: string;
  /** nginx's unix socket (the same server), as graygate's control plane reaches the dump. */
  readonly socketPath: string;
  errorLog(): string;
  accessLog(): string;
  /** GET `path` with optional TOKEN header: status and body. */
  get(pathname: string, token?: string): Promise<{ status: number; body: string }>;
  /** The uid token.lua resolves for `token` (`-` for none). */
  resolve(token: string | undefined, source?: 'default' | 'custom'): Promise<string>;
  stop(): Promise<void>;
}

export interface ObserveNginxOptions {
  redisPort: number;
  workers?: number;
  /** tokenLookup settings (graygate's field names) of the `default` source; the `custom` one (key `uid:<token>:v1`) caches for 10 minutes. */
  tokenSource?: Record<string, unknown>;
  stablePort?: number;
  candidatePort?: number;
  tokenDictSize?: string;
  lruSize?: number;
  /** Extra `location` blocks for the server. */
  extraLocations?: string;
}

const lua = (value: unknown) => `[==[${JSON.stringify(value)}]==]`;

export async function startObserveNginx(options: ObserveNginxOptions): Promise<ObserveNginx> {
  const stable = options.stablePort ?? (await freePort());
  const candidate = options.candidatePort ?? (await freePort());
  const source = { kind: 'tokenLookup', label: 'tokenLookup', header: 'token', keyPrefix: 'TOKEN_', keySuffix: '', cacheTtlMs: 5000, negativeTtlMs: 1000, maxStaleMs: 300000, cacheMax: 100000, deadlineMs: 2000, maxTokenLength: 256, ...options.tokenSource };
  // The config's spelling of a template (keyTemplate) is taken too.
  const custom = { header: 'token', keyTemplate: 'uid:{token}:v1', cacheTtlMs: 600_000, deadlineMs: 2_000 };
  const http = (ports: readonly number[], prefix: string) => `
  lua_shared_dict graygate_tokens ${options.tokenDictSize ?? '16m'};
  lua_shared_dict graygate_metrics 1m;
  lua_socket_log_errors off;
  ${accessLogFormat()}
  init_worker_by_lua_block {
    local cjson = require "cjson.safe"
    local resp = require "graygate.resp"
    SOURCE = cjson.decode(${lua(source)})
    CUSTOM = cjson.decode(${lua(custom)})
    require("graygate.token").init({ redis = assert(resp.parse_url("redis://127.0.0.1:${options.redisPort}")), dict = "graygate_tokens"${options.lruSize ? `, lru_size = ${options.lruSize}` : ''} })
    require("graygate.metrics").init({ dict = "graygate_metrics", flush_interval = 0.1, ${latencyBoundsInitArgs()} })
    DECISIONS = {
      candidate = { service = "shop", version = "candidate", upstream = "shop-v2", reason = "first-users" },
      stable = { service = "shop", version = "stable", upstream = "shop-v1", reason = "no rule matched" },
    }
  }
  upstream shop-v1 { server 127.0.0.1:${stable}; keepalive 16; }
  upstream shop-v2 { server 127.0.0.1:${candidate}; keepalive 16; }
  server {
    listen 127.0.0.1:${ports[0]};
    listen unix:${prefix}/control.sock;
    access_log ${prefix}/logs/access.log graygate;
    location / {
      ${accessLogVariableDeclarations()}
      set $gg_inflight "";
      set $gg_upstream shop-v1;
      access_by_lua_block {
        local token = require "graygate.token"
        local metrics = require "graygate.metrics"
        local uid = token.resolve(SOURCE, ngx.var.http_token)
        local n = uid and tonumber(uid)
        local d = (n and n >= 1 and n <= 5000) and DECISIONS.candidate or DECISIONS.stable
        -- What access.lua does with a decision: the log line's variables, then the metrics.
        local var = ngx.var
        var.gg_service = d.service
        var.gg_version = d.version
        var.gg_rule = d.reason
        var.gg_upstream = d.upstream
        if uid then var.gg_identity = "tokenLookup" end
        local g = {}
        ngx.ctx.graygate = g
        metrics.started(d.upstream, g, d)
      }
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass http://$gg_upstream;
      log_by_lua_block { require("graygate.metrics").log_vars(ngx.ctx.graygate) }
    }
    location /nomatch {
      ${accessLogVariableDeclarations()}
      return 404;
      log_by_lua_block { require("graygate.metrics").log_vars(ngx.ctx.graygate) }
    }
    location = /resolve {
      access_log off;
      content_by_lua_block {
        local source = ngx.var.arg_source == "custom" and CUSTOM or SOURCE
        ngx.say(require("graygate.token").resolve(source, ngx.var.http_token) or "-")
      }
    }
    location = ${METRICS_DUMP_PATH} {
      access_log off;
      allow 127.0.0.1; allow unix:; deny all;
      content_by_lua_block { require("graygate.metrics").dump() }
    }
    ${options.extraLocations ?? ''}
  }
`;
  const nginx = await startNginx({ workers: options.workers ?? 2, http });
  const url = nginx.url;
  const dir = nginx.prefix;
  const readLog = (name: string) => (existsSync(path.join(dir, 'logs', name)) ? readFileSync(path.join(dir, 'logs', name), 'utf8') : '');
  const get = async (pathname: string, token?: string) => {
    const response = await request(`${url}${pathname}`, { headers: token === undefined ? {} : { token } });
    return { status: response.statusCode, body: await response.body.text() };
  };
  return {
    port: nginx.ports[0]!,
    dir,
    url,
    dumpUrl: `${url}${METRICS_DUMP_PATH}`,
    socketPath: path.join(dir, 'control.sock'),
    errorLog: () => nginx.output(),
    accessLog: () => readLog('access.log'),
    get,
    resolve: async (token, which = 'default') => (await get(`/resolve${which === 'custom' ? '?source=custom' : ''}`, token)).body.trim(),
    stop: () => nginx.stop(),
  };
}
