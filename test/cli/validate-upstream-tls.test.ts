import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { cliPath } from '../helpers/gateway-process.js';
import { makeTestPki, type TestPki } from '../helpers/upstream-certs.js';

const run = promisify(execFile);
let pki: TestPki;

beforeAll(() => {
  pki = makeTestPki();
  writeFileSync(path.join(pki.dir, 'garbage.pem'), 'not a certificate\n');
});

afterAll(() => pki?.remove());

async function validate(name: string, upstream: Record<string, unknown>): Promise<{ code: number; stdout: string; stderr: string }> {
  const file = path.join(pki.dir, name);
  writeFileSync(file, stringify({ upstreams: { api: upstream }, services: [{ name: 'api', stable: 'api' }] }));
  try {
    const { stdout, stderr } = await run(process.execPath, [cliPath, 'validate', file]);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

describe('graygate validate: upstream TLS files', () => {
  it('accepts a CA bundle and a client certificate with its key', async () => {
    const result = await validate('ok.yaml', { servers: ['https://127.0.0.1:8443'], tls: { ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key, serverName: 'api.internal.test' } });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
  });

  it('names the field and the path of a CA file that does not exist', async () => {
    const missing = path.join(pki.dir, 'missing-ca.pem');
    const result = await validate('missing.yaml', { servers: ['https://127.0.0.1:8443'], tls: { ca: missing } });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`upstreams.api.tls.ca: cannot read ${missing} (ENOENT)`);
  });

  it('refuses a CA file without a certificate in it', async () => {
    const result = await validate('garbage.yaml', { servers: ['https://127.0.0.1:8443'], tls: { ca: path.join(pki.dir, 'garbage.pem') } });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/upstreams\.api\.tls\.ca .*no PEM certificate/);
  });

  it('refuses a key that does not belong to the client certificate', async () => {
    const result = await validate('mismatch.yaml', { servers: ['https://127.0.0.1:8443'], tls: { cert: pki.client.cert, key: pki.server.key } });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`upstreams.api.tls.key (${pki.server.key}) is not the private key of upstreams.api.tls.cert (${pki.client.cert})`);
  });

  it('refuses a client certificate without its key, and TLS settings without an https:// server', async () => {
    const half = await validate('half.yaml', { servers: ['https://127.0.0.1:8443'], tls: { cert: pki.client.cert } });
    expect(half.code).toBe(1);
    expect(half.stderr).toMatch(/upstreams\.api\.tls\.key: a client certificate needs both cert and key/);
    const plain = await validate('plain.yaml', { servers: ['http://127.0.0.1:8080'], tls: { ca: pki.ca.cert } });
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/upstreams\.api\.tls: tls applies to https:\/\/ servers/);
  });

  it('refuses an HTTP/2 protocol that does not fit the servers\' scheme', async () => {
    const h2 = await validate('h2.yaml', { servers: ['http://127.0.0.1:8080'], protocol: 'h2' });
    expect(h2.code).toBe(1);
    expect(h2.stderr).toMatch(/upstreams\.api\.servers\[0\]: protocol h2 runs over TLS/);
    const h2c = await validate('h2c.yaml', { servers: ['https://127.0.0.1:8443'], protocol: 'h2c' });
    expect(h2c.code).toBe(1);
    expect(h2c.stderr).toMatch(/upstreams\.api\.servers\[0\]: protocol h2c is HTTP\/2 without TLS/);
  });
});
