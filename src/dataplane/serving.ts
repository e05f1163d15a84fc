import type { Settings } from '../config/schema.js';
import { identityCompiler } from '../identity/request-identity.js';
import type { IdentityContext } from '../identity/source.js';
import { createAccessLog } from '../observe/access-log.js';
import { IdentitySample } from '../observe/identity-sample.js';
import type { Logger } from '../observe/log.js';
import { Counter } from 'prom-client';
import { Registry, registerIdentityMetrics, RequestMetrics } from '../observe/metrics.js';
import { combineObservers } from '../observe/request-observer.js';
import type { VersionFiguresRecorder } from '../observe/version-figures.js';
import type { IdentityCompiler } from '../rules/request-identity.js';
import type { CreateDataPlane, DataPlane } from './runtime.js';

/** What serves requests in one process: its data plane, the registry it records into, its identity context. */
export interface Serving {
  readonly dataPlane: DataPlane;
  /** This process's registry: request metrics, identity lookups (and whatever the caller adds). */
  readonly registry: Registry;
  /** Long-lived: identity caches (token lookups) are kept per context, across snapshots. */
  readonly identityContext: IdentityContext;
  /** What compileRouting is handed to resolve callers: built on `identityContext`, so its caches outlive snapshots. */
  readonly identity: IdentityCompiler;
  /** Per-service, per-version figures of the requests this process served (for the rollout analysis). */
  readonly figures: VersionFiguresRecorder;
  /** The callers this process's rules decided for recently (memory only; only counts leave it). */
  readonly identitySample: IdentitySample;
}

/**
 * Wires a data plane the one way every process that serves requests does (the single process and
 * each `--workers` worker): request metrics and the access log as its observer, identity lookups
 * through `readKey` (the store's, read from this process) with their metrics.
 */
export function createServing(options: {
  readonly settings: Settings;
  readonly logger: Logger;
  readonly createDataPlane: CreateDataPlane;
  readonly readKey?: ((key: string, deadlineMs: number) => Promise<string | undefined>) | undefined;
}): Serving {
  const { settings, logger } = options;
  // One registry per process (not prom-client's global one), so several gateways in one process
  // (tests, embedders) never mix their counts.
  const registry = new Registry();
  const identityContext: IdentityContext = { ...(options.readKey ? { readKey: options.readKey } : {}), logger };
  registerIdentityMetrics(registry, identityContext);
  const requestMetrics = new RequestMetrics(registry);
  const observer = combineObservers(requestMetrics, createAccessLog(logger, settings.log.access));
  const identitySample = new IdentitySample(settings.identitySample);
  const dataPlane = options.createDataPlane({ settings, logger, observer, registry, identitySample });
  if (settings.tls !== undefined && dataPlane.tlsReloads !== undefined) {
    const reloads = dataPlane.tlsReloads.bind(dataPlane);
    new Counter({
      name: 'graygate_tls_reloads_total',
      help: 'Certificate reloads of the TLS listener: applied (new handshakes use the new files) or refused (a broken or mismatched file; the previous certificate stays).',
      labelNames: ['result'],
      registers: [registry],
      collect() {
        const counts = reloads();
        // Monotonic counts kept by the listener: resetting and setting them again is the same counter.
        this.reset();
        this.labels('applied').inc(counts.applied);
        this.labels('refused').inc(counts.refused);
      },
    });
  }
  return { dataPlane, registry, identityContext, identity: identityCompiler({ context: identityContext }), figures: requestMetrics.figures, identitySample };
}
