import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseRoutingDocument } from '../../src/config/load.js';
import { FileStoreSettings, type RoutingDocument } from '../../src/config/schema.js';
import { ConfigError, GraygateError } from '../../src/errors.js';
import { ConfigSync } from '../../src/gateway/config-sync.js';
import { createLogger } from '../../src/observe/log.js';
import { identityCompiler } from '../../src/identity/request-identity.js';
import { compileRouting } from '../../src/rules/compile.js';
import type { RoutingSnapshot } from '../../src/rules/snapshot.js';
import { createFileStore, type FileStore } from '../../src/store/file/file-store.js';
import type { Store, StoredVersion } from '../../src/store/store.js';
import { eventually } from '../helpers/eventually.js';
import { contractDocument } from '../store/contract.js';
import { ScriptedStoreBase } from '../helpers/scripted-store.js';

/** The real compiler with the real identity chain, as the gateway runs it. */
const compileWithIdentity = (document: Parameters<typeof compileRouting>[0], version: number) => compileRouting(document, version, { identity: identityCompiler() });

const opened: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (opened.length > 0) await opened.pop()!();
});

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** A real file store on a temp config file, a ConfigSync on it, the snapshots it applied and its log. */
async function setup(options: { document?: RoutingDocument | string; pollMs?: number; store?: (store: FileStore) => Store; initial?: RoutingSnapshot } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'gg-config-sync-'));
  opened.push(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'graygate.yaml');
  const document = options.document ?? contractDocument(0);
  await writeFile(path, typeof document === 'string' ? document : yamlConfig(document));
  const fileStore = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: options.pollMs ?? 0 }), { configPath: path, validate: parseRoutingDocument });
  opened.push(() => fileStore.close());
  const lines: LogLine[] = [];
  const logger = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as LogLine);
        callback();
      },
    }),
  });
  const applied: RoutingSnapshot[] = [];
  const sync = new ConfigSync({
    store: options.store ? options.store(fileStore) : fileStore,
    // The real compiler, plus one refusal the tests can trigger: a service named "refused-by-compile".
    compile: (doc, version) => {
      if (doc.services.some((s) => s.name === 'refused-by-compile')) throw new ConfigError(['services[0].name: refused by the compiler under test']);
      return compileRouting(doc, version, { identity: identityCompiler() });
    },
    apply: (snapshot) => applied.push(snapshot),
    logger,
    ...(options.initial ? { initial: options.initial } : {}),
  });
  opened.push(() => sync.stop());
  return { sync, store: fileStore, path, dir, applied, lines };
}

function yamlConfig(document: RoutingDocument): string {
  return `listen: 127.0.0.1:9090 # settings stay\n${stringify(document)}`;
}

async function renameReplace(path: string, text: string): Promise<void> {
  const temp = `${path}.edit-${Math.random().toString(36).slice(2)}`;
  await writeFile(temp, text);
  await rename(temp, path);
}

const named = (n: number, name: string): RoutingDocument => {
  const doc = structuredClone(contractDocument(n));
  (doc.services[0] as { name: string }).name = name;
  return doc;
};

describe('ConfigSync', () => {
  it('start() reads, compiles and applies the current version', async () => {
    const { sync, applied } = await setup();
    const snapshot = await sync.start();
    expect(snapshot.version).toBe(1);
    expect(applied).toEqual([snapshot]);
    expect(sync.version).toBe(1);
    expect(snapshot.matchService('shop.example.com', '/')?.name).toBe('shop');
    expect(sync.stats()).toMatchObject({ version: 1, applied: 1, refused: 0, storeErrors: 0, lastError: undefined });
  });

  it('applies a newer version when the file is edited (watch), and ignores rereads of the same one', async () => {
    const { sync, path, applied } = await setup();
    await sync.start();
    await renameReplace(path, yamlConfig(contractDocument(1)));
    await eventually(() => expect(sync.version).toBe(2), { withinMs: 3_000 });
    expect(applied.at(-1)?.document).toEqual(contractDocument(1));
    await Promise.all([sync.refresh(), sync.refresh()]);
    await sync.refresh();
    expect(applied.map((s) => s.version)).toEqual([1, 2]);
    expect(sync.stats().applied).toBe(2);
  });

  it('applies writes made through the store', async () => {
    const { sync, store, applied } = await setup();
    await sync.start();
    await store.write(contractDocument(4), { expectedVersion: 1, actor: 'api', reason: 'via API' });
    await eventually(() => expect(sync.version).toBe(2), { withinMs: 3_000 });
    expect(applied.at(-1)?.document).toEqual(contractDocument(4));
  });

  it('never goes back to an older version (history reset under it), and says so', async () => {
    const { sync, store, path, applied, lines } = await setup();
    await sync.start();
    await store.write(contractDocument(1), { expectedVersion: 1, actor: 'api', reason: 'two' });
    await store.write(contractDocument(2), { expectedVersion: 2, actor: 'api', reason: 'three' });
    await sync.refresh();
    expect(sync.version).toBe(3);
    // Renamed away in one step, so a watch-triggered read sees the whole history or none of it.
    await rename(`${path}.history`, `${path}.history-old`);
    await renameReplace(path, yamlConfig(contractDocument(9)));
    await sync.refresh();
    expect((await store.current()).version).toBeLessThan(3);
    expect(sync.version).toBe(3);
    // A watch-triggered read may have applied version 2 on the way; nothing after 3 was applied.
    expect(applied.at(-1)?.version).toBe(3);
    expect(applied.every((s, i) => i === 0 || s.version > applied[i - 1]!.version)).toBe(true);
    expect(lines.some((l) => l.msg.includes('older than the version 3 being served'))).toBe(true);
  });

  it('keeps the last good snapshot on an invalid edit, logs it once with the field, counts it, then applies a fix', async () => {
    const { sync, path, applied, lines } = await setup();
    const good = await sync.start();
    await renameReplace(path, yamlConfig(contractDocument(0)).replace('http://127.0.0.1:10000', 'not-a-url'));
    await sync.refresh();
    await sync.refresh();
    await sync.refresh();
    expect(sync.snapshot).toBe(good);
    const stats = sync.stats();
    expect(stats).toMatchObject({ version: 1, applied: 1, refused: 1 });
    expect(stats.lastError).toMatchObject({ kind: 'refused', code: 'GG_CONFIG_INVALID' });
    expect(stats.lastError?.issues.join('\n')).toContain('upstreams.stable.servers[0]');
    const refusals = lines.filter((l) => l.msg.startsWith('routing document refused'));
    expect(refusals).toHaveLength(1);
    expect(refusals[0]?.msg).toContain('still serving version 1');
    expect(JSON.stringify(refusals[0]?.issues)).toContain('upstreams.stable.servers[0]');

    await renameReplace(path, yamlConfig(contractDocument(3)));
    await sync.refresh();
    expect(sync.version).toBe(2);
    expect(applied.map((s) => s.version)).toEqual([1, 2]);
    expect(sync.stats().lastError).toBeUndefined();
  });

  it('refuses an emptied file or one without routing keys instead of applying "no services"', async () => {
    const { sync, path } = await setup();
    const good = await sync.start();
    await writeFile(path, '');
    await sync.refresh();
    expect(sync.snapshot).toBe(good);
    expect(sync.stats().lastError?.message).toContain('empty');
    await writeFile(path, 'listen: 127.0.0.1:9090\n');
    await sync.refresh();
    expect(sync.snapshot).toBe(good);
    expect(sync.stats().lastError?.message).toContain('upstreams, services, identity: missing');
    expect(sync.stats()).toMatchObject({ version: 1, applied: 1, refused: 2 });
    expect(good.matchService('shop.example.com', '/')?.name).toBe('shop');
  });

  it('counts a version the compiler refuses once, however often it is reread', async () => {
    const { sync, store, lines } = await setup();
    await sync.start();
    await store.write(named(1, 'refused-by-compile'), { expectedVersion: 1, actor: 'api', reason: 'bad' });
    for (let i = 0; i < 5; i++) await sync.refresh();
    expect(sync.stats()).toMatchObject({ version: 1, refused: 1 });
    expect(sync.stats().lastError).toMatchObject({ kind: 'refused', version: 2 });
    expect(lines.filter((l) => l.msg.startsWith('routing document refused'))).toHaveLength(1);
    await store.write(contractDocument(5), { expectedVersion: 2, actor: 'api', reason: 'fixed' });
    await sync.refresh();
    expect(sync.version).toBe(3);
  });

  it('coalesces a burst of refreshes: one read in flight, at most one queued', async () => {
    let reads = 0;
    let inFlight = 0;
    let maxInFlight = 0;
    const { sync } = await setup({
      store: (store) => ({
        kind: store.kind,
        current: async () => {
          reads++;
          maxInFlight = Math.max(maxInFlight, ++inFlight);
          try {
            return await store.current();
          } finally {
            inFlight--;
          }
        },
        write: (d, r) => store.write(d, r),
        history: (o) => store.history(o),
        version: (v) => store.version(v),
        watch: (f) => store.watch(f),
        health: () => store.health(),
        deadlineMs: store.deadlineMs,
        keyReader: undefined,
        fleet: undefined,
        close: () => store.close(),
      }),
    });
    await sync.start();
    reads = 0;
    await Promise.all(Array.from({ length: 100 }, () => sync.refresh()));
    expect(reads).toBeLessThanOrEqual(2);
    expect(reads).toBeGreaterThanOrEqual(1);
    expect(maxInFlight).toBe(1);
  });

  it('ends on the final version after 100 rapid writes, with no error', async () => {
    const { sync, store } = await setup();
    await sync.start();
    let version = 1;
    for (let n = 1; n <= 100; n++) version = (await store.write(contractDocument(n), { expectedVersion: version, actor: 'api', reason: `burst ${n}` })).version;
    await eventually(() => expect(sync.version).toBe(101), { withinMs: 5_000 });
    expect(sync.snapshot?.document).toEqual(contractDocument(100));
    expect(sync.stats()).toMatchObject({ refused: 0, storeErrors: 0, lastError: undefined });
    expect(sync.stats().applied).toBeLessThanOrEqual(101);
  });

  it('ends on the final content after 100 rapid hand edits, with no error', async () => {
    const { sync, path } = await setup({ pollMs: 100 });
    await sync.start();
    for (let n = 1; n <= 100; n++) await renameReplace(path, yamlConfig(contractDocument(n)));
    await eventually(() => expect(sync.snapshot?.document).toEqual(contractDocument(100)), { withinMs: 5_000 });
    expect(sync.stats()).toMatchObject({ refused: 0, storeErrors: 0, lastError: undefined });
    expect(sync.version).toBeGreaterThanOrEqual(2);
  });

  it('survives a store outage: nothing changes, errors are counted, logged at a bounded rate, then it recovers', async () => {
    const { sync, path, lines } = await setup();
    const good = await sync.start();
    await rm(path);
    for (let i = 0; i < 20; i++) await sync.refresh();
    expect(sync.snapshot).toBe(good);
    // 20 refreshes, plus perhaps one the watcher started when the file went away.
    expect(sync.stats()).toMatchObject({ version: 1, applied: 1, refused: 0 });
    expect(sync.stats().storeErrors).toBeGreaterThanOrEqual(20);
    expect(sync.stats().storeErrors).toBeLessThanOrEqual(21);
    expect(sync.stats().lastError).toMatchObject({ kind: 'outage', code: 'GG_STORE_UNAVAILABLE' });
    expect(lines.filter((l) => l.msg.startsWith('store read failed')).length).toBe(1);

    await writeFile(path, yamlConfig(contractDocument(6)));
    await sync.refresh();
    expect(sync.version).toBe(2);
    expect(sync.stats().lastError).toBeUndefined();
    expect(lines.some((l) => l.msg === 'store answered again')).toBe(true);
  });

  it('start() throws the first read error when there is nothing to serve, and stops watching', async () => {
    const { sync } = await setup({ document: 'listen: 127.0.0.1:9090\nupstreams: {}\nservices: [{name: shop, stable: nowhere}]\n' });
    const error = await sync.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message).toContain('nowhere');
    expect(sync.snapshot).toBeUndefined();
  });

  it('start() with an initial snapshot serves it when the first read fails', async () => {
    const initial = compileRouting(contractDocument(7), 41, { identity: identityCompiler() });
    const { sync, path } = await setup({ document: '', initial });
    expect(await sync.start()).toBe(initial);
    expect(sync.stats().lastError?.kind).toBe('refused');
    await writeFile(path, yamlConfig(contractDocument(8)));
    await sync.refresh();
    // The store numbers from 1, below the initial 41: not applied (only newer versions are).
    expect(sync.version).toBe(41);
  });

  it('with bootFromHistory, boots from the newest recorded version when the file is invalid at start', async () => {
    const first = await setup();
    await first.sync.start();
    await first.store.write(contractDocument(5), { expectedVersion: 1, actor: 'api', reason: 'last good' });
    first.sync.stop();
    await first.store.close();
    await writeFile(first.path, 'listen: 127.0.0.1:9090\n'); // routing keys gone while the gateway was down

    const store = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 0 }), { configPath: first.path, validate: parseRoutingDocument });
    opened.push(() => store.close());
    const applied: RoutingSnapshot[] = [];
    const sync = new ConfigSync({ store, compile: compileWithIdentity, apply: (s) => applied.push(s), logger: createLogger({ level: 'silent' }), bootFromHistory: true });
    opened.push(() => sync.stop());
    const snapshot = await sync.start();
    expect(snapshot.version).toBe(2);
    expect(snapshot.document).toEqual(contractDocument(5));
    expect(sync.stats().lastError).toMatchObject({ kind: 'refused', code: 'GG_CONFIG_INVALID' });
    // A good edit later is applied as usual.
    await writeFile(first.path, yamlConfig(contractDocument(6)));
    await sync.refresh();
    expect(sync.version).toBe(3);
    expect(sync.stats().lastError).toBeUndefined();
  });

  it('with lastGood, saves each applied document and boots from it when the store cannot be read', async () => {
    const first = await setup();
    const lastGoodPath = join(first.dir, 'last-good.json');
    const lastGood = { path: lastGoodPath, validate: parseRoutingDocument };
    const saving = new ConfigSync({ store: first.store, compile: compileWithIdentity, apply: () => undefined, logger: createLogger({ level: 'silent' }), lastGood });
    opened.push(() => saving.stop());
    await saving.start();
    await first.store.write(contractDocument(4), { expectedVersion: 1, actor: 'api', reason: 'v2' });
    await saving.refresh();
    await saving.flushed();
    expect(JSON.parse(await readFile(lastGoodPath, 'utf8'))).toMatchObject({ version: 2, document: contractDocument(4) });
    saving.stop();

    // The store goes away (the routing file is gone); a restarted gateway serves version 2 from disk.
    await rm(first.path);
    const applied: RoutingSnapshot[] = [];
    const restarted = new ConfigSync({ store: first.store, compile: compileWithIdentity, apply: (s) => applied.push(s), logger: createLogger({ level: 'silent' }), lastGood });
    opened.push(() => restarted.stop());
    const snapshot = await restarted.start();
    expect(snapshot.version).toBe(2);
    expect(snapshot.document).toEqual(contractDocument(4));
    expect(restarted.stats().lastError).toMatchObject({ kind: 'outage', code: 'GG_STORE_UNAVAILABLE' });
    // The store comes back with a newer version: applied as usual.
    await writeFile(first.path, yamlConfig(contractDocument(5)));
    await restarted.refresh();
    expect(restarted.version).toBe(3);
  });

  it('with lastGood, a damaged copy on disk is not trusted: start() throws the store error', async () => {
    const { store, path, dir } = await setup();
    const lastGoodPath = join(dir, 'last-good.json');
    await writeFile(lastGoodPath, JSON.stringify({ version: 7, document: { upstreams: {}, services: [{ name: 'x', stable: 'nowhere' }] } }));
    await rm(path);
    const sync = new ConfigSync({
      store,
      compile: compileWithIdentity,
      apply: () => undefined,
      logger: createLogger({ level: 'silent' }),
      lastGood: { path: lastGoodPath, validate: parseRoutingDocument },
    });
    opened.push(() => sync.stop());
    const error = await sync.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((error as GraygateError).code).toBe('GG_STORE_UNAVAILABLE');
    expect(sync.snapshot).toBeUndefined();
  });

  it('applies nothing after stop()', async () => {
    const { sync, store } = await setup();
    await sync.start();
    sync.stop();
    await store.write(contractDocument(2), { expectedVersion: 1, actor: 'api', reason: 'after stop' });
    await sync.refresh();
    expect(sync.version).toBe(1);
  });
});

type Step = { kind: 'ok'; version: number; delay: number } | { kind: 'outage' | 'invalid'; delay: number };

/**
 * A store that answers current() from a script, each answer after `delay` microtask turns: the
 * collaborator is faked so the property can drive any order of answers; ConfigSync is real.
 */
class ScriptedStore extends ScriptedStoreBase {
  readonly kind = 'scripted';
  readonly okVersionsRead: number[] = [];
  inFlight = 0;
  maxInFlight = 0;
  /** Reads are numbered in the order they start; the number of the last one to finish. */
  started = 0;
  lastFinished = 0;
  private next = 0;
  constructor(private readonly script: readonly Step[]) {
    super();
  }
  async current(): Promise<StoredVersion> {
    const id = ++this.started;
    const step = this.script[this.next++ % this.script.length]!;
    this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
    for (let i = 0; i < step.delay; i++) await Promise.resolve();
    this.inFlight--;
    this.lastFinished = id;
    if (step.kind !== 'ok') {
      throw step.kind === 'outage' ? new GraygateError('GG_STORE_UNAVAILABLE', 'scripted outage') : new ConfigError(['services[0].stable: scripted refusal']);
    }
    this.okVersionsRead.push(step.version);
    // A version number names one write: the same meta every time it is read.
    return { version: step.version, document: contractDocument(step.version), meta: { actor: 'script', time: new Date(step.version * 1_000).toISOString(), reason: 'script' } };
  }
}

describe('ConfigSync: properties', () => {
  const step: fc.Arbitrary<Step> = fc.oneof(
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('ok' as const), version: fc.integer({ min: 1, max: 40 }), delay: fc.nat(5) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('outage' as const, 'invalid' as const), delay: fc.nat(5) }) },
  );

  it('whatever the store answers and however refreshes interleave: one read at a time, applied versions only grow, the newest read is served', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 12 }), fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 8 }), async (script, bursts) => {
        const store = new ScriptedStore(script);
        const applied: number[] = [];
        const sync = new ConfigSync({ store, compile: compileWithIdentity, apply: (s) => applied.push(s.version), logger: createLogger({ level: 'silent' }) });
        const pending: Promise<void>[] = [];
        for (const burst of bursts) {
          for (let i = 0; i < burst; i++) {
            // A refresh promises a read that began after it was asked for.
            const startedBefore = store.started;
            pending.push(sync.refresh().then(() => expect(store.lastFinished).toBeGreaterThan(startedBefore)));
          }
          await Promise.resolve();
        }
        await Promise.all(pending);
        expect(store.maxInFlight).toBe(1);
        expect(applied.every((v, i) => i === 0 || v > applied[i - 1]!)).toBe(true);
        const newest = store.okVersionsRead.length > 0 ? Math.max(...store.okVersionsRead) : undefined;
        expect(sync.version).toBe(newest);
        expect(sync.stats().applied).toBe(applied.length);
        sync.stop();
      }),
      { numRuns: 200 },
    );
  });
});
