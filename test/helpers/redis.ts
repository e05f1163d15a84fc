import { execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { eventually } from './eventually.js';
import { spawnTracked } from './processes.js';

/**
 * Private Redis processes for tests: real `redis-server` binaries (Debian's package; CI installs
 * it) on free loopback ports, in temp dirs, without persistence unless asked. Every process is
 * in a process group of its own and recorded (helpers/processes.ts), so it is killed when the
 * test file, the worker or the run ends, also on failure or interruption.
 */

const REDIS_SERVER = process.env.REDIS_SERVER ?? 'redis-server';
const REDIS_CLI = process.env.REDIS_CLI ?? 'redis-cli';
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** A port that was free a moment ago (bound to 0 on loopback, then released). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Sends one inline command over a fresh socket; resolves with the raw reply text. */
export function rawCommand(port: number, command: string, timeoutMs = 1_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no reply from 127.0.0.1:${port} to ${command}`));
    }, timeoutMs);
    socket.on('connect', () => socket.write(`${command}\r\n`));
    socket.on('data', (chunk) => {
      reply += chunk.toString('utf8');
      if (reply.endsWith('\r\n')) {
        clearTimeout(timer);
        socket.end();
        resolve(reply);
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

interface ServerProcess {
  readonly port: number;
  readonly dir: string;
  child: ChildProcess;
  exited: Promise<void>;
  output: string;
}

async function spawnServer(port: number, dir: string, args: string[]): Promise<ServerProcess> {
  const child = spawnTracked(REDIS_SERVER, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const server: ServerProcess = { port, dir, child, exited: Promise.resolve(), output: '' };
  server.exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      live.delete(child);
      resolve();
    });
    child.once('error', (error) => {
      server.output += `\nspawn error: ${error.message}`;
      live.delete(child);
      resolve();
    });
  });
  const collect = (chunk: Buffer) => {
    // Keep the tail only: enough to explain a failed start.
    server.output = (server.output + chunk.toString('utf8')).slice(-4_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  try {
    await eventually(
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`redis-server exited: ${server.output}`);
        const reply = await rawCommand(port, 'PING', 500);
        // -NOAUTH: a server with requirepass is up too.
        if (!reply.startsWith('+PONG') && !reply.startsWith('-NOAUTH')) throw new Error(`unexpected PING reply ${reply}`);
      },
      { withinMs: 10_000, everyMs: 25 },
    );
  } catch (error) {
    child.kill('SIGKILL');
    await server.exited;
    throw error;
  }
  return server;
}

async function stopServer(server: ServerProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  server.child.kill(signal);
  const timer = setTimeout(() => server.child.kill('SIGKILL'), 5_000);
  await server.exited;
  clearTimeout(timer);
}

function baseArgs(port: number, dir: string, persist: boolean): string[] {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--protected-mode', 'no'];
  // appendfsync always: a SIGKILL right after a write keeps it, so restart tests see the data.
  args.push(...(persist ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']));
  return args;
}

function helperClient(port: number, password?: string): Redis {
  const client = new Redis({ host: '127.0.0.1', port, password, lazyConnect: false, maxRetriesPerRequest: 1, retryStrategy: () => 50 });
  client.on('error', () => {}); // restarts are on purpose in these tests
  return client;
}

export interface RedisServer {
  /** `redis://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  /** A client for the test itself (seeding keys, INFO, CLIENT KILL). */
  readonly client: Redis;
  /** Stops the server and closes `client`; removes its temp dir. */
  stop(): Promise<void>;
  /** Sends `signal` (default SIGKILL) and waits for the process to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port and dir (data survives only with `persist`). */
  restart(): Promise<void>;
  /** SIGSTOP: the process keeps its sockets open but answers nothing (a hung or half-open server). */
  pause(): void;
  /** SIGCONT after `pause()`. */
  resume(): void;
}

/**
 * Starts a private `redis-server` on a free loopback port. With `password`, the server requires
 * it (`requirepass`), `url` carries it (`redis://:password@…`) and `client` uses it.
 */
export async function startRedis(options: { persist?: boolean; args?: string[]; password?: string } = {}): Promise<RedisServer> {
  const dir = await mkdtemp(path.join(tmpdir(), 'graygate-redis-'));
  let port = 0;
  let args: string[] = [];
  let server: ServerProcess | undefined;
  // The free port may be taken between the probe and the bind (other suites run too): retry.
  for (let attempt = 1; !server; attempt++) {
    port = await freePort();
    args = [...baseArgs(port, dir, options.persist ?? false), ...(options.password ? ['--requirepass', options.password] : []), ...(options.args ?? [])];
    try {
      server = await spawnServer(port, dir, args);
    } catch (error) {
      if (attempt >= 3) {
        await rm(dir, { recursive: true, force: true });
        throw error;
      }
    }
  }
  let running: ServerProcess = server;
  const client = helperClient(port, options.password);
  let stopped = false;
  return {
    url: options.password ? `redis://:${encodeURIComponent(options.password)}@127.0.0.1:${port}` : `redis://127.0.0.1:${port}`,
    port,
    client,
    async stop() {
      if (stopped) return;
      stopped = true;
      client.disconnect();
      await stopServer(running, 'SIGKILL');
      await rm(dir, { recursive: true, force: true });
    },
    async kill(signal = 'SIGKILL') {
      await stopServer(running, signal);
    },
    async restart() {
      await stopServer(running, 'SIGKILL');
      running = await spawnServer(port, dir, args);
    },
    pause() {
      running.child.kill('SIGSTOP');
    },
    resume() {
      running.child.kill('SIGCONT');
    },
  };
}

/** Counts of commands the server has run, from INFO commandstats (e.g. `{ get: 3 }`). */
export async function commandCounts(client: Redis): Promise<Record<string, number>> {
  const info = await client.info('commandstats');
  const counts: Record<string, number> = {};
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) counts[match[1]!] = Number(match[2]);
  return counts;
}

function runCli(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(REDIS_CLI, args, { timeout: 20_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`redis-cli ${args.join(' ')} failed: ${error.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

export interface RedisCluster {
  /** `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3` */
  readonly url: string;
  readonly ports: readonly number[];
  /** A cluster client for the test itself. */
  readonly client: Cluster;
  stop(): Promise<void>;
}

/** Starts a 3-master Redis Cluster (no replicas) and waits for `cluster_state:ok` on every node. */
export async function startRedisCluster(): Promise<RedisCluster> {
  const servers: ServerProcess[] = [];
  const dirs: string[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const dir = await mkdtemp(path.join(tmpdir(), 'graygate-cluster-'));
      dirs.push(dir);
      const port = await freePort();
      const busPort = await freePort();
      servers.push(
        await spawnServer(port, dir, [
          ...baseArgs(port, dir, false),
          '--cluster-enabled', 'yes',
          '--cluster-config-file', 'nodes.conf',
          '--cluster-node-timeout', '2000',
          '--cluster-port', String(busPort),
        ]),
      );
    }
    await runCli(['--cluster', 'create', ...servers.map((s) => `127.0.0.1:${s.port}`), '--cluster-yes']);
    await eventually(
      async () => {
        for (const server of servers) {
          const info = await rawCommand(server.port, 'CLUSTER INFO');
          if (!info.includes('cluster_state:ok')) throw new Error(`node ${server.port} not ok yet`);
        }
      },
      { withinMs: 20_000, everyMs: 100 },
    );
  } catch (error) {
    await Promise.all(servers.map((s) => stopServer(s, 'SIGKILL')));
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
    throw error;
  }
  const client = new Cluster(servers.map((s) => ({ host: '127.0.0.1', port: s.port })));
  client.on('error', () => {});
  const ports = servers.map((s) => s.port);
  return {
    url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`,
    ports,
    client,
    async stop() {
      client.disconnect();
      await Promise.all(servers.map((s) => stopServer(s, 'SIGKILL')));
      await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
    },
  };
}

export interface RedisSentinel {
  /** `redis+sentinel://127.0.0.1:S1[,…]/mymaster` */
  readonly url: string;
  readonly masterName: string;
  /** Ports of the data nodes (initial master first, then the replica). */
  readonly dataPorts: readonly number[];
  readonly sentinelPorts: readonly number[];
  /** A client connected to the first sentinel (SENTINEL FAILOVER, get-master-addr-by-name). */
  readonly sentinel: Redis;
  /** The port of the current master, as the sentinel reports it. */
  masterPort(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Starts a master, a replica and `sentinels` (1–3) sentinels watching them (`redis-server
 * <conf> --sentinel`; Debian's redis-sentinel is the same binary). Resolves once the sentinel
 * knows the replica and the replica is in sync, so SENTINEL FAILOVER can work.
 */
export async function startSentinel(options: { sentinels?: number; masterName?: string } = {}): Promise<RedisSentinel> {
  const masterName = options.masterName ?? 'mymaster';
  const count = Math.min(3, Math.max(1, options.sentinels ?? 1));
  const servers: ServerProcess[] = [];
  const dirs: string[] = [];
  const stopAll = async () => {
    await Promise.all(servers.map((s) => stopServer(s, 'SIGKILL')));
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  };
  let sentinel: Redis | undefined;
  try {
    const masterDir = await mkdtemp(path.join(tmpdir(), 'graygate-sentinel-'));
    dirs.push(masterDir);
    const masterPort = await freePort();
    servers.push(await spawnServer(masterPort, masterDir, baseArgs(masterPort, masterDir, false)));
    const replicaDir = await mkdtemp(path.join(tmpdir(), 'graygate-sentinel-'));
    dirs.push(replicaDir);
    const replicaPort = await freePort();
    servers.push(
      await spawnServer(replicaPort, replicaDir, [...baseArgs(replicaPort, replicaDir, false), '--replicaof', '127.0.0.1', String(masterPort)]),
    );
    await eventually(
      async () => {
        const info = await rawCommand(replicaPort, 'INFO replication');
        if (!info.includes('master_link_status:up')) throw new Error('replica not in sync yet');
      },
      { withinMs: 10_000, everyMs: 50 },
    );
    const sentinelPorts: number[] = [];
    for (let i = 0; i < count; i++) {
      const dir = await mkdtemp(path.join(tmpdir(), 'graygate-sentinel-'));
      dirs.push(dir);
      const port = await freePort();
      const conf = path.join(dir, 'sentinel.conf');
      await writeFile(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} ${Math.floor(count / 2) + 1}`,
          `sentinel down-after-milliseconds ${masterName} 1000`,
          `sentinel failover-timeout ${masterName} 5000`,
          `sentinel parallel-syncs ${masterName} 1`,
          '',
        ].join('\n'),
      );
      servers.push(await spawnServer(port, dir, [conf, '--sentinel']));
      sentinelPorts.push(port);
    }
    const first = new Redis({ host: '127.0.0.1', port: sentinelPorts[0]!, maxRetriesPerRequest: 1 });
    first.on('error', () => {});
    sentinel = first;
    await eventually(
      async () => {
        const replicas = (await first.call('SENTINEL', 'REPLICAS', masterName)) as string[][];
        const ok = replicas.some((fields) => {
          const flags = fields[fields.indexOf('flags') + 1] ?? '';
          return flags === 'slave' && fields.includes(String(replicaPort));
        });
        if (!ok) throw new Error('sentinel does not know the replica yet');
      },
      { withinMs: 20_000, everyMs: 100 },
    );
    const masterPortNow = async () => {
      const [, port] = (await first.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName)) as [string, string];
      return Number(port);
    };
    return {
      url: `redis+sentinel://${sentinelPorts.map((p) => `127.0.0.1:${p}`).join(',')}/${masterName}`,
      masterName,
      dataPorts: [masterPort, replicaPort],
      sentinelPorts,
      sentinel: first,
      masterPort: masterPortNow,
      async stop() {
        first.disconnect();
        await stopAll();
      },
    };
  } catch (error) {
    sentinel?.disconnect();
    await stopAll();
    throw error;
  }
}
