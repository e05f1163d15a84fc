import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigFile, parseSettings } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'graygate-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function write(name: string, text: string): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, text);
  return file;
}

async function refusal(file: string): Promise<ConfigError> {
  try {
    await loadConfigFile(file);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected the file to be refused');
}

const seedYaml = `# the seed's walkthrough, as graygate config
listen: 127.0.0.1:8080
upstreams:
  prod:
    servers: [http://127.0.0.1:8081]
  gray:
    servers: [http://127.0.0.1:8082]
services:
  - name: web
    stable: prod
    release:
      candidate: gray
      rules:
        - uidRange: { from: 1, to: 5000 }
identity:
  sources:
    - header: { name: X-User-Id }
`;

describe('loadConfigFile', () => {
  it('reads a YAML file into settings and a frozen routing document', async () => {
    const file = await write('seed.yaml', seedYaml);
    const loaded = await loadConfigFile(file);
    expect(loaded.path).toBe(file);
    expect(loaded.settings.listen).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(loaded.settings.proxy.preserveHost).toBe(true);
    expect(loaded.routing?.services[0]?.release?.state).toBe('canary');
    expect(loaded.routing?.identity.sources).toEqual([{ header: { name: 'x-user-id', trustedProxiesOnly: false } }]);
    expect(Object.isFrozen(loaded.routing)).toBe(true);
    expect(Object.isFrozen(loaded.settings)).toBe(true);
  });

  it('reads the same config as JSON, told apart by content not extension', async () => {
    const file = await write('seed.conf', JSON.stringify({ listen: 9000, upstreams: { a: { servers: ['http://127.0.0.1:1'] } }, services: [{ name: 's', stable: 'a' }] }));
    const loaded = await loadConfigFile(file);
    expect(loaded.settings.listen?.port).toBe(9000);
    expect(loaded.routing?.services[0]?.match.pathPrefix).toBe('/');
  });

  it('has no routing document when the file holds only settings; an empty file is all defaults', async () => {
    expect((await loadConfigFile(await write('settings.yaml', 'listen: 8081\n'))).routing).toBeUndefined();
    const empty = await loadConfigFile(await write('empty.yaml', ''));
    expect(empty.routing).toBeUndefined();
    expect(empty.settings.listen).toEqual({ host: '127.0.0.1', port: 8080 });
  });

  it('refuses malformed YAML naming the file and line', async () => {
    const file = await write('broken.yaml', 'listen: 8080\nupstreams:\n  a:\n    servers: [http://x:1\n  b: 2\n');
    const error = await refusal(file);
    expect(error.code).toBe('GG_CONFIG_UNREADABLE');
    expect(error.message).toContain(file);
    expect(error.issues[0]).toMatch(/^invalid YAML at line \d+, column \d+: /);
  });

  it('refuses duplicate YAML keys rather than silently keeping one', async () => {
    const error = await refusal(await write('dup.yaml', 'listen: 1\nlisten: 2\n'));
    expect(error.code).toBe('GG_CONFIG_UNREADABLE');
    expect(error.issues[0]).toMatch(/line 2/);
  });

  it('refuses malformed JSON naming the line, without quoting the whole file', async () => {
    const file = await write('broken.json', `{"listen": 8080,\n "upstreams": }\n${' '.repeat(10_000)}`);
    const error = await refusal(file);
    expect(error.code).toBe('GG_CONFIG_UNREADABLE');
    expect(error.issues[0]).toMatch(/^invalid JSON at line 2, column 15: /);
    expect(error.message.length).toBeLessThan(400);
  });

  it('refuses a missing file', async () => {
    const error = await refusal(path.join(dir, 'nope.yaml'));
    expect(error.code).toBe('GG_CONFIG_UNREADABLE');
    expect(error.issues).toEqual(['cannot read config file: no such file']);
  });

  it('refuses a directory, and a YAML alias bomb, as unreadable', async () => {
    expect((await refusal(dir)).issues).toEqual(['cannot read config file: is a directory']);
    const levels = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 8; i++) {
      const previous = String.fromCharCode(96 + i);
      levels.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill(`*${previous}`).join(',')}]`);
    }
    const error = await refusal(await write('bomb.yaml', `${levels.join('\n')}\n`));
    expect(error.code).toBe('GG_CONFIG_UNREADABLE');
    expect(error.issues[0]).toMatch(/^invalid YAML: .*alias/i);
  });

  it('lists shape issues of settings and routing together, with the YAML line of each', async () => {
    const file = await write(
      'invalid.yaml',
      seedYaml.replace('listen: 127.0.0.1:8080', 'listen: 127.0.0.1:8080\nlistne: 1').replace('from: 1, to: 5000', 'from: 5k, to: 5000'),
    );
    const error = await refusal(file);
    expect(error.code).toBe('GG_CONFIG_INVALID');
    expect(error.issues).toEqual(['listne: unknown field "listne" (line 3)', 'services[0].release.rules[0].uidRange.from: expected integer, got "5k" (line 15)']);
  });

  it('runs the semantic checks on the routing part', async () => {
    const error = await refusal(await write('semantic.yaml', seedYaml.replace('candidate: gray', 'candidate: grey')));
    expect(error.issues).toEqual(['upstream "grey" is not defined (services[0].release.candidate); known: prod, gray']);
  });

  it('refuses identity without a routing document, and a top level that is not a mapping', async () => {
    expect((await refusal(await write('identity.yaml', 'identity: {sources: []}\n'))).issues[0]).toMatch(/^identity: given without upstreams/);
    expect((await refusal(await write('list.yaml', '- a\n- b\n'))).issues[0]).toMatch(/expected a mapping of settings/);
  });
});

describe('parseSettings', () => {
  it('fills defaults and refuses unknown fields', () => {
    expect(parseSettings({}).store).toMatchObject({ kind: 'file' });
    expect(() => parseSettings({ upstreams: {} })).toThrow(/upstreams: unknown field "upstreams"/);
  });
});
