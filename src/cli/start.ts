import { existsSync } from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { loadConfigFile, parseSettings } from '../config/load.js';
import { RedisStoreSettings, type RoutingDocument, type Settings } from '../config/schema.js';
import { ListenAddress } from '../config/primitives.js';
import { runtimeName, selectDataPlane } from '../dataplane/select.js';
import { ConfigError, isGraygateError } from '../errors.js';
import { createStore, startGateway, type Gateway } from '../gateway/gateway.js';
import { watchSettings } from '../gateway/settings-watch.js';
import { FixedDocumentStore } from '../store/fixed-store.js';
import type { Store } from '../store/store.js';
import { DROP_IN_TOKEN_ENV, dropInAdmin, dropInDocument, flagsIgnored } from './drop-in.js';
import { ClusterDataPlane, isWorkerProcess, runWorker } from '../dataplane/workers/index.js';
import { workerCount } from './workers.js';
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
      process.exitCode = await runStart(options);
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
    process.stderr.write(`graygate start: ${workers}\n`);
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
  const source = configPath ?? 'the command line';
  try {
    const config = configPath ? await loadConfigFile(configPath) : { settings: parseSettings({}, 'defaults'), routing: undefined };
    fileSettings = config.settings;
    const settings = { ...config.settings };
    if (options.listen) {
      const listen = ListenAddress.safeParse(options.listen);
      if (!listen.success) throw new ConfigError([`--listen: expected host:port or a port, got ${JSON.stringify(options.listen)}`]);
      settings.listen = listen.data;
    }
    if (options.logLevel) settings.log = { ...settings.log, level: options.logLevel as typeof settings.log.level };
    if (isDropIn && options.admin !== undefined) settings.admin = parseSettings({ admin: dropInAdmin(options.admin, options.adminTokenEnv, process.env) }, '--admin').admin;
    if (options.redis) {
      // Keep the file's other Redis settings (namespace, timeouts) and replace only the address.
      // The drop-in mode polls its keys more often: the recipe it replaces read them per request.
      const base = settings.store.kind === 'redis' ? settings.store : isDropIn ? { pollMs: 500 } : {};
      settings.store = RedisStoreSettings.parse({ ...base, kind: 'redis', url: options.redis });
    }
    logger = createLogger({ level: settings.log.level, format: settings.log.format });
    const absoluteConfig = configPath ? path.resolve(configPath) : undefined;
    let store: Store | undefined;
    if (isDropIn) {
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
      createDataPlane: workers === 1 ? await selectDataPlane() : ({ settings: planeSettings, logger: planeLogger }) => new ClusterDataPlane(workers, planeSettings, planeLogger),
      ...(store ? { store } : {}),
      ...(settings.store.kind !== 'file' && config.routing ? { seedDocument: config.routing } : {}),
    });
  } catch (error) {
    reportStartFailure(source, error);
    return 1;
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
  const { host, port } = gateway.address;
  logger.info(
    { event: 'listening', host, port, version: gateway.sync.version, store: gateway.store.kind, workers, runtime: runtimeName() },
    `graygate listening on http://${host.includes(':') ? `[${host}]` : host}:${port} (routing version ${gateway.sync.version}${workers > 1 ? `, ${workers} workers` : ''})`,
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

function reportStartFailure(configPath: string, error: unknown): void {
  if (error instanceof ConfigError) {
    process.stderr.write(`graygate: cannot start: ${configPath} is invalid (${error.code}):\n${error.issues.map((issue) => `  - ${issue}`).join('\n')}\n`);
  } else if (isGraygateError(error)) {
    process.stderr.write(`graygate: cannot start: ${error.code}: ${error.message}\n`);
  } else {
    process.stderr.write(`graygate: cannot start: ${(error as Error).stack ?? String(error)}\n`);
  }
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
