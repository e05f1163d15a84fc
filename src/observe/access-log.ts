import { pino } from 'pino';
import type { AccessLogSettings, Settings } from '../config/schema.js';
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
  // Sampling by an xorshift32 of our own: Math.random refills a cache of doubles on the heap every
  // few dozen calls (measured: ~17 B per skipped request). State in a typed array, since a plain
  // closure variable over 2^30 would be boxed on every store.
  const state = new Uint32Array([(Date.now() ^ 0x9e3779b9) >>> 0 || 1]);
  const cut = Math.floor(settings.sample * 0x1_0000_0000);
  const always = settings.sample >= 1;
  return {
    requestClosed(record: ExchangeRecord): void {
      if (!always) {
        let x = state[0]!;
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        state[0] = x;
        if (state[0]! >= cut) return;
      }
      const decision = record.decision;
      const version = decision === undefined ? null : servedVersion(decision, record.upstreamName);
      write(
        {
          method: record.method,
          path: record.path,
          status: record.status,
          bytes: record.bytesSent,
          durationMs: Math.round(record.durationMs * 1000) / 1000,
          service: decision?.service ?? null,
          version,
          upstream: record.upstreamName ?? null,
          server: record.serverOrigin ?? null,
          rule: decision?.reason ?? null,
          identity: record.identitySource ?? null,
          ...(record.aborted ? { aborted: true } : {}),
          // The rules chose the candidate but it could not take the request: stable served it.
          ...(decision !== undefined && version !== decision.version ? { decided: decision.version } : {}),
        },
        'request',
      );
    },
    upstreamFailed() {},
    serverEjected() {},
    fellBack() {},
  };
}

/**
 * Whether any access line is written under these log settings: the same test `createAccessLog`
 * makes against its logger, for a data plane that writes the lines itself (nginx on OpenResty),
 * so one config gives the same access log on every data plane.
 */
export function accessLogWritten(log: Settings['log']): boolean {
  const { enabled, sample, level } = log.access;
  return enabled && sample > 0 && pino.levels.values[level]! >= (log.level === 'silent' ? Infinity : pino.levels.values[log.level]!);
}
