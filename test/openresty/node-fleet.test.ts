import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { runCli, send, startUserNginx, type NginxProcess } from '../helpers/openresty.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { routingDocument, writeNext, writerStore } from '../helpers/redis-routing.js';
import type { RedisStore } from '../../src/store/redis/redis-store.js';

// A fleet with no OpenResty gateway at all: two Node gateways on one Redis, and a user's nginx
// with `graygate openresty conf`'s files and no graygate beside it. The Node gateways keep the
// routing key nginx reads current, so the nginx routes like them, before and after a change,
// without a reload; and the two writers deliver each change to nginx once.

const IDS = Array.from({ length: 100 }, (_, i) => String(1000 + i * 7));

interface NginxStatus {
  version?: number;
  seq?: number;
  source?: string;
  digest?: string;
  workers?: { id: number; version: number | null; at: number | null }[];
}

/** A request to the user's nginx control socket (what graygate would push to, and its status). */
function control(socketPath: string, method: 'GET' | 'POST', urlPath: string, body?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path: urlPath, timeout: 5_000 }, (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('a fleet of Node gateways only, and a user nginx that reads Redis', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let nodes: GatewayProcess[] = [];
  let userNginx: NginxProcess;
  let writer: RedisStore;
  let client: Redis;
  let socket: string;
  const namespace = `nodefleet-${Math.random().toString(36).slice(2, 8)}`;

  const routing = (percent: number) => ({
    upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [
      {
        name: 'app',
        stable: 'app-v1',
        release: { candidate: 'app-v2', state: 'canary', rules: [{ name: 'staff', uidRange: { ranges: [{ from: 1000, to: 1040 }] } }, { name: 'share', percentage: { percent } }] },
      },
    ],
  });

  const answersOf = async (url: string) => {
    const answers: string[] = [];
    for (const id of IDS) answers.push(String((await send(url, { headers: { 'x-user-id': id } })).version));
    return answers;
  };
  const status = async () => (await control(socket, 'GET', '/graygate/status')).json as NginxStatus;

  beforeAll(async () => {
    redis = await startRedis();
    client = new Redis(redis.url);
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    const store = { kind: 'redis', url: redis.url, namespace, pollMs: 500 };
    const config = { log: { level: 'info', format: 'json' }, admin: { listen: '127.0.0.1:0' }, store, ...routing(30) };
    nodes = [await startGatewayProcess({ config, workers: 1 }), await startGatewayProcess({ config, workers: 1 })];
    const dir = mkdtempSync(path.join(tmpdir(), 'graygate-node-fleet-'));
    writeFileSync(path.join(dir, 'graygate.yaml'), stringify({ store }));
    const written = await runCli(['openresty', 'conf', '--config', path.join(dir, 'graygate.yaml'), '--out', path.join(dir, 'nginx')]);
    expect(written.code, written.stderr).toBe(0);
    socket = path.join(dir, 'nginx', 'graygate-control.sock');
    userNginx = await startUserNginx(path.join(dir, 'nginx'));
    writer = writerStore(redis.url, namespace);
  });
  afterAll(async () => {
    await writer?.close();
    client?.disconnect();
    await Promise.all([...nodes.map((node) => node.stop()), userNginx?.stop()]);
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  it('routes the user nginx like the Node gateways, from the key they write', async () => {
    const fromNode = await answersOf(nodes[0]!.url);
    expect(new Set(fromNode)).toEqual(new Set(['stable', 'candidate']));
    expect(await answersOf(nodes[1]!.url)).toEqual(fromNode);
    await eventually(async () => expect(await answersOf(userNginx.url)).toEqual(fromNode));
    const now = await status();
    expect(now.source).toBe('redis');
    expect(now.version).toBe((await writer.current()).version);
  });

  it('follows a change written to the store, once per change for two writers, without a reload', async () => {
    const pids = userNginx.workerPids().sort();
    const before = await status();
    const candidates = (answers: string[]) => answers.filter((v) => v === 'candidate').length;
    const earlier = candidates(await answersOf(nodes[0]!.url));
    const version = await writeNext(writer, routingDocument(routing(70)), 'raise the share');
    const after = await eventually(async () => {
      const answers = await answersOf(nodes[0]!.url);
      expect(await answersOf(nodes[1]!.url)).toEqual(answers);
      // Raising a percentage only adds callers.
      expect(candidates(answers)).toBeGreaterThan(earlier);
      return answers;
    });
    await eventually(async () => expect(await answersOf(userNginx.url)).toEqual(after));
    const held = await status();
    expect(held.version).toBe(version);
    // Every worker swapped to it by itself (no request needed for that; each one is asked).
    await eventually(async () => expect((await status()).workers?.map((w) => w.version)).toEqual([version, version]));
    // Both gateways wrote the same content: nginx accepted it once (the second is a duplicate by
    // its digest), and the key's meta names the digest nginx holds.
    await eventually(async () => expect(await client.hget(`{${namespace}}:openresty:meta`, 'version')).toBe(String(version)));
    expect(await client.hget(`{${namespace}}:openresty:meta`, 'digest')).toBe(held.digest);
    expect(held.seq).toBe((before.seq ?? 0) + 1);
    expect(userNginx.workerPids().sort()).toEqual(pids);
  });

  it('takes the same content again as a duplicate, and new content of the same version by its later stamp', async () => {
    const raw = await client.get(`{${namespace}}:openresty`);
    const envelope = JSON.parse(raw!) as { stamp: number; digest: string };
    const before = await status();
    const again = await control(socket, 'POST', '/graygate/config', JSON.stringify({ ...envelope, stamp: envelope.stamp + 1_000 }));
    expect(again.status).toBe(200);
    expect(again.json.stored).toBe(false);
    expect((await status()).seq).toBe(before.seq);
    // Another digest (what a changed store key value such as Grayscale_Range gives) with a later stamp replaces it.
    const swappedAt = (await status()).workers!.map((w) => w.at ?? 0);
    const changed = await control(socket, 'POST', '/graygate/config', JSON.stringify({ ...envelope, stamp: envelope.stamp + 2_000, digest: `${envelope.digest}-other` }));
    expect(changed.json.stored).toBe(true);
    expect((await status()).seq).toBe((before.seq ?? 0) + 1);
    // No request reaches nginx meanwhile: every worker prepares the new envelope by itself.
    await eventually(async () => (await status()).workers!.forEach((w, i) => expect(w.at ?? 0).toBeGreaterThan(swappedAt[i]!)));
  });
  it('finds by its poll an envelope written to the key without a message, the same text polled before or not', async () => {
    const key = `{${namespace}}:openresty`;
    const envelope = JSON.parse((await client.get(key))!) as { stamp: number; digest: string };
    const before = await status();
    // The poll (every 500 ms) reads this same text a few times meanwhile; each read changes nothing.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect((await status()).seq).toBe(before.seq);
    // A new text in the key, announced to no one: only the poll can find it.
    await client.set(key, JSON.stringify({ ...envelope, stamp: envelope.stamp + 5_000, digest: `${envelope.digest}-polled` }));
    const found = await eventually(async () => {
      const now = await status();
      expect(now.digest).toBe(`${envelope.digest}-polled`);
      return now;
    });
    expect(found.source).toBe('redis');
    expect(found.seq).toBe((before.seq ?? 0) + 1);
  });
});
