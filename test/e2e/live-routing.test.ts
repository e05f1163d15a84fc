import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startLoad, versionFor } from '../helpers/load.js';

// The real gateway process on the embedded file store, real backends on ephemeral ports.
describe('routing by range and by header, changed live through the config file', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;

  const config = (range: { from: number; to: number }) => ({
    log: { level: 'info' },
    upstreams: {
      'shop-v1': { servers: [stable.url] },
      'shop-v2': { servers: [candidate.url] },
    },
    identity: { sources: [{ header: { name: 'x-user-id' } }, { cookie: { name: 'uid' } }] },
    services: [
      {
        name: 'shop',
        stable: 'shop-v1',
        release: {
          candidate: 'shop-v2',
          state: 'canary',
          rules: [
            { name: 'testers', header: { name: 'x-canary', equals: '1' } },
            { name: 'blocked', to: 'stable', header: { name: 'x-beta', equals: 'never' } },
            { name: 'first-users', uidRange: range },
          ],
        },
      },
    ],
  });

  /** Rewrites the config file the way editors do: a temp file renamed over the original. */
  const rewrite = (text: string) => {
    const temp = `${gateway.configPath}.tmp`;
    writeFileSync(temp, text);
    renameSync(temp, gateway.configPath);
  };

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    gateway = await startGatewayProcess({ config: config({ from: 1, to: 5000 }) });
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('sends a user id inside the range to the candidate and others to stable', async () => {
    expect(await versionFor(gateway.url, { 'x-user-id': '1234' })).toBe('candidate');
    expect(await versionFor(gateway.url, { 'x-user-id': '1' })).toBe('candidate');
    expect(await versionFor(gateway.url, { 'x-user-id': '5000' })).toBe('candidate');
    expect(await versionFor(gateway.url, { 'x-user-id': '5001' })).toBe('stable');
    expect(await versionFor(gateway.url, { 'x-user-id': 'not-a-number' })).toBe('stable');
    expect(await versionFor(gateway.url)).toBe('stable');
    expect(await versionFor(gateway.url, { cookie: 'a=b; uid=77' })).toBe('candidate');
  });

  it('routes by header, and a deny rule keeps matching callers on stable', async () => {
    expect(await versionFor(gateway.url, { 'x-canary': '1' })).toBe('candidate');
    expect(await versionFor(gateway.url, { 'x-canary': '2' })).toBe('stable');
    expect(await versionFor(gateway.url, { 'x-beta': 'never', 'x-user-id': '10' })).toBe('stable');
  });

  it('applies a rule change live, without a restart, while a load loop sees no failure', async () => {
    const pidBefore = gateway.pid;
    expect(await versionFor(gateway.url, { 'x-user-id': '1234' })).toBe('candidate');
    const load = startLoad({ url: gateway.url, maxMs: 300_000, concurrency: 8, headers: { 'x-user-id': '1234' } });
    // Under way before the change and after it was applied (counts, not a time: the box may be slow).
    await eventually(() => expect(load.sent()).toBeGreaterThan(50));
    rewrite(JSON.stringify(config({ from: 1, to: 100 })));
    await eventually(async () => expect(await versionFor(gateway.url, { 'x-user-id': '1234' })).toBe('stable'), { withinMs: 5_000 });
    const applied = load.sent();
    await eventually(() => expect(load.sent()).toBeGreaterThan(applied + 50));
    const result = await load.stop();
    expect(result.failures).toEqual([]);
    expect(result.failed).toBe(0);
    // Both versions answered during the run: before the change and after it.
    expect(result.byVersion.candidate).toBeGreaterThan(0);
    expect(result.byVersion.stable).toBeGreaterThan(0);
    expect(gateway.pid).toBe(pidBefore);
    expect(gateway.child.exitCode).toBeNull();
    expect(await versionFor(gateway.url, { 'x-user-id': '50' })).toBe('candidate');
  });

  it('refuses an invalid edit with a log line naming the field, and keeps the last good rules', async () => {
    const good = readFileSync(gateway.configPath, 'utf8');
    const broken = JSON.parse(good) as ReturnType<typeof config>;
    (broken.services[0]!.release.rules[2] as { uidRange: unknown }).uidRange = { from: '5k', to: 100 };
    rewrite(JSON.stringify(broken));
    await eventually(() => expect(gateway.output()).toMatch(/services\[0\]\.release\.rules\[2\]\.uidRange\.from: expected integer/), {
      withinMs: 5_000,
    });
    // Still the last good rules: 1..100 in, 1234 out.
    expect(await versionFor(gateway.url, { 'x-user-id': '50' })).toBe('candidate');
    expect(await versionFor(gateway.url, { 'x-user-id': '1234' })).toBe('stable');

    // A document that names an unknown upstream is refused too (a semantic check).
    const unknownUpstream = JSON.parse(good) as ReturnType<typeof config>;
    unknownUpstream.services[0]!.release.candidate = 'shop-v3';
    rewrite(JSON.stringify(unknownUpstream));
    await eventually(() => expect(gateway.output()).toMatch(/shop-v3/), { withinMs: 5_000 });
    expect(await versionFor(gateway.url, { 'x-user-id': '50' })).toBe('candidate');

    // An emptied file is an outage, not "no services".
    rewrite('');
    await eventually(() => expect(gateway.output()).toMatch(/the file is empty; refusing to apply it as \\"no services\\"/), { withinMs: 5_000 });
    expect(await versionFor(gateway.url, { 'x-user-id': '50' })).toBe('candidate');

    // A later valid edit applies.
    rewrite(JSON.stringify(config({ from: 1, to: 2000 })));
    await eventually(async () => expect(await versionFor(gateway.url, { 'x-user-id': '1234' })).toBe('candidate'), { withinMs: 5_000 });
    expect(gateway.child.exitCode).toBeNull();
  });
});
