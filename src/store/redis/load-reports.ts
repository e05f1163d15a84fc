import { parseGatewayFigures } from '../../rollout/analysis/fleet.js';
import type { FleetSample, GatewaySample } from '../../rollout/analysis/types.js';
import type { FleetLoadEntry, FleetReports, LoadFigures, LoadReport } from '../store.js';
import { unavailable, type Client, type RedisConnections } from './connections.js';

/**
 * One gateway's load report, stamped with the server's clock (gateways' clocks may disagree; the
 * staleness bound must not). KEYS: load hash. ARGV: instance id, report JSON (an object, without
 * `at`), key lifetime in ms (the hash goes away when the whole fleet is gone). Returns the time.
 */
const REPORT_LOAD_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], '{"at":' .. string.format('%d', now) .. ',' .. string.sub(ARGV[2], 2))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return now
`;

/** The server's time in ms and every load report. KEYS: load hash. Reads only. */
const READ_LOAD_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {now, redis.call('HGETALL', KEYS[1])}
`;

/** How long the load hash outlives the last report written to it. */
const LOAD_KEY_TTL_MS = 60_000;

/** A report as stored, checked field by field (a malformed one is treated as stale). */
function parseLoadEntry(instanceId: string, text: string): FleetLoadEntry | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  const value = raw as { at?: unknown; servedVersion?: unknown; servedEpoch?: unknown; servedForMs?: unknown; inFlightRequests?: unknown; openConnections?: unknown; upstreams?: unknown } | null;
  const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0;
  if (value === null || typeof value !== 'object' || !isCount(value.at) || !isCount(value.inFlightRequests) || !isCount(value.openConnections)) return undefined;
  if (value.servedVersion !== null && !isCount(value.servedVersion)) return undefined;
  if (typeof value.upstreams !== 'object' || value.upstreams === null) return undefined;
  const upstreams: Record<string, LoadFigures> = {};
  for (const [name, figures] of Object.entries(value.upstreams as Record<string, { inFlightRequests?: unknown; openConnections?: unknown } | null>)) {
    if (figures === null || !isCount(figures.inFlightRequests) || !isCount(figures.openConnections)) return undefined;
    upstreams[name] = { inFlightRequests: figures.inFlightRequests, openConnections: figures.openConnections };
  }
  const figures = parseGatewayFigures((value as { figures?: unknown }).figures);
  return {
    instanceId,
    at: value.at,
    report: {
      ...(figures === undefined ? {} : { figures }),
      servedVersion: value.servedVersion,
      // Absent in reports of gateways from before epochs were reported: unknown.
      servedEpoch: typeof value.servedEpoch === 'string' ? value.servedEpoch : null,
      servedForMs: isCount(value.servedForMs) ? value.servedForMs : 0,
      inFlightRequests: value.inFlightRequests,
      openConnections: value.openConnections,
      upstreams,
    },
  };
}

/** Every gateway's load report in one hash (`{namespace}:load`), stamped with the server's clock. */
export class RedisLoadReports implements FleetReports {
  private loadConnection: Client | undefined;

  constructor(
    private readonly connections: RedisConnections,
    private readonly control: Client,
    private readonly loadKey: string,
  ) {}

  /**
   * The connection load reports are written on, opened on first use. Its own, without
   * reconnect-on-READONLY: on a replica every report is refused, and reconnecting the control
   * connection each time would fail the admin reads and writes in between.
   */
  private loadClient(): Client {
    this.loadConnection ??= this.connections.connect('load', { commandTimeout: this.connections.settings.commandTimeoutMs, reconnectOnError: () => false });
    return this.loadConnection;
  }

  /** Records this gateway's load in the load hash, stamped with the server's clock. */
  async reportLoad(instanceId: string, report: LoadReport): Promise<void> {
    const json = JSON.stringify(report);
    const client = this.loadClient();
    await this.connections.whenReady(client, 'reporting load');
    try {
      await client.eval(REPORT_LOAD_SCRIPT, 1, this.loadKey, instanceId, json, String(LOAD_KEY_TTL_MS));
    } catch (error) {
      throw unavailable('reporting load', this.connections.target.display, error);
    }
  }

  /** The load reports written within `staleAfterMs` by the server's clock; older or malformed ones are deleted. */
  async readFleetLoad(staleAfterMs: number): Promise<FleetLoadEntry[]> {
    const [now, flat] = (await this.connections.run(this.control, 'reading fleet load', (client) => client.eval(READ_LOAD_SCRIPT, 1, this.loadKey))) as [number, string[]];
    const fresh: FleetLoadEntry[] = [];
    const stale: string[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const entry = parseLoadEntry(flat[i]!, flat[i + 1]!);
      if (entry === undefined || now - entry.at > staleAfterMs) stale.push(flat[i]!);
      else fresh.push(entry);
    }
    if (stale.length > 0) {
      // Best effort: a gateway that stopped without deleting its report (killed) is dropped by
      // the staleness bound above whether or not this delete goes through.
      this.control.hdel(this.loadKey, ...stale).catch((error: Error) => this.connections.logger.debug({ err: error.message }, 'could not delete stale load reports'));
    }
    return fresh;
  }

  /** Every report's figures at the store's clock now; stale reports are named, never summed. Reads only. */
  async readFleetSample(staleAfterMs: number): Promise<FleetSample> {
    const [now, flat] = (await this.connections.run(this.control, 'reading fleet figures', (client) => client.eval(READ_LOAD_SCRIPT, 1, this.loadKey))) as [number, string[]];
    const gateways: GatewaySample[] = [];
    const stale: { instanceId: string; ageMs: number | null }[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const instanceId = flat[i]!;
      const entry = parseLoadEntry(instanceId, flat[i + 1]!);
      if (entry === undefined) stale.push({ instanceId, ageMs: null });
      else if (now - entry.at > staleAfterMs) stale.push({ instanceId, ageMs: now - entry.at });
      else gateways.push({ instanceId, at: entry.at, figures: entry.report.figures });
    }
    return { at: now, gateways, stale };
  }

  /** Deletes this gateway's load report. */
  async removeLoad(instanceId: string): Promise<void> {
    const client = this.loadClient();
    await this.connections.whenReady(client, 'removing load report');
    try {
      await client.hdel(this.loadKey, instanceId);
    } catch (error) {
      throw unavailable('removing load report', this.connections.target.display, error);
    }
  }

}
