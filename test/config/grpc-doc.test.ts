import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfigFile } from '../../src/config/load.js';
import { docBlock } from '../helpers/doc-blocks.js';

describe('docs/grpc.md', () => {
  it('shows a config that graygate loads as written (schema and meaning)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'graygate-grpc-doc-'));
    try {
      const file = path.join(dir, 'graygate.yaml');
      writeFileSync(file, docBlock('docs/grpc.md', 'grpc-config'));
      const config = await loadConfigFile(file);
      expect(config.routing?.upstreams['orders-v1']).toMatchObject({ protocol: 'h2c' });
      expect(config.routing?.upstreams['orders-v2']).toMatchObject({ protocol: 'h2', tls: { serverName: 'orders.internal.example', verify: true } });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
