import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { cliPath } from '../helpers/gateway-process.js';

const run = promisify(execFile);
const dir = mkdtempSync(path.join(tmpdir(), 'graygate-validate-'));

async function validate(name: string, text: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  try {
    const { stdout, stderr } = await run(process.execPath, [cliPath, 'validate', file]);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

describe('graygate validate', () => {
  it('accepts a valid YAML config and summarises it', async () => {
    const result = await validate(
      'ok.yaml',
      `upstreams:
  a: { servers: [http://127.0.0.1:8081] }
  b: { servers: [http://127.0.0.1:8082] }
identity:
  sources: [ { header: { name: x-user-id } } ]
services:
  - name: shop
    stable: a
    release: { candidate: b, rules: [ { uidRange: { from: 1, to: 5000 } } ] }
`,
    );
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/valid: 2 upstream\(s\), 1 service\(s\), 1 release\(s\)/);
  });

  it('exits 1 and names every failing field', async () => {
    const result = await validate(
      'bad.json',
      JSON.stringify({
        upstreams: { a: { servers: ['http://127.0.0.1:8081'] } },
        services: [
          {
            name: 'shop',
            stable: 'a',
            release: {
              candidate: 'checkout-v2',
              rules: [{ header: { name: 'x', equals: '1' } }, { header: { name: 'y', present: true } }, { uidRange: { from: '5k', to: 9 } }],
            },
          },
        ],
      }),
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/services\[0\]\.release\.rules\[2\]\.uidRange\.from: expected integer, got "5k"/);
  });

  it('reports unknown upstream names with the path and the known names', async () => {
    const result = await validate(
      'unknown.yaml',
      `upstreams:
  checkout-v1: { servers: [http://127.0.0.1:8081] }
services:
  - name: checkout
    stable: checkout-v1
    release: { candidate: checkout-v2 }
`,
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('checkout-v2');
    expect(result.stderr).toContain('services[0].release.candidate');
    expect(result.stderr).toContain('checkout-v1');
  });

  it('reports a file that is not YAML with its name', async () => {
    const result = await validate('broken.yaml', 'services: [ {name: x\n  stable: [');
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('broken.yaml');
    expect(result.stderr).toContain('GG_CONFIG_UNREADABLE');
  });
});
