import type { Command } from 'commander';
import { formatChanges } from '../diff.js';
import { AdminCallError, createClient, withClientOptions, type ClientOptions } from './client.js';
import { fetchImpact, formatImpact } from './impact.js';
import { print, printJson, run } from './output.js';

interface DiffOptions extends ClientOptions {
  impact?: boolean;
  file?: string;
}

function versionArg(name: string, text: string): number {
  const version = Number(text);
  if (!Number.isSafeInteger(version) || version < 1) throw new AdminCallError(undefined, 'usage', `${name}: expected a version number from 1, got ${JSON.stringify(text)}`);
  return version;
}

/**
 * `graygate diff FROM [TO]`: what changed between two versions. With `--impact`, also how many of
 * the callers the gateway saw recently would change version; `--impact --file proposed.yaml`
 * counts a document not yet applied (against FROM, default the routing served).
 */
export function registerDiffCommand(program: Command): void {
  withClientOptions(
    program
      .command('diff')
      .description(
        'What changed between two versions of the routing document (TO defaults to the current one). ' +
          'With --impact: also how many callers seen recently (the gateway\'s in-memory sample) would change version; --file counts a proposed document instead of TO.',
      )
      .argument('[from]', 'the older version (with --impact --file: default the routing served)')
      .argument('[to]', 'the newer version (default: the current one)')
      .option('--impact', 'count the callers that would change version')
      .option('--file <file>', 'with --impact: a proposed routing document (YAML/JSON, or a whole config file) instead of TO'),
  ).action(async (from: string | undefined, to: string | undefined, options: DiffOptions) =>
    run(options.json, async () => {
      const client = createClient(options);
      if (options.file !== undefined && !options.impact) throw new AdminCallError(undefined, 'usage', '--file: only with --impact');
      if (!options.impact) {
        if (from === undefined) throw new AdminCallError(undefined, 'usage', 'from: required (the older version), or use --impact --file');
        const query = `from=${encodeURIComponent(from)}${to !== undefined ? `&to=${encodeURIComponent(to)}` : ''}`;
        const diff = await client.call('GET', `/v1/diff?${query}`);
        if (options.json) return printJson(diff);
        print(`version ${diff.from} → ${diff.to}: ${diff.changes.length === 0 ? 'no changes' : `${diff.changes.length} change(s)`}`);
        for (const line of formatChanges(diff.changes)) print(line);
        return;
      }
      if (options.file !== undefined) {
        if (to !== undefined) throw new AdminCallError(undefined, 'usage', 'to: not with --file (the file is what is counted against FROM)');
        const { routingFromFile } = await import('./config.js');
        const document = await routingFromFile(options.file);
        const fromVersion = from !== undefined ? versionArg('from', from) : undefined;
        const impact = await fetchImpact(client, { document, ...(fromVersion !== undefined ? { from: fromVersion } : {}) });
        if (options.json) return printJson({ impact });
        for (const line of formatImpact(impact)) print(line);
        return;
      }
      if (from === undefined) throw new AdminCallError(undefined, 'usage', 'from: required with --impact (a version), or give --file proposed.yaml');
      const fromVersion = versionArg('from', from);
      const toVersion = to !== undefined ? versionArg('to', to) : ((await client.call('GET', '/v1/config')).version as number);
      const [diff, impact] = await Promise.all([client.call('GET', `/v1/diff?from=${fromVersion}&to=${toVersion}`), fetchImpact(client, { from: fromVersion, to: toVersion })]);
      if (options.json) return printJson({ ...diff, impact });
      print(`version ${diff.from} → ${diff.to}: ${diff.changes.length === 0 ? 'no changes' : `${diff.changes.length} change(s)`}`);
      for (const line of formatChanges(diff.changes)) print(line);
      for (const line of formatImpact(impact)) print(line);
    }),
  );
}
