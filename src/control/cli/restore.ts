import type { Command } from 'commander';
import { AdminCallError, createClient, withClientOptions, type ClientOptions } from './client.js';
import { print, printJson, run } from './output.js';

/** `graygate restore VERSION`: write an earlier version's document as a new version. */
export function registerRestoreCommand(program: Command): void {
  withClientOptions(
    program
      .command('restore')
      .description('Bring back an earlier version of the routing document (written as a new version; history is kept).')
      .argument('<version>')
      .requiredOption('--reason <text>', 'why (kept in the history)')
      .option('--expect-version <n>', 'refuse (exit 5) unless the routing document is still at this version'),
  ).action(async (version: string, options: ClientOptions & { reason: string; expectVersion?: string }) =>
    run(options.json, async () => {
      const expected = options.expectVersion === undefined ? undefined : Number(options.expectVersion);
      if (expected !== undefined && !(Number.isSafeInteger(expected) && expected >= 0)) {
        throw new AdminCallError(undefined, 'usage', `--expect-version: expected a version number, got ${JSON.stringify(options.expectVersion)}`);
      }
      const body = { reason: options.reason, ...(expected !== undefined ? { version: expected } : {}) };
      const result = await createClient(options).call('POST', `/v1/history/${encodeURIComponent(version)}/restore`, body);
      if (options.json) return printJson(result);
      print(result.changed ? `restored version ${version} as version ${result.version} (was ${result.previousVersion})` : `version ${version} is what is current already; nothing written`);
    }),
  );
}
