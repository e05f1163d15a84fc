import path from 'node:path';
import type { Command } from 'commander';
import { loadConfigFile } from '../config/load.js';
import { isGraygateError } from '../errors.js';
import { describeLuaAccess, LUA_DIR, luaAccessProblem, PRELOAD_CALL, readsRedis, writeConf } from '../openresty/conf.js';
import { openRestyIssues } from '../openresty/normalize.js';
import { oneLine } from './failure.js';

interface ConfOptions {
  config: string;
  out: string;
  initByLua: boolean;
}

/** `graygate openresty conf`: the files an existing nginx.conf includes to run graygate's rules. */
export function registerOpenRestyCommand(program: Command): void {
  const openresty = program.command('openresty').description('Run graygate\'s rules inside OpenResty / nginx with lua-nginx-module (graygate as the control plane).');
  openresty
    .command('conf')
    .description('Write what an existing nginx.conf includes (Lua paths, shared dicts, worker init, the balancer, the proxied location) and print the two lines to add.')
    .requiredOption('-c, --config <file>', 'graygate config file (YAML or JSON): its settings and store')
    .requiredOption('-o, --out <dir>', 'directory to write graygate-http.conf and graygate-server.conf into')
    .option('--no-init-by-lua', `leave out the http include's init_by_lua_block (nginx takes one per http block): for an nginx.conf with its own init_by_lua*, which then calls ${PRELOAD_CALL}`)
    .addHelpText(
      'after',
      `
The routing itself (services, rules, upstream servers) is not written: it reaches every nginx
worker at run time, without a reload. With store.url redis://… nginx reads it from Redis, where
every graygate of the fleet (whatever its --data-plane) writes it after each change; with another
store, \`graygate start --data-plane openresty --openresty-dir DIR\` runs nginx and pushes it.

Example:
  graygate openresty conf --config graygate.yaml --out /etc/nginx/graygate`,
    )
    .action(async (options: ConfOptions) => {
      process.exitCode = await runConf(options);
    });
}

async function runConf(options: ConfOptions): Promise<number> {
  try {
    const config = await loadConfigFile(options.config);
    // The file's routing (when it holds one) must be one the Lua evaluator can run.
    const issues = config.routing ? openRestyIssues(config.routing) : [];
    if (issues.length > 0) {
      process.stderr.write(`graygate openresty conf: ${path.resolve(options.config)} cannot run on OpenResty:\n${issues.map((issue) => `  - ${issue}`).join('\n')}\n`);
      return 1;
    }
    const outDir = path.resolve(options.out);
    const written = writeConf({ settings: config.settings, outDir, initByLua: options.initByLua });
    // nginx started as root runs its workers as another user: they can read graygate's Lua files
    // only if every user can, unless nginx's master loads them first (the preload).
    const access = luaAccessProblem();
    if (access) {
      process.stderr.write(
        `graygate openresty conf: warning: ${describeLuaAccess(access)}: nginx's workers, which run as another user when nginx starts as root (nobody, or the user directive's), cannot read graygate's Lua files in ${path.join(LUA_DIR, 'graygate')}.\n` +
          (options.initByLua
            ? `  They get the modules only from nginx's master, through the preload in ${written.httpInclude} (init_by_lua_block): keep it (with an init_by_lua* of your own, call ${PRELOAD_CALL} from it instead), `
            : `  They get the modules only from nginx's master, if your init_by_lua* calls ${PRELOAD_CALL}: add it, `) +
          `or install graygate where every user can read it (o+x on its directories, o+r on its files).\n`,
      );
    }
    // Certificates served from graygate (SNI, live reload) need the nginx graygate runs itself.
    if (config.settings.tls !== undefined) process.stderr.write('graygate openresty conf: tls is not written into these files: in your own nginx, TLS is your server block\'s (listen … ssl, ssl_certificate); `graygate start --data-plane openresty` without --nginx external serves tls itself\n');
    process.stdout.write(
      `Wrote ${written.httpInclude} and ${written.serverInclude}. Add these two lines to nginx.conf:\n\n` +
        `    ${written.lines[0]}      # inside http { }\n` +
        `    ${written.lines[1]}    # inside the server { } that takes the traffic\n\n` +
        (options.initByLua
          ? `The http include loads graygate's Lua modules in nginx's master (init_by_lua_block). If your nginx.conf has an init_by_lua* of its own, nginx refuses a second one: write the files with --no-init-by-lua and call ${PRELOAD_CALL} from yours.\n`
          : `Call ${PRELOAD_CALL} from your init_by_lua* (in http { }): it loads graygate's Lua modules in nginx's master, so that its workers never read graygate's files.\n`) +
        (readsRedis(config.settings)
          ? 'nginx reads the routing from Redis; every graygate started on that store (anywhere in the fleet, any --data-plane) keeps it current.\n'
          : `nginx gets the routing pushed to ${path.join(outDir, 'graygate-control.sock')}: run graygate start --config FILE --data-plane openresty --nginx external --openresty-dir ${outDir} beside it.\n`),
    );
    return 0;
  } catch (error) {
    const code = isGraygateError(error) ? ` (${error.code})` : '';
    const issues = (error as { issues?: string[] }).issues;
    process.stderr.write(`graygate openresty conf: ${issues ? issues.join('; ') : oneLine((error as Error).message)}${code}\n`);
    return 1;
  }
}
