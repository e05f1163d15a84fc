import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALICE, startAdminGateway, type AdminGateway } from '../control/admin-harness.js';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { cliPath } from '../helpers/gateway-process.js';

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Process groups of CLI runs still going: killed when the file ends, pass or fail. */
const running = new Set<number>();
const killGroup = (pid: number) => {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
  running.delete(pid);
};

/**
 * Runs the real CLI (`node dist/cli/main.js …`) in its own process group. With `closeStdout`,
 * the read end of its stdout is closed before it writes, as `graygate status | head -0` would.
 * A run that has not ended after `capMs` (a regression that started a gateway) is killed.
 */
function runCli(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; closeStdout?: boolean; capMs?: number } = {}): Promise<Run> {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: '/nonexistent', GRAYGATE_WORKERS: '1', ...options.env };
  const child = spawn(process.execPath, [cliPath, ...args], { cwd: options.cwd ?? tmpdir(), env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  running.add(child.pid!);
  let stdout = '';
  let stderr = '';
  if (options.closeStdout) child.stdout.destroy();
  else child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve, reject) => {
    const cap = setTimeout(() => {
      killGroup(child.pid!);
      reject(new Error(`graygate ${args.join(' ')} did not end within ${options.capMs ?? 60_000} ms; stderr: ${stderr}`));
    }, options.capMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(cap);
      // A --workers run's workers share the group: none may outlive the run.
      killGroup(child.pid!);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A loopback port held by something else for the whole file. */
async function holdPort(): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

let dir: string;
let stable: Backend;
let candidate: Backend;
let admin: AdminGateway;
let taken: { port: number; close(): Promise<void> };
let unreachable: string;
const file = (name: string) => path.join(dir, name);
const adminEnv = () => ({ GRAYGATE_ADMIN_URL: admin.adminUrl, GRAYGATE_ADMIN_TOKEN: ALICE });
const routing = () => ({
  upstreams: { 'shop-v1': { servers: [stable.url] }, 'shop-v2': { servers: [candidate.url] } },
  identity: { sources: [{ header: { name: 'x-user-id' } }] },
  services: [{ name: 'shop', stable: 'shop-v1' }],
});
/** A config file that would start, with `overrides` on top. */
const config = (name: string, overrides: Record<string, unknown>) => {
  writeFileSync(file(name), stringify({ listen: '127.0.0.1:0', log: { level: 'warn' }, ...routing(), ...overrides }));
  return file(name);
};

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'graygate-failures-'));
  [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
  admin = await startAdminGateway(routing());
  taken = await holdPort();
  unreachable = `http://127.0.0.1:${await deadPort()}`;
  // The 5 MB file: a routing document with an allow list of 600,000 ids.
  const ids = Array.from({ length: 600_000 }, (_, i) => 1_000_000 + i);
  writeFileSync(
    file('huge.json'),
    JSON.stringify({ ...routing(), services: [{ name: 'shop', stable: 'shop-v1', release: { candidate: 'shop-v2', state: 'canary', rules: [{ name: 'list', uidList: { ids } }] } }] }),
  );
  writeFileSync(file('broken.yaml'), 'listen: [\n');
});
afterAll(async () => {
  for (const pid of [...running]) killGroup(pid);
  await admin?.close();
  await Promise.all([stable?.close(), candidate?.close(), taken?.close()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Case {
  name: string;
  args: () => string[];
  env?: () => NodeJS.ProcessEnv;
  cwd?: () => string;
  code: number;
  /** What the one line on stderr says. */
  says: () => RegExp;
}

const cases: Case[] = [
  // Usage errors: exit 2, from commander or from a flag's value.
  { name: 'an unknown command', args: () => ['frobnicate'], code: 2, says: () => /^graygate: unknown command 'frobnicate'; see `graygate --help`$/ },
  { name: 'a mistyped command', args: () => ['stauts'], code: 2, says: () => /^graygate: unknown command 'stauts' \(Did you mean status\?\); see `graygate --help`$/ },
  { name: 'an unknown option', args: () => ['status', '--frob'], code: 2, says: () => /unknown option '--frob'; see `graygate status --help`$/ },
  { name: 'a missing --reason', args: () => ['release', 'start', 'shop'], code: 2, says: () => /required option '--reason <text>' not specified; see `graygate release start --help`$/ },
  { name: 'a missing argument', args: () => ['validate'], code: 2, says: () => /missing required argument 'file'; see `graygate validate --help`$/ },
  { name: 'a bad --url', args: () => ['status', '--url', 'not a url'], code: 2, says: () => /--url: expected the admin API's address like http:\/\/127\.0\.0\.1:9901, got "not a url"$/ },
  { name: 'a bad GRAYGATE_ADMIN_URL', args: () => ['status'], env: () => ({ GRAYGATE_ADMIN_URL: 'ftp://x' }), code: 2, says: () => /GRAYGATE_ADMIN_URL: expected the admin API's address/ },
  { name: 'a missing --admin-config', args: () => ['status', '--admin-config', file('nope.yaml')], code: 2, says: () => /--admin-config: .*nope\.yaml does not exist/ },
  { name: 'an unreadable --admin-config', args: () => ['status', '--admin-config', dir], code: 2, says: () => /--admin-config: cannot read .*: is a directory/ },
  { name: 'a bad --uid-range', args: () => ['release', 'start', 'shop', '--reason', 'r', '--uid-range', 'abc'], env: adminEnv, code: 2, says: () => /--uid-range: expected FROM-TO like 1-5000, got "abc"$/ },
  { name: 'a missing --rules file', args: () => ['release', 'set', 'shop', '--reason', 'r', '--rules', `@${file('nope.json')}`], env: adminEnv, code: 2, says: () => /--rules: cannot read .*nope\.json: no such file$/ },
  { name: 'a bad --timeout', args: () => ['release', 'full', 'shop', '--reason', 'r', '--wait-drained', '--timeout', 'soon'], env: adminEnv, code: 2, says: () => /--timeout: expected milliseconds like 60000, got "soon"$/ },
  { name: 'a bad --expect-version', args: () => ['restore', '1', '--reason', 'r', '--expect-version', 'x'], env: adminEnv, code: 2, says: () => /--expect-version: expected a version number, got "x"$/ },
  { name: 'a bad --limit', args: () => ['history', '--limit', '0'], env: adminEnv, code: 2, says: () => /--limit: expected a number of versions from 1 to 1000, got "0"$/ },
  { name: 'a missing file to apply', args: () => ['config', 'apply', file('nope.yaml'), '--reason', 'r'], env: adminEnv, code: 2, says: () => /cannot read .*nope\.yaml/ },
  // Answers of the admin API.
  { name: 'a wrong token', args: () => ['status'], env: () => ({ ...adminEnv(), GRAYGATE_ADMIN_TOKEN: 'wrong-token-0123456789' }), code: 4, says: () => /^graygate: GG_UNAUTHORIZED: .*--token, GRAYGATE_ADMIN_TOKEN/ },
  { name: 'no token', args: () => ['status'], env: () => ({ GRAYGATE_ADMIN_URL: admin.adminUrl }), code: 4, says: () => /^graygate: GG_UNAUTHORIZED: missing Authorization.*--token or GRAYGATE_ADMIN_TOKEN$/ },
  { name: 'no admin API there', args: () => ['status', '--url', unreachable], code: 3, says: () => /^graygate: unreachable: cannot reach the admin API at http:\/\/127\.0\.0\.1:\d+ \(.*ECONNREFUSED.*\); .*--url/ },
  { name: 'an unknown service', args: () => ['release', 'start', 'nope', '--reason', 'r'], env: adminEnv, code: 6, says: () => /^graygate: GG_NOT_FOUND: service "nope" is not defined/ },
  { name: 'an illegal lifecycle move', args: () => ['release', 'finish', 'shop', '--reason', 'r'], env: adminEnv, code: 5, says: () => /^graygate: GG_ILLEGAL_TRANSITION: / },
  {
    name: 'a 5 MB document',
    args: () => ['config', 'apply', file('huge.json'), '--reason', 'too big', '--yes'],
    env: adminEnv,
    code: 1,
    says: () => /^graygate: GG_BODY_TOO_LARGE: document too large \(limit 1048576 bytes, admin\.bodyLimitBytes of the gateway\): this one is \d{7} bytes; /,
  },
  // validate.
  { name: 'validate: no such file', args: () => ['validate', file('nope.yaml')], code: 1, says: () => /nope\.yaml: cannot read config file: no such file \(GG_CONFIG_UNREADABLE\)$/ },
  { name: 'validate: broken YAML', args: () => ['validate', file('broken.yaml')], code: 1, says: () => /broken\.yaml: invalid YAML at line 2, column 1: .* \(GG_CONFIG_UNREADABLE\)$/ },
  // start: flags.
  { name: 'start: no config', args: () => ['start'], cwd: () => dir, code: 2, says: () => /^graygate start: no config file: pass --config FILE/ },
  {
    name: 'start: --redis without a scheme',
    args: () => ['start', '--redis', 'localhost:6379', '--stable', stable.url, '--candidate', candidate.url],
    code: 2,
    says: () => /^graygate start: --redis: expected redis:\/\/\[:password@\]host:port\[\/db\], .*, got "localhost:6379"$/,
  },
  {
    name: 'start: a bad --stable',
    args: () => ['start', '--redis', 'redis://127.0.0.1:1', '--stable', 'notaurl', '--candidate', candidate.url],
    code: 2,
    says: () => /^graygate start: --stable: expected a server URL like http:\/\/127\.0\.0\.1:8080, got "notaurl"$/,
  },
  { name: 'start: a bad --listen', args: () => ['start', '--config', config('ok.yaml', {}), '--listen', 'foo:bar'], code: 2, says: () => /^graygate start: --listen: expected host:port or a port .*, got "foo:bar"$/ },
  { name: 'start: a bad --workers', args: () => ['start', '--config', config('ok.yaml', {}), '--workers', 'many'], code: 2, says: () => /^graygate start: --workers: expected a whole number from 1 to 256 or "auto", got "many"$/ },
  { name: 'start: a bad GRAYGATE_WORKERS', args: () => ['start', '--config', config('ok.yaml', {})], env: () => ({ GRAYGATE_WORKERS: 'zz' }), code: 2, says: () => /^graygate start: GRAYGATE_WORKERS: expected/ },
  { name: 'start: a bad --log-level', args: () => ['start', '--config', config('ok.yaml', {}), '--log-level', 'loud'], code: 2, says: () => /argument 'loud' is invalid\. Allowed choices are .*; see `graygate start --help`$/ },
  // start: the config file and the machine.
  { name: 'start: no such config file', args: () => ['start', '--config', file('nope.yaml')], code: 1, says: () => /^graygate: cannot start: .*nope\.yaml: cannot read config file: no such file \(GG_CONFIG_UNREADABLE\)$/ },
  { name: 'start: a directory as config', args: () => ['start', '--config', dir], code: 1, says: () => /^graygate: cannot start: .*: cannot read config file: is a directory \(GG_CONFIG_UNREADABLE\)$/ },
  {
    name: 'start: an invalid config',
    args: () => ['start', '--config', config('invalid.yaml', { services: [{ name: 'shop', stable: 'nope' }] })],
    code: 1,
    says: () => /^graygate: cannot start: .*invalid\.yaml: upstream "nope" is not defined \(services\[0\]\.stable\); known: shop-v1, shop-v2 \(GG_CONFIG_INVALID\)$/,
  },
  {
    name: 'start: an admin token from an unset variable',
    args: () => ['start', '--config', config('token.yaml', { admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', tokenEnv: 'GG_TEST_UNSET_TOKEN' }] } })],
    code: 1,
    says: () => /^graygate: cannot start: .*token\.yaml: admin\.tokens\[0\]\.tokenEnv: environment variable GG_TEST_UNSET_TOKEN is not set; set it/,
  },
  {
    name: 'start: a missing store.path',
    args: () => ['start', '--config', config('store.yaml', { store: { kind: 'file', path: file('nothing-here.yaml') } })],
    code: 1,
    says: () => /^graygate: cannot start: the store \(store\.path in .*store\.yaml\): .*nothing-here\.yaml does not exist \(GG_STORE_UNAVAILABLE\)$/,
  },
  {
    name: 'start: the listen port is taken',
    args: () => ['start', '--config', config('taken.yaml', { listen: `127.0.0.1:${taken.port}` })],
    code: 1,
    says: () => new RegExp(`^graygate: cannot start: listen 127\\.0\\.0\\.1:${taken.port} is already in use .*: stop that program, or choose a free address with --listen or listen in `),
  },
  {
    name: 'start: the listen port is taken, with --workers 2',
    args: () => ['start', '--config', config('taken.yaml', { listen: `127.0.0.1:${taken.port}` }), '--workers', '2'],
    code: 1,
    says: () => new RegExp(`^graygate: cannot start: listen 127\\.0\\.0\\.1:${taken.port} is already in use `),
  },
  {
    name: 'start: the admin port is taken',
    args: () => ['start', '--config', config('admin-taken.yaml', { admin: { listen: `127.0.0.1:${taken.port}` } })],
    code: 1,
    says: () => new RegExp(`^graygate: cannot start: admin\\.listen 127\\.0\\.0\\.1:${taken.port} is already in use .*: stop that program, or choose a free address with admin\\.listen in `),
  },
];

// Each case starts a real process; on a loaded 2-core box one can take seconds.
describe('every CLI and start-up failure is one line naming what to change, with the documented exit code', { timeout: 120_000 }, () => {
  // Several at a time: each spends most of its time starting Node.
  it.concurrent.each(cases)('$name', async ({ args, env, cwd, code, says }) => {
    const run = await runCli(args(), { ...(env ? { env: env() } : {}), ...(cwd ? { cwd: cwd() } : {}) });
    const lines = run.stderr.split('\n').filter((line) => line !== '');
    expect(lines, run.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(says());
    expect(run.stderr).not.toMatch(/^\s+at /m);
    expect(run.stderr).not.toMatch(/ZodError|EADDRINUSE|Error:/);
    expect(run.code, run.stderr).toBe(code);
  });

  it('a config file with several problems lists each on its own line, under one line that counts them', async () => {
    const invalid = config('several.yaml', { upstreams: { 'shop-v1': { servers: ['ftp://x'] } }, services: [{ name: 'shop', stable: 'shop-v1', extra: 1 }] });
    for (const args of [['start', '--config', invalid], ['validate', invalid]]) {
      const run = await runCli(args);
      const lines = run.stderr.split('\n').filter((line) => line !== '');
      expect(lines[0]).toMatch(/several\.yaml(: invalid,| has) 2 problems \(GG_CONFIG_INVALID\)/);
      expect(lines.slice(1)).toEqual([expect.stringMatching(/^ {2}- upstreams\.shop-v1\.servers\[0\]: /), expect.stringMatching(/^ {2}- services\[0\]\.extra: unknown field "extra"/)]);
      expect(run.code).toBe(1);
    }
  });

  it('a reader that closed stdout ends the command quietly, with the command\'s own exit code', async () => {
    const status = await runCli(['status'], { env: adminEnv(), closeStdout: true });
    expect(status.stderr).toBe('');
    expect(status.code).toBe(0);
    const history = await runCli(['history', '--json'], { env: adminEnv(), closeStdout: true });
    expect(history.stderr).toBe('');
    expect(history.code).toBe(0);
    const failed = await runCli(['status', '--url', unreachable], { closeStdout: true });
    expect(failed.stderr).toMatch(/^graygate: unreachable: /);
    expect(failed.code).toBe(3);
  });

  it('graygate alone prints its usage and exits 2', async () => {
    const run = await runCli([]);
    expect(run.stderr).toMatch(/^Usage: graygate \[options\] \[command\]/);
    expect(run.code).toBe(2);
  });
});
