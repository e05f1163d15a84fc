import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { RoutingDocument } from '../../config/schema.js';
import { GraygateError } from '../../errors.js';
import type { StoredVersion } from '../store.js';
import { deepFreeze } from '../../config/freeze.js';
import { syncDirectory } from './atomic-write.js';

/** A stored version plus the hash of its document's canonical JSON, as kept on disk. */
export interface HistoryEntry extends StoredVersion {
  readonly sha256: string;
}

const EntryFile = z.object({
  version: z.number().int().min(1),
  meta: z.object({ actor: z.string(), time: z.string(), reason: z.string() }),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  document: z.unknown(),
});

// Zero-padded so a plain directory listing sorts by version too (handy for people with `ls`).
const ENTRY_NAME = /^(\d{1,15})\.json$/;
const entryName = (version: number) => `${String(version).padStart(10, '0')}.json`;

/**
 * The version history of the file store: one JSON file per version in a directory,
 * `{version, meta: {actor, time, reason}, sha256, document}`. Entries are immutable once written
 * and created with O_EXCL, so two processes can never both claim one version number.
 */
export class HistoryDir {
  /** Entries are immutable, so a parsed entry is cached until it is trimmed away. */
  private readonly cache = new Map<number, HistoryEntry>();

  constructor(
    readonly dir: string,
    private readonly limit: number,
    private readonly validate: (raw: unknown, source: string) => RoutingDocument,
  ) {}

  /** Version numbers kept, newest first. A missing directory is an empty history. */
  async versions(): Promise<number[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw unavailable(`cannot list history directory ${this.dir}`, error);
    }
    const versions: number[] = [];
    for (const name of names) {
      const match = ENTRY_NAME.exec(name);
      if (match) versions.push(Number(match[1]));
    }
    return versions.sort((a, b) => b - a);
  }

  async newest(): Promise<HistoryEntry | undefined> {
    const [newest] = await this.versions();
    return newest === undefined ? undefined : this.read(newest);
  }

  /** One entry; GG_VERSION_UNKNOWN when it is not kept, GG_STORE_CORRUPT when it does not parse. */
  async read(version: number): Promise<HistoryEntry> {
    const cached = this.cache.get(version);
    if (cached) return cached;
    const file = join(this.dir, entryName(version));
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new GraygateError('GG_VERSION_UNKNOWN', `version ${version} is not in the history (${this.dir}); see the history for the versions kept`);
      }
      throw unavailable(`cannot read history entry ${file}`, error);
    }
    let entry: HistoryEntry;
    try {
      const parsed = EntryFile.parse(JSON.parse(text));
      if (parsed.version !== version) throw new Error(`it says version ${parsed.version}`);
      const document = this.validate(parsed.document, file);
      entry = deepFreeze({ version, meta: parsed.meta, sha256: parsed.sha256, document });
    } catch (error) {
      throw new GraygateError('GG_STORE_CORRUPT', `history entry ${file} is malformed: ${(error as Error).message}`, { cause: error });
    }
    this.cache.set(version, entry);
    return entry;
  }

  /**
   * Records `entry`; returns false when that version already exists (another process claimed it).
   * The entry is fsynced before it becomes visible under its name.
   */
  async add(entry: HistoryEntry): Promise<boolean> {
    const file = join(this.dir, entryName(entry.version));
    // Written whole under a temp name, then hard-linked to its final name: link() fails with
    // EEXIST when the version is taken, and a reader never sees a half-written entry.
    const temp = join(this.dir, `.${entryName(entry.version)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    const text = `${JSON.stringify({ version: entry.version, meta: entry.meta, sha256: entry.sha256, document: entry.document }, null, 2)}\n`;
    try {
      await mkdir(this.dir, { recursive: true });
      const handle = await open(temp, 'wx', 0o644);
      try {
        await handle.writeFile(text, 'utf8');
        await handle.sync();
      } finally {
        await handle.close();
      }
      await link(temp, file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw unavailable(`cannot write history entry ${file} (store.historyDir must be a writable directory)`, error);
    } finally {
      await rm(temp, { force: true });
    }
    await syncDirectory(this.dir);
    this.cache.set(entry.version, entry);
    return true;
  }

  /**
   * Takes the cross-process write lock (a file created with O_EXCL in the history directory):
   * while one process writes the routing file and then its history entry, readers in other
   * processes must not record the new file as a hand edit. A lock older than `staleMs` is left
   * by a crashed writer and is broken. Resolves with a release function; throws
   * GG_STORE_UNAVAILABLE when the lock stays taken for `waitMs`.
   */
  async lock(options: { staleMs?: number; waitMs?: number } = {}): Promise<() => Promise<void>> {
    const staleMs = options.staleMs ?? 10_000;
    const deadline = Date.now() + (options.waitMs ?? 5_000);
    const path = this.lockPath;
    await mkdir(this.dir, { recursive: true }).catch((error: unknown) => {
      throw unavailable(`cannot create history directory ${this.dir}`, error);
    });
    for (;;) {
      try {
        const handle = await open(path, 'wx', 0o644);
        await handle.writeFile(`${process.pid}\n`).finally(() => handle.close());
        return () => rm(path, { force: true });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw unavailable(`cannot take the write lock ${path}`, error);
      }
      if (!(await this.isLocked(staleMs))) {
        await rm(path, { force: true }); // stale: its writer died mid-write
        continue;
      }
      if (Date.now() > deadline) {
        throw new GraygateError('GG_STORE_UNAVAILABLE', `another process holds the write lock ${path}; retry shortly (a lock older than ${staleMs} ms is broken)`);
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** True while some process holds a fresh write lock. */
  async isLocked(staleMs = 10_000): Promise<boolean> {
    try {
      const stats = await stat(this.lockPath);
      return Date.now() - stats.mtimeMs < staleMs;
    } catch {
      return false;
    }
  }

  private get lockPath(): string {
    return join(this.dir, '.write.lock');
  }

  /** Removes the oldest entries beyond the limit; the newest is always kept. */
  async trim(): Promise<void> {
    const versions = await this.versions();
    for (const version of versions.slice(this.limit)) {
      this.cache.delete(version);
      await rm(join(this.dir, entryName(version)), { force: true });
    }
  }
}

function unavailable(message: string, cause: unknown): GraygateError {
  return new GraygateError('GG_STORE_UNAVAILABLE', `${message}: ${(cause as Error).message}`, { cause });
}
