import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { cliPath } from '../helpers/gateway-process.js';
import { killProcessGroup, spawnTracked } from '../helpers/processes.js';

async function text(url: string, headers: Record<string, string> = {}): Promise<string> {
  const response = await request(url, { headers });
  return response.body.text();
}

// What the README promises a newcomer: run the demo, paste the printed commands, see both
// versions, flip a rule live.
describe('graygate demo', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graygate-demo-test-'));
  const child = spawnTracked(process.execPath, [cliPath, 'demo', '--port', '0', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  afterAll(() => killProcessGroup(child));

  it('prints commands that show both versions, and a live edit that flips a caller', async () => {
    await eventually(() => expect(output).toContain('Ctrl-C stops the demo'), { withinMs: 15_000 });
    const url = /gateway\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(output)![1]!;
    const configPath = /config\s+(\S+)/.exec(output)![1]!;

    expect(await text(`${url}/`)).toMatch(/^hello from stable \(shop-v1\)/);
    expect(await text(`${url}/`, { 'x-user-id': '42' })).toMatch(/^hello from candidate \(shop-v2\)/);
    expect(await text(`${url}/`, { 'x-user-id': '4242' })).toMatch(/^hello from stable/);
    expect(await text(`${url}/`, { 'x-canary': '1' })).toMatch(/^hello from candidate/);

    // The printed sed command, run as printed.
    const sed = /^\s+(sed -i 's\/to: 100\/to: 10\/' \S+)$/m.exec(output)![1]!;
    execFileSync('sh', ['-c', sed]);
    await eventually(async () => expect(await text(`${url}/`, { 'x-user-id': '42' })).toMatch(/^hello from stable/), { withinMs: 5_000 });
    expect(await text(`${url}/`, { 'x-user-id': '7' })).toMatch(/^hello from candidate/);

    execFileSync('sh', ['-c', `sed -i 's/state: canary/state: full/' ${configPath}`]);
    await eventually(async () => expect(await text(`${url}/`)).toMatch(/^hello from candidate/), { withinMs: 5_000 });

    // The dashboard and the CLI's server are printed, and answer.
    const admin = /dashboard\s+(http:\/\/127\.0\.0\.1:\d+)\/ui\//.exec(output)![1]!;
    expect(await text(`${admin}/ui/`)).toMatch(/<html/i);
    const status = execFileSync(process.execPath, [cliPath, 'status', '--url', admin], { encoding: 'utf8' });
    expect(status).toMatch(/shop/);

    child.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(output).toContain('graygate demo stopped.');
  });
});
