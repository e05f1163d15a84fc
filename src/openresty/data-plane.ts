import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Settings } from '../config/schema.js';
import type { CreateDataPlane, DataPlane, DataPlaneOptions, ListenAddresses, DataPlaneStats, ServedReport, WorkerServing } from '../dataplane/runtime.js';
import { ConfigError, GraygateError } from '../errors.js';
import type { Logger } from '../observe/log.js';
import { accessLogWritten } from '../observe/access-log.js';
import type { RoutingSnapshot } from '../rules/snapshot.js';
import { CONTROL_SOCKET, describeLuaAccess, luaAccessProblem, mainConf, writeConf } from './conf.js';
import { buildEnvelope, buildEnvelopeNow, type Envelope } from './envelope.js';
import { METRICS_DUMP_PATH, pollOpenrestyLoad, readOpenrestyDump, type DumpLocation, type OpenrestyLoadPoller } from './metrics.js';
import { FLEET_LOAD_STALE_MS } from '../gateway/load-reporter.js';
import type { ServicesFigures } from '../observe/version-figures.js';
import { normalizeRouting, type NormalizedForm } from './normalize.js';
import type { MetricsJson } from '../observe/metrics.js';
import { RedisPublisher } from './redis-publisher.js';
import { OpenRestyTlsCertificates, TlsSetRefused, writePlaceholder, type TlsSetMessage } from './tls.js';

/** A snapshot normalized, waiting to be delivered; `stamp` orders deliveries of one version. */
interface Pending {
  readonly version: number;
  readonly form: NormalizedForm;
  readonly stamp: number;
  /** When setSnapshot was called and how long normalizing took (ms): the delivery's debug log line. */
  readonly setAt: number;
  readonly normalizeMs: number;
}

/** What nginx says it serves (GET /graygate/status on the control socket). */
export interface NginxStatus {
  readonly version?: number;
  readonly epoch?: string;
  readonly stamp?: number;
  readonly digest?: string;
  readonly seq?: number;
  readonly accepted_at?: number;
  readonly source?: string;
  readonly connections_active?: number;
  readonly connections_writing?: number;
  readonly redis_error?: string;
}

export interface OpenRestyOptions {
  /**
   * The nginx binary (Debian's nginx with libnginx-mod-http-lua, or OpenResty's), or `external`:
   * an nginx already running with `graygate openresty conf`'s files from `prefixDir` included,
   * which graygate only delivers the routing to (through the control socket there).
   */
  readonly nginx: string;
  /** nginx's prefix directory (conf, pid, temp files, control socket); default a new temp dir, removed at the end. */
  readonly prefixDir?: string;
  /** nginx worker processes: a number, or `auto` (one per core). */
  readonly workers: number | 'auto';
}

/** A request over the control socket; resolves with the parsed JSON answer. */
function control(socketPath: string, method: 'GET' | 'POST', urlPath: string, body?: string, timeoutMs = 5_000): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path: urlPath, headers: body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> });
        } catch (error) {
          reject(error as Error);
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`nginx's control socket did not answer ${method} ${urlPath} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** A loopback port that was free a moment ago, for `listen` port 0 (nginx cannot report the port it bound). */
async function freePort(host: string): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Where util-linux's setpriv may be. */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The pids of a process's children (Linux's /proc; none where it cannot be read). */
function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Error-log lines that mean nginx's workers cannot serve: the worker init failed (lua-nginx-module
 * logs it and the worker stays up answering 500), or a worker died at start (nginx does not
 * restart one that exits with its fatal code).
 */
const WORKER_START_FAILED = /init_worker_by_lua error|exited with fatal code/;

/**
 * The reason in nginx's error log: the first line at error level or worse and the lines that
 * continue it (indented), without Lua's stack traceback; at most `maxLines` lines.
 */
function nginxErrorReason(log: string, maxLines = 6): string | undefined {
  const lines = log.split('\n');
  const workers = lines.findIndex((line) => WORKER_START_FAILED.test(line));
  const first = workers >= 0 ? workers : lines.findIndex((line) => /\[(error|crit|alert|emerg)\]/.test(line));
  if (first < 0) return undefined;
  const reason = [lines[first]!.replace(/^\S+ \S+ \[\w+\] \d+#\d+: (\*\d+ )?/, '')];
  for (const line of lines.slice(first + 1)) {
    if (!/^\s/.test(line) || reason.length >= maxLines) break;
    reason.push(line.trim());
  }
  return reason.join(' | ').replace(/ \| stack traceback:.*$/, '');
}

/**
 * Why nginx's workers may have failed, in the terms of the file system, when it names a path:
 * the directory the worker user cannot enter or write (nginx's `(13: Permission denied)`), or the
 * one that hides graygate's Lua files from it (a module not found).
 */
function workerFailureHint(reason: string): string {
  const denied = /"(\/[^"]+)" failed \(13: Permission denied\)/.exec(reason);
  if (denied) return ` nginx's workers cannot use ${path.dirname(denied[1]!)}: they run as another user when nginx starts as root (nobody); make that directory writable and searchable by them, or give another --openresty-dir.`;
  if (/module 'graygate\.[\w.]+' not found/.test(reason)) {
    const problem = luaAccessProblem();
    if (problem) return ` ${describeLuaAccess(problem)}: nginx's workers, which run as another user when nginx starts as root, cannot read graygate's Lua files there unless nginx's master preloads them.`;
  }
  return '';
}

/**
 * The OpenResty data plane: nginx (with lua-nginx-module) serves the traffic, graygate stays the
 * control plane. `listen` writes the conf into nginx's prefix directory and runs nginx in the
 * foreground as graygate's child (same process group; nginx also stops by itself when graygate is
 * gone); every snapshot is normalized and delivered to nginx without a reload, pushed to its
 * control socket and, on Redis, written to the key every nginx of the fleet reads.
 */
export class OpenRestyDataPlane implements DataPlane {
  readonly kind = 'openresty';
  private readonly settings: Settings;
  private readonly logger: Logger;
  private readonly prefixDir: string;
  private readonly ownsPrefix: boolean;
  private readonly socketPath: string;
  private readonly publisher: RedisPublisher | undefined;
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private stderrTail = '';
  /** Whether nginx answered once: from then on, nginx exiting stops graygate. */
  private ready = false;
  /** What nginx wrote to stderr since it was started, until it was ready (bounded). */
  private startLog = '';
  /** The newest envelope built, and whether nginx has acknowledged it. */
  private latest: Envelope | undefined;
  private latestSince = 0;
  private delivering: Promise<void> | undefined;
  private pending: Pending | undefined;
  /** The last snapshot set, delivered again when nginx is found without it. */
  private lastSnapshot: Pending | undefined;
  private status: NginxStatus = {};
  private statusTimer: NodeJS.Timeout | undefined;
  private draining = false;
  /** nginx's metrics dump (a loopback listener of the nginx graygate runs; the control socket of an external one). */
  private dumpUrl: DumpLocation | undefined;
  private load: OpenrestyLoadPoller | undefined;
  /** When the poller of the dump started (Date.now()). */
  private loadSince = 0;

  constructor(
    private readonly options: OpenRestyOptions,
    planeOptions: DataPlaneOptions,
  ) {
    this.settings = planeOptions.settings;
    this.logger = planeOptions.logger;
    this.ownsPrefix = options.prefixDir === undefined;
    this.prefixDir = options.prefixDir ?? mkdtempSync(path.join(tmpdir(), 'graygate-openresty-'));
    this.socketPath = path.join(this.prefixDir, CONTROL_SOCKET);
    const store = this.settings.store;
    if (store.kind === 'redis') this.publisher = new RedisPublisher(store, this.logger);
  }

  /** nginx's prefix directory. */
  get prefix(): string {
    return this.prefixDir;
  }

  private get external(): boolean {
    return this.options.nginx === 'external';
  }

  /** An nginx started elsewhere: wait for its control socket, then deliver to it. */
  private async attach(): Promise<{ host: string; port: number }> {
    if (this.settings.tls !== undefined) {
      throw new ConfigError(['tls: with --nginx external the TLS listener is your own nginx server block (listen … ssl, ssl_certificate); remove tls, or let graygate run nginx'], { code: 'GG_OPENRESTY_UNSUPPORTED' });
    }
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        this.status = (await control(this.socketPath, 'GET', '/graygate/status', undefined, 1_000)).json as NginxStatus;
        break;
      } catch (error) {
        if (Date.now() > deadline) throw new GraygateError('GG_INTERNAL', `no nginx answers on ${this.socketPath} (include the files of \`graygate openresty conf --out ${this.prefixDir}\` and reload nginx): ${(error as Error).message}`);
        await sleep(200);
      }
    }
    this.attached = true;
    if (this.pending) this.deliver();
    // The control socket serves the metrics dump too (graygate's http include declares it there).
    this.dumpUrl = { socketPath: this.socketPath };
    this.startPolling();
    // Kept referenced: with no nginx child and no listener of its own, this timer is what keeps
    // graygate running until it is told to stop.
    this.statusTimer = setInterval(() => void this.refreshStatus(), 1_000);
    const { host, port } = this.listenAddress();
    return { host, port };
  }

  private attached = false;

  /** The plain listener of an external nginx: the user's server block, where `listen` says. */
  private listenAddress(): { host: string; port: number } {
    const listen = this.settings.listen;
    if (listen === null) throw new ConfigError(['listen: off: with --nginx external the listeners are your own nginx server blocks; give `listen` the address nginx takes plain HTTP on'], { code: 'GG_OPENRESTY_UNSUPPORTED' });
    return listen;
  }

  /** The TLS certificates nginx serves (read, checked and watched here; pushed to nginx). */
  private certificates: OpenRestyTlsCertificates | undefined;

  private async pushTls(message: TlsSetMessage): Promise<void> {
    const answer = await control(this.socketPath, 'POST', '/graygate/tls', JSON.stringify(message));
    if (answer.status === 400) throw new TlsSetRefused(JSON.stringify(answer.json));
    if (answer.status !== 200) throw new GraygateError('GG_INTERNAL', `nginx could not store the certificates: ${JSON.stringify(answer.json)}`);
  }

  tlsReloads(): { applied: number; refused: number } {
    return { applied: this.certificates?.appliedReloads ?? 0, refused: this.certificates?.refusedReloads ?? 0 };
  }

  async listen(): Promise<ListenAddresses> {
    if (this.external) return this.attach();
    const plain = this.settings.listen === null ? undefined : { host: this.settings.listen.host, port: this.settings.listen.port === 0 ? await freePort(this.settings.listen.host) : this.settings.listen.port };
    const tlsSettings = this.settings.tls;
    const tls = tlsSettings ? { host: tlsSettings.listen.host, port: tlsSettings.listen.port === 0 ? await freePort(tlsSettings.listen.host) : tlsSettings.listen.port } : undefined;
    // The settings' check refuses a config with neither listener.
    const { host, port } = (plain ?? tls)!;
    mkdirSync(this.prefixDir, { recursive: true });
    if (tlsSettings) {
      // Throws ConfigError naming each file that cannot be served, before nginx starts.
      this.certificates = new OpenRestyTlsCertificates(tlsSettings, this.logger, (message) => this.pushTls(message));
      // nginx's master reads it at start (before it drops to the workers' user): owner-only.
      writePlaceholder(this.prefixDir, this.certificates.first);
    }
    // nginx started as root runs its workers as `nobody`: they must be able to write temp files.
    for (const dir of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi', 'logs']) {
      mkdirSync(path.join(this.prefixDir, dir), { recursive: true });
      chmodSync(path.join(this.prefixDir, dir), 0o777);
    }
    const confOptions = { settings: this.settings, outDir: this.prefixDir };
    writeConf(confOptions);
    const confPath = path.join(this.prefixDir, 'nginx.conf');
    const metricsPort = await freePort('127.0.0.1');
    this.dumpUrl = `http://127.0.0.1:${metricsPort}${METRICS_DUMP_PATH}`;
    writeFileSync(confPath, mainConf({ ...confOptions, listen: plain, ...(tls ? { tlsListen: tls } : {}), metricsPort, workers: this.options.workers === 'auto' ? 0 : this.options.workers }).replace('worker_processes 0;', 'worker_processes auto;'));
    rmSync(this.socketPath, { force: true });
    // Not detached: nginx is in graygate's process group, so whatever ends the group ends nginx.
    // And when graygate alone is killed outright (no SIGTERM handling runs), the kernel tells nginx's
    // master (setpriv --pdeathsig), which stops its workers.
    const nginxArgs = ['-p', `${this.prefixDir}/`, '-c', confPath, '-e', 'stderr'];
    const setpriv = SETPRIV.find((file) => existsSync(file));
    if (!setpriv) this.logger.warn({ event: 'nginx-unsupervised' }, 'setpriv (util-linux) is not installed: nginx would outlive graygate if graygate were killed with SIGKILL');
    const child = setpriv
      ? spawn(setpriv, ['--pdeathsig', 'TERM', '--', this.options.nginx, ...nginxArgs], { stdio: ['ignore', 'ignore', 'pipe'] })
      : spawn(this.options.nginx, nginxArgs, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.once('error', (error) => (this.stderrTail += `\n${error.message}`));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-4_000);
      // Kept from the start (the first error is the reason; later lines repeat it), until ready.
      if (this.startLog.length < 64_000) this.startLog += chunk;
      for (const line of chunk.split('\n')) if (line.trim()) this.logger.warn({ event: 'nginx', line }, `nginx: ${line}`);
    });
    child.once('exit', (code, signal) => {
      // Before nginx is ready, the start-up below says why it exited and fails the start.
      if (this.draining || !this.ready) return;
      this.logger.error({ event: 'nginx-exited', code, signal }, `nginx exited (${code ?? signal}); graygate stops as well`);
      setTimeout(() => process.kill(process.pid, 'SIGTERM'), 0).unref();
    });
    // Ready once the control socket answers and the listen port takes connections. nginx's
    // master may start while its workers cannot serve (their Lua init failed, or they died at
    // start): that is refused at once, with the error log's reason, rather than after the wait.
    const deadline = Date.now() + 30_000;
    const refuse = async (what: string, fallback: string): Promise<never> => {
      const reason = nginxErrorReason(this.startLog) ?? fallback;
      // Said the same way however it was noticed first (the log line, or the control location's answer).
      const heading = child.exitCode === null && child.signalCode === null && WORKER_START_FAILED.test(this.startLog) ? `nginx's workers could not start` : what;
      await this.stopAfterFailedStart();
      throw new GraygateError('GG_INTERNAL', `${heading}: ${reason}.${workerFailureHint(reason)}`);
    };
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        await refuse(`nginx (${this.options.nginx}) did not start`, this.stderrTail.trim().split('\n').slice(-5).join(' | ') || `exit ${child.exitCode ?? child.signalCode}`);
      }
      if (WORKER_START_FAILED.test(this.startLog)) await refuse(`nginx's workers could not start`, 'see the nginx lines above');
      let broken: string | undefined;
      try {
        const answer = await control(this.socketPath, 'GET', '/graygate/status', undefined, 1_000);
        if (answer.status >= 500) {
          broken = `its control location answered ${answer.status}`;
        } else {
          this.status = answer.json as NginxStatus;
          await new Promise<void>((resolve, reject) => {
            const socket = net.connect({ host, port }, () => {
              socket.destroy();
              resolve();
            });
            socket.once('error', reject);
          });
          break;
        }
      } catch (error) {
        // An answer that is not graygate's JSON: the workers take requests, but graygate's Lua
        // does not run in them.
        if (error instanceof SyntaxError) broken = `its control location did not answer with JSON (${error.message})`;
        else if (Date.now() > deadline) {
          await this.stopAfterFailedStart();
          throw new GraygateError('GG_INTERNAL', `nginx did not answer on ${this.socketPath} and ${host}:${port} within 30 s: ${(error as Error).message}`);
        }
      }
      if (broken !== undefined) {
        // The error log's line about it may still be on its way.
        await sleep(200);
        await refuse(`nginx's workers cannot run graygate's Lua`, broken);
      }
      await sleep(50);
    }
    // Checked and flagged at once (no await between): an exit seen later stops graygate instead.
    if (child.exitCode !== null || child.signalCode !== null) await refuse(`nginx (${this.options.nginx}) did not start`, `exit ${child.exitCode ?? child.signalCode}`);
    this.ready = true;
    this.startLog = '';
    if (this.certificates) {
      // Before graygate says it listens: every handshake from now on chooses by server name.
      try {
        await this.pushTls(this.certificates.message());
      } catch (error) {
        this.kill();
        throw new GraygateError('GG_INTERNAL', `nginx did not take the TLS certificates (tls.certificates): ${(error as Error).message}`);
      }
      this.certificates.watch();
    }
    if (this.pending) this.deliver();
    this.statusTimer = setInterval(() => void this.refreshStatus(), 1_000);
    this.statusTimer.unref();
    this.startPolling();
    this.logger.info(
      { event: 'nginx-started', pid: child.pid, prefix: this.prefixDir, ...(accessLogWritten(this.settings.log) ? { accessLog: path.join(this.prefixDir, 'logs', 'access.log') } : {}) },
      `nginx (pid ${child.pid}) serves the traffic; its prefix directory is ${this.prefixDir}`,
    );
    return { host, port, ...(tls ? { tls } : {}) };
  }

  /**
   * Normalizes the snapshot at once (a document the Lua evaluator cannot run throws
   * GG_OPENRESTY_UNSUPPORTED here, so the version is refused like one that does not compile, and
   * nginx keeps the last good one), then delivers it in the background.
   */
  setSnapshot(snapshot: RoutingSnapshot): void {
    const setAt = Date.now();
    const began = performance.now();
    const form = normalizeRouting(snapshot.document, snapshot.version, { storeValue: (key) => snapshot.storeValues?.get(key) });
    this.pending = this.lastSnapshot = { version: snapshot.version, form, stamp: Date.now(), setAt, normalizeMs: performance.now() - began };
    if (this.child || this.attached) this.deliver();
  }

  /** Delivers the newest pending snapshot (one delivery at a time; the newest pending one wins). */
  private deliver(): void {
    if (this.delivering) return;
    this.delivering = (async () => {
      while (this.pending) {
        const snapshot = this.pending;
        this.pending = undefined;
        try {
          await this.deliverOne(snapshot);
        } catch (error) {
          this.logger.warn({ event: 'openresty-delivery-failed', version: snapshot.version, err: error }, `could not deliver routing version ${snapshot.version} to nginx: ${(error as Error).message}`);
          // Tried again with the next snapshot, or by the status poll.
          if (!this.pending && !this.draining) this.retryLater(snapshot);
        }
      }
    })().finally(() => (this.delivering = undefined));
  }

  private retryTimer: NodeJS.Timeout | undefined;
  private retryLater(snapshot: Pending): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (!this.pending) this.redeliver(snapshot);
    }, 500);
    this.retryTimer.unref();
  }

  private redeliver(snapshot: Pending): void {
    this.pending = snapshot;
    if (this.child || this.attached) this.deliver();
  }

  /** The store's epoch as last read: read again after each delivery, off the delivery's path. */
  private epoch: string | undefined;
  private epochRead: Promise<void> | undefined;

  private refreshEpoch(): Promise<void> {
    this.epochRead ??= this.publisher!.epoch()
      .then((epoch) => {
        this.epoch = epoch;
      })
      .catch(() => undefined)
      .finally(() => (this.epochRead = undefined));
    return this.epochRead;
  }

  private async deliverOne(snapshot: Pending): Promise<void> {
    // The epoch changes only when the store is seeded again: the one read so far is used, and
    // read again for the next delivery (a reseed is then delivered by the status check's retry).
    if (this.publisher && this.epoch === undefined) await this.refreshEpoch();
    const epoch = this.epoch ?? '';
    if (this.publisher) void this.refreshEpoch();
    // Built at once when no host name needs a lookup: the push and the Redis write then leave
    // before the rest of the apply (its log line, the last good copy) runs.
    const { envelope, body } = buildEnvelopeNow(snapshot.form, snapshot.stamp, epoch) ?? (await buildEnvelope(snapshot.form, snapshot.stamp, epoch));
    this.latest = envelope;
    this.latestSince = Date.now();
    // Redis first, in the background: the fleet's nginx read it; this nginx gets it pushed at once.
    const sentAt = Date.now();
    const published = this.publisher?.publish(envelope, body).then((result) => ({ written: result === 'written', at: Date.now() }));
    const answer = await control(this.socketPath, 'POST', '/graygate/config', body);
    const pushedAt = Date.now();
    if (answer.status !== 200) throw new GraygateError('GG_INTERNAL', `nginx refused the routing: ${JSON.stringify(answer.json)}`);
    this.status = (answer.json.status as NginxStatus | undefined) ?? this.status;
    if (this.logger.isLevelEnabled('debug')) {
      // Where a change's time goes on its way to nginx (wall clock, ms): bench/openresty-propagation.mjs reads it.
      const trace = { version: snapshot.version, stamp: snapshot.stamp, setAt: snapshot.setAt, normalizeMs: snapshot.normalizeMs, sentAt, pushedAt, stored: answer.json.stored === true };
      void (published ?? Promise.resolve(undefined)).then((p) =>
        this.logger.debug({ event: 'openresty-delivered', ...trace, ...(p ? { publishedAt: p.at, written: p.written } : {}) }, `routing version ${snapshot.version} delivered to nginx`),
      );
    }
  }

  private async refreshStatus(): Promise<void> {
    if ((!this.child && !this.attached) || this.draining) return;
    try {
      this.status = (await control(this.socketPath, 'GET', '/graygate/status', undefined, 2_000)).json as NginxStatus;
    } catch {
      return;
    }
    // nginx lost what was delivered (restarted) or a push failed: deliver the newest again.
    if (this.latest && this.lastSnapshot && !this.serves(this.latest) && !this.delivering && Date.now() - this.latestSince > 2_000) {
      this.logger.warn({ event: 'openresty-behind', version: this.latest.version, served: this.status.version }, `nginx serves version ${this.status.version ?? 'none'}, not ${this.latest.version}; delivering it again`);
      this.redeliver(this.lastSnapshot);
    }
  }

  /** Whether nginx's shared dict holds `envelope` or something newer (every worker swaps to it on its next request). */
  private serves(envelope: Envelope): boolean {
    const s = this.status;
    if (s.version === undefined) return false;
    if ((s.epoch ?? '') !== envelope.epoch) return false;
    // The same version with the same digest is the same content, delivered first by another graygate of the fleet.
    return s.version > envelope.version || (s.version === envelope.version && ((s.stamp ?? 0) >= envelope.stamp || s.digest === envelope.digest));
  }

  /** The routing version nginx serves (null before its first), for the fleet view. */
  servedVersion(): number | null {
    return this.status.version ?? null;
  }

  async settled(withinMs: number): Promise<ServedReport> {
    const deadline = Date.now() + withinMs;
    for (;;) {
      if (this.delivering) await Promise.race([this.delivering, sleep(Math.max(0, deadline - Date.now()))]);
      if (!this.latest || this.serves(this.latest)) return { everywhere: true, behind: [] };
      if (Date.now() >= deadline) return { everywhere: false, behind: this.workers() };
      await this.refreshStatus();
      await sleep(20);
    }
  }

  /** nginx as one worker: its workers swap together (the shared dict), so they serve one version. */
  workers(): WorkerServing[] {
    const current = this.latest === undefined || this.serves(this.latest);
    return [{ pid: this.child?.pid ?? 0, version: this.status.version ?? null, current, behindMs: current ? 0 : Date.now() - this.latestSince }];
  }

  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    this.load?.close();
    this.certificates?.close();
    clearInterval(this.statusTimer);
    clearTimeout(this.retryTimer);
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      // SIGQUIT: nginx's graceful shutdown (stop accepting, finish what is in flight).
      child.kill('SIGQUIT');
      const stopped = await Promise.race([this.exited!.then(() => true), sleep(graceMs).then(() => false)]);
      if (!stopped) {
        child.kill('SIGTERM');
        await Promise.race([this.exited!, sleep(2_000)]);
        this.kill();
      }
    }
    await this.publisher?.close();
    if (this.ownsPrefix && !this.external) rmSync(this.prefixDir, { recursive: true, force: true });
  }

  /**
   * Stops an nginx that will not serve: SIGTERM, so that its master stops its workers too (killed
   * outright, it would leave them holding the listen port), then SIGKILL if it lingers.
   */
  private async stopAfterFailedStart(): Promise<void> {
    this.draining = true;
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const stopped = await Promise.race([this.exited!.then(() => true), sleep(5_000).then(() => false)]);
      if (!stopped) this.kill();
    }
    this.certificates?.close();
    if (this.ownsPrefix) rmSync(this.prefixDir, { recursive: true, force: true });
  }

  /**
   * Kills nginx outright: its master and its workers. A master killed alone cannot stop its
   * workers, which would go on serving (and holding the listen port) with no graygate behind them.
   */
  private kill(): void {
    const child = this.child;
    // Not once it has exited: its pid (and so the children read for it) may be another process's by now.
    if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
    const pid = child.pid;
    const workers = childPids(pid);
    for (const target of [pid, ...workers]) {
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }

  private startPolling(): void {
    this.loadSince = Date.now();
    this.load = pollOpenrestyLoad(this.dumpUrl!);
  }

  /**
   * nginx's per-service, per-version figures (cumulative since nginx started), for this gateway's
   * load report, so the rollout analysis sums them with the Node gateways'. Undefined when they
   * cannot be vouched for: nginx's dump not read for longer than a load report stays fresh, so the
   * fleet's windows leave this gateway out and name it rather than count it as idle.
   */
  figures(): ServicesFigures | undefined {
    const load = this.load;
    if (load === undefined) return undefined;
    const now = Date.now();
    // Before the first read (nginx just started): nothing counted yet.
    if (load.lastReadAt === 0) return now - this.loadSince > FLEET_LOAD_STALE_MS ? undefined : {};
    if (now - load.lastReadAt > FLEET_LOAD_STALE_MS) return undefined;
    return load.figures();
  }

  /** nginx's request metrics, summed by the admin API with graygate's own registry. */
  async collectMetrics(): Promise<MetricsJson[]> {
    if (this.dumpUrl === undefined) return [];
    return [(await readOpenrestyDump(this.dumpUrl)).metrics];
  }

  stats(): DataPlaneStats {
    if (this.load !== undefined && this.load.lastReadAt > 0) return this.load.stats();
    const active = this.status.connections_active ?? 0;
    const writing = this.status.connections_writing ?? 0;
    // The status request itself is one of nginx's active and writing connections.
    return { openConnections: Math.max(0, active - 1), inFlightRequests: Math.max(0, writing - 1), upstreams: {} };
  }
}

/** The CreateDataPlane for `graygate start --data-plane openresty`. */
export function createOpenRestyDataPlane(options: OpenRestyOptions): CreateDataPlane {
  return (planeOptions) => new OpenRestyDataPlane(options, planeOptions);
}
