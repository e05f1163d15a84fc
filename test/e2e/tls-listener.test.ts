import { execFile } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type http2 from 'node:http2';
import https from 'node:https';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { cliPath, gatewayEnv, startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { certFactory, h2Connect, h2Request, servedCertificate, type CertFactory, type CertFiles } from '../helpers/tls.js';

const run = promisify(execFile);
const bun = fileURLToPath(new URL('../../node_modules/.bin/bun', import.meta.url));

let factory: CertFactory;
let stable: Backend;
let candidate: Backend;
let first: CertFiles;
let second: CertFiles;
let live: { cert: string; key: string };

const routing = () => ({
  upstreams: { stable: { servers: [stable.url] }, candidate: { servers: [candidate.url] } },
  services: [{ name: 'shop', stable: 'stable', release: { candidate: 'candidate', rules: [{ header: { name: 'x-canary', equals: '1' } }] } }],
});

/** The TLS port of a gateway process, from its "listening" line. */
function tlsPort(gateway: GatewayProcess): number {
  const line = gateway.logs().find((entry) => entry.event === 'listening') as { tls?: { port: number } } | undefined;
  if (!line?.tls) throw new Error(`no tls address in the listening line:\n${gateway.output().slice(-2_000)}`);
  return line.tls.port;
}

/** One HTTPS/1.1 request on a connection of its own (so requests spread over the workers). */
function httpsGet(port: number, headers: Record<string, string> = {}): Promise<{ status: number; version: string }> {
  return new Promise((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port, path: '/', rejectUnauthorized: false, agent: false, headers: { connection: 'close', ...headers } }, (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, version: String((JSON.parse(text) as { version?: string }).version) }));
      })
      .on('error', reject);
  });
}

beforeAll(async () => {
  factory = certFactory();
  first = factory.cert('first', { names: ['shop.test'] });
  second = factory.cert('second', { names: ['shop.test'] });
  live = { cert: path.join(factory.dir, 'live.pem'), key: path.join(factory.dir, 'live.key') };
  copyFileSync(first.cert, live.cert);
  copyFileSync(first.key, live.key);
  [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate', (req, res) => {
    if (req.url !== '/slow') return false;
    req.resume();
    setTimeout(() => res.end('slow done'), 1_500);
    return true;
  })]);
});

afterAll(async () => {
  await Promise.all([stable?.close(), candidate?.close()]);
  factory?.remove();
});

describe('the TLS listener in the real gateway with two workers', () => {
  let gateway: GatewayProcess;
  beforeAll(async () => {
    gateway = await startGatewayProcess({ workers: 2, config: { ...routing(), tls: { listen: '127.0.0.1:0', certificates: [live], watchMs: 200 } } });
  });
  afterAll(async () => {
    await gateway?.kill();
  });

  it('serves HTTP/2 and HTTP/1.1 on the TLS port by the same rules, and plain HTTP beside it', async () => {
    const port = tlsPort(gateway);
    const session = await h2Connect(port);
    try {
      expect(JSON.parse((await h2Request(session, { ':path': '/', 'x-canary': '1' })).body.toString()).version).toBe('candidate');
      expect(JSON.parse((await h2Request(session, { ':path': '/' })).body.toString()).version).toBe('stable');
    } finally {
      session.close();
    }
    expect(await httpsGet(port, { 'x-canary': '1' })).toEqual({ status: 200, version: 'candidate' });
    const plain = await new Promise<number>((resolve, reject) => http.get(`${gateway.url}/`, { agent: false }, (res) => resolve(res.resume().statusCode ?? 0)).on('error', reject));
    expect(plain).toBe(200);
  });

  it('reloads a swapped certificate in every worker without failing a request under load', async () => {
    const port = tlsPort(gateway);
    const serial = async () => (await servedCertificate(port, 'shop.test')).serialNumber;
    const firstSerial = await serial();
    // Load during the swap: fresh TLS connections one after another, and a kept HTTP/2 session.
    let failures = 0;
    let served = 0;
    let stop = false;
    const session: http2.ClientHttp2Session = await h2Connect(port);
    const load = (async () => {
      while (!stop) {
        const results = await Promise.allSettled([httpsGet(port), h2Request(session, { ':path': '/' })]);
        for (const result of results) {
          if (result.status === 'fulfilled' && result.value.status === 200) served++;
          else failures++;
        }
      }
    })();
    await eventually(() => expect(served).toBeGreaterThan(10));
    copyFileSync(second.key, live.key);
    copyFileSync(second.cert, live.cert);
    // Every worker serves the new one: many fresh connections, spread round robin, all see it.
    await eventually(async () => {
      const serials = await Promise.all(Array.from({ length: 8 }, () => serial()));
      expect(serials.every((value) => value !== firstSerial)).toBe(true);
    });
    const servedAtSwap = served;
    await eventually(() => expect(served).toBeGreaterThan(servedAtSwap + 10));
    stop = true;
    await load;
    session.close();
    expect(failures).toBe(0);
    await eventually(() => expect(gateway.logs().filter((line) => line.event === 'tls-reloaded').length).toBeGreaterThanOrEqual(2));
    const reloadedBy = new Set(gateway.logs().filter((line) => line.event === 'tls-reloaded').map((line) => line.worker));
    expect(reloadedBy.size).toBe(2);
  });

  it('drains HTTP/2 on SIGTERM: GOAWAY, and the stream in flight completes', async () => {
    const port = tlsPort(gateway);
    const session = await h2Connect(port);
    let goaway = false;
    session.on('goaway', () => (goaway = true));
    const inFlight = h2Request(session, { ':path': '/slow', 'x-canary': '1' });
    await eventually(() => expect(candidate.seen.some((request) => request.url === '/slow')).toBe(true));
    const exited = gateway.stop('SIGTERM');
    const reply = await inFlight;
    expect(reply.status).toBe(200);
    expect(reply.body.toString()).toBe('slow done');
    expect(goaway).toBe(true);
    expect(await exited).toBe(0);
    session.destroy();
  });
});

describe('start and validate', () => {
  const writeConfig = (name: string, config: Record<string, unknown>) => {
    const file = path.join(factory.dir, `${name}.yaml`);
    writeFileSync(file, stringify(config));
    return file;
  };
  const cli = (args: string[], runtime = process.execPath) =>
    run(runtime, [cliPath, ...args], { env: gatewayEnv({}, 1), cwd: factory.dir }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
    );

  it('validate checks the files relative to the config: exist, parse, match, expiry', async () => {
    const ok = writeConfig('ok', { ...routing(), tls: { listen: 0, certificates: [{ cert: 'first.pem', key: 'first.key' }] } });
    const good = await cli(['validate', ok]);
    expect(good.code).toBe(0);
    expect(good.stdout).toContain('TLS on');

    const stray = factory.strayKey('validate-stray');
    const mismatched = await cli(['validate', writeConfig('mismatched', { ...routing(), tls: { listen: 0, certificates: [{ cert: first.cert, key: stray }] } })]);
    expect(mismatched.code).toBe(1);
    expect(mismatched.stderr).toContain(`tls.certificates[0].key ${stray}: is not the key of`);

    const missing = await cli(['validate', writeConfig('missing', { ...routing(), tls: { listen: 0, certificates: [{ cert: 'nope.pem', key: 'first.key' }] } })]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`tls.certificates[0].cert ${path.join(factory.dir, 'nope.pem')}: no such file`);

    const expired = factory.cert('validate-expired', { names: ['old.test'], days: -2 });
    const expiredRun = await cli(['validate', writeConfig('expired', { ...routing(), tls: { listen: 0, certificates: [{ cert: expired.cert, key: expired.key }] } })]);
    expect(expiredRun.code).toBe(1);
    expect(expiredRun.stderr).toMatch(/the certificate expired on \d{4}-\d\d-\d\d/);

    const soon = factory.cert('validate-soon', { names: ['soon.test'], days: 5 });
    const soonRun = await cli(['validate', writeConfig('soon', { ...routing(), tls: { listen: 0, certificates: [{ cert: soon.cert, key: soon.key }] } })]);
    expect(soonRun.code).toBe(0);
    expect(soonRun.stderr).toMatch(/warning: tls.certificates\[0\].cert .*expires in [45] day\(s\)/);
  });

  it('start refuses a mismatched pair naming the file', async () => {
    const stray = factory.strayKey('start-stray');
    const result = await cli(['start', '--config', writeConfig('start-bad', { listen: '127.0.0.1:0', ...routing(), tls: { listen: 0, certificates: [{ cert: first.cert, key: stray }] } })]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`tls.certificates[0].key ${stray}`);
  });

  it('under Bun, start refuses the TLS listener with one line naming the setting', async () => {
    const result = await cli(['start', '--config', writeConfig('bun-tls', { listen: '127.0.0.1:0', ...routing(), tls: { listen: 0, certificates: [{ cert: first.cert, key: first.key }] } })], bun);
    expect(result.code).toBe(2);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^graygate start: tls: the Bun data plane cannot serve the TLS listener/);
  });
});
