import { existsSync } from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { loadConfigFile } from '../config/load.js';
import { ListenAddress } from '../config/primitives.js';
import { selectDataPlane } from '../dataplane/select.js';
import { ConfigError, isGraygateError } from '../errors.js';
import { startGateway, type Gateway } from '../gateway/gateway.js';
import { createLogger, type Logger } from '../observe/log.js';

export interface StartOptions {
  config?: string;
  listen?: string;
  logLevel?: string;
}

/** `graygate start`: runs the gateway until SIGTERM/SIGINT, then drains and exits 0. */
export function registerStartCommand(program: Command): void {
  program
    .command('start')
    .description('Run the gateway. Routing changes in the store (by default: edits of the config file) apply live, without a restart.')
    .option('-c, --config <file>', 'config file (YAML or JSON); default ./graygate.yaml when it exists')
    .option('-l, --listen <address>', 'listen address, host:port or a port (overrides the config file)')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .addHelpText(
      'after',
      `
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
  const configPath = options.config ?? (existsSync('graygate.yaml') ? 'graygate.yaml' : undefined);
  if (!configPath) {
    process.stderr.write('graygate start: no config file: pass --config FILE (or try `graygate demo`).\n');
    return 2;
  }
  let gateway: Gateway;
  let logger: Logger;
  try {
    const config = await loadConfigFile(configPath);
    const settings = { ...config.settings };
    if (options.listen) settings.listen = ListenAddress.parse(options.listen);
    if (options.logLevel) settings.log = { ...settings.log, level: options.logLevel as typeof settings.log.level };
    logger = createLogger({ level: settings.log.level });
    gateway = await startGateway({
      settings,
      configPath: path.resolve(configPath),
      logger,
      createDataPlane: await selectDataPlane(),
    });
  } catch (error) {
    reportStartFailure(configPath, error);
    return 1;
  }
  const { host, port } = gateway.address;
  logger.info(
    { event: 'listening', host, port, version: gateway.sync.version, store: gateway.store.kind },
    `graygate listening on http://${host.includes(':') ? `[${host}]` : host}:${port} (routing version ${gateway.sync.version})`,
  );
  return waitForShutdown(gateway, logger);
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
