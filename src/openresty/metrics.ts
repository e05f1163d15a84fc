import { Agent, request, type Dispatcher } from 'undici';
import { GraygateError } from '../errors.js';
import { LOAD_REPORT_EVERY_MS } from '../gateway/load-reporter.js';
import type { DataPlaneStats } from '../dataplane/runtime.js';
import type { ServicesFigures } from '../observe/version-figures.js';
import { BUCKETS_PER_DOUBLING, LATENCY_BOUNDS_MS } from '../rollout/analysis/histogram.js';
import { parseGatewayFigures } from '../rollout/analysis/fleet.js';
import { metricsSource, registerGatewayMetrics, registerIdentityMetrics, Registry, RequestMetrics, type MetricsJson, type MetricsSource } from '../observe/metrics.js';

/**
 * graygate's control plane reading the OpenResty data plane's figures. nginx's workers count
 * requests, durations, fallbacks, upstream errors, ejections, token lookups and requests in
 * flight in a shared dict (openresty/graygate/metrics.lua); an internal loopback-only location
 * answers them in prom-client's own JSON form. Here that dump is summed with graygate's registry
 * exactly as a `--workers` primary sums its workers' registries, so /metrics, /v1/metrics (the
 * dashboard) and the drain report read nginx's figures as their own: same names, labels, buckets.
 */

/**
 * graygate's latency bounds (LATENCY_BOUNDS_MS) for metrics.lua, as the fields of its init
 * options: so nginx and Node put a latency in the same bucket, from one table. Written compactly
 * because nginx refuses a Lua block longer than its 4 KiB conf buffer and the 137 bounds alone
 * take 2.5 KiB: the first doubling's bounds (`latency_octave_ms`; JavaScript writes each as the
 * shortest decimal that reads back as the same double, and Lua reads it back so), and per bound
 * the ulp (-, 0, +) by which it differs from that octave's bound times a power of two (the table
 * is computed with Math.pow, which is not exact across doublings). metrics.lua rebuilds every
 * bound exactly (ldexp and one ulp); a table this cannot express throws here.
 */
export function latencyBoundsInitArgs(): string {
  const per = BUCKETS_PER_DOUBLING;
  const octave = LATENCY_BOUNDS_MS.slice(0, per);
  let ulps = '';
  for (let i = 0; i < LATENCY_BOUNDS_MS.length; i++) {
    const approx = octave[i % per]! * powerOfTwo(Math.floor(i / per));
    const bound = LATENCY_BOUNDS_MS[i]!;
    const step = ulpOf(approx);
    const d = bound === approx ? 0 : bound === approx + step ? 1 : bound === approx - step ? -1 : NaN;
    if (Number.isNaN(d)) throw new GraygateError('GG_INTERNAL', `latency bound ${i} (${bound} ms) is not within one ulp of ${approx}: metrics.lua's encoding of the bounds needs another form`);
    ulps += d === 0 ? '0' : d > 0 ? '+' : '-';
  }
  return `latency_octave_ms = { ${octave.join(', ')} }, latency_ulps = "${ulps}"`;
}

/** 2^k for an integer k >= 0, by doubling (exact). */
function powerOfTwo(k: number): number {
  let value = 1;
  for (let i = 0; i < k; i++) value *= 2;
  return value;
}

/** The distance from a positive normal double to the next one up (as Lua's frexp/ldexp give it). */
function ulpOf(x: number): number {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const exponent = (view.getUint16(0) >> 4) & 0x7ff;
  return 2 ** (exponent - 1023 - 52);
}

/** The init_worker call of metrics.lua, as the conf graygate writes it. */
export function metricsInitLua(dict = 'graygate_metrics'): string {
  return `require("graygate.metrics").init({ dict = "${dict}", ${latencyBoundsInitArgs()} })`;
}

/** The path of the dump location in the conf graygate writes (served on a loopback-only listener). */
export const METRICS_DUMP_PATH = '/graygate/metrics';

/** What metrics.lua's dump answers. */
export interface OpenrestyDump {
  /** prom-client JSON (getMetricsAsJSON form); only metrics with at least one value. */
  readonly metrics: MetricsJson;
  /** Requests in flight per upstream, client connections open: the drain report's figures. */
  readonly load: DataPlaneStats;
  /** The token lookup counts summed over nginx's workers (TokenLookupStats field names). */
  readonly token: Readonly<Record<string, number>>;
  /**
   * The rollout analysis's per-service, per-version figures (requests, 5xx, failures, latency
   * histogram), cumulative since nginx started; undefined when the dump carries none (metrics.lua
   * initialised without latency bounds) or malformed ones.
   */
  readonly figures: ServicesFigures | undefined;
}

/** How long a dump may take: a scrape or a drain check that waits longer learns nothing useful. */
const DUMP_TIMEOUT_MS = 2_000;

/**
 * Help text, type and aggregator of every series, from graygate's own declarations (so the dump
 * carries names and labels only, and the two cannot drift). Built once.
 */
interface Declaration {
  readonly help: string;
  readonly aggregator: string;
  readonly labelNames: readonly string[];
}
let declared: Map<string, Declaration> | undefined;
async function declarations(): Promise<Map<string, Declaration>> {
  if (declared) return declared;
  const registry = new Registry();
  new RequestMetrics(registry);
  registerIdentityMetrics(registry, {});
  registerGatewayMetrics(registry, {
    syncStats: () => ({ version: undefined, applied: 0, refused: 0, storeErrors: 0, lastError: undefined }),
    dataPlaneStats: () => ({ openConnections: 0, inFlightRequests: 0, upstreams: {} }),
  });
  const map = new Map<string, Declaration>();
  for (const metric of await registry.getMetricsAsJSON()) {
    const labelNames = (registry.getSingleMetric(metric.name) as unknown as { labelNames?: readonly string[] } | undefined)?.labelNames ?? [];
    map.set(metric.name, { help: metric.help, aggregator: metric.aggregator, labelNames });
  }
  declared = map;
  return map;
}

function inOrder<T extends Record<string, unknown>>(labels: T, names: readonly string[]): T {
  const ordered: Record<string, unknown> = {};
  for (const name of names) if (name in labels) ordered[name] = labels[name];
  for (const name of Object.keys(labels)) if (!(name in ordered)) ordered[name] = labels[name];
  return ordered as T;
}

/**
 * Where the dump is served: a loopback URL (`http://127.0.0.1:PORT/graygate/metrics`), or nginx's
 * control unix socket (`{ socketPath, path }`, the URL's host then does not matter).
 */
export type DumpLocation = string | { readonly socketPath: string; readonly path?: string };

const socketAgents = new Map<string, Dispatcher>();
function target(location: DumpLocation): { url: string; dispatcher?: Dispatcher } {
  if (typeof location === 'string') return { url: location };
  let dispatcher = socketAgents.get(location.socketPath);
  if (!dispatcher) {
    dispatcher = new Agent({ connect: { socketPath: location.socketPath } });
    socketAgents.set(location.socketPath, dispatcher);
  }
  return { url: `http://localhost${location.path ?? METRICS_DUMP_PATH}`, dispatcher };
}

/** Reads the dump at `location`. Rejects GG_INTERNAL when nginx does not answer it. */
export async function readOpenrestyDump(location: DumpLocation, timeoutMs = DUMP_TIMEOUT_MS): Promise<OpenrestyDump> {
  const { url, dispatcher } = target(location);
  const where = typeof location === 'string' ? url : `${location.socketPath} (${url})`;
  let body: unknown;
  try {
    const response = await request(url, { headersTimeout: timeoutMs, bodyTimeout: timeoutMs, ...(dispatcher ? { dispatcher } : {}) });
    if (response.statusCode !== 200) {
      await response.body.dump();
      throw new Error(`status ${response.statusCode}`);
    }
    body = await response.body.json();
  } catch (error) {
    throw new GraygateError('GG_INTERNAL', `the OpenResty data plane's metrics at ${where} could not be read: ${(error as Error).message}`, { cause: error });
  }
  const dump = body as Partial<OpenrestyDump>;
  if (!Array.isArray(dump.metrics) || typeof dump.load !== 'object' || dump.load === null) {
    throw new GraygateError('GG_INTERNAL', `the OpenResty data plane's metrics at ${where} are not a graygate dump (no metrics array or load)`);
  }
  const known = await declarations();
  const metrics = dump.metrics.map((metric) => {
    const declaration = known.get(metric.name);
    if (!declaration) return metric;
    // Labels in graygate's declared order (then a histogram's `le`), as its own registry writes
    // them: the text exposition keeps the order it is given.
    const values = metric.values.map((value) => ({ ...value, labels: inOrder(value.labels, declaration.labelNames) }));
    return { ...metric, help: declaration.help, aggregator: declaration.aggregator as never, values };
  });
  const load = dump.load as Partial<DataPlaneStats>;
  return {
    metrics,
    load: { openConnections: load.openConnections ?? 0, inFlightRequests: load.inFlightRequests ?? 0, upstreams: load.upstreams ?? {} },
    token: dump.token ?? {},
    figures: figuresOf((body as { figures?: unknown }).figures),
  };
}

/** The dump's figures, checked as a load report's are (lua-cjson writes an empty table as {}). */
function figuresOf(raw: unknown): ServicesFigures | undefined {
  if (raw === undefined || raw === null) return undefined;
  return parseGatewayFigures({ countersId: 'nginx', startedAt: 0, services: raw })?.services;
}

/**
 * The admin API's metrics source with the OpenResty data plane: graygate's own registry (config
 * version, reloads, …) plus nginx's figures, summed per series as prom-client's
 * AggregatorRegistry sums `--workers` registries.
 */
export function openrestyMetricsSource(registry: Registry, dumpUrl: DumpLocation): MetricsSource {
  return metricsSource(registry, async () => [(await readOpenrestyDump(dumpUrl)).metrics]);
}

/** The latest load figures of nginx, kept fresh in the background (DataPlaneStats is read synchronously). */
export interface OpenrestyLoadPoller {
  /** The last figures read; all zero before the first read. */
  stats(): DataPlaneStats;
  /** The last per-version figures read (undefined before the first read, or when the dump has none). */
  figures(): ServicesFigures | undefined;
  /** When the last read succeeded (Date.now()), 0 before the first. */
  readonly lastReadAt: number;
  close(): void;
}

/**
 * Polls the dump every `everyMs` (default: as often as the gateway writes its load report, which
 * is what carries the per-version figures to the rollout analysis, and what the drain report's
 * in-flight figures are read at). More often buys no fresher report: each read costs nginx's
 * worker a walk of its metrics and this process a parse (about 1 ms each), and at 100 ms that was
 * 4 % of a core on an idle gateway. A failed read keeps the last figures (and the time they were
 * read, for whoever must not trust old ones).
 */
export function pollOpenrestyLoad(dumpUrl: DumpLocation, options: { everyMs?: number; onError?: (error: Error) => void } = {}): OpenrestyLoadPoller {
  let last: DataPlaneStats = { openConnections: 0, inFlightRequests: 0, upstreams: {} };
  let lastFigures: ServicesFigures | undefined;
  let lastReadAt = 0;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = async (): Promise<void> => {
    try {
      const dump = await readOpenrestyDump(dumpUrl);
      last = dump.load;
      lastFigures = dump.figures;
      lastReadAt = Date.now();
    } catch (error) {
      options.onError?.(error as Error);
    }
    if (!closed) timer = setTimeout(() => void tick(), options.everyMs ?? LOAD_REPORT_EVERY_MS).unref();
  };
  void tick();
  return {
    stats: () => last,
    figures: () => lastFigures,
    get lastReadAt() {
      return lastReadAt;
    },
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
    },
  };
}
