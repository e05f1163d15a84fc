import type { RedisStoreSettings } from '../config/schema.js';
import type { Logger } from '../observe/log.js';
import type { RoutingSnapshot } from '../rules/snapshot.js';
import { buildEnvelope } from './envelope.js';
import { normalizeRouting } from './normalize.js';
import { RedisPublisher } from './redis-publisher.js';

/**
 * Keeps the fleet's OpenResty routing key (`{namespace}:openresty`) current from a gateway whose
 * own data plane is not nginx (Node, Bun): an nginx that reads only Redis (the files of
 * `graygate openresty conf`, no graygate beside it) then gets routing in a fleet with no
 * OpenResty gateway at all.
 *
 * Cheap on purpose: it runs once per new snapshot (a new version, or a store key value such as
 * Grayscale_Range that changed the compiled form), never per request; the write is the same
 * write-if-newer script the OpenResty data plane uses, so a fleet of writers races safely and a
 * second writer of the same content changes nothing. A version the Lua data plane cannot run is
 * not written (the key keeps the last one that can run), and said once.
 */
export class OpenRestyKeyWriter {
  private readonly publisher: RedisPublisher;
  /** The last snapshot offered: a newer one offered meanwhile replaces it, one write at a time. */
  private pending: RoutingSnapshot | undefined;
  private writing: Promise<void> | undefined;
  private epoch: string | undefined;
  private lastRefusal: string | undefined;
  private closed = false;

  constructor(
    settings: RedisStoreSettings,
    private readonly logger: Logger,
  ) {
    this.publisher = new RedisPublisher(settings, logger);
  }

  /** Writes `snapshot` for the fleet's nginx in the background (the newest offered wins). */
  offer(snapshot: RoutingSnapshot): void {
    if (this.closed) return;
    this.pending = snapshot;
    this.writing ??= this.drain().finally(() => (this.writing = undefined));
  }

  /** Resolves once what was offered so far is written, or refused (tests, shutdown). */
  async flushed(): Promise<void> {
    while (this.writing) await this.writing;
  }

  private async drain(): Promise<void> {
    while (this.pending && !this.closed) {
      const snapshot = this.pending;
      this.pending = undefined;
      await this.writeOne(snapshot);
    }
  }

  private async writeOne(snapshot: RoutingSnapshot): Promise<void> {
    let form;
    try {
      form = normalizeRouting(snapshot.document, snapshot.version, { storeValue: (key) => snapshot.storeValues?.get(key) });
    } catch (error) {
      const message = (error as Error).message;
      if (message !== this.lastRefusal) {
        this.lastRefusal = message;
        this.logger.info(
          { event: 'openresty-key-skipped', version: snapshot.version },
          `routing version ${snapshot.version} is not written for nginx reading the store (the OpenResty data plane cannot run it; the key keeps the last version it can): ${message}`,
        );
      }
      return;
    }
    this.lastRefusal = undefined;
    try {
      // The epoch changes only when the store is seeded again; the script refuses a stale one,
      // and then it is read again for the next try.
      this.epoch ??= await this.publisher.epoch();
      let { envelope, body } = await buildEnvelope(form, Date.now(), this.epoch);
      if ((await this.publisher.publish(envelope, body)) === 'other-epoch') {
        this.epoch = await this.publisher.epoch();
        ({ envelope, body } = await buildEnvelope(form, Date.now(), this.epoch));
        await this.publisher.publish(envelope, body);
      }
    } catch (error) {
      this.logger.warn({ event: 'openresty-publish-failed', version: snapshot.version, err: error }, `could not write routing version ${snapshot.version} for the fleet's nginx to Redis: ${(error as Error).message}`);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.publisher.close();
  }
}
