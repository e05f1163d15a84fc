import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { ConfigError } from '../../errors.js';
import { planConfigApply } from '../config-apply.js';
import { diffValues, formatChanges } from '../diff.js';
import { AdminCallError, createClient, ExitCode, withClientOptions, type ClientOptions } from './client.js';
import { fetchImpact, formatImpact } from './impact.js';
import { print, printJson, run } from './output.js';

/** The routing part of a file: a bare routing document, or a whole config file's routing keys. */
export async function routingFromFile(file: string) {
  const text = await readFile(file, 'utf8').catch((error: Error) => {
    throw new AdminCallError(undefined, 'usage', `cannot read ${file}: ${error.message}`);
  });
  // The schema and its strategies load only for `config apply`: the other commands start faster.
  const [{ parseConfigText, parseRoutingDocument }, { routingKeys }] = await Promise.all([import('../../config/load.js'), import('../../config/schema.js')]);
  try {
    const { raw } = parseConfigText(text, file);
    const record = (raw ?? {}) as Record<string, unknown>;
    const routing = Object.fromEntries(Object.entries(record).filter(([key]) => (routingKeys as string[]).includes(key)));
    return parseRoutingDocument(routing, file);
  } catch (error) {
    if (error instanceof ConfigError) throw new AdminCallError(400, error.code, error.message, error.issues);
    throw error;
  }
}

async function confirm(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false;
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await prompt.question(question)).trim());
  } finally {
    prompt.close();
  }
}

/** `graygate config get|apply`: the whole routing document. */
export function registerConfigCommand(program: Command): void {
  const config = program.command('config').description('Read or replace the whole routing document through the admin API.');
  withClientOptions(config.command('get').description('Print the current routing document (YAML; JSON with --json) and its version.')).action(
    async (options: ClientOptions) =>
      run(options.json, async () => {
        const current = await createClient(options).call('GET', '/v1/config');
        if (options.json) return printJson(current);
        print(`# routing version ${current.version}, written by ${current.meta.actor} at ${current.meta.time}: ${current.meta.reason}\n${stringify(current.document)}`);
      }),
  );
  withClientOptions(
    config
      .command('apply')
      .description(
        'Replace the routing document with a file\'s (its upstreams, services, identity): shows the diff, asks, then writes naming the version it diffed against. ' +
          'A release whose section in the file is unchanged since an earlier version is kept as it is live (the lifecycle moved it on since).',
      )
      .argument('<file>', 'YAML or JSON: a routing document or a whole config file')
      .requiredOption('--reason <text>', 'why (kept in the history)')
      .option('-y, --yes', 'do not ask (for scripts)')
      .option('--release-from-file', 'apply every release section of the file as written, even one unchanged since an earlier version'),
  ).action(async (file: string, options: ClientOptions & { reason: string; yes?: boolean; releaseFromFile?: boolean }) =>
    run(options.json, async () => {
      const client = createClient(options);
      const fromFile = await routingFromFile(file);
      const current = await client.call('GET', '/v1/config');
      // Earlier versions tell an edited release section from one the lifecycle has moved on from.
      const history = {
        versions: async () => ((await client.call('GET', '/v1/history?limit=1000')).versions as { version: number }[]).map((entry) => entry.version),
        read: async (version: number) => {
          try {
            return (await client.call('GET', `/v1/history/${version}`)).document;
          } catch (error) {
            // A version trimmed from the history between the list and the read.
            if (error instanceof AdminCallError && error.status === 404) return undefined;
            throw error;
          }
        },
      };
      const plan = await planConfigApply(current, fromFile, history, { releaseFromFile: options.releaseFromFile === true });
      const document = plan.document;
      const changes = diffValues(current.document, document);
      const releases = plan.releases;
      const refused = releases.filter((decision) => decision.outcome === 'refused');
      if (refused.length > 0) {
        if (options.json) printJson({ changed: false, version: current.version, changes, releases });
        for (const decision of refused) process.stderr.write(`graygate: not applied: ${decision.message}\n`);
        return ExitCode.refused;
      }
      if (changes.length === 0) {
        if (options.json) printJson({ changed: false, version: current.version, changes, releases });
        else {
          print(`no changes against version ${current.version}`);
          for (const decision of releases) print(decision.message);
        }
        return ExitCode.ok;
      }
      // The impact before the question: how many callers seen recently the change would move. A
      // gateway that cannot count it (an older one, or no snapshot yet) does not stop the apply.
      let impactError: string | undefined;
      const impact = await fetchImpact(client, { document }).catch((error: unknown) => {
        impactError = (error as Error).message;
        return undefined;
      });
      if (!options.json) {
        print(`changes against version ${current.version}:`);
        for (const line of formatChanges(changes)) print(`  ${line}`);
        for (const decision of releases) print(decision.message);
        if (impact) for (const line of formatImpact(impact)) print(line);
        // Said with the diff, not as an error: the apply itself may still go through.
        else print(`impact: not counted (${impactError ?? 'no answer'})`);
      }
      if (!options.yes && !(await confirm('apply these changes? [y/N] '))) {
        process.stderr.write(`graygate: not applied${process.stdin.isTTY ? '' : ' (no terminal to ask on: pass --yes)'}\n`);
        return ExitCode.refused;
      }
      const result = await client.call('PUT', '/v1/config', { reason: options.reason, version: current.version, document });
      if (options.json) printJson({ ...result, changes, releases, ...(impact ? { impact } : {}) });
      else print(`applied: routing version ${result.previousVersion} → ${result.version}`);
      return ExitCode.ok;
    }),
  );
}
