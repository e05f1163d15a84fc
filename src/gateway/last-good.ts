import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { RoutingDocument } from '../config/schema.js';
import type { Logger } from '../observe/log.js';
import { writeFileAtomic } from '../store/file/atomic-write.js';
import type { ChangeMeta, StoredVersion } from '../store/store.js';

/** Validates a raw routing document; throws ConfigError naming each failing field. */
export type LastGoodValidator = (raw: unknown, source: string) => RoutingDocument;

/**
 * The last routing document a gateway on a shared store applied, kept on local disk: a gateway
 * restarted while the store is down serves it instead of not starting (or of the config file's
 * routing, which may be weeks older), and it is what a restarted gateway offers the store when
 * the store lost its data or went back in time. The one reader and writer of that file.
 *
 * Format (JSON, one line): `{version, epoch?, meta, savedAt, document}`.
 */
export class LastGoodFile {
  private saving: Promise<void> = Promise.resolve();

  constructor(
    readonly path: string,
    private readonly validate: LastGoodValidator,
    private readonly logger: Logger,
  ) {}

  /**
   * The saved version, validated. Throws (with the reason in the message) when the file is
   * missing, not JSON, or its version, meta or document do not check out.
   */
  async read(): Promise<StoredVersion> {
    const saved = JSON.parse(await readFile(this.path, 'utf8')) as { version?: unknown; epoch?: unknown; meta?: unknown; document?: unknown } | null;
    if (saved === null || typeof saved !== 'object') throw new Error('not a JSON object');
    if (typeof saved.version !== 'number' || !Number.isSafeInteger(saved.version) || saved.version < 1) throw new Error('no valid "version"');
    const document = this.validate(saved.document, this.path);
    // A copy without its meta (written by hand) still serves; it then never matches the store's
    // meta, so once the store answers, its version of the same number is followed.
    const meta: ChangeMeta = isChangeMeta(saved.meta)
      ? { actor: saved.meta.actor, time: saved.meta.time, reason: saved.meta.reason }
      : { actor: 'unknown', time: '', reason: `the last good copy ${this.path}` };
    return {
      version: saved.version,
      document,
      meta,
      ...(typeof saved.epoch === 'string' ? { epoch: saved.epoch } : {}),
    };
  }

  /** `read()`, or undefined when there is no usable copy (the reason is logged at debug). */
  async readIfValid(): Promise<StoredVersion | undefined> {
    try {
      return await this.read();
    } catch (error) {
      this.logger.debug({ err: (error as Error).message, path: this.path }, 'no usable last good copy on disk');
      return undefined;
    }
  }

  /** Saves `stored` atomically; saves are chained, so an older version never lands after a newer one. */
  save(stored: StoredVersion): void {
    const text = `${JSON.stringify({ version: stored.version, epoch: stored.epoch, meta: stored.meta, savedAt: new Date().toISOString(), document: stored.document })}\n`;
    this.saving = this.saving
      // The directory may not exist yet (a fresh host, a configured state dir): create it.
      .then(() => mkdir(path.dirname(this.path), { recursive: true }))
      .then(() => writeFileAtomic(this.path, text))
      .catch((error: unknown) => {
        this.logger.warn({ err: error, path: this.path }, `cannot save the last good routing document: ${(error as Error).message}`);
      });
  }

  /** Resolves when every save started so far has finished (tests, shutdown). */
  flushed(): Promise<void> {
    return this.saving;
  }
}

function isChangeMeta(value: unknown): value is ChangeMeta {
  const meta = value as Partial<ChangeMeta> | null | undefined;
  return typeof meta === 'object' && meta !== null && typeof meta.actor === 'string' && typeof meta.time === 'string' && typeof meta.reason === 'string';
}
