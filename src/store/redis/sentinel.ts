import { Redis } from 'ioredis';
import { GraygateError } from '../../errors.js';
import type { Client, RedisConnections } from './connections.js';

/**
 * Sentinel failover window: a sentinel names the promoted replica before the old master is
 * demoted and before ioredis hears +switch-master, and a write to the old master in that window
 * is silently lost when it resyncs. So before each write, ask a sentinel who the master is; if
 * it is not the node we are connected to, reconnect (ioredis asks the sentinels again) first.
 */
export async function confirmSentinelMaster(connections: RedisConnections, control: Client): Promise<void> {
  if (connections.target.topology !== 'sentinel') return;
  const master = await askSentinelForMaster(connections);
  const connected = (control as Redis).stream as { remoteAddress?: string; remotePort?: number } | undefined;
  if (master === undefined) return; // no sentinel answered: ioredis' own view stands
  if (connected?.remoteAddress === master.host && connected.remotePort === master.port) return;
  connections.logger.warn({ master: `${master.host}:${master.port}`, connected: `${connected?.remoteAddress}:${connected?.remotePort}` }, 'sentinel names another master; reconnecting before the write');
  // Only a ready connection is dropped: one that is already reconnecting is finding the master.
  if (control.status === 'ready') control.disconnect(true);
  await connections.whenReady(control, 'reconnecting to the new master');
  const now = (control as Redis).stream as { remoteAddress?: string; remotePort?: number } | undefined;
  if (now?.remoteAddress !== master.host || now?.remotePort !== master.port) {
    throw new GraygateError('GG_STORE_UNAVAILABLE', `redis store (${connections.target.display}): a failover is under way (sentinel names ${master.host}:${master.port}); retry the write`);
  }
}

/** The master's address as the first sentinel that answers reports it; undefined when none does. */
async function askSentinelForMaster(connections: RedisConnections): Promise<{ host: string; port: number } | undefined> {
  if (connections.target.topology !== 'sentinel') return undefined;
  for (const address of connections.target.sentinels) {
    const client = new Redis({
      host: address.host,
      port: address.port,
      password: connections.target.sentinelPassword,
      lazyConnect: true,
      enableOfflineQueue: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      connectTimeout: connections.settings.commandTimeoutMs,
      commandTimeout: connections.settings.commandTimeoutMs,
    });
    client.on('error', () => {}); // a sentinel that does not answer: try the next
    try {
      const reply = (await client.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', connections.target.masterName)) as [string, string] | null;
      if (reply) return { host: reply[0], port: Number(reply[1]) };
    } catch {
      // next sentinel
    } finally {
      client.disconnect();
    }
  }
  return undefined;
}

