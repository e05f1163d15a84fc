import type { Command } from 'commander';
import { AdminCallError, createClient, withClientOptions, type ClientOptions } from './client.js';
import { print, printJson, run, table } from './output.js';

/** `graygate history`: who changed the routing, when and why. */
export function registerHistoryCommand(program: Command): void {
  withClientOptions(program.command('history').description('Versions of the routing document, newest first: who, when, why.').option('-n, --limit <n>', 'at most this many', '20')).action(
    async (options: ClientOptions & { limit: string }) =>
      run(options.json, async () => {
        if (!/^[1-9]\d{0,2}$|^1000$/.test(options.limit)) throw new AdminCallError(undefined, 'usage', `--limit: expected a number of versions from 1 to 1000, got ${JSON.stringify(options.limit)}`);
        const history = await createClient(options).call('GET', `/v1/history?limit=${encodeURIComponent(options.limit)}`);
        if (options.json) return printJson(history);
        print(
          table(
            ['VERSION', 'TIME', 'ACTOR', 'REASON'],
            (history.versions as { version: number; time: string; actor: string; reason: string }[]).map((entry) => [String(entry.version), entry.time, entry.actor, entry.reason]),
          ),
        );
      }),
  );
}
