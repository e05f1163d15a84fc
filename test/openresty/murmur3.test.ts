import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUCKETS, bucketOf, deriveSeed, murmur3Utf8, murmur3x86_32 } from '../../src/rules/hash.js';
import { startNginx, type Nginx } from '../helpers/nginx.js';

/**
 * openresty/graygate/murmur3.lua inside a real nginx against src/rules/hash.ts: the published
 * vectors, the golden buckets, and thousands of generated keys (UTF-8, long keys, every tail
 * length) and seeds, in batches through a test-only location.
 */

let nginx: Nginx;
beforeAll(async () => {
  nginx = await startNginx({
    http: ([port]) => `
  client_max_body_size 64m; client_body_buffer_size 64m;
  server { listen 127.0.0.1:${port};
    location = /murmur3 { content_by_lua_block { require("gg_test_harness").murmur3() } } }`,
  });
});
afterAll(() => nginx?.stop());

const encoder = new TextEncoder();

async function luaHashes(cases: { bytes: Uint8Array; seed: number }[]): Promise<{ hash: number; bucket: number }[]> {
  const body = JSON.stringify(cases.map((c) => ({ key: Buffer.from(c.bytes).toString('base64'), seed: c.seed })));
  const response = await fetch(`${nginx.url}/murmur3`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
  const text = await response.text();
  expect(response.status, text).toBe(200);
  return JSON.parse(text) as { hash: number; bucket: number }[];
}

describe('murmur3.lua', () => {
  it('gives the published MurmurHash3_x86_32 values', async () => {
    const vectors: [number[], number, number][] = [
      [[], 0, 0],
      [[], 1, 0x514e28b7],
      [[], 0xffffffff, 0x81f16f39],
      [[0xff, 0xff, 0xff, 0xff], 0, 0x76293b50],
      [[0x21, 0x43, 0x65, 0x87], 0, 0xf55b516b],
      [[0x21, 0x43, 0x65, 0x87], 0x5082edee, 0x2362f9de],
      [[0x21, 0x43, 0x65], 0, 0x7e4a8634],
      [[0x21, 0x43], 0, 0xa0f7b07a],
      [[0x21], 0, 0x72661cf4],
      [[0, 0, 0, 0], 0, 0x2362f9de],
      [[0, 0, 0], 0, 0x85f0b427],
      [[0, 0], 0, 0x30f4c306],
      [[0], 0, 0x514e28b7],
    ];
    const texts: [string, number, number][] = [
      ['Hello, world!', 1234, 0xfaf6cdb3],
      ['The quick brown fox jumps over the lazy dog', 0x9747b28c, 0x2fa826cd],
      ['aaaa', 0x9747b28c, 0x5a97808a],
      ['abc', 0x9747b28c, 0xc84a62dd],
      ['ππππππππ', 0x9747b28c, 0xd58063c1],
      ['a', 0x9747b28c, 0x7fa09ea6],
    ];
    const cases = [...vectors.map(([bytes, seed]) => ({ bytes: Uint8Array.from(bytes), seed })), ...texts.map(([text, seed]) => ({ bytes: encoder.encode(text), seed }))];
    const expected = [...vectors.map((v) => v[2]), ...texts.map((t) => t[2])];
    expect((await luaHashes(cases)).map((r) => r.hash)).toEqual(expected);
  });

  it('gives the golden buckets graygate pins', async () => {
    const seed = deriveSeed('checkout');
    expect(seed).toBe(1141725143);
    const golden: Record<string, number> = { '1': 4145, '7': 4448, '42': 5473, alice: 9565, 'user-1000': 3352, 'émile': 449, '😀': 8372 };
    const keys = Object.keys(golden);
    const result = await luaHashes([...keys.map((key) => ({ bytes: encoder.encode(key), seed })), { bytes: encoder.encode('42'), seed: 0 }]);
    expect(result.map((r) => r.bucket)).toEqual([...keys.map((key) => golden[key]), 5814]);
  });

  it('agrees with hash.ts on generated keys and seeds: UTF-8, long keys, negative and unsigned seeds', async () => {
    const key = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.string({ unit: 'grapheme', maxLength: 20 }),
      fc.string({ minLength: 200, maxLength: 2_000 }),
      fc.nat().map(String),
      fc.uuid(),
    );
    const seed = fc.oneof(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.nat({ max: 2 ** 32 - 1 }));
    const samples = fc.sample(fc.tuple(key, seed), { numRuns: 5_000, seed: 15 });
    const result = await luaHashes(samples.map(([text, s]) => ({ bytes: encoder.encode(text), seed: s })));
    samples.forEach(([text, s], i) => {
      const expected = murmur3Utf8(text, s);
      expect(result[i]!.hash, JSON.stringify({ text, s })).toBe(expected);
      expect(murmur3x86_32(encoder.encode(text), s)).toBe(expected);
      if (text.length > 0) expect(result[i]!.bucket).toBe(bucketOf(text, s));
    });
    expect(result.every((r) => r.bucket < BUCKETS)).toBe(true);
  });
});
