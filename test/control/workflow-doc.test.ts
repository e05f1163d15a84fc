import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { docBlock, mapPorts, shellCommands } from '../helpers/doc-blocks.js';
import { cliPath, startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { freePort, startRedis, type RedisServer } from '../helpers/redis.js';
import { graygate } from './cli-runner.js';

const TOKEN = 'workflow-doc-token-0123456789';

/** Runs `script` with bash (errexit, pipefail) in `cwd`; resolves with the exit code and output. */
function bash(script: string, cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile('bash', ['-e', '-o', 'pipefail', '-c', script], { cwd, env, timeout: 120_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 99) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
    child.stdin?.end();
  });
}

// docs/workflow.md is the release workflow the README points to: its commands are run here as
// written (addresses mapped to free ports), so the page cannot drift from what works.
describe('docs/workflow.md, run as written', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graygate-workflow-'));
  let redis: RedisServer;
  let backends: Backend[] = [];
  let gateway: GatewayProcess | undefined;
  let ports: Record<number, number>;

  beforeAll(async () => {
    redis = await startRedis();
    backends = await Promise.all(['shop-v1', 'shop-v2', 'shop-v1-new'].map((name) => startBackend(name)));
    const [v1, v2, v1New] = backends;
    ports = { 8080: await freePort(), 9901: await freePort(), 6379: redis.port, 8081: v1!.port, 8082: v2!.port, 8083: v1New!.port };
    writeFileSync(path.join(dir, 'graygate.yaml'), mapPorts(docBlock('docs/workflow.md', 'config'), ports));
    gateway = await startGatewayProcess({ args: ['--config', 'graygate.yaml'], dir, env: { GRAYGATE_TOKEN_ALICE: TOKEN }, readyWithinMs: 60_000 });
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all(backends.map((backend) => backend.close()));
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts, goes full, applies the file for the new stable, and finishes', async () => {
    const bin = path.join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(path.join(bin, 'graygate'), `#!/bin/sh\nexec "${process.execPath}" "${cliPath}" "$@"\n`);
    chmodSync(path.join(bin, 'graygate'), 0o755);
    const commands = shellCommands(mapPorts(docBlock('docs/workflow.md', 'commands'), ports));
    expect(commands.length).toBeGreaterThan(5);
    // A marker line before each command splits the output per command.
    const script = commands.map((command, i) => `printf '\\n@@%d@@\\n' ${i}\n${command}`).join('\n');
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, GRAYGATE_TOKEN_ALICE: TOKEN, GRAYGATE_ADMIN_CONFIG: '', HOME: dir };
    const result = await bash(script, dir, env);
    const outputs = result.stdout.split(/\n@@\d+@@\n/).slice(1);
    const transcript = commands.map((command, i) => `$ ${command}\n${outputs[i] ?? '(not run)'}`).join('\n');
    expect(result.code, `${transcript}\n--- stderr\n${result.stderr}`).toBe(0);
    expect(outputs).toHaveLength(commands.length);

    // Each curl whose comment names an upstream (`# shop-v2: …`) was answered by that upstream.
    let checked = 0;
    commands.forEach((command, i) => {
      const named = /^curl .*#\s*([\w-]+):/.exec(command);
      if (!named) return;
      expect((JSON.parse(outputs[i]!) as { version: string }).version, `$ ${command}`).toBe(named[1]);
      checked++;
    });
    expect(checked).toBeGreaterThanOrEqual(3);

    // The apply changed stable's servers and kept the release in full; finish then succeeded.
    const apply = outputs[commands.findIndex((command) => command.startsWith('graygate config apply'))]!;
    expect(apply).toContain(`upstreams.shop-v1.servers[0]`);
    expect(apply).not.toContain('release.state');
    expect(apply).toMatch(/release of service "shop": kept as it is live \(full\)/);
    const current = await request(`http://127.0.0.1:${ports[9901]}/v1/config`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const body = (await current.body.json()) as { document: { upstreams: Record<string, { servers: string[] }>; services: { name: string; release?: unknown }[] } };
    expect(body.document.services.find((service) => service.name === 'shop')!.release).toBeUndefined();
    expect(body.document.upstreams['shop-v1']!.servers).toEqual([backends[2]!.url]);
  });

  it('config apply refuses an edited release section whose state the lifecycle cannot reach, and applies one it can', async () => {
    const env = { GRAYGATE_ADMIN_URL: `http://127.0.0.1:${ports[9901]}`, GRAYGATE_ADMIN_TOKEN: TOKEN };
    const file = path.join(dir, 'edited.yaml');
    const withRelease = (state: string) =>
      `${readFileSync(path.join(dir, 'graygate.yaml'), 'utf8')}    release: { candidate: shop-v2, state: ${state}, rules: [{ name: few, uidRange: { from: 1, to: 10 } }] }\n`;
    // After the workflow the service is idle: a file saying full skips canary.
    writeFileSync(file, withRelease('full'));
    const refused = await graygate(['config', 'apply', file, '--reason', 'edited', '--yes'], env);
    expect(refused.code, refused.stdout + refused.stderr).toBe(1);
    expect(refused.stderr).toMatch(/release of service "shop": the file's release section was edited and says state full, but the live release is idle/);
    expect(refused.stderr).toContain('--release-from-file');
    writeFileSync(file, withRelease('canary'));
    const applied = await graygate(['config', 'apply', file, '--reason', 'edited', '--yes'], env);
    expect(applied.code, applied.stdout + applied.stderr).toBe(0);
    expect(applied.stdout).toMatch(/release of service "shop": from the file \(its release section was edited\); state idle → canary \(start\)/);
    const status = await graygate(['status'], env);
    expect(status.stdout).toMatch(/canary/);
  });
});
