import { existsSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { runCli, send, startUserNginx, type NginxProcess } from '../helpers/openresty.js';
import { RoutingDocument, Settings } from '../../src/config/schema.js';
import { httpConf, serverConf } from '../../src/openresty/conf.js';
import { buildEnvelope } from '../../src/openresty/envelope.js';
import { normalizeRouting } from '../../src/openresty/normalize.js';

// `graygate openresty conf`: the two files an existing nginx.conf includes, used by a real nginx
// configured the way a user would (their nginx.conf plus the two printed lines), with graygate
// beside it as the control plane (`--nginx external`: it pushes the routing, runs no nginx).

describe('graygate openresty conf', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'graygate-conf-'));
  });

  it('writes the include files and prints the two lines to add', async () => {
    const config = path.join(dir, 'graygate.yaml');
    writeFileSync(config, stringify({ upstreams: { v1: { servers: ['http://127.0.0.1:9'] } }, services: [{ name: 'app', stable: 'v1' }] }));
    const out = path.join(dir, 'out');
    const result = await runCli(['openresty', 'conf', '--config', config, '--out', out]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`include ${out}/graygate-http.conf;`);
    expect(result.stdout).toContain(`include ${out}/graygate-server.conf;`);
    const http = readFileSync(path.join(out, 'graygate-http.conf'), 'utf8');
    expect(http).toMatch(/lua_shared_dict graygate_config/);
    expect(http).toMatch(/balancer_by_lua_block/);
    expect(http).toMatch(/init_worker_by_lua_block/);
    // The routing is not in the files: it arrives at run time.
    expect(http).not.toContain('127.0.0.1:9');
    expect(existsSync(path.join(out, 'graygate-server.conf'))).toBe(true);
  });

  it("gives the proxied location an upstream's default timeouts, and tells balancer.lua the same (it sets only other ones per attempt)", async () => {
    const settings = Settings.parse({});
    // An upstream that keeps the config's defaults, as the envelope carries it.
    const form = normalizeRouting(RoutingDocument.parse({ upstreams: { v1: { servers: ['http://127.0.0.1:9'] } }, services: [{ name: 'app', stable: 'v1' }] }), 1);
    const { envelope } = await buildEnvelope(form, 1);
    const t = envelope.upstreams.v1!.timeouts;
    const ms = (seconds: number) => `${Math.round(seconds * 1000)}ms`;
    expect(serverConf(settings)).toContain(`proxy_connect_timeout ${ms(t.connect)}; proxy_send_timeout ${ms(t.send)}; proxy_read_timeout ${ms(t.read)};`);
    expect(httpConf({ settings, outDir: dir })).toContain(`require("graygate.balancer").init_worker({ connect = ${t.connect}, send = ${t.send}, read = ${t.read} })`);
  });

  it('refuses a config file that does not validate, naming the field', async () => {
    const config = path.join(dir, 'bad.yaml');
    writeFileSync(config, stringify({ listen: 'not-an-address:x', upstreams: {}, services: [] }));
    const result = await runCli(['openresty', 'conf', '--config', config, '--out', path.join(dir, 'bad-out')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('listen');
  });

  it('refuses an output directory nginx cannot name, naming --out', async () => {
    const config = path.join(dir, 'graygate.yaml');
    const result = await runCli(['openresty', 'conf', '--config', config, '--out', path.join(dir, 'with space')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('--out');
  });
});

describe('a user\'s nginx with the included files, graygate pushing the routing (file store)', () => {
  let stable: Backend;
  let candidate: Backend;
  let nginx: NginxProcess;
  let gateway: GatewayProcess;
  let dir: string;
  let configPath: string;

  const config = (equals: string) => ({
    listen: '127.0.0.1:0',
    log: { level: 'info', format: 'json' },
    admin: { listen: '127.0.0.1:0' },
    upstreams: { v1: { servers: [stable.url] }, v2: { servers: [candidate.url] } },
    services: [{ name: 'app', stable: 'v1', release: { candidate: 'v2', state: 'canary', rules: [{ name: 'testers', header: { name: 'x-canary', equals } }] } }],
  });

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    dir = mkdtempSync(path.join(tmpdir(), 'graygate-external-'));
    configPath = path.join(dir, 'graygate.yaml');
    writeFileSync(configPath, stringify(config('1')));
    const out = path.join(dir, 'nginx');
    const written = await runCli(['openresty', 'conf', '--config', configPath, '--out', out]);
    expect(written.code, written.stderr).toBe(0);
    nginx = await startUserNginx(out);
    gateway = await startGatewayProcess({ args: ['--config', configPath, '--data-plane', 'openresty', '--nginx', 'external', '--openresty-dir', out], dir, workers: 1 });
  });
  afterAll(async () => {
    await gateway?.stop();
    await nginx?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('routes by the rules graygate pushed', async () => {
    await eventually(async () => expect((await send(nginx.url, { headers: { 'x-canary': '1' } })).version).toBe('candidate'));
    expect((await send(nginx.url)).version).toBe('stable');
    expect(nginx.output()).not.toMatch(/\[(error|crit|alert|emerg)\]/);
  });

  it('applies an edit of the config file on every worker, without a reload', async () => {
    const workers = nginx.workerPids().sort();
    writeFileSync(`${configPath}.tmp`, stringify(config('2')));
    renameSync(`${configPath}.tmp`, configPath);
    await eventually(async () => {
      const answers = await Promise.all(Array.from({ length: 10 }, () => send(nginx.url, { headers: { 'x-canary': '2' } })));
      expect(answers.map((a) => a.version)).toEqual(Array(10).fill('candidate'));
    });
    expect((await send(nginx.url, { headers: { 'x-canary': '1' } })).version).toBe('stable');
    expect(nginx.workerPids().sort()).toEqual(workers);
  });

  it("reads nginx's metrics over the control socket: graygate's /metrics counts what nginx served", async () => {
    const admin = gateway.logs().find((line) => line.event === 'admin-listening');
    for (let i = 0; i < 3; i++) expect((await send(nginx.url, { path: '/counted', headers: { 'x-canary': '2' } })).version).toBe('candidate');
    await eventually(async () => {
      const text = (await send(`http://127.0.0.1:${String(admin?.port)}`, { path: '/metrics' })).text;
      const counted = /graygate_requests_total\{service="app",version="candidate",status_class="2xx",upstream="v2"\} (\d+)/.exec(text);
      expect(Number(counted?.[1])).toBeGreaterThanOrEqual(3);
    });
  });

  it('keeps serving the last good routing when graygate stops', async () => {
    await gateway.stop();
    const answers = await Promise.all(Array.from({ length: 6 }, () => send(nginx.url, { headers: { 'x-canary': '2' } })));
    expect(answers.map((a) => a.version)).toEqual(Array(6).fill('candidate'));
  });
});

