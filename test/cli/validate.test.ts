import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { cliPath } from '../helpers/gateway-process.js';

const run = promisify(execFile);
const dir = mkdtempSync(path.join(tmpdir(), 'graygate-validate-'));

async function validate(name: string, text: string, extra: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  try {
    const { stdout, stderr } = await run(process.execPath, [cliPath, 'validate', file, ...extra]);
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

  describe('--data-plane openresty', () => {
    const config = (identity: string, rules: string) => `upstreams:
  a: { servers: [http://127.0.0.1:8081] }
  b: { servers: [http://127.0.0.1:8082] }
identity:
  sources: [ ${identity} ]
services:
  - name: shop
    stable: a
    release: { candidate: b, rules: [ ${rules} ] }
`;

    it('accepts what the Lua evaluator runs exactly (the seed: TOKEN lookup, range from Grayscale_Range)', async () => {
      const result = await validate('seed.yaml', config('{ tokenLookup: {} }', '{ uidRange: { fromKey: Grayscale_Range } }, { header: { name: x-beta, regex: "^(on|true)$" } }'), ['--data-plane', 'openresty']);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(/valid for the OpenResty data plane: 2 upstream\(s\)/);
    });

    it('refuses JWT identity and a regex PCRE cannot match the same way, naming each field', async () => {
      const text = config(
        '{ jwt: { secret: "0123456789abcdef0123456789abcdef" } }',
        '{ header: { name: x-beta, regex: "(a)\\\\1" } }, { cookie: { name: grp, regex: "^[a-z]+$" } }',
      );
      const plain = await validate('jwt.yaml', text);
      expect(plain.code).toBe(0);
      const result = await validate('jwt.yaml', text, ['--data-plane', 'openresty']);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/not supported on the OpenResty data plane, 2 problems \(GG_OPENRESTY_UNSUPPORTED\)/);
      expect(result.stderr).toMatch(/- identity\.sources\[0\]\.jwt: JWT identity is not available on the OpenResty data plane/);
      expect(result.stderr).toMatch(/- services\[0\]\.release\.rules\[0\]\.header\.regex: the pattern uses a backreference/);
      expect(result.stderr).not.toMatch(/rules\[1\]/);
    });

    it('refuses a header name nginx would drop', async () => {
      const result = await validate('underscore.yaml', config('{ header: { name: x_user_id } }', '{ uidRange: { from: 1, to: 5 } }'), ['--data-plane', 'openresty']);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/identity\.sources\[0\]\.header\.name: header name "x_user_id" holds "_"/);
      expect(result.stderr).toMatch(/\(GG_OPENRESTY_UNSUPPORTED\)$/m);
    });

    it('refuses an unknown data plane', async () => {
      const result = await validate('seed2.yaml', config('{ tokenLookup: {} }', '{ uidRange: { from: 1, to: 5 } }'), ['--data-plane', 'nginx']);
      expect(result.code).not.toBe(0);
      expect(result.stderr).toMatch(/--data-plane/);
    });
  });
});
