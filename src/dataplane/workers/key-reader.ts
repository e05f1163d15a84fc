import type { Settings } from '../../config/schema.js';
import type { Logger } from '../../observe/log.js';

/** A worker's own store reads for identity lookups (token → user id). */
export interface KeyReader {
  /** Absent when the store holds no plain keys (the file store): lookups then fail, as in one process. */
  readonly readKey?: (key: string, deadlineMs: number) => Promise<string | undefined>;
  close(): Promise<void>;
}

/**
 * Opens the store the settings describe for key reads only. Each worker reads keys itself rather
 * than asking the primary: a cache miss then costs one store round trip inside its deadline, not
 * an IPC hop each way queued behind every other worker's, and lookups of one token are shared
 * (single-flight) within the worker that needs them. The routing document still comes from the
 * primary alone.
 */
export async function openKeyReader(settings: Settings, logger: Logger): Promise<KeyReader> {
  if (settings.store.kind !== 'redis') return { close: () => Promise.resolve() };
  const { createRedisKeyReader } = await import('../../store/redis/key-reader.js');
  const reader = createRedisKeyReader(settings.store, { logger });
  return {
    readKey: (key, deadlineMs) => reader.readKey(key, deadlineMs),
    close: () => {
      reader.close();
      return Promise.resolve();
    },
  };
}
