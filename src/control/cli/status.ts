import type { Command } from 'commander';
import { createClient, withClientOptions, type ClientOptions } from './client.js';
import { print, printJson, run, table } from './output.js';

/** `graygate status`: services, release states, rules and versions as a table. */
export function registerStatusCommand(program: Command): void {
  withClientOptions(program.command('status').description('Services, their release states and rules, and the routing versions (stored and served).')).action(
    async (options: ClientOptions) =>
      run(options.json, async () => {
        const status = await createClient(options).call('GET', '/v1/status');
        if (options.json) return printJson(status);
        print(
          `routing version ${status.version ?? 'unknown (store unreachable)'}, served ${status.servedVersion ?? 'none'} · store ${status.storeKind} · ` +
            `${status.dataPlane.inFlightRequests} requests in flight, ${status.dataPlane.openConnections} connections open`,
        );
        print(
          table(
            ['SERVICE', 'STATE', 'STABLE', 'CANDIDATES', 'RULES'],
            (status.services as { name: string; state: string; stable: string; candidates: string[]; rules: string[] }[]).map((s) => [
              s.name,
              s.state,
              s.stable,
              s.candidates.join(', ') || '-',
              s.rules.join(', ') || '-',
            ]),
          ),
        );
        if (status.lastSyncError) print(`last sync error: ${status.lastSyncError.code}: ${status.lastSyncError.message}`);
      }),
  );
}
