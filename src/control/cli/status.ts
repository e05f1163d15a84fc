import type { Command } from 'commander';
import { createClient, withClientOptions, type ClientOptions } from './client.js';
import { print, printJson, run, table } from './output.js';
import { upstreamTable } from './release.js';

interface FleetView {
  scope: 'fleet' | 'process';
  store: { version: number; epoch: string | null } | null;
  gateways: { instanceId: string; self: boolean; servedVersion: number | null; servedEpoch: string | null; servedForMs: number; behind: boolean }[];
  versions: { version: number | null; epoch: string | null; gateways: number }[];
  split: boolean;
}

/** An epoch is a random id: its first characters tell two apart. */
const shortEpoch = (epoch: string | null) => (epoch === null ? '-' : epoch.slice(0, 8));

/** What each gateway serves; a split fleet is said first, loudly. */
function printFleet(fleet: FleetView): void {
  if (fleet.scope !== 'fleet') return;
  if (fleet.split) {
    const served = fleet.versions.map((v) => `version ${v.version ?? 'none'} (epoch ${shortEpoch(v.epoch)}) on ${v.gateways}`).join(', ');
    print(`FLEET SPLIT: the gateways serve different routing: ${served}. They converge within two store polls; if this stays, see docs/operations.md "Store outages and what the fleet does"`);
  } else {
    const only = fleet.versions[0];
    print(`fleet: every gateway serves version ${only?.version ?? 'none'} (epoch ${shortEpoch(only?.epoch ?? null)})${fleet.store && fleet.gateways.some((g) => g.behind) ? `, the store holds ${fleet.store.version} (epoch ${shortEpoch(fleet.store.epoch)})` : ''}`);
  }
  if (fleet.split || fleet.gateways.some((g) => g.behind)) {
    print(
      table(
        ['GATEWAY', 'SERVES', 'EPOCH', 'FOR', 'BEHIND THE STORE'],
        fleet.gateways.map((g) => [
          `${g.instanceId}${g.self ? ' (this one)' : ''}`,
          String(g.servedVersion ?? 'none'),
          shortEpoch(g.servedEpoch),
          `${Math.round(g.servedForMs / 1000)} s`,
          g.behind ? 'yes' : 'no',
        ]),
      ),
    );
  }
}

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
        if (status.storeUp === false) print(`store: NOT ANSWERING (routing stays on the version served)`);
        if (status.fleet !== undefined) printFleet(status.fleet as FleetView);
        if (status.lastSyncError) print(`last sync error: ${status.lastSyncError.code}: ${status.lastSyncError.message}`);
      }),
  );
}
