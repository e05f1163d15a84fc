import type { AccessLogSettings } from '../config/schema.js';
import type { Logger } from './log.js';
import { NO_OBSERVER, servedVersion, type ExchangeRecord, type RequestObserver } from './request-observer.js';

/**
 * The access log: one pino line per request (`event: "access"`), sampled, at a configured level.
 * A line carries the decision (service, served version, upstream, server, the rule that decided)
 * and the identity source's name, never its value; the path is logged without its query string,
 * since a query parameter may be an identity source carrying a token. A request that is not
 * logged (sampled out, level off) costs one comparison and allocates nothing.
 */
export function createAccessLog(logger: Logger, settings: AccessLogSettings): RequestObserver {
  const level = settings.level;
  if (!settings.enabled || settings.sample <= 0 || !logger.isLevelEnabled(level)) return NO_OBSERVER;
  // The bindings are serialized once here, not per line.
  const log = logger.child({ event: 'access' });
  const write = log[level].bind(log);
  const sample = settings.sample;
  return {
    requestClosed(record: ExchangeRecord): void {
      if (sample < 1 && Math.random() >= sample) return;
      const decision = record.decision;
      write(
        {
          method: record.method,
          path: record.path,
          status: record.status,
          bytes: record.bytesSent,
          durationMs: Math.round(record.durationMs * 1000) / 1000,
          service: decision?.service ?? null,
          version: decision === undefined ? null : servedVersion(decision, record.upstreamName),
          upstream: record.upstreamName ?? null,
          server: record.serverOrigin ?? null,
          rule: decision?.reason ?? null,
          identity: record.identitySource ?? null,
          ...(record.aborted ? { aborted: true } : {}),
        },
        'request',
      );
    },
    upstreamFailed() {},
    serverEjected() {},
  };
}
