import type { RoutingDocument, Settings } from '../../config/schema.js';
import type { ImpactCounts, ProposedRouting } from '../../observe/impact.js';
import type { MetricsJson } from '../../observe/metrics.js';
import type { ServicesFigures } from '../../observe/version-figures.js';
import type { DataPlaneStats } from '../runtime.js';

/**
 * What the `--workers` primary and its workers say to each other over node:cluster's IPC channel
 * (structured clone). Every type starts with `gg:` so other messages on the channel are ignored.
 */

/** One snapshot to serve: the document, its version, and the store key values it was compiled with. */
export interface RoutingMessage {
  readonly type: 'gg:routing';
  /**
   * The primary's count of snapshots handed out. Versions alone cannot say which snapshot is newer:
   * a store key change recompiles the same version, and a store seeded again starts its versions
   * over. A worker confirms the `seq` it serves.
   */
  readonly seq: number;
  readonly version: number;
  readonly document: RoutingDocument;
  readonly values: [string, string | undefined][];
}

export interface StartMessage {
  readonly type: 'gg:start';
  readonly settings: Settings;
  readonly routing: RoutingMessage;
  /** The keys every worker seals and opens TLS session tickets with, so a client resumes on any worker. */
  readonly tlsTicketKeys?: Uint8Array;
}

export type ToWorker =
  | StartMessage
  | RoutingMessage
  | { readonly type: 'gg:drain'; readonly graceMs: number }
  | { readonly type: 'gg:metrics'; readonly id: number }
  /** Count the impact of `to` (from `from`, else the routing served) over this worker's identity sample. */
  | { readonly type: 'gg:impact'; readonly id: number; readonly from?: ProposedRouting; readonly to: ProposedRouting };

export type ToPrimary =
  | { readonly type: 'gg:ready' }
  | { readonly type: 'gg:listening'; readonly host: string; readonly port: number; readonly tls?: { readonly host: string; readonly port: number } }
  /** The snapshot this worker serves from now on (sent after each install, and when one failed to compile). */
  | { readonly type: 'gg:served'; readonly seq: number; readonly version: number }
  | { readonly type: 'gg:stats'; readonly stats: DataPlaneStats; readonly draining?: boolean }
  /** Its per-version figures, cumulative since it started (sent when they changed). */
  | { readonly type: 'gg:figures'; readonly figures: ServicesFigures }
  | { readonly type: 'gg:start-failed'; readonly message: string }
  | { readonly type: 'gg:metrics'; readonly id: number; readonly metrics: MetricsJson }
  /** Counts only: the sample itself never leaves the worker. `error`: the documents did not compile. */
  | { readonly type: 'gg:impact'; readonly id: number; readonly impact?: ImpactCounts; readonly error?: string };

export function isMessage(value: unknown): value is { type: string } {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string' && (value as { type: string }).type.startsWith('gg:');
}

/** How often a worker sends its load figures (on change only). */
export const STATS_EVERY_MS = 100;
