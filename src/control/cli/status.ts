import type { Command } from 'commander';
import { createClient, withClientOptions, type ClientOptions } from './client.js';
import { print, printJson, run, table } from './output.js';
import { upstreamTable } from './release.js';

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
        const load = status.load as { scope: string; gateways: number; inFlightRequests: number; openConnections: number; upstreams: Record<string, { inFlightRequests: number; openConnections: number }> } | undefined;
        if (load !== undefined) {
          print(
            load.scope === 'fleet'
              ? `fleet: ${load.gateways} gateway${load.gateways === 1 ? '' : 's'} reporting, ${load.inFlightRequests} requests in flight, ${load.openConnections} connections open`
              : `this gateway (no fleet on a ${status.storeKind} store):`,
          );
          if (Object.keys(load.upstreams).length > 0) print(upstreamTable(load.upstreams));
        } else if (status.loadError) print(`fleet load unknown: ${status.loadError.code}: ${status.loadError.message}`);
        if (status.lastSyncError) print(`last sync error: ${status.lastSyncError.code}: ${status.lastSyncError.message}`);
      }),
  );
}
