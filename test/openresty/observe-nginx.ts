import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { accessLogFormat, accessLogVariableDeclarations } from '../../src/openresty/access-log.js';
import { METRICS_DUMP_PATH } from '../../src/openresty/metrics.js';
import { eventually } from '../helpers/eventually.js';
import { killProcessGroup, spawnTracked } from '../helpers/processes.js';
import { freePort } from '../helpers/redis.js';

/**
 * A real nginx with the Lua module, for the token and metrics tests: token.lua and metrics.lua
 * wired as the data plane wires them, with a stand-in for the evaluator (the seed rule: the
 * token's uid in 1..5000 goes to the candidate) so these tests need only the modules they test.
 * Started in a process group of its own and tracked, so it dies with the test file.
 */

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MODULES = ['/usr/lib/nginx/modules/ndk_http_module.so', '/usr/lib/nginx/modules/ngx_http_lua_module.so'];

export interface ObserveNginx {
  readonly port: number;
  readonly dir: string;
  readonly url: string;
  readonly dumpUrl: string;
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
  /** tokenLookup settings (graygate's field names) of the `default` source. */
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
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'gg-observe-nginx-'));
  const stable = options.stablePort ?? (await freePort());
  const candidate = options.candidatePort ?? (await freePort());
  const source = { header: 'token', keyTemplate: 'TOKEN_{token}', cacheTtlMs: 5000, negativeTtlMs: 1000, maxStaleMs: 300000, cacheMax: 100000, deadlineMs: 2000, maxTokenLength: 256, ...options.tokenSource };
  const custom = { ...source, keyTemplate: 'uid:{token}:v1' };
  const conf = `${MODULES.map((file) => `load_module ${file};`).join('\n')}
daemon off; master_process on; worker_processes ${options.workers ?? 2};
pid ${dir}/nginx.pid; error_log ${dir}/error.log info;
events { worker_connections 1024; }
http {
  lua_package_path "${root}/openresty/?.lua;/usr/share/lua/5.1/?.lua;;";
  lua_shared_dict graygate_tokens ${options.tokenDictSize ?? '16m'};
  lua_shared_dict graygate_metrics 1m;
  lua_socket_log_errors off;
  ${accessLogFormat()}
  access_log ${dir}/access.log graygate;
  init_worker_by_lua_block {
    local cjson = require "cjson.safe"
    local resp = require "graygate.resp"
    SOURCE = cjson.decode(${lua(source)})
    CUSTOM = cjson.decode(${lua(custom)})
    require("graygate.token").init({ redis = assert(resp.parse_url("redis://127.0.0.1:${options.redisPort}")), dict = "graygate_tokens"${options.lruSize ? `, lru_size = ${options.lruSize}` : ''} })
    require("graygate.metrics").init({ dict = "graygate_metrics", flush_interval = 0.1 })
    DECISIONS = {
      candidate = { service = "shop", version = "candidate", upstream = "shop-v2", rule = "first-users" },
      stable = { service = "shop", version = "stable", upstream = "shop-v1", rule = "no rule matched" },
    }
  }
  upstream shop-v1 { server 127.0.0.1:${stable}; keepalive 16; }
  upstream shop-v2 { server 127.0.0.1:${candidate}; keepalive 16; }
  server {
    listen 127.0.0.1:${port};
    location / {
      ${accessLogVariableDeclarations()}
      set $gg_upstream shop-v1;
      access_by_lua_block {
        local token = require "graygate.token"
        local metrics = require "graygate.metrics"
        local uid = token.resolve(SOURCE, ngx.var.http_token)
        local n = uid and tonumber(uid)
        local d = (n and n >= 1 and n <= 5000) and DECISIONS.candidate or DECISIONS.stable
        metrics.begin(ngx.ctx, d)
        metrics.set_log_vars(d, uid and "tokenLookup" or nil)
        ngx.var.gg_upstream = d.upstream
      }
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass http://$gg_upstream;
      log_by_lua_block { require("graygate.metrics").log(ngx.ctx) }
    }
    location /nomatch {
      ${accessLogVariableDeclarations()}
      return 404;
      log_by_lua_block { require("graygate.metrics").log(ngx.ctx) }
    }
    location = /resolve {
      content_by_lua_block {
        local source = ngx.var.arg_source == "custom" and CUSTOM or SOURCE
        ngx.say(require("graygate.token").resolve(source, ngx.var.http_token) or "-")
      }
    }
    location = ${METRICS_DUMP_PATH} {
      allow 127.0.0.1; deny all;
      content_by_lua_block { require("graygate.metrics").dump() }
    }
    ${options.extraLocations ?? ''}
  }
}
`;
  writeFileSync(path.join(dir, 'nginx.conf'), conf);
  const child: ChildProcess = spawnTracked('nginx', ['-p', `${dir}/`, '-c', path.join(dir, 'nginx.conf'), '-e', `${dir}/error.log`], { stdio: 'ignore' });
  let exited = false;
  const exitedPromise = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));
  const url = `http://127.0.0.1:${port}`;
  const readLog = (name: string) => (existsSync(path.join(dir, name)) ? readFileSync(path.join(dir, name), 'utf8') : '');
  const get = async (pathname: string, token?: string) => {
    const response = await request(`${url}${pathname}`, { headers: token === undefined ? {} : { token } });
    return { status: response.statusCode, body: await response.body.text() };
  };
  await eventually(async () => {
    if (exited) throw new Error(`nginx exited: ${readLog('error.log')}`);
    const { status } = await get('/resolve');
    if (status !== 200) throw new Error(`nginx answered ${status}`);
  });
  return {
    port,
    dir,
    url,
    dumpUrl: `${url}${METRICS_DUMP_PATH}`,
    errorLog: () => readLog('error.log'),
    accessLog: () => readLog('access.log'),
    get,
    resolve: async (token, which = 'default') => (await get(`/resolve${which === 'custom' ? '?source=custom' : ''}`, token)).body.trim(),
    async stop() {
      if (!exited) {
        killProcessGroup(child, 'SIGQUIT');
        const timer = setTimeout(() => killProcessGroup(child, 'SIGKILL'), 5_000);
        await exitedPromise;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
