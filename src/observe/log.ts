import { pino, type Logger } from 'pino';
import pinoPretty from 'pino-pretty';

export type { Logger };

/** `log.format`: JSON lines, human-readable lines, or whichever suits stdout. */
export type LogFormat = 'json' | 'pretty' | 'auto';

/**
 * The process logger: JSON lines on stdout (pino), or with `format` pretty (or auto on a
 * terminal) the same records made readable by pino-pretty. Faults that happen per request are
 * logged through `rateLimited` so a storm of them cannot flood the log.
 */
export function createLogger(options: { level?: string; format?: LogFormat; destination?: NodeJS.WritableStream } = {}): Logger {
  const isTerminal = process.stdout.isTTY === true;
  const pretty = options.destination === undefined && (options.format === 'pretty' || (options.format === 'auto' && isTerminal));
  const destination =
    options.destination ??
    (pretty
      ? // In this thread rather than as a pino transport (a worker thread): the same on Node and Bun.
        pinoPretty({ destination: 1, colorize: isTerminal, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name', sync: false })
      : pino.destination({ dest: 1, sync: false }));
  return pino({ level: options.level ?? 'info', base: { name: 'graygate' }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}

/** A logger that discards everything, for library use and tests that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * Returns a function that logs at most `perIntervalMax` times per `intervalMs` for one `key`,
 * then one summary line with the number suppressed. For per-request faults: count every one,
 * log a bounded number.
 */
export function rateLimited(logger: Logger, intervalMs = 10_000, perIntervalMax = 5) {
  const windows = new Map<string, { start: number; count: number }>();
  return (key: string, level: 'warn' | 'error' | 'info', fields: object, message: string): void => {
    const now = Date.now();
    let window = windows.get(key);
    if (!window || now - window.start >= intervalMs) {
      if (window && window.count > perIntervalMax) {
        logger[level]({ key, suppressed: window.count - perIntervalMax }, `${key}: ${window.count - perIntervalMax} more like this were not logged`);
      }
      window = { start: now, count: 0 };
      windows.set(key, window);
    }
    window.count++;
    if (window.count <= perIntervalMax) logger[level](fields, message);
  };
}
