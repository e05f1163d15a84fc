import type { Store, StoredVersion, StoreHealth } from '../../src/store/store.js';

/**
 * A store whose `current()` a test scripts (the order and timing of answers a real store cannot be
 * made to give on demand), for driving the real ConfigSync through any interleaving. Everything
 * else is inert: no writes, no history, no change notifications, always healthy.
 */
export abstract class ScriptedStoreBase implements Store {
  readonly deadlineMs = 2_000;
  readonly keyReader = undefined;
  readonly fleet = undefined;
  abstract readonly kind: string;
  abstract current(): Promise<StoredVersion>;
  write(): Promise<StoredVersion> {
    throw new Error('not used');
  }
  history(): Promise<StoredVersion[]> {
    return Promise.resolve([]);
  }
  version(): Promise<StoredVersion> {
    throw new Error('not used');
  }
  watch(): () => void {
    return () => undefined;
  }
  health(): StoreHealth {
    return { up: true, everUp: true };
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}
