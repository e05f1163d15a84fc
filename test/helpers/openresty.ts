import { existsSync, readFileSync } from 'node:fs';
import { request } from 'undici';
import { startGatewayProcess, type GatewayProcess } from './gateway-process.js';
import { groupMembers } from './processes.js';

/** Debian's nginx with its Lua module: what `graygate start --data-plane openresty` runs (.ci/run installs them). */
export const NGINX = process.env.GRAYGATE_TEST_NGINX ?? 'nginx';

/** True when the Lua module is there; a suite that needs it fails loudly without it (never skipped). */
export function hasLuaModule(): boolean {
  return existsSync('/usr/lib/nginx/modules/ngx_http_lua_module.so') || existsSync('/usr/local/openresty/nginx/sbin/nginx');
}

export interface OpenRestyGateway extends GatewayProcess {
  /** pids of nginx's processes (master and workers), from the gateway's process group. */
  nginxPids(): number[];
  /** nginx's worker pids (children of the master). */
  workerPids(): number[];
}

function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** `graygate start --data-plane openresty` with `config` (a config file) and `workers` nginx workers. */
export async function startOpenRestyGateway(options: { config?: Record<string, unknown>; args?: string[]; workers?: number; env?: NodeJS.ProcessEnv }): Promise<OpenRestyGateway> {
  if (!hasLuaModule()) throw new Error('nginx with lua-nginx-module is not installed (apt-get install nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson; .ci/run does)');
  const gateway = await startGatewayProcess({
    ...(options.config ? { config: options.config } : {}),
    args: ['--data-plane', 'openresty', '--nginx', NGINX, ...(options.args ?? [])],
    workers: options.workers ?? 2,
    ...(options.env ? { env: options.env } : {}),
  });
  const nginxPids = () => groupMembers(gateway.pid).filter((pid) => pid !== gateway.pid && commandOf(pid).startsWith('nginx'));
  return {
    ...gateway,
    nginxPids,
    workerPids: () => nginxPids().filter((pid) => commandOf(pid).includes('worker process')),
  };
}

export interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  /** The test backend's `version` field, when it answered. */
  readonly version: string | undefined;
  readonly json: Record<string, unknown> | undefined;
}

/** One request on a new connection (so that, across several, each nginx worker gets some). */
export async function send(url: string, options: { method?: string; headers?: Record<string, string>; body?: string; path?: string } = {}): Promise<Answer> {
  const response = await request(`${url}${options.path ?? '/'}`, {
    method: (options.method ?? 'GET') as 'GET',
    headers: { connection: 'close', ...(options.headers ?? {}) },
    ...(options.body !== undefined ? { body: options.body } : {}),
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
  });
  const text = await response.body.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: response.statusCode, headers: response.headers, text, version: typeof json?.version === 'string' ? json.version : undefined, json };
}
