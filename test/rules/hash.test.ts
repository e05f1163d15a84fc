import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BUCKETS, bucketOf, deriveSeed, murmur3Utf8, murmur3x86_32 } from '../../src/rules/hash.js';

const run = promisify(execFile);
const bytes = (...values: number[]) => Uint8Array.from(values);

describe('murmur3x86_32', () => {
  // Published vectors for MurmurHash3_x86_32 (SMHasher's verification set and the widely
  // quoted table from its reference implementation).
  it.each([
    [bytes(), 0, 0],
    [bytes(), 1, 0x514e28b7],
    [bytes(), 0xffffffff, 0x81f16f39],
    [bytes(0xff, 0xff, 0xff, 0xff), 0, 0x76293b50],
    [bytes(0x21, 0x43, 0x65, 0x87), 0, 0xf55b516b],
    [bytes(0x21, 0x43, 0x65, 0x87), 0x5082edee, 0x2362f9de],
    [bytes(0x21, 0x43, 0x65), 0, 0x7e4a8634],
    [bytes(0x21, 0x43), 0, 0xa0f7b07a],
    [bytes(0x21), 0, 0x72661cf4],
    [bytes(0, 0, 0, 0), 0, 0x2362f9de],
    [bytes(0, 0, 0), 0, 0x85f0b427],
    [bytes(0, 0), 0, 0x30f4c306],
    [bytes(0), 0, 0x514e28b7],
  ])('bytes %o with seed %d hash to the published value', (input, seed, expected) => {
    expect(murmur3x86_32(input, seed)).toBe(expected);
  });

  it.each([
    ['Hello, world!', 1234, 0xfaf6cdb3],
    ['The quick brown fox jumps over the lazy dog', 0x9747b28c, 0x2fa826cd],
    ['aaaa', 0x9747b28c, 0x5a97808a],
    ['abc', 0x9747b28c, 0xc84a62dd],
    ['Hello, world!', 0x9747b28c, 0x24884cba],
    ['ππππππππ', 0x9747b28c, 0xd58063c1],
    ['a', 0x9747b28c, 0x7fa09ea6],
  ])('UTF-8 of %j with seed %d hashes to the published value', (text, seed, expected) => {
    expect(murmur3Utf8(text, seed)).toBe(expected);
  });

  it('hashes a string exactly as its TextEncoder bytes, lone surrogates included (property)', () => {
    const encoder = new TextEncoder();
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme' }), fc.string()), fc.integer(), (text, seed) => {
        expect(murmur3Utf8(text, seed)).toBe(murmur3x86_32(encoder.encode(text), seed));
      }),
      { numRuns: 5_000 },
    );
  });
});

// Golden buckets: a change here re-buckets every caller of every running release. Never edit
// these to make a test pass; they are what other systems reproduce (see src/rules/hash.ts).
const GOLDEN = {
  releaseSeed: 'checkout',
  seed: 1141725143,
  buckets: { '1': 4145, '7': 4448, '42': 5473, alice: 9565, 'user-1000': 3352, 'émile': 449, '😀': 8372 },
};

describe('buckets', () => {
  it('are pinned by golden values', () => {
    expect(deriveSeed(GOLDEN.releaseSeed)).toBe(GOLDEN.seed);
    for (const [key, bucket] of Object.entries(GOLDEN.buckets)) expect(bucketOf(key, GOLDEN.seed), key).toBe(bucket);
    expect(bucketOf('42', 0)).toBe(5814);
  });

  it('a salt gives an independent seed', () => {
    expect(deriveSeed('checkout', 'ab')).not.toBe(deriveSeed('checkout'));
    expect(deriveSeed('checkout', 'ab')).toBe(murmur3Utf8('ab', deriveSeed('checkout')));
  });

  it('are the same in a separate node process', async () => {
    const keys = Array.from({ length: 2_000 }, (_, i) => (i % 3 === 0 ? `user-${i}` : i % 3 === 1 ? String(i * 7919) : `ü-${i}-😀`));
    const seed = deriveSeed('cross-process', 'salt');
    const hashUrl = new URL('../../src/rules/hash.ts', import.meta.url).href;
    const script = `import { bucketOf } from ${JSON.stringify(hashUrl)};
      const input = JSON.parse(process.argv[1]);
      process.stdout.write(JSON.stringify(input.keys.map((k) => bucketOf(k, input.seed))));`;
    const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, JSON.stringify({ keys, seed })], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      timeout: 20_000,
    });
    const theirs = JSON.parse(stdout) as number[];
    expect(theirs).toHaveLength(keys.length);
    expect(theirs).toEqual(keys.map((key) => bucketOf(key, seed)));
    expect(theirs.every((bucket) => bucket >= 0 && bucket < BUCKETS)).toBe(true);
  });
});
