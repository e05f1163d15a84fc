import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startBackend, type Backend } from '../helpers/backend.js';
import { startGatewayProcess } from '../helpers/gateway-process.js';
import { send } from './harness.js';

/**
 * Bun's data plane cannot honour HTTP/2 upstreams (its fetch speaks HTTP/1.1, and Bun.serve drops
 * the trailers gRPC needs) nor the per-upstream TLS section: `start` refuses a config file with
 * either, naming the setting, and a routing document applied live does not route to such an
 * upstream (its candidate's callers stay on stable).
 */

const bun = path.join(fileURLToPath(new URL('../..', import.meta.url)), 'node_modules/.bin/bun');
let stable: Backend;
let candidate: Backend;

beforeAll(async () => {
  [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
});

afterAll(async () => {
  await Promise.all([stable?.close(), candidate?.close()]);
});

function document(candidateUpstream: Record<string, unknown>) {
  return {
    upstreams: { stable: { servers: [stable.url] }, candidate: candidateUpstream },
    services: [{ name: 'web', stable: 'stable', release: { candidate: 'candidate', rules: [{ header: { name: 'x-canary', equals: '1' } }] } }],
  };
}

describe('upstream settings on Bun', () => {
  it('refuses to start with protocol h2c, naming the setting', async () => {
    const failure = await startGatewayProcess({ config: document({ servers: [candidate.url], protocol: 'h2c' }), args: ['--workers', '1'], runtime: bun }).then(
      () => undefined,
      (error: Error) => error.message,
    );
    expect(failure).toMatch(/gateway exited/);
    expect(failure).toContain('upstreams.candidate.protocol: h2c needs the Node data plane');
  });

  it('does not route to an upstream with a tls section applied live; its callers stay on stable', async () => {
    const gateway = await startGatewayProcess({ config: document({ servers: [candidate.url] }), args: ['--workers', '1'], runtime: bun });
    try {
      expect((await send(gateway.url, { path: '/before', headers: { 'x-canary': '1' } })).json()).toMatchObject({ version: 'candidate' });
      const since = gateway.logs().length;
      writeFileSync(
        gateway.configPath,
        stringify({ listen: '127.0.0.1:0', ...document({ servers: [candidate.url.replace('http:', 'https:')], tls: { serverName: 'candidate.internal.test' } }) }),
      );
      const line = await gateway.waitForLog((entry) => entry.event === 'upstream-unsupported', { since });
      expect(line.msg).toContain('upstreams.candidate.tls: per-upstream CA, server name and client certificate need the Node data plane');
      const reply = await send(gateway.url, { path: '/after', headers: { 'x-canary': '1' } });
      expect(reply.status).toBe(200);
      expect(reply.json()).toMatchObject({ version: 'stable' });
    } finally {
      await gateway.stop('SIGKILL');
    }
  });
});
