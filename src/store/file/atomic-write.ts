import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Replaces `target` with `text` so that a reader sees either the whole old file or the whole new
 * one, never a prefix: the text goes to a temp file in the same directory (rename is atomic only
 * within one file system), is fsynced, then renamed over the target; the directory is fsynced so
 * the rename itself survives a crash. The temp name starts with "." and never equals the target's
 * name, so a watcher filtered to the target ignores it. Throws the fs error (the target is intact).
 */
export async function writeFileAtomic(target: string, text: string, mode?: number): Promise<void> {
  const dir = dirname(target);
  const temp = join(dir, `.${basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', mode ?? 0o644);
  try {
    try {
      await handle.writeFile(text, 'utf8');
      // open() applies the umask; keep the target's own mode, as an in-place edit would.
      if (mode !== undefined) await handle.chmod(mode);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  await syncDirectory(dir);
}

/** fsync a directory so a rename or create in it is durable; some file systems refuse, harmlessly. */
export async function syncDirectory(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // EISDIR/EINVAL/EPERM on file systems that do not support directory fsync: durability is best effort there.
  } finally {
    await handle?.close();
  }
}
