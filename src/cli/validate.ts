import path from 'node:path';
import { Option, type Command } from 'commander';
import { checkTlsFiles, resolveTlsPaths } from '../dataplane/tls-files.js';
import { loadConfigFile } from '../config/load.js';
import type { LoadedConfig } from '../config/load.js';
import { upstreamTlsIssues } from '../dataplane/upstream-tls.js';
import { normalizeSettings, openRestyIssues, openRestySettingsIssues } from '../openresty/normalize.js';
import { isGraygateError } from '../errors.js';
import { ConfigError } from '../errors.js';
import { debugStack, oneLine } from './failure.js';

/** How a refusal starts: the OpenResty data plane's own refusals say whose they are. */
function invalidFor(error: ConfigError): string {
  return error.code === 'GG_OPENRESTY_UNSUPPORTED' ? 'not supported on the OpenResty data plane: ' : 'invalid: ';
}

/** `graygate validate FILE`: exit 0 and a summary when valid; exit 1 and every issue when not. */
export function registerValidateCommand(program: Command): void {
  program
    .command('validate')
    .description('Check a config file (schema and meaning) without starting anything; exits 1 and lists every issue when it is invalid.')
    .argument('<file>', 'config file (YAML or JSON)')
    .addOption(
      new Option('--data-plane <name>', 'also check that this data plane can run the config (openresty: what its Lua evaluator supports)').choices(['node', 'bun', 'openresty']).default('node'),
    )
    .action(async (file: string, options: { dataPlane: 'node' | 'bun' | 'openresty' }) => {
      try {
        const config = await loadConfigFile(file);
        // The TLS files are part of what a start needs: exist, parse, match, not expired.
        const tlsSettings = resolveTlsPaths(config.settings, path.dirname(config.path)).tls;
        if (tlsSettings !== undefined) {
          const { errors, warnings } = checkTlsFiles(tlsSettings);
          for (const warning of warnings) process.stderr.write(`${file}: warning: ${warning}\n`);
          if (errors.length > 0) throw new ConfigError(errors);
        }
        checkUpstreamTlsFiles(config);
        const routing = config.routing;
        if (options.dataPlane === 'openresty') {
          // The Lua evaluator runs what graygate normalizes; a config it cannot evaluate exactly is refused, naming each field.
          normalizeSettings(config.settings);
          const issues = [...openRestySettingsIssues(config.settings, routing), ...(routing ? openRestyIssues(routing) : [])];
          if (issues.length > 0) throw new ConfigError(issues, { code: 'GG_OPENRESTY_UNSUPPORTED' });
        }
        const summary = routing
          ? `${Object.keys(routing.upstreams).length} upstream(s), ${routing.services.length} service(s), ` +
            `${routing.services.filter((service) => service.release).length} release(s)`
          : 'settings only (the routing document lives in the store)';
        const tlsSummary = tlsSettings ? `; TLS on ${tlsSettings.listen.host}:${tlsSettings.listen.port} with ${tlsSettings.certificates.length} certificate(s)` : '';
        process.stdout.write(`${file}: valid${options.dataPlane === 'openresty' ? ' for the OpenResty data plane' : ''}: ${summary}${tlsSummary}\n`);
      } catch (error) {
        // One issue: one line. Several: a line saying how many, then one line each.
        if (error instanceof ConfigError && error.issues.length === 1) {
          process.stderr.write(`${file}: ${error.code === 'GG_CONFIG_UNREADABLE' ? '' : invalidFor(error)}${oneLine(error.issues[0]!)} (${error.code})\n`);
        } else if (error instanceof ConfigError) {
          process.stderr.write(`${file}: ${invalidFor(error).slice(0, -2)}, ${error.issues.length} problems (${error.code}):\n${error.issues.map((issue) => `  - ${oneLine(issue)}`).join('\n')}\n`);
        } else if (isGraygateError(error)) {
          process.stderr.write(`${file}: ${oneLine(error.message)} (${error.code})\n`);
        } else {
          process.stderr.write(`${file}: ${oneLine((error as Error)?.message ?? String(error))}\n${debugStack(error)}`);
        }
        process.exitCode = 1;
      }
    });
}

/**
 * The files upstreams' `tls` sections name (CA bundle, client certificate and key) exist, parse,
 * and the key belongs to the certificate; throws a ConfigError with one line per problem. They
 * are read relative to the working directory, as the gateway reads them.
 */
function checkUpstreamTlsFiles(config: LoadedConfig): void {
  if (config.routing === undefined) return;
  const issues = upstreamTlsIssues(config.routing.upstreams);
  if (issues.length > 0) throw new ConfigError(issues);
}
