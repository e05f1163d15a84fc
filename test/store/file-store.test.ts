import { chmod, mkdtemp, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { readFileSync, watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify } from 'yaml';
import { parseRoutingDocument } from '../../src/config/load.js';
import { FileStoreSettings, type RoutingDocument } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import { createFileStore, FileStore, type FileStoreOptions } from '../../src/store/file/file-store.js';
import { eventually } from '../helpers/eventually.js';
import { contractDocument, expectCode } from './contract.js';

const opened: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (opened.length > 0) await opened.pop()!();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'gg-file-store-'));
  opened.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A YAML config file holding settings, comments and `document`; and a store on it. */
async function yamlStore(
  document: RoutingDocument = contractDocument(0),
  settings: Partial<FileStoreSettings> = {},
  options: Partial<FileStoreOptions> = {},
): Promise<{ store: FileStore; path: string; dir: string }> {
  const dir = await tempDir();
  const path = join(dir, 'graygate.yaml');
  await writeFile(path, yamlConfig(document));
  const store = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0, ...settings }), {
    configPath: path,
    validate: parseRoutingDocument,
    ...options,
  });
  opened.push(() => store.close());
  return { store, path, dir };
}

function yamlConfig(document: RoutingDocument): string {
  return `# graygate config: settings first\nlisten: 127.0.0.1:9090 # the proxy port\nlog:\n  level: warn\n# routing below, edited live\n${stringify(document)}`;
}

/** Replaces the file the way editors and `mv` do: a new file renamed over the old one. */
async function renameReplace(path: string, text: string): Promise<void> {
  const temp = `${path}.edit-${Math.random().toString(36).slice(2)}`;
  await writeFile(temp, text);
  await rename(temp, path);
}

/** Rewrites the file in place (same inode), the way `>` in a shell or some editors do. */
async function editInPlace(path: string, text: string): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.truncate(0);
    await handle.write(text, 0);
  } finally {
    await handle.close();
  }
}

describe('FileStore: the file is the truth', () => {
  it('records the file as version 1, then a hand edit as a new version by actor "file"', async () => {
    const { store, path } = await yamlStore();
    const first = await store.current();
    expect(first).toMatchObject({ version: 1, meta: { actor: 'file' } });
    expect(first.document).toEqual(contractDocument(0));

    await renameReplace(path, yamlConfig(contractDocument(1)));
    const edited = await store.current();
    expect(edited).toMatchObject({ version: 2, meta: { actor: 'file', reason: 'file edited' } });
    expect(edited.document).toEqual(contractDocument(1));
    expect((await store.history()).map((h) => h.version)).toEqual([2, 1]);
  });

  it('does not make a version of an edit that changes only comments, formatting or key order', async () => {
    const { store, path } = await yamlStore();
    expect((await store.current()).version).toBe(1);
    const reordered = { identity: contractDocument(0).identity, services: contractDocument(0).services, upstreams: contractDocument(0).upstreams };
    await renameReplace(path, `# a new comment\nlisten: 127.0.0.1:9090\n${stringify(reordered, { indent: 4 })}`);
    expect((await store.current()).version).toBe(1);
    expect(await store.history()).toHaveLength(1);
  });

  it('refuses an invalid hand edit with a ConfigError naming the field, records nothing, and records a later valid edit', async () => {
    const { store, path } = await yamlStore();
    await store.current();
    const broken = yamlConfig(contractDocument(0)).replace('http://127.0.0.1:10000', 'not-a-url');
    await renameReplace(path, broken);
    const error = await store.current().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).code).toBe('GG_CONFIG_INVALID');
    expect((error as ConfigError).message).toContain('upstreams.stable.servers[0]');
    expect((await store.history()).map((h) => h.version)).toEqual([1]);

    await renameReplace(path, yamlConfig(contractDocument(5)));
    const fixed = await store.current();
    expect(fixed.version).toBe(2);
    expect(fixed.document).toEqual(contractDocument(5));
  });

  it('refuses YAML that does not parse with GG_CONFIG_UNREADABLE, and a write then leaves the file alone', async () => {
    const { store, path } = await yamlStore();
    const v1 = await store.current();
    const garbage = `${yamlConfig(contractDocument(0))}\nservices: [\n`;
    await editInPlace(path, garbage);
    await expectCode(store.current(), 'GG_CONFIG_UNREADABLE');
    const refused = await expectCode(store.write(contractDocument(2), { expectedVersion: v1.version, actor: 'api', reason: 'x' }), 'GG_CONFIG_UNREADABLE');
    expect(refused.message).toContain('fix the file by hand');
    expect(await readFile(path, 'utf8')).toBe(garbage);
    expect((await store.history()).map((h) => h.version)).toEqual([1]);
  });

  it.each([
    ['an emptied file', ''],
    ['a truncated file (whitespace)', '\n  \n'],
    ['a file of comments only', '# nothing here yet\n'],
  ])('refuses %s as an outage-like ConfigError, never as "no services"', async (_what, text) => {
    const { store, path } = await yamlStore();
    await store.current();
    await editInPlace(path, text);
    const error = await expectCode(store.current(), 'GG_CONFIG_INVALID');
    expect(error.message).toMatch(/empty|no document/);
    expect(error.message).toContain('no services');
    expect((await store.history()).map((h) => h.version)).toEqual([1]);
  });

  it('refuses a config file whose routing keys vanished (settings only), naming the missing keys', async () => {
    const { store, path } = await yamlStore();
    await store.current();
    await renameReplace(path, 'listen: 127.0.0.1:9090\nlog:\n  level: warn\n');
    const error = await expectCode(store.current(), 'GG_CONFIG_INVALID');
    expect(error.message).toContain('upstreams, services, identity: missing');
    expect((await store.history()).map((h) => h.version)).toEqual([1]);
  });

  it('reports a missing file as GG_STORE_UNAVAILABLE (an outage), and records nothing', async () => {
    const { store, path } = await yamlStore();
    await store.current();
    await rm(path);
    await expectCode(store.current(), 'GG_STORE_UNAVAILABLE');
    expect((await store.history()).map((h) => h.version)).toEqual([1]);
  });

  it('two stores on one file (two worker processes) record one hand edit as one version', async () => {
    const { store, path } = await yamlStore();
    const other = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0 }), { configPath: path, validate: parseRoutingDocument });
    opened.push(() => other.close());
    expect((await other.current()).version).toBe(1);
    await renameReplace(path, yamlConfig(contractDocument(2)));
    const [a, b] = await Promise.all([store.current(), other.current()]);
    expect(a.version).toBe(2);
    expect(b.version).toBe(2);
    expect((await store.history()).map((h) => h.version)).toEqual([2, 1]);
  });

  it('a reader in another process does not take a write in progress for a hand edit (write lock)', async () => {
    const { store: writer, path } = await yamlStore();
    // The reader reacts at once (no debounce) to land inside the writer's file-then-history window.
    const reader = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0 }), { configPath: path, validate: parseRoutingDocument, debounceMs: 0 });
    opened.push(() => reader.close());
    const seen: number[] = [];
    const readerErrors: unknown[] = [];
    const stop = reader.watch(() => void reader.current().then((v) => seen.push(v.version), (e: unknown) => readerErrors.push(e)));
    opened.push(async () => stop());
    let version = (await writer.current()).version;
    for (let n = 1; n <= 20; n++) version = (await writer.write(contractDocument(n), { expectedVersion: version, actor: 'api', reason: `w${n}` })).version;
    expect(version).toBe(21);
    await eventually(() => expect(seen.at(-1)).toBe(21), { withinMs: 5_000 });
    const history = await writer.history();
    expect(history.map((h) => h.version)).toEqual(Array.from({ length: 21 }, (_, i) => 21 - i));
    expect(history.filter((h) => h.meta.actor === 'file').map((h) => h.version)).toEqual([1]);
    expect(readerErrors).toEqual([]);
  });

  it('relative store.path and historyDir are resolved against the config file directory', async () => {
    const dir = await tempDir();
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(dir, 'conf', 'routing'), { recursive: true });
    await writeFile(join(dir, 'conf', 'routing', 'live.yaml'), stringify(contractDocument(0)));
    const store = createFileStore(FileStoreSettings.parse({ kind: 'file', path: 'routing/live.yaml', historyDir: 'hist', pollMs: 0 }), {
      configPath: join(dir, 'conf', 'graygate.yaml'),
      validate: parseRoutingDocument,
    });
    opened.push(() => store.close());
    expect(store.path).toBe(join(dir, 'conf', 'routing', 'live.yaml'));
    expect(store.historyDir).toBe(join(dir, 'conf', 'hist'));
    expect((await store.current()).version).toBe(1);
    expect(await readdir(join(dir, 'conf', 'hist'))).toEqual(['0000000001.json']);
  });

  it('needs a path: without a config file or store.path the constructor throws a ConfigError naming store.path', () => {
    expect(() => createFileStore(FileStoreSettings.parse({ kind: 'file' }), { validate: parseRoutingDocument })).toThrow(/store\.path/);
  });
});

describe('FileStore: writes', () => {
  it('keeps the settings keys and comments of a YAML config file', async () => {
    const { store, path } = await yamlStore();
    const v1 = await store.current();
    await store.write(contractDocument(3), { expectedVersion: v1.version, actor: 'api', reason: 'edit' });
    const text = await readFile(path, 'utf8');
    expect(text).toContain('# graygate config: settings first');
    expect(text).toContain('# the proxy port');
    expect(text.startsWith('# graygate config: settings first\nlisten: 127.0.0.1:9090')).toBe(true);
    const parsed = parseYaml(text) as Record<string, unknown>;
    expect(parsed.listen).toBe('127.0.0.1:9090');
    expect(parsed.log).toEqual({ level: 'warn' });
    expect(parseRoutingDocument({ upstreams: parsed.upstreams, services: parsed.services, identity: parsed.identity })).toEqual(contractDocument(3));
    // Reading back what was written is the same version, not a hand edit.
    expect((await store.current()).version).toBe(2);
  });

  it('keeps comments inside the routing keys where the write left the value alone', async () => {
    const dir = await tempDir();
    const path = join(dir, 'graygate.yaml');
    const text = [
      'listen: 127.0.0.1:9090',
      'upstreams:',
      '  # the production pool',
      '  stable: { servers: [http://127.0.0.1:10000] }',
      '  candidate:',
      '    servers:',
      '      - http://127.0.0.1:9999 # canary box',
      'identity: { sources: [{ header: { name: x-user-id } }] }',
      'services:',
      '  # the shop, owned by team a',
      '  - name: shop',
      '    match: { host: shop.example.com }',
      '    stable: stable',
      '    release:',
      '      candidate: candidate',
      '      rules:',
      '        - name: range-0',
      '          uidRange: { ranges: [{ from: 1, to: 1000 }] } # first thousand',
      '',
    ].join('\n');
    await writeFile(path, text);
    const store = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0 }), { configPath: path, validate: parseRoutingDocument });
    opened.push(() => store.close());
    const v1 = await store.current();
    expect(v1.document).toEqual(contractDocument(0));
    await store.write(contractDocument(5), { expectedVersion: v1.version, actor: 'api', reason: 'wider range' });
    const written = await readFile(path, 'utf8');
    for (const comment of ['# the production pool', '# canary box', '# the shop, owned by team a', '# first thousand']) expect(written).toContain(comment);
    expect(written).toContain('to: 1005');
    expect(await store.current()).toMatchObject({ version: 2, meta: { actor: 'api' } });
  });

  it('a write through YAML with anchors and aliases replaces the shared nodes instead of editing them in place', async () => {
    const dir = await tempDir();
    const path = join(dir, 'graygate.yaml');
    await writeFile(
      path,
      'upstreams:\n  stable: { servers: &pool [http://127.0.0.1:10000] }\n  candidate: { servers: *pool }\nservices: [{ name: shop, stable: stable }]\n',
    );
    const store = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0 }), { configPath: path, validate: parseRoutingDocument });
    opened.push(() => store.close());
    const v1 = await store.current();
    const next = structuredClone(v1.document) as RoutingDocument;
    (next.upstreams.stable!.servers as string[])[0] = 'http://127.0.0.1:10001';
    await store.write(next, { expectedVersion: v1.version, actor: 'api', reason: 'move stable' });
    const after = await store.current();
    expect(after.version).toBe(2);
    expect(after.document.upstreams.stable?.servers).toEqual(['http://127.0.0.1:10001']);
    expect(after.document.upstreams.candidate?.servers).toEqual(['http://127.0.0.1:10000']);
  });

  it('whatever the file held, after write(B) the file reads back as exactly B (property)', async () => {
    const dir = await tempDir();
    await fc.assert(
      fc.asyncProperty(routingInput, routingInput, fc.constantFrom('block', 'flow'), async (a, b, style) => {
        const path = join(dir, `p-${Math.random().toString(36).slice(2)}.yaml`);
        const routing =
          style === 'flow'
            ? Object.entries(a).map(([key, value]) => `${key}: ${stringify(value, { collectionStyle: 'flow' })}`).join('')
            : stringify(a);
        await writeFile(path, `# settings\nlisten: 1234 # port\n${routing}`);
        const store = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0 }), { configPath: path, validate: parseRoutingDocument });
        try {
          const v1 = await store.current();
          const docB = parseRoutingDocument(b, 'b');
          const written = await store.write(docB, { expectedVersion: v1.version, actor: 'prop', reason: 'b' });
          const again = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0 }), { configPath: path, validate: parseRoutingDocument });
          const reread = await again.current();
          expect(reread.version).toBe(written.version);
          expect(reread.document).toEqual(docB);
          expect((parseYaml(await readFile(path, 'utf8')) as { listen: unknown }).listen).toBe(1234);
        } finally {
          await store.close();
        }
      }),
      { numRuns: 25 },
    );
  });

  it('keeps a JSON file JSON, with its other keys', async () => {
    const dir = await tempDir();
    const path = join(dir, 'graygate.json');
    await writeFile(path, JSON.stringify({ listen: 9091, ...contractDocument(0), log: { level: 'error' } }, null, 2));
    const store = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0 }), { configPath: path, validate: parseRoutingDocument });
    opened.push(() => store.close());
    const v1 = await store.current();
    await store.write(contractDocument(4), { expectedVersion: v1.version, actor: 'api', reason: 'json' });
    const parsed = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
    expect(parsed.listen).toBe(9091);
    expect(parsed.log).toEqual({ level: 'error' });
    expect(parsed.upstreams).toEqual(contractDocument(4).upstreams);
    expect(await readdir(join(dir, 'graygate.json.history'))).toEqual(['0000000001.json', '0000000002.json']);
  });

  it('counts an unrecorded hand edit before the compare-and-set, so a write based on the old version conflicts', async () => {
    const { store, path } = await yamlStore();
    const v1 = await store.current();
    await renameReplace(path, yamlConfig(contractDocument(6)));
    await expectCode(store.write(contractDocument(7), { expectedVersion: v1.version, actor: 'api', reason: 'stale' }), 'GG_VERSION_CONFLICT');
    const current = await store.current();
    expect(current).toMatchObject({ version: 2, meta: { actor: 'file' } });
    expect(current.document).toEqual(contractDocument(6));
  });

  it('lets a write repair a file whose hand edit was refused (the last recorded version is current)', async () => {
    const { store, path } = await yamlStore();
    const v1 = await store.current();
    await editInPlace(path, '');
    await expectCode(store.current(), 'GG_CONFIG_INVALID');
    const repaired = await store.write(contractDocument(8), { expectedVersion: v1.version, actor: 'api', reason: 'repair' });
    expect(repaired.version).toBe(2);
    expect((await store.current()).document).toEqual(contractDocument(8));
  });

  it('is atomic: a reader looping during many writes always reads a whole, valid document', async () => {
    const { store, path } = await yamlStore();
    let version = (await store.current()).version;
    let writing = true;
    let reads = 0;
    const failures: string[] = [];
    const reader = (async () => {
      const deadline = Date.now() + 20_000;
      while (writing && Date.now() < deadline) {
        const text = await readFile(path, 'utf8');
        reads++;
        try {
          const raw = parseYaml(text) as Record<string, unknown>;
          parseRoutingDocument({ upstreams: raw.upstreams, services: raw.services, identity: raw.identity });
        } catch (error) {
          failures.push((error as Error).message);
        }
      }
    })();
    try {
      for (let n = 1; n <= 60; n++) {
        version = (await store.write(contractDocument(n), { expectedVersion: version, actor: 'api', reason: `write ${n}` })).version;
      }
    } finally {
      writing = false;
      await reader;
    }
    expect(failures).toEqual([]);
    expect(reads).toBeGreaterThan(10);
    expect(version).toBe(61);
    // No temp files left behind.
    expect((await readdir(join(path, '..'))).filter((name) => name.includes('tmp') || name.includes('edit'))).toEqual([]);
  });

  it('writes through a symlinked config file, keeping the link', async () => {
    const dir = await tempDir();
    const real = join(dir, 'real.yaml');
    const link = join(dir, 'graygate.yaml');
    await writeFile(real, yamlConfig(contractDocument(0)));
    await symlink(real, link);
    await chmod(real, 0o600);
    const store = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0 }), { configPath: link, validate: parseRoutingDocument });
    opened.push(() => store.close());
    const v1 = await store.current();
    await store.write(contractDocument(9), { expectedVersion: v1.version, actor: 'api', reason: 'via link' });
    const { lstat, stat } = await import('node:fs/promises');
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect((await stat(real)).mode & 0o777).toBe(0o600);
    expect(await readFile(real, 'utf8')).toContain('10009');
  });
});

describe('FileStore: history', () => {
  it('trims history to historyLimit, newest kept', async () => {
    const { store, path } = await yamlStore(contractDocument(0), { historyLimit: 3 });
    let version = (await store.current()).version;
    for (let n = 1; n <= 5; n++) version = (await store.write(contractDocument(n), { expectedVersion: version, actor: 'api', reason: `n${n}` })).version;
    expect((await store.history()).map((h) => h.version)).toEqual([6, 5, 4]);
    expect(await readdir(`${path}.history`)).toHaveLength(3);
    await expectCode(store.version(3), 'GG_VERSION_UNKNOWN');
    expect((await store.version(4)).document).toEqual(contractDocument(3));
  });

  it('keeps numbering after a restart (a new store on the same file)', async () => {
    const { store, path } = await yamlStore();
    const v1 = await store.current();
    await store.write(contractDocument(2), { expectedVersion: v1.version, actor: 'api', reason: 'before restart' });
    await store.close();
    const again = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0 }), { configPath: path, validate: parseRoutingDocument });
    opened.push(() => again.close());
    expect(await again.current()).toMatchObject({ version: 2, meta: { actor: 'api', reason: 'before restart' } });
  });

  it('reports a damaged history entry as GG_STORE_CORRUPT', async () => {
    const { store, path } = await yamlStore();
    const v1 = await store.current();
    await store.write(contractDocument(2), { expectedVersion: v1.version, actor: 'api', reason: 'x' });
    await writeFile(join(`${path}.history`, '0000000001.json'), '{"version": 1, "meta": ');
    // A fresh store (a restart): entries already read are cached, as they are immutable.
    const fresh = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0 }), { configPath: path, validate: parseRoutingDocument });
    opened.push(() => fresh.close());
    const error = await expectCode(fresh.version(1), 'GG_STORE_CORRUPT');
    expect(error.message).toContain('0000000001.json');
    expect((await fresh.current()).version).toBe(2);
  });
});

describe('FileStore: watch', () => {
  const watched = async (options: { fsWatch?: boolean; pollMs?: number } = {}) => {
    const { store, path } = await yamlStore(contractDocument(0), { pollMs: options.pollMs ?? 0 }, { fsWatch: options.fsWatch ?? true });
    await store.current();
    let calls = 0;
    const stop = store.watch(() => calls++);
    opened.push(async () => stop());
    return { store, path, calls: () => calls };
  };

  it('notices an editor-style rename-replace of the file', async () => {
    const { store, path, calls } = await watched();
    await renameReplace(path, yamlConfig(contractDocument(1)));
    await eventually(() => expect(calls()).toBeGreaterThan(0), { withinMs: 3_000 });
    expect((await store.current()).version).toBe(2);
  });

  it('notices an in-place edit of the file', async () => {
    const { store, path, calls } = await watched();
    await editInPlace(path, yamlConfig(contractDocument(2)));
    await eventually(() => expect(calls()).toBeGreaterThan(0), { withinMs: 3_000 });
    expect((await store.current()).version).toBe(2);
  });

  it('ignores other files in the directory', async () => {
    const { store, path } = await yamlStore(contractDocument(0), { pollMs: 0 }, { debounceMs: 1 });
    // Each notification records whether the real change had begun by then.
    let changing = false;
    const notified: boolean[] = [];
    const stop = store.watch(() => notified.push(changing));
    opened.push(async () => stop());
    // Barrier: once a watcher of our own has seen the unrelated file, the store's watcher has
    // received that event too; with a 1 ms debounce it would fire before the change below.
    const dir = join(path, '..');
    const seen = new Promise<void>((resolve) => {
      const own = watch(dir, (_event, name) => {
        if (name === 'unrelated.txt') {
          own.close();
          resolve();
        }
      });
    });
    await writeFile(join(dir, 'unrelated.txt'), 'x');
    await seen;
    const temp = join(dir, 'graygate.yaml.new'); // another name in the directory: ignored too
    await writeFile(temp, yamlConfig(contractDocument(1)));
    changing = true;
    await rename(temp, path);
    await eventually(() => expect(notified.length).toBeGreaterThan(0), { withinMs: 3_000 });
    expect(notified[0]).toBe(true);
  });

  it('debounces a burst of edits into few notifications', async () => {
    const { store, path } = await yamlStore(contractDocument(0), { pollMs: 0 });
    // Each notification records what the file held then; the last one must see the final edit.
    const contents: string[] = [];
    const stop = store.watch(() => contents.push(readFileSync(path, 'utf8')));
    opened.push(async () => stop());
    for (let n = 1; n <= 20; n++) await editInPlace(path, yamlConfig(contractDocument(n)));
    await eventually(() => expect(contents.at(-1)).toContain('10020'), { withinMs: 3_000 });
    // 20 edits are 40+ fs events; undebounced, each would have notified before the last one did.
    expect(contents.length).toBeLessThanOrEqual(10);
  });

  it('notices a Kubernetes ConfigMap-style update (the ..data symlink swapped), without the poll', async () => {
    const dir = await tempDir();
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(dir, '..v1'));
    await writeFile(join(dir, '..v1', 'graygate.yaml'), yamlConfig(contractDocument(0)));
    await symlink('..v1', join(dir, '..data'));
    await symlink('..data/graygate.yaml', join(dir, 'graygate.yaml'));
    const store = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0 }), { configPath: join(dir, 'graygate.yaml'), validate: parseRoutingDocument });
    opened.push(() => store.close());
    expect((await store.current()).version).toBe(1);
    let calls = 0;
    const stop = store.watch(() => calls++);
    opened.push(async () => stop());
    // The kubelet's update: a new timestamped directory, a temp link to it, renamed over ..data.
    await mkdir(join(dir, '..v2'));
    await writeFile(join(dir, '..v2', 'graygate.yaml'), yamlConfig(contractDocument(2)));
    await symlink('..v2', join(dir, '..data_tmp'));
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    await eventually(() => expect(calls).toBeGreaterThan(0), { withinMs: 3_000 });
    expect(await store.current()).toMatchObject({ version: 2, document: contractDocument(2) });
  });

  it('catches a change by the poll alone when fs.watch is off', async () => {
    const { store, path, calls } = await watched({ fsWatch: false, pollMs: 50 });
    await editInPlace(path, yamlConfig(contractDocument(3)));
    await eventually(() => expect(calls()).toBeGreaterThan(0), { withinMs: 3_000 });
    expect((await store.current()).document).toEqual(contractDocument(3));
    // And a rename-replace (new inode) as well.
    const before = calls();
    await renameReplace(path, yamlConfig(contractDocument(4)));
    await eventually(() => expect(calls()).toBeGreaterThan(before), { withinMs: 3_000 });
  });

  it('close() stops the watchers: nothing fires after it', async () => {
    const { store, path, calls } = await watched({ pollMs: 20 });
    await store.close();
    const before = calls();
    await renameReplace(path, yamlConfig(contractDocument(1)));
    // A second, still-open store on the same file proves the change was noticeable.
    const witness = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 20 }), { configPath: path, validate: parseRoutingDocument });
    opened.push(() => witness.close());
    let witnessed = 0;
    witness.watch(() => witnessed++);
    await renameReplace(path, yamlConfig(contractDocument(2)));
    await eventually(() => expect(witnessed).toBeGreaterThan(0), { withinMs: 3_000 });
    expect(calls()).toBe(before);
  });
});

/** Raw routing documents that pass validation: 1-4 upstreams, 0-3 services on distinct routes, optional releases. */
const routingInput = fc
  .record({
    upstreams: fc.uniqueArray(fc.constantFrom('a', 'b', 'c', 'd'), { minLength: 1, maxLength: 4 }),
    ports: fc.array(fc.array(fc.integer({ min: 1024, max: 65535 }), { minLength: 1, maxLength: 3 }), { minLength: 4, maxLength: 4 }),
    timeout: fc.option(fc.integer({ min: 1, max: 60_000 }), { nil: undefined }),
    services: fc.uniqueArray(
      fc.record({
        route: fc.constantFrom('x.example.com/', 'x.example.com/api', 'y.example.com/', '*/v2', '*/'),
        stable: fc.nat(3),
        release: fc.option(fc.record({ candidate: fc.nat(3), state: fc.constantFrom('idle', 'canary', 'full'), to: fc.integer({ min: 1, max: 1_000_000 }) }), { nil: undefined }),
      }),
      { maxLength: 3, selector: (s) => s.route },
    ),
  })
  .map(({ upstreams, ports, timeout, services }) => ({
    upstreams: Object.fromEntries(
      upstreams.map((name, i) => [
        name,
        { servers: ports[i]!.map((port) => `http://127.0.0.1:${port}`), ...(timeout !== undefined && i === 0 ? { timeouts: { connectMs: timeout } } : {}) },
      ]),
    ),
    services: services.map((service, i) => {
      const [host, prefix] = service.route.split(/\/(.*)/s) as [string, string];
      return {
        name: `svc-${i}`,
        match: { ...(host === '*' ? {} : { host }), pathPrefix: `/${prefix}` },
        stable: upstreams[service.stable % upstreams.length]!,
        ...(service.release
          ? {
              release: {
                candidate: upstreams[service.release.candidate % upstreams.length]!,
                state: service.release.state,
                rules: [{ uidRange: { ranges: [{ from: 1, to: service.release.to }] } }],
              },
            }
          : {}),
      };
    }),
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
  }))
  .filter((raw) => {
    try {
      parseRoutingDocument(raw, 'generated');
      return true;
    } catch {
      return false;
    }
  });
