import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, deadPort, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { versionFor } from '../helpers/load.js';
import { ALICE, startAdminGateway, type AdminGateway } from './admin-harness.js';
import { graygate } from './cli-runner.js';

let stable: Backend;
let candidate: Backend;
let admin: AdminGateway;
let dir: string;
let env: NodeJS.ProcessEnv;

const routing = () => ({
  upstreams: { 'shop-v1': { servers: [stable.url] }, 'shop-v2': { servers: [candidate.url] } },
  identity: { sources: [{ header: { name: 'x-user-id' } }] },
  services: [{ name: 'shop', stable: 'shop-v1' }],
});

beforeAll(async () => {
  [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
  admin = await startAdminGateway(routing());
  dir = mkdtempSync(path.join(tmpdir(), 'graygate-cli-'));
  env = { GRAYGATE_ADMIN_URL: admin.adminUrl, GRAYGATE_ADMIN_TOKEN: ALICE };
});
afterAll(async () => {
  await admin?.close();
  await Promise.all([stable?.close(), candidate?.close()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const user = (id: number) => versionFor(admin.proxyUrl, { 'x-user-id': String(id) });

// Each case runs the real CLI several times; a process start can take seconds on a busy 2-core box.
describe('graygate CLI over the admin API', { timeout: 300_000 }, () => {
  it('status prints a table, --json the API answer; server and token from flags, env or a config file', async () => {
    const table = await graygate(['status'], env);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/SERVICE\s+STATE\s+STABLE\s+CANDIDATES\s+RULES/);
    expect(table.stdout).toMatch(/shop\s+idle\s+shop-v1\s+-\s+-/);
    const json = await graygate(['status', '--json', '--url', admin.adminUrl, '--token', ALICE]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ ready: true, services: [{ name: 'shop', state: 'idle' }] });
    const file = path.join(dir, 'admin.yaml');
    writeFileSync(file, stringify({ url: admin.adminUrl, token: ALICE }));
    expect((await graygate(['status', '--admin-config', file])).code).toBe(0);
    expect((await graygate(['status'], { GRAYGATE_ADMIN_CONFIG: file })).code).toBe(0);
  });

  it('exit codes say what went wrong: 4 unauthorized, 5 illegal move, 6 not found, 3 unreachable, 2 usage', async () => {
    const unauthorized = await graygate(['status'], { ...env, GRAYGATE_ADMIN_TOKEN: 'wrong-token-0123456789' });
    expect(unauthorized.code).toBe(4);
    expect(unauthorized.stderr).toContain('GG_UNAUTHORIZED');
    const illegal = await graygate(['release', 'full', 'shop', '--reason', 'too early'], env);
    expect(illegal.code).toBe(5);
    expect(illegal.stderr).toContain('GG_ILLEGAL_TRANSITION');
    expect(illegal.stderr).toContain('no canary running');
    const missing = await graygate(['release', 'rollback', 'nope', '--reason', 'r', '--json'], env);
    expect(missing.code).toBe(6);
    expect(JSON.parse(missing.stdout).error.code).toBe('GG_NOT_FOUND');
    const unreachable = await graygate(['status', '--url', `http://127.0.0.1:${await deadPort()}`], env);
    expect(unreachable.code).toBe(3);
    expect((await graygate(['release', 'start', 'shop'], env)).code).toBe(2); // --reason is required
    expect((await graygate(['release', 'start', 'shop', '--reason', 'r', '--uid-range', 'abc'], env)).code).toBe(2);
  });

  it('release start / set / full --wait-drained / finish, then history, diff, restore and explain', async () => {
    const start = await graygate(['release', 'start', 'shop', '--candidate', 'shop-v2', '--uid-range', '1-5000', '--reason', 'canary first users'], env);
    expect(start.stderr).toBe('');
    expect(start.code).toBe(0);
    expect(start.stdout).toMatch(/^shop: idle → canary \(routing version (\d+) → (\d+), by alice\)/);
    await eventually(async () => expect(await user(42)).toBe('candidate'));
    expect(await user(5001)).toBe('stable');
    const explained = await graygate(['explain', '--path', '/', '-H', 'x-user-id: 42'], env);
    expect(explained.stdout).toMatch(/shop → candidate \(shop-v2\) because: uid-range/);

    const set = await graygate(['release', 'set', 'shop', '--uid-range', '1-10', '--reason', 'narrow', '--json'], env);
    expect(JSON.parse(set.stdout)).toMatchObject({ from: 'canary', to: 'canary', changed: true });
    await eventually(async () => expect(await user(42)).toBe('stable'));
    const narrowedVersion = JSON.parse(set.stdout).version as number;

    const diff = await graygate(['diff', String(narrowedVersion - 1), String(narrowedVersion)], env);
    expect(diff.stdout).toContain('~ services[0].release.rules[0].uidRange.ranges[0].to: 5000 → 10');
    const restore = await graygate(['restore', String(narrowedVersion - 1), '--reason', 'undo narrow'], env);
    expect(restore.code).toBe(0);
    await eventually(async () => expect(await user(42)).toBe('candidate'));

    const full = await graygate(['release', 'full', 'shop', '--reason', 'everyone', '--wait-drained', '--timeout', '10000'], env);
    expect(full.code).toBe(0);
    expect(full.stdout).toContain('shop: canary → full');
    expect(full.stdout).toContain('stable of shop has drained');
    expect(await user(9999)).toBe('candidate');
    const finish = await graygate(['release', 'finish', 'shop', '--reason', 'done'], env);
    expect(finish.stdout).toContain('shop: full → idle');
    await eventually(async () => expect(await user(42)).toBe('stable'));
    const again = await graygate(['release', 'rollback', 'shop', '--reason', 'again'], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('already idle; nothing changed');

    const history = await graygate(['history', '-n', '6'], env);
    expect(history.stdout).toMatch(/VERSION\s+TIME\s+ACTOR\s+REASON/);
    expect(history.stdout).toContain('restore version');
    expect(history.stdout).toMatch(/alice\s+done/);
  });

  it('config apply shows the diff and asks; without a terminal or --yes it applies nothing (exit 1)', async () => {
    const got = await graygate(['config', 'get', '--json'], env);
    const { version, document } = JSON.parse(got.stdout);
    const file = path.join(dir, 'routing.yaml');
    writeFileSync(file, stringify({ ...document, upstreams: { ...document.upstreams, spare: { servers: ['http://127.0.0.1:9'] } } }));
    const asked = await graygate(['config', 'apply', file, '--reason', 'add spare'], env);
    expect(asked.code).toBe(1);
    expect(asked.stdout).toContain('+ upstreams.spare:');
    expect(asked.stderr).toContain('pass --yes');
    expect(JSON.parse((await graygate(['config', 'get', '--json'], env)).stdout).version).toBe(version);
    const applied = await graygate(['config', 'apply', file, '--reason', 'add spare', '--yes'], env);
    expect(applied.code).toBe(0);
    expect(applied.stdout).toContain(`applied: routing version ${version} → ${version + 1}`);
    expect((await graygate(['config', 'apply', file, '--reason', 'again', '--yes'], env)).stdout).toContain('no changes');
    writeFileSync(file, stringify({ ...document, services: [{ name: 'shop', stable: 'missing' }] }));
    const invalid = await graygate(['config', 'apply', file, '--reason', 'bad', '--yes'], env);
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toContain('services[0].stable');
    const yaml = await graygate(['config', 'get'], env);
    expect(yaml.stdout).toMatch(/^# routing version \d+, written by alice/);
    expect(yaml.stdout).toContain('spare:');
  });
});
