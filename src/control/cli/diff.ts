import type { Command } from 'commander';
import { formatChanges } from '../diff.js';
import { createClient, withClientOptions, type ClientOptions } from './client.js';
import { print, printJson, run } from './output.js';

/** `graygate diff FROM [TO]`: what changed between two versions. */
export function registerDiffCommand(program: Command): void {
  withClientOptions(
    program.command('diff').description('What changed between two versions of the routing document (TO defaults to the current one).').argument('<from>').argument('[to]'),
  ).action(async (from: string, to: string | undefined, options: ClientOptions) =>
    run(options.json, async () => {
      const query = `from=${encodeURIComponent(from)}${to !== undefined ? `&to=${encodeURIComponent(to)}` : ''}`;
      const diff = await createClient(options).call('GET', `/v1/diff?${query}`);
      if (options.json) return printJson(diff);
      print(`version ${diff.from} → ${diff.to}: ${diff.changes.length === 0 ? 'no changes' : `${diff.changes.length} change(s)`}`);
      for (const line of formatChanges(diff.changes)) print(line);
    }),
  );
}
