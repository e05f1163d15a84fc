import { Option, type Command } from 'commander';
import { loadConfigFile } from '../config/load.js';
import { normalizeSettings, openRestyIssues } from '../openresty/normalize.js';
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
        const routing = config.routing;
        if (options.dataPlane === 'openresty') {
          // The Lua evaluator runs what graygate normalizes; a config it cannot evaluate exactly is refused, naming each field.
          normalizeSettings(config.settings);
          const issues = routing ? openRestyIssues(routing) : [];
          if (issues.length > 0) throw new ConfigError(issues, { code: 'GG_OPENRESTY_UNSUPPORTED' });
        }
        const summary = routing
          ? `${Object.keys(routing.upstreams).length} upstream(s), ${routing.services.length} service(s), ` +
            `${routing.services.filter((service) => service.release).length} release(s)`
          : 'settings only (the routing document lives in the store)';
        process.stdout.write(`${file}: valid${options.dataPlane === 'openresty' ? ' for the OpenResty data plane' : ''}: ${summary}\n`);
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
