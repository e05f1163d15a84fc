import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { eventually } from './eventually.js';
import { cliPath, startGatewayProcess, type GatewayProcess } from './gateway-process.js';
import { groupMembers, killProcessGroup, spawnTracked } from './processes.js';
import { freePort } from './redis.js';

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
export async function startOpenRestyGateway(options: { config?: Record<string, unknown>; args?: string[]; workers?: number; env?: NodeJS.ProcessEnv; cli?: string }): Promise<OpenRestyGateway> {
  if (!hasLuaModule()) throw new Error('nginx with lua-nginx-module is not installed (apt-get install nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson; .ci/run does)');
  const gateway = await startGatewayProcess({
    ...(options.config ? { config: options.config } : {}),
    args: ['--data-plane', 'openresty', '--nginx', NGINX, ...(options.args ?? [])],
    workers: options.workers ?? 2,
    ...(options.env ? { env: options.env } : {}),
    ...(options.cli ? { cli: options.cli } : {}),
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

export interface NginxProcess {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** What nginx wrote to stderr so far. */
  output(): string;
  /** pids of its worker processes. */
  workerPids(): number[];
  stop(): Promise<void>;
}

/**
 * An nginx the way a user runs one: their own nginx.conf, with graygate's two include lines
 * (from `graygate openresty conf --out confDir`) added; `daemon off`, its own prefix directory,
 * in a process group of its own that dies with the test. `httpLines`: the user's own directives
 * in http { } (e.g. an init_by_lua_block of theirs).
 */
export async function startUserNginx(confDir: string, options: { workers?: number; httpLines?: string } = {}): Promise<NginxProcess> {
  const dir = mkdtempSync(path.join(tmpdir(), 'graygate-user-nginx-'));
  const port = await freePort();
  const modules = ['/usr/lib/nginx/modules/ndk_http_module.so', '/usr/lib/nginx/modules/ngx_http_lua_module.so'].filter((file) => existsSync(file));
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `${modules.map((file) => `load_module ${file};`).join('\n')}
worker_processes ${options.workers ?? 2};
daemon off;
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    access_log off;
    ${options.httpLines ?? ''}
    include ${confDir}/graygate-http.conf;
    server {
        listen 127.0.0.1:${port};
        include ${confDir}/graygate-server.conf;
    }
}
`,
  );
  const child = spawnTracked(NGINX, ['-p', `${dir}/`, '-c', conf, '-e', 'stderr'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let output = '';
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${output}`);
    await send(`http://127.0.0.1:${port}`, { path: '/graygate-probe' });
  });
  const workerPids = () => groupMembers(child.pid!).filter((pid) => pid !== child.pid && commandOf(pid).includes('worker process'));
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    dir,
    output: () => output,
    workerPids,
    stop: async () => {
      child.kill('SIGQUIT');
      const done = await Promise.race([exited.then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), 10_000))]);
      if (!done) killProcessGroup(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs `graygate <args>` to completion; resolves with its exit code and output. */
export async function runCli(args: string[], options: { cwd?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cliPath, ...args], { cwd: options.cwd, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
}
