import { existsSync } from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { loadConfigFile, parseSettings } from '../config/load.js';
import { RedisStoreSettings, type RoutingDocument, type Settings } from '../config/schema.js';
import { ListenAddress } from '../config/primitives.js';
import { runtimeName, selectDataPlane } from '../dataplane/select.js';
import { unsupportedOnRuntime } from '../dataplane/runtime-support.js';
import { openRestySettingsIssues } from '../openresty/normalize.js';
import { unsupportedUpstreams } from '../dataplane/upstream-support.js';
import { checkTlsFiles, resolveTlsPaths } from '../dataplane/tls-files.js';
import { formatIssues } from '../config/issues.js';
import { ConfigError, isGraygateError } from '../errors.js';
import { createStore, startGateway, type Gateway } from '../gateway/gateway.js';
import { watchSettings } from '../gateway/settings-watch.js';
import { FixedDocumentStore } from '../store/fixed-store.js';
import type { Store } from '../store/store.js';
import { DROP_IN_TOKEN_ENV, dropInAdmin, dropInDocument, flagsIgnored } from './drop-in.js';
import { debugStack, describeListenFailure, listenFailureOf, oneLine } from './failure.js';
import { ClusterDataPlane, isWorkerProcess, runWorker } from '../dataplane/workers/index.js';
import { workerCount } from './workers.js';
import { createOpenRestyDataPlane } from '../openresty/data-plane.js';
import { createLogger, type Logger } from '../observe/log.js';

export interface StartOptions {
  config?: string;
  listen?: string;
  logLevel?: string;
  redis?: string;
  stable?: string;
  candidate?: string;
  tokenHeader: string;
  tokenKey: string;
  rangeKey: string;
  rangeStart?: 'inclusive' | 'exclusive';
  admin?: string;
  adminTokenEnv?: string;
  workers?: string;
  dataPlane?: 'node' | 'openresty';
  nginx?: string;
  openrestyDir?: string;
}

/** `graygate start`: runs the gateway until SIGTERM/SIGINT, then drains and exits 0. */
export function registerStartCommand(program: Command): void {
  program
    .command('start')
    .description('Run the gateway. Routing changes in the store (by default: edits of the config file) apply live, without a restart.')
    .option('-c, --config <file>', 'config file (YAML or JSON); default ./graygate.yaml when it exists')
    .option('-l, --listen <address>', 'listen address, host:port or a port (overrides the config file)')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .option('--redis <url>', 'keep routing in Redis (redis://, rediss://, redis+sentinel://, redis+cluster://); overrides the config file\'s store')
    .option('--stable <url>', 'drop-in mode (no config file): the stable ("prod") server, e.g. http://127.0.0.1:8080')
    .option('--candidate <url>', 'drop-in mode: the candidate ("gray") server, e.g. http://127.0.0.1:9090')
    .option('--token-header <name>', 'drop-in mode: request header carrying the login token', 'TOKEN')
    .option('--token-key <template>', 'drop-in mode: Redis key holding the user id of {token}', 'TOKEN_{token}')
    .option('--workers <n>', 'worker processes sharing the listen address: a number, or "auto" for one per core (default: GRAYGATE_WORKERS, else auto); 1 runs a single process')
    .addOption(new Option('--data-plane <kind>', 'what serves the traffic: graygate itself (node: Node or Bun, whichever runs graygate), or openresty: nginx with lua-nginx-module runs graygate\'s rules, graygate is its control plane').choices(['node', 'openresty']).default('node'))
    .option('--nginx <path>', 'with --data-plane openresty: the nginx binary (Debian nginx + libnginx-mod-http-lua, or OpenResty\'s), or "external": run none, push the routing to the nginx that includes the files of `graygate openresty conf --out DIR` (with --openresty-dir DIR)', 'nginx')
    .option('--openresty-dir <dir>', 'with --data-plane openresty: nginx\'s prefix directory (conf, pid, control socket); default a new temp directory')
    .option('--range-key <key>', 'drop-in mode: Redis key holding the gray range {"idStart":N,"idEnd":M}', 'Grayscale_Range')
    .addOption(
      new Option('--range-start <bound>', 'drop-in mode: whether idStart itself is in the range (exclusive: the recipe\'s UserId > idStart)').choices(['inclusive', 'exclusive']).default('inclusive'),
    )
    .option('--admin <address>', 'drop-in mode: serve the admin API, metrics, dashboard and CLI here (host:port); the routing then lives in Redis, seeded from the flags')
    .option('--admin-token-env <name>', `drop-in mode: environment variable holding the admin token (default ${DROP_IN_TOKEN_ENV}, when set)`)
    .addHelpText(
      'after',
      `
Drop-in for the OpenResty + Lua + Redis recipe (no config file needed):
  graygate start --listen 127.0.0.1:1111 --redis redis://127.0.0.1:6379 \\
                 --stable http://127.0.0.1:8080 --candidate http://127.0.0.1:9090
  reads the login token from the TOKEN header, its user id from the Redis key TOKEN_<token>, and
  the range from the key Grayscale_Range ({"idStart":1,"idEnd":5000}, both bounds inclusive):
  users inside the range go to the candidate, everyone else (no token, unknown token, Redis
  trouble) to stable. SET Grayscale_Range in redis-cli and it applies within milliseconds.
  --range-start exclusive makes it idStart < id <= idEnd, the recipe's own UserId > idStart.
  --admin 127.0.0.1:9901 adds the admin API, metrics, dashboard and CLI (token from
  ${DROP_IN_TOKEN_ENV}): \`graygate release full default\` sends everyone to the candidate,
  \`graygate release finish default\` returns to the range rule.

On SIGTERM or SIGINT the gateway stops accepting, lets in-flight requests finish (proxy.shutdownGraceMs), and exits 0.
A config edit that fails validation is refused with a log line naming the field; the last good rules stay in force.

Examples:
  graygate start --config graygate.yaml
  graygate start --config graygate.yaml --listen 0.0.0.0:8080`,
    )
    .action(async (options: StartOptions) => {
      const code = await runStart(options);
      process.exitCode = code;
      // A start that failed must end now: a half-opened store connection would keep it running.
      if (code !== 0) setTimeout(() => process.exit(code), 1_000).unref();
    });
}

/** Starts the gateway and resolves with the process exit code once it has stopped. */
export async function runStart(options: StartOptions): Promise<number> {
  // A --workers worker: settings and routing come from the primary, not from the flags.
  if (isWorkerProcess()) return runWorker(await selectDataPlane());
  const workers = workerCount(options.workers);
  const isDropIn = options.stable !== undefined || options.candidate !== undefined;
  const configPath = options.config ?? (!isDropIn && existsSync('graygate.yaml') ? 'graygate.yaml' : undefined);
  const usage = checkUsage(options, configPath, isDropIn);
  if (typeof workers === 'string') {
    process.stderr.write(`graygate start: ${options.workers === undefined ? workers.replace('--workers', 'GRAYGATE_WORKERS') : workers}\n`);
    return 2;
  }
  if (usage) {
    process.stderr.write(`graygate start: ${usage}\n`);
    return 2;
  }
  let gateway: Gateway;
  let logger: Logger;
  let fileSettings: Settings | undefined;
  let dropIn: RoutingDocument | undefined;
  let settings: Settings | undefined;
  try {
    const config = configPath ? await loadConfigFile(configPath) : { settings: parseSettings({}, 'defaults'), routing: undefined };
    fileSettings = config.settings;
    // TLS files are named relative to the config file, wherever graygate is started from.
    settings = resolveTlsPaths({ ...config.settings }, configPath ? path.dirname(path.resolve(configPath)) : process.cwd());
    if (options.listen) {
      const listen = ListenAddress.safeParse(options.listen);
      if (!listen.success) throw new UsageError(`--listen: expected host:port or a port like 127.0.0.1:8080 or 8080, got ${JSON.stringify(options.listen)}`);
      settings.listen = listen.data;
    }
    if (options.logLevel) settings.log = { ...settings.log, level: options.logLevel as typeof settings.log.level };
    if (isDropIn && options.admin !== undefined) settings.admin = parseSettings({ admin: dropInAdmin(options.admin, options.adminTokenEnv, process.env) }, '--admin').admin;
    if (options.redis) {
      // Keep the file's other Redis settings (namespace, timeouts) and replace only the address.
      // The drop-in mode polls its keys more often: the recipe it replaces read them per request.
      const base = settings.store.kind === 'redis' ? settings.store : isDropIn ? { pollMs: 500 } : {};
      const url = RedisStoreSettings.shape.url.safeParse(options.redis, { reportInput: true });
      if (!url.success) throw new UsageError(`--redis: ${formatIssues(url.error).join('; ')}`);
      settings.store = RedisStoreSettings.parse({ ...base, kind: 'redis', url: options.redis });
    }
    // Settings this data plane cannot honour (the listener's, and the config file's upstreams'): one config error naming each.
    const unsupported =
      options.dataPlane === 'openresty'
        ? openRestySettingsIssues(settings, config.routing)
        : [...unsupportedOnRuntime(runtimeName(), settings), ...(config.routing ? unsupportedUpstreams(runtimeName(), config.routing.upstreams) : [])];
    if (unsupported.length > 0) throw new ConfigError(unsupported, options.dataPlane === 'openresty' ? { code: 'GG_OPENRESTY_UNSUPPORTED' } : undefined);
    logger = createLogger({ level: settings.log.level, format: settings.log.format });
    if (settings.tls !== undefined) {
      // Checked here, once, before any worker reads them: a bad file is one clear failure, not a crash per worker.
      const { errors, warnings } = checkTlsFiles(settings.tls);
      if (errors.length > 0) throw new ConfigError(errors);
      for (const warning of warnings) logger.warn({ event: 'tls-certificate-warning' }, warning);
    }
    const absoluteConfig = configPath ? path.resolve(configPath) : undefined;
    let store: Store | undefined;
    if (isDropIn) {
      // The document first: a flag it refuses must not leave a store connection open.
      dropIn = dropInDocument({ stable: options.stable!, candidate: options.candidate!, tokenHeader: options.tokenHeader, tokenKey: options.tokenKey, rangeKey: options.rangeKey, ...(options.rangeStart ? { rangeStart: options.rangeStart } : {}) });
      // With --admin the release lifecycle writes the routing, so it lives in Redis (seeded from
      // the flags on an empty store) as in a fleet: it survives restarts, every such gateway
      // shares it, a copy is kept on disk, and a Redis that lost it is seeded again.
      // Without, the flags fix it and Redis holds only the recipe's keys.
      if (options.admin === undefined) store = new FixedDocumentStore(dropIn, { actor: 'graygate start', reason: 'drop-in mode' }, await createStore(settings, undefined, logger));
    }
    gateway = await startGateway({
      settings,
      ...(absoluteConfig ? { configPath: absoluteConfig } : {}),
      ...(dropIn && options.admin !== undefined ? { seedDocument: dropIn, seedSource: 'the command line (drop-in flags)' } : {}),
      logger,
      createDataPlane:
        options.dataPlane === 'openresty'
          ? // nginx's worker processes are the workers: graygate stays one process, the control plane.
            createOpenRestyDataPlane({ nginx: options.nginx ?? 'nginx', workers: options.workers === undefined && process.env.GRAYGATE_WORKERS === undefined ? 'auto' : workers, ...(options.openrestyDir ? { prefixDir: path.resolve(options.openrestyDir) } : {}) })
          : workers === 1
            ? await selectDataPlane()
            : ({ settings: planeSettings, logger: planeLogger }) => new ClusterDataPlane(workers, planeSettings, planeLogger),
      ...(store ? { store } : {}),
      ...(settings.store.kind !== 'file' && config.routing ? { seedDocument: config.routing } : {}),
    });
  } catch (error) {
    return reportStartFailure(error, { configPath, options, settings });
  }
  // Settings are read once; an edit to them in the file is announced, not silently ignored.
  const settingsWatch = configPath ? watchSettings({ configPath: path.resolve(configPath), startedWith: fileSettings!, logger }) : undefined;
  if (dropIn && options.admin !== undefined && gateway.sync.snapshot) {
    const ignored = flagsIgnored(gateway.sync.snapshot.document, dropIn);
    if (ignored.length > 0) {
      logger.warn(
        { event: 'drop-in-flags-ignored', version: gateway.sync.version, fields: ignored },
        `Redis holds routing version ${gateway.sync.version}, which differs from the flags at ${ignored.join(', ')}; the store's routing is served ` +
          '(it may hold a release in progress): change it with `graygate config apply`, or clear the store\'s {graygate} keys to seed it from the flags again',
      );
    }
  }
  const { host, port, tls } = gateway.address;
  const at = (address: { host: string; port: number }) => `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
  // `port` first: it is the plain listener's, or the TLS one's when that is the only listener.
  const urls = [...(settings.listen !== null ? [`http://${at({ host, port })}`] : []), ...(tls ? [`https://${at(tls)}`] : [])];
  logger.info(
    { event: 'listening', host, port, ...(tls ? { tls } : {}), version: gateway.sync.version, store: gateway.store.kind, workers, runtime: options.dataPlane === 'openresty' ? 'openresty' : runtimeName() },
    `graygate listening on ${urls.join(' and ')} (routing version ${gateway.sync.version}${workers > 1 ? `, ${workers} workers` : ''})`,
  );
  const code = await waitForShutdown(gateway, logger);
  settingsWatch?.close();
  return code;
}

/** What is wrong with the combination of flags, if anything. */
function checkUsage(options: StartOptions, configPath: string | undefined, isDropIn: boolean): string | undefined {
  if (isDropIn) {
    if (options.config) return 'use either --config or the drop-in flags (--stable, --candidate), not both';
    if (!options.stable || !options.candidate) return 'the drop-in mode needs both --stable and --candidate';
    if (!options.redis) return 'the drop-in mode needs --redis URL (where TOKEN_<token> and Grayscale_Range live)';
    return undefined;
  }
  if (options.admin !== undefined || options.adminTokenEnv !== undefined) return '--admin and --admin-token-env belong to the drop-in mode; with --config, use the file\'s admin section';
  if (!configPath) return 'no config file: pass --config FILE, or the drop-in flags --redis --stable --candidate (or try `graygate demo`).';
  return undefined;
}

/** A flag's value is malformed: exit 2, like any other usage error. */
class UsageError extends Error {}

/** Where a drop-in document's fields come from: the flag to name when one is refused. */
const dropInFlags: [RegExp, string][] = [
  [/^upstreams\.stable\b[^:]*/, '--stable'],
  [/^upstreams\.candidate\b[^:]*/, '--candidate'],
  [/^identity\.sources\[0\]\.tokenLookup\.header\b[^:]*/, '--token-header'],
  [/^identity\.sources\[0\]\.tokenLookup\.keyTemplate\b[^:]*/, '--token-key'],
  [/^services\[0\]\.release\.rules\[0\]\.uidRange\b[^:]*/, '--range-key'],
];

interface FailureContext {
  configPath: string | undefined;
  options: StartOptions;
  settings: Settings | undefined;
}

/**
 * Says on stderr, on one line where it can, why the gateway did not start, naming the file,
 * setting or flag to change; returns the exit code (2 for a malformed flag, else 1).
 */
function reportStartFailure(error: unknown, { configPath, options, settings }: FailureContext): number {
  const say = (text: string) => process.stderr.write(`graygate: cannot start: ${text}\n`);
  if (error instanceof UsageError) {
    process.stderr.write(`graygate start: ${error.message}\n`);
    return 2;
  }
  if (error instanceof ConfigError) {
    if (configPath === undefined) {
      // Only the drop-in flags make a document without a config file.
      const issues = error.issues.map((issue) => dropInFlags.reduce((text, [path, flag]) => text.replace(path, flag), issue));
      process.stderr.write(`graygate start: ${issues.join('; ')}\n`);
      return 2;
    }
    const file = path.resolve(configPath);
    if (error.issues.length === 1) say(`${file}: ${oneLine(error.issues[0]!)} (${error.code})`);
    else {
      say(`${file} has ${error.issues.length} problems (${error.code}); fix each, or run \`graygate validate ${configPath}\`:`);
      for (const issue of error.issues) process.stderr.write(`  - ${oneLine(issue)}\n`);
    }
    return 1;
  }
  const listen = listenFailureOf(error);
  if (listen !== undefined) {
    say(describeListen(listen, options, settings, configPath));
    return 1;
  }
  if (isGraygateError(error) && error.code.startsWith('GG_STORE_') && settings !== undefined) {
    // Nothing was served yet, so no "last good version" stays: say which setting to check.
    const where = settings.store.kind === 'file' ? `store.path${configPath ? ` in ${configPath}` : ''}` : options.redis !== undefined ? '--redis' : `store.url${configPath ? ` in ${configPath}` : ''}`;
    say(`the store (${where}): ${oneLine(error.message).replace(/;? the last good version stays\.?$/, '')} (${error.code})`);
  } else if (isGraygateError(error)) say(`${oneLine(error.message)} (${error.code})`);
  else say(`${oneLine((error as Error)?.message ?? String(error))} (an unexpected error: GRAYGATE_DEBUG=1 prints its stack for a bug report)`);
  process.stderr.write(debugStack(error));
  return 1;
}

/** Names the setting whose address could not be bound: the proxy's `listen` or `admin.listen`. */
function describeListen(failure: NonNullable<ReturnType<typeof listenFailureOf>>, options: StartOptions, settings: Settings | undefined, configPath: string | undefined): string {
  const inFile = configPath ? ` in ${configPath}` : '';
  const proxy = settings?.listen ?? undefined;
  const admin = settings?.admin?.listen;
  const tls = settings?.tls?.listen;
  const isAt = (address: { port: number } | undefined) => address !== undefined && failure.port !== undefined && address.port === failure.port;
  if (isAt(tls) && !isAt(proxy) && !isAt(admin)) return describeListenFailure({ host: tls!.host, port: tls!.port, ...failure }, 'tls.listen', `tls.listen${inFile}`);
  if (isAt(admin) && !isAt(proxy)) return describeListenFailure({ host: admin!.host, port: admin!.port, ...failure }, 'admin.listen', `admin.listen${inFile}`);
  const change = options.listen !== undefined ? '--listen' : configPath ? `--listen or listen${inFile}` : '--listen';
  if (isAt(proxy) || admin === undefined) return describeListenFailure({ host: proxy?.host, port: proxy?.port, ...failure }, 'listen', change);
  return describeListenFailure(failure, 'listen or admin.listen', `${change}, or admin.listen${inFile}`);
}

/** Drains on the first SIGTERM/SIGINT; a second one exits at once. */
function waitForShutdown(gateway: Gateway, logger: Logger): Promise<number> {
  return new Promise((resolve) => {
    let draining = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (draining) {
        logger.warn({ event: 'shutdown-forced', signal }, `second ${signal}: exiting without waiting for in-flight requests`);
        logger.flush();
        process.exit(130);
      }
      draining = true;
      const stats = gateway.dataPlane.stats();
      logger.info({ event: 'draining', signal, ...stats }, `${signal}: draining (${stats.inFlightRequests} request(s) in flight)`);
      gateway.close().then(
        () => {
          logger.info({ event: 'stopped' }, 'graygate stopped');
          logger.flush();
          resolve(0);
        },
        (error: unknown) => {
          logger.error({ event: 'shutdown-failed', err: error }, 'shutdown failed');
          logger.flush();
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
