import { lstatSync, statSync, watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { Logger } from '../../observe/log.js';

/** What to watch and whom to tell; times in milliseconds. */
export interface FileWatchOptions {
  readonly path: string;
  /** Events within this window after the first one are coalesced into one notification. */
  readonly debounceMs: number;
  /** Backstop: stat the file this often and notify when it changed; 0 disables the poll. */
  readonly pollMs: number;
  /** Use fs.watch (default true). Tests turn it off to prove the poll alone notices changes. */
  readonly fsWatch: boolean;
  readonly logger: Logger;
  readonly onChange: () => void;
}

/** A running watch of one file. */
export interface FileWatch {
  /** Schedules a notification as if the file changed (after the store's own writes). */
  trigger(): void;
  close(): void;
}

/**
 * Watches one file for changes. fs.watch is put on the directory, not the file: editors and
 * atomic writers replace a file by renaming another over it, and a watch on the old inode would
 * go silent. Events are filtered to the file's name and debounced. A poll of (inode, size, mtime)
 * backs it up, because fs.watch can miss events (network file systems, some containers, a watcher
 * that failed); a failed watcher is logged and re-created on the next poll, never thrown.
 */
export function watchFile(options: FileWatchOptions): FileWatch {
  const dir = dirname(options.path);
  const name = basename(options.path);
  // A symlinked file (a Kubernetes ConfigMap mount: graygate.yaml -> ..data/graygate.yaml) changes
  // when another entry of the directory (..data) is swapped, so there every event counts; a
  // reread of an unchanged file costs one read and changes nothing.
  const anyEntry = isSymlink(options.path);
  let watcher: FSWatcher | undefined;
  let debounce: NodeJS.Timeout | undefined;
  let closed = false;
  let signature = signatureOf(options.path);
  let polling = false;

  const fire = () => {
    debounce = undefined;
    if (closed) return;
    try {
      options.onChange();
    } catch (error) {
      options.logger.error({ err: error, path: options.path }, 'store watch listener threw');
    }
  };
  // Fires at most debounceMs after the first event of a burst (not after the last), so a file
  // that keeps changing still gets noticed.
  const schedule = () => {
    if (closed || debounce) return;
    debounce = setTimeout(fire, options.debounceMs);
  };

  const startWatcher = () => {
    if (!options.fsWatch || watcher || closed) return;
    try {
      const created = watch(dir, { persistent: false }, (_event, filename) => {
        // filename can be null on platforms that do not report it; then any event counts.
        if (anyEntry || filename === null || filename === name) schedule();
      });
      created.on('error', (error) => {
        options.logger.warn({ err: error, dir }, 'file store: watching the directory failed; relying on the poll until it can be watched again');
        created.close();
        if (watcher === created) watcher = undefined;
      });
      watcher = created;
    } catch (error) {
      options.logger.warn({ err: error, dir }, 'file store: cannot watch the directory; relying on the poll');
    }
  };

  const poll = async () => {
    if (polling || closed) return;
    polling = true;
    try {
      startWatcher();
      const now = await statSignature(options.path);
      if (now !== signature) {
        signature = now;
        schedule();
      }
    } finally {
      polling = false;
    }
  };

  startWatcher();
  const pollTimer = options.pollMs > 0 ? setInterval(() => void poll(), options.pollMs) : undefined;
  pollTimer?.unref();

  return {
    trigger: schedule,
    close() {
      closed = true;
      if (debounce) clearTimeout(debounce);
      if (pollTimer) clearInterval(pollTimer);
      watcher?.close();
      watcher = undefined;
    },
  };
}

// A rename-replace changes the inode, an in-place edit the size or mtime; "missing" is a state too.
function signatureOf(path: string): string {
  try {
    const stats = statSync(path, { throwIfNoEntry: false });
    return stats ? `${stats.ino}:${stats.size}:${stats.mtimeMs}` : 'missing';
  } catch (error) {
    return `error:${(error as NodeJS.ErrnoException).code ?? 'unknown'}`;
  }
}

async function statSignature(path: string): Promise<string> {
  try {
    const stats = await stat(path);
    return `${stats.ino}:${stats.size}:${stats.mtimeMs}`;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'missing' : `error:${code ?? 'unknown'}`;
  }
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink() ?? false;
  } catch {
    return false;
  }
}
