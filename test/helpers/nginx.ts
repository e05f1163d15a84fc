import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WAIT_CAP_MS } from './eventually.js';
import { killProcessGroup, spawnTracked } from './processes.js';
import { freePort } from './redis.js';

/**
 * A private nginx with the Lua module (Debian's `nginx` + `libnginx-mod-http-lua`), started on
 * free loopback ports with its own prefix directory, in the foreground (`daemon off`), in a
 * process group of its own and tracked (helpers/processes.ts), so it dies with the test, its
 * file and the run, also on failure. graygate's Lua modules are on the package path as
 * `require("graygate.<name>")`.
 */

/** The repository's `openresty/` directory: `require("graygate.decide")` finds openresty/graygate/decide.lua. */
export const OPENRESTY_DIR = fileURLToPath(new URL('../../openresty/', import.meta.url));
/** Lua files used only by tests. */
export const TEST_LUA_DIR = fileURLToPath(new URL('../openresty/lua/', import.meta.url));

const NGINX = process.env.NGINX ?? 'nginx';
const MODULES = ['/usr/lib/nginx/modules/ndk_http_module.so', '/usr/lib/nginx/modules/ngx_http_lua_module.so'];

export interface NginxOptions {
  /** How many free loopback ports to reserve (`ports` in `http`). Default 1. */
  ports?: number;
  /** The body of the `http { }` block, given the reserved ports. `lua_package_path` is set already. */
  http(ports: readonly number[], prefix: string): string;
  /** Lines of the main context (e.g. `env NAME;`). */
  main?: string;
  /** Worker processes (default 1). */
  workers?: number;
  /** Environment of the nginx process. */
  env?: NodeJS.ProcessEnv;
}

export interface Nginx {
  readonly ports: readonly number[];
  /** `http://127.0.0.1:<ports[0]>` */
  readonly url: string;
  readonly prefix: string;
  readonly child: ChildProcess;
  /** What nginx wrote to stderr (its error log) so far. */
  output(): string;
  /** Stops nginx (SIGQUIT, then SIGKILL) and removes its prefix directory. */
  stop(): Promise<void>;
}

/** The main-context lines that load the Lua module, as Debian installs it. */
export function luaModuleLines(): string {
  const missing = MODULES.filter((file) => !existsSync(file));
  if (missing.length > 0) {
    throw new Error(`nginx's Lua module is not installed (${missing.join(', ')}): apt-get install nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson`);
  }
  return MODULES.map((file) => `load_module ${file};`).join('\n');
}

async function accepts(port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject);
  });
}

/** Starts nginx with the given `http` block and waits until its first port accepts connections. */
export async function startNginx(options: NginxOptions): Promise<Nginx> {
  const ports: number[] = [];
  for (let i = 0; i < (options.ports ?? 1); i++) ports.push(await freePort());
  const prefix = mkdtempSync(path.join(tmpdir(), 'graygate-nginx-'));
  for (const dir of ['logs', 'tmp']) mkdirSync(path.join(prefix, dir), { recursive: true });
  const temp = (name: string) => path.join(prefix, 'tmp', name);
  // nginx started as root runs its workers as `nobody`, who cannot read the Lua files of a
  // checkout in an owner-only directory (a CI clone inside `mktemp -d`); these tests load them
  // lazily from the workers, so the workers keep root's user there.
  const conf = `${luaModuleLines()}
${process.getuid?.() === 0 ? 'user root;' : ''}
worker_processes ${options.workers ?? 1};
daemon off;
pid ${path.join(prefix, 'nginx.pid')};
error_log stderr warn;
${options.main ?? ''}
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${temp('body')};
  proxy_temp_path ${temp('proxy')};
  fastcgi_temp_path ${temp('fastcgi')};
  uwsgi_temp_path ${temp('uwsgi')};
  scgi_temp_path ${temp('scgi')};
  lua_package_path "${OPENRESTY_DIR}?.lua;${TEST_LUA_DIR}?.lua;/usr/share/lua/5.1/?.lua;;";
${options.http(ports, prefix)}
}
`;
  const confPath = path.join(prefix, 'nginx.conf');
  writeFileSync(confPath, conf);
  const child = spawnTracked(NGINX, ['-p', `${prefix}/`, '-c', confPath, '-e', 'stderr'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: options.env ?? process.env,
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));
  const stop = async (): Promise<void> => {
    if (!exited) {
      killProcessGroup(child, 'SIGQUIT');
      const quit = await Promise.race([exit.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5_000))]);
      if (!quit) killProcessGroup(child, 'SIGKILL');
      await exit;
    }
    rmSync(prefix, { recursive: true, force: true });
  };
  // Started when its first port accepts; an nginx that exits first (a bad config) fails at once.
  const deadline = Date.now() + WAIT_CAP_MS;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`nginx exited at start:\n${output}`);
    }
    try {
      await accepts(ports[0]!);
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`nginx did not accept connections on ${ports[0]} within ${WAIT_CAP_MS} ms: ${(error as Error).message}\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  return { ports, url: `http://127.0.0.1:${ports[0]}`, prefix, child, output: () => output, stop };
}
