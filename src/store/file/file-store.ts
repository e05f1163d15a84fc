import { readFile, realpath, stat } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import { isMap, parseDocument } from 'yaml';
import { routingKeys, type FileStoreSettings, type RoutingDocument } from '../../config/schema.js';
import { ConfigError, GraygateError } from '../../errors.js';
import { silentLogger, type Logger } from '../../observe/log.js';
import type { Store, StoredVersion, StoreHealth, WriteRequest } from '../store.js';
import { writeFileAtomic } from './atomic-write.js';
import { deepFreeze } from '../../config/freeze.js';
import { contentHash } from './canonical.js';
import { HistoryDir, type HistoryEntry } from './history.js';
import { hasAnchorsOrAliases, mergeNode } from './yaml-merge.js';
import { watchFile, type FileWatch } from './watch-file.js';

/** Validates a raw routing document; throws ConfigError naming each failing field. */
export type RoutingValidator = (raw: unknown, source: string) => RoutingDocument;

/** What the file store needs beyond its settings: where the config file is, and how to validate. */
export interface FileStoreOptions {
  /**
   * The config file graygate started with (not the routing file): the default routing file, and
   * the base that relative `store.path` and `store.historyDir` are resolved against.
   */
  readonly configPath?: string;
  /** Schema and semantic checks (config/load.ts `parseRoutingDocument`). */
  readonly validate: RoutingValidator;
  readonly logger?: Logger;
  /** Use fs.watch (default true); false leaves only the poll, for tests of the poll. */
  readonly fsWatch?: boolean;
  /** Coalescing window for change events (default 50 ms). */
  readonly debounceMs?: number;
}

/** What the routing file held at one read that validated. */
interface ParsedFile {
  readonly text: string;
  readonly document: RoutingDocument;
  readonly sha256: string;
}

/** Creates the embedded file store; throws ConfigError when no routing file path can be derived. */
export function createFileStore(settings: FileStoreSettings, options: FileStoreOptions): FileStore {
  return new FileStore(settings, options);
}

/**
 * The embedded store: the routing document lives in a YAML or JSON file (by default the config
 * file itself, whose other keys and comments are kept), and each version in a history directory
 * beside it. A hand edit of the file becomes a new version (actor `file`) when it validates; an
 * invalid, emptied or routing-less file is refused with a ConfigError and nothing is recorded.
 * Writes are compare-and-set, atomic (temp file + fsync + rename), serialized in the process and,
 * through a lock file in the history directory, across the processes (workers) sharing the store.
 */
export class FileStore implements Store {
  readonly kind = 'file';
  /** Local disk: no outage to bound, but a write still has a documented budget. */
  readonly deadlineMs = 2_000;
  /** The file store holds no plain keys and serves one gateway. */
  readonly keyReader = undefined;
  readonly fleet = undefined;
  /** The routing file. */
  readonly path: string;
  readonly historyDir: string;
  private readonly format: 'json' | 'yaml';
  private readonly entries: HistoryDir;
  private readonly validate: RoutingValidator;
  private readonly logger: Logger;
  private readonly watches = new Set<FileWatch>();
  /** Every read and write runs in this chain: recording versions must not interleave. */
  private chain: Promise<unknown> = Promise.resolve();
  /** The last file text that parsed and validated, so an unchanged file is not validated again. */
  private lastParsed: ParsedFile | undefined;
  /** The last refused text and why, so an unchanged bad file is not parsed again on every poll. */
  private lastRefused: { text: string; error: ConfigError } | undefined;
  /** True while this store holds the write lock (its own sync must not defer to it). */
  private writing = false;
  private retrigger: NodeJS.Timeout | undefined;

  constructor(
    private readonly settings: FileStoreSettings,
    private readonly options: FileStoreOptions,
  ) {
    const base = options.configPath ? dirname(resolve(options.configPath)) : process.cwd();
    const path = settings.path ? resolve(base, settings.path) : options.configPath ? resolve(options.configPath) : undefined;
    if (!path) {
      throw new ConfigError(['store.path: required when graygate is not started with a config file (the file store needs a file to hold the routing document)']);
    }
    this.path = path;
    this.historyDir = settings.historyDir ? resolve(base, settings.historyDir) : `${path}.history`;
    this.format = extname(path).toLowerCase() === '.json' ? 'json' : 'yaml';
    this.validate = options.validate;
    this.logger = options.logger ?? silentLogger();
    this.entries = new HistoryDir(this.historyDir, settings.historyLimit, (raw, source) => this.validateDocument(raw, source));
  }

  /** The current version; records a valid hand edit first. Throws ConfigError or GG_STORE_UNAVAILABLE. */
  current(): Promise<StoredVersion> {
    return this.exclusive(() => this.sync());
  }

  /** Compare-and-set write of `document` as the next version; GG_VERSION_CONFLICT when `expectedVersion` is stale. */
  write(document: RoutingDocument, request: WriteRequest): Promise<StoredVersion> {
    return this.exclusive(async () => {
      const release = await this.entries.lock();
      this.writing = true;
      try {
        return await this.writeLocked(document, request);
      } finally {
        this.writing = false;
        await release();
      }
    });
  }

  /** The write, under the in-process chain and the cross-process lock. */
  private async writeLocked(document: RoutingDocument, request: WriteRequest): Promise<HistoryEntry> {
    // Re-read the file first so an unrecorded hand edit counts as a version of its own (and
    // makes this write stale). A refused or missing file leaves the last recorded version
    // current, and a write may then repair the file.
    let current: HistoryEntry | undefined;
    try {
      current = await this.sync();
    } catch (error) {
      if (!(error instanceof ConfigError) && !isMissingFile(error)) throw error;
      current = await this.entries.newest();
    }
    const currentVersion = current?.version ?? 0;
    if (request.expectedVersion !== currentVersion) {
      throw new GraygateError(
        'GG_VERSION_CONFLICT',
        `the write named version ${request.expectedVersion}, but the current version is ${currentVersion}; read it again and retry`,
      );
    }
    // Validated again so what is hashed is exactly what a later read of the file yields.
    const validated = this.validateDocument(document, `write by ${request.actor}`);
    const sha256 = contentHash(validated);
    const text = await this.render(validated);
    const target = await realpath(this.path).catch(() => this.path); // write through a symlink, not over it
    const mode = await stat(target).then((stats) => stats.mode & 0o777, () => undefined);
    try {
      await writeFileAtomic(target, text, mode);
    } catch (error) {
      throw new GraygateError('GG_STORE_UNAVAILABLE', `cannot write the routing file ${this.path}: ${(error as Error).message}`, { cause: error });
    }
    const entry: HistoryEntry = deepFreeze({
      version: currentVersion + 1,
      meta: { actor: request.actor, time: new Date().toISOString(), reason: request.reason },
      sha256,
      document: validated,
    });
    if (!(await this.entries.add(entry))) {
      // Only another process writing through the same store gets here.
      throw new GraygateError('GG_VERSION_CONFLICT', `version ${entry.version} was recorded by another process meanwhile; read again and retry`);
    }
    await this.entries.trim();
    this.lastParsed = { text, document: validated, sha256 };
    for (const watch of this.watches) watch.trigger();
    return entry;
  }

  /** Versions kept, newest first (at most `limit`). */
  history(options: { limit?: number } = {}): Promise<StoredVersion[]> {
    return this.exclusive(async () => {
      const versions = await this.entries.versions();
      const limit = options.limit !== undefined && options.limit >= 0 ? options.limit : versions.length;
      const entries: HistoryEntry[] = [];
      for (const version of versions.slice(0, limit)) entries.push(await this.entries.read(version));
      return entries;
    });
  }

  /** One kept version; GG_VERSION_UNKNOWN when it is not kept. */
  version(version: number): Promise<StoredVersion> {
    if (!Number.isSafeInteger(version) || version < 1) {
      return Promise.reject(new GraygateError('GG_VERSION_UNKNOWN', `version ${version} is not in the history; versions are integers from 1`));
    }
    return this.exclusive(() => this.entries.read(version));
  }

  /** Notifies `onChange` (debounced) when the file may have changed; returns a function that stops it. */
  watch(onChange: () => void): () => void {
    const watch = watchFile({
      path: this.path,
      debounceMs: this.options.debounceMs ?? 50,
      pollMs: this.settings.pollMs,
      fsWatch: this.options.fsWatch ?? true,
      logger: this.logger,
      onChange,
    });
    this.watches.add(watch);
    return () => {
      watch.close();
      this.watches.delete(watch);
    };
  }

  /** Stops every watch; pending reads and writes finish. */
  /** A local file is always there to read (a broken one is a refusal, not an outage). */
  health(): StoreHealth {
    return { up: true, everUp: true };
  }

  async close(): Promise<void> {
    for (const watch of this.watches) watch.close();
    this.watches.clear();
    if (this.retrigger) clearTimeout(this.retrigger);
    this.retrigger = undefined;
    await this.chain;
  }

  /** Tells the watchers to read again shortly (after another process's write completes). */
  private retriggerSoon(): void {
    if (this.retrigger || this.watches.size === 0) return;
    this.retrigger = setTimeout(() => {
      this.retrigger = undefined;
      for (const watch of this.watches) watch.trigger();
    }, 50);
    this.retrigger.unref();
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.chain.then(work, work);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Reads the file and returns its version, recording it first when it is new. Call in `exclusive`. */
  private async sync(): Promise<HistoryEntry> {
    const parsed = await this.readFile();
    for (let attempt = 0; attempt < 5; attempt++) {
      const newest = await this.entries.newest();
      if (newest && newest.sha256 === parsed.sha256) return newest;
      if (!this.writing && (await this.entries.isLocked())) {
        // Another process is between writing the file and recording its version: what the file
        // holds is its write, not a hand edit. Answer the last recorded version and look again soon.
        this.retriggerSoon();
        if (newest) return newest;
        throw new GraygateError('GG_STORE_UNAVAILABLE', `the routing file ${this.path} is being written by another process; retry shortly`);
      }
      const entry: HistoryEntry = deepFreeze({
        version: (newest?.version ?? 0) + 1,
        meta: { actor: 'file', time: new Date().toISOString(), reason: newest ? 'file edited' : 'first version, read from the file' },
        sha256: parsed.sha256,
        document: parsed.document,
      });
      if (await this.entries.add(entry)) {
        await this.entries.trim();
        this.logger.info({ version: entry.version, path: this.path }, `file store: the file changed; recorded it as version ${entry.version}`);
        return entry;
      }
      // Another process recorded that version number meanwhile: look again.
    }
    throw new GraygateError('GG_STORE_UNAVAILABLE', `file store: could not record a version in ${this.historyDir} (other processes keep writing it)`);
  }

  /** The file's routing document, validated; throws ConfigError when refused, GG_STORE_UNAVAILABLE when unreadable. */
  private async readFile(): Promise<ParsedFile> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? (error as Error).message})`;
      throw new GraygateError('GG_STORE_UNAVAILABLE', `the routing file ${this.path} ${why}; the last good version stays`, { cause: error });
    }
    if (this.lastParsed?.text === text) return this.lastParsed;
    if (this.lastRefused?.text === text) throw this.lastRefused.error;
    try {
      const document = this.validateDocument(this.routingPart(text), this.path);
      this.lastParsed = { text, document, sha256: contentHash(document) };
      this.lastRefused = undefined;
      return this.lastParsed;
    } catch (error) {
      if (error instanceof ConfigError) this.lastRefused = { text, error };
      throw error;
    }
  }

  /**
   * The routing keys of the file. An empty file, or one without any routing key, is refused: it is
   * what an editor leaves mid-save or a mistake, and applying it would route nothing (an outage).
   */
  private routingPart(text: string): Record<string, unknown> {
    const refuse = (issue: string, code?: 'GG_CONFIG_UNREADABLE') => new ConfigError([issue], { source: this.path, ...(code ? { code } : {}) });
    const emptyNote = 'refusing to apply it as "no services" (an editor may be mid-save); the last good version stays';
    if (text.trim() === '') throw refuse(`the file is empty; ${emptyNote}`);
    let value: unknown;
    if (this.format === 'json') {
      try {
        value = JSON.parse(text);
      } catch (error) {
        throw refuse(`does not parse as JSON: ${(error as Error).message}`, 'GG_CONFIG_UNREADABLE');
      }
    } else {
      const document = parseDocument(text);
      if (document.errors.length > 0) {
        throw refuse(`does not parse as YAML: ${document.errors.map((e) => e.message.split('\n')[0]).join('; ')}`, 'GG_CONFIG_UNREADABLE');
      }
      value = document.toJS();
    }
    if (value === null || value === undefined) throw refuse(`the file holds no document (only comments); ${emptyNote}`);
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw refuse(`(top level): expected a mapping with ${routingKeys.join(', ')}, got ${Array.isArray(value) ? 'a list' : typeof value}`);
    }
    const routing: Record<string, unknown> = {};
    for (const key of routingKeys) {
      if (key in value) routing[key] = (value as Record<string, unknown>)[key];
    }
    if (Object.keys(routing).length === 0) {
      throw refuse(`${routingKeys.join(', ')}: missing; the file holds no routing document; ${emptyNote.replace(' (an editor may be mid-save)', '')}`);
    }
    return routing;
  }

  private validateDocument(raw: unknown, source: string): RoutingDocument {
    try {
      return deepFreeze(this.validate(raw, source));
    } catch (error) {
      if (error instanceof ConfigError) throw error;
      throw new ConfigError([(error as Error).message], { source, cause: error });
    }
  }

  /** The new file text: the routing keys set to `document`, every other key and comment kept. */
  private async render(document: RoutingDocument): Promise<string> {
    let text = '';
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new GraygateError('GG_STORE_UNAVAILABLE', `cannot read the routing file ${this.path}: ${(error as Error).message}`, { cause: error });
      }
    }
    const unwritable = (why: string) =>
      new ConfigError([`${why}; the routing document was not written, so the file's other keys are not lost: fix the file by hand`], {
        source: this.path,
        code: 'GG_CONFIG_UNREADABLE',
      });
    if (this.format === 'json') {
      let value: unknown = {};
      if (text.trim() !== '') {
        try {
          value = JSON.parse(text);
        } catch (error) {
          throw unwritable(`does not parse as JSON (${(error as Error).message})`);
        }
      }
      if (value === null || typeof value !== 'object' || Array.isArray(value)) throw unwritable('the top level is not an object');
      const merged: Record<string, unknown> = { ...(value as Record<string, unknown>) };
      for (const key of routingKeys) merged[key] = document[key];
      return `${JSON.stringify(merged, null, 2)}\n`;
    }
    const yaml = parseDocument(text);
    if (yaml.errors.length > 0) throw unwritable(`does not parse as YAML (${yaml.errors[0]?.message.split('\n')[0]})`);
    if (yaml.contents !== null && !isMap(yaml.contents)) throw unwritable('the top level is not a mapping');
    for (const key of routingKeys) {
      const existing: unknown = yaml.get(key, true);
      // Anchored or aliased nodes are shared: changing one in place would change the others too.
      const mergeable = existing !== undefined && !hasAnchorsOrAliases(existing);
      yaml.set(key, mergeable ? mergeNode(yaml, existing, document[key]) : yaml.createNode(document[key]));
    }
    return yaml.toString();
  }
}

function isMissingFile(error: unknown): boolean {
  return error instanceof GraygateError && error.code === 'GG_STORE_UNAVAILABLE' && (error.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}
