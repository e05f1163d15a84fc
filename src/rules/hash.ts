/**
 * MurmurHash3, x86 32-bit variant (Austin Appleby, public domain; SMHasher's
 * `MurmurHash3_x86_32`), over the UTF-8 bytes of a string.
 *
 * How other systems reproduce graygate's buckets:
 *   bytes  = UTF-8 of the key (the id exactly as graygate holds it, in canonical form: `7`, never
 *            `007`); a lone UTF-16 surrogate encodes as U+FFFD (EF BF BD), as TextEncoder does
 *   hash   = MurmurHash3_x86_32(bytes, seed) as an unsigned 32-bit integer
 *   bucket = hash % 10000            (0..9999: a percentage with two decimals)
 * e.g. Python: `mmh3.hash(key.encode(), seed, signed=False) % 10000`;
 *      Go: `murmur3.Sum32WithSeed([]byte(key), seed) % 10000` (github.com/spaolacci/murmur3).
 *
 * The UTF-8 bytes are produced on the fly from the string's code units and fed into the block
 * mixer, so hashing allocates nothing (no Buffer, no TextEncoder output).
 */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

// Running state of one hash. Hashing is synchronous and JavaScript single threaded, so the
// module-level state is never shared by two calls at once; it spares a per-call state object.
let h = 0;
let block = 0;
let blockShift = 0;

function mixBlock(k: number): void {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, C2);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  h = (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function pushByte(byte: number): void {
  block |= byte << blockShift;
  blockShift += 8;
  if (blockShift === 32) {
    mixBlock(block);
    block = 0;
    blockShift = 0;
  }
}

/** Ends a hash; returns it as int32 (a Smi): returning the uint32 would box values >= 2^31. */
function finish(length: number): number {
  if (blockShift !== 0) {
    // Tail: the last 1-3 bytes, little endian, mixed without the h rotation.
    let k = Math.imul(block, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
  }
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h;
}

/** MurmurHash3_x86_32 of `bytes` with a 32-bit `seed`; an unsigned 32-bit integer. */
export function murmur3x86_32(bytes: Uint8Array, seed: number): number {
  h = seed | 0;
  block = 0;
  blockShift = 0;
  for (let i = 0; i < bytes.length; i++) pushByte(bytes[i]!);
  return finish(bytes.length) >>> 0;
}

/** MurmurHash3_x86_32 of the UTF-8 encoding of `text` with a 32-bit `seed`, as an unsigned 32-bit integer. */
export function murmur3Utf8(text: string, seed: number): number {
  return murmur3Utf8Int32(text, seed) >>> 0;
}

/**
 * The same hash as a signed int32 (same 32 bits). The hot path uses this form: V8 keeps int32
 * values unboxed, while a uint32 >= 2^31 returned from a call is a heap-allocated number.
 */
function murmur3Utf8Int32(text: string, seed: number): number {
  h = seed | 0;
  block = 0;
  blockShift = 0;
  let length = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      pushByte(c);
      length += 1;
    } else if (c < 0x800) {
      pushByte(0xc0 | (c >> 6));
      pushByte(0x80 | (c & 63));
      length += 2;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const next = i + 1 < n ? text.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
        i++;
        pushByte(0xf0 | (c >> 18));
        pushByte(0x80 | ((c >> 12) & 63));
        pushByte(0x80 | ((c >> 6) & 63));
        pushByte(0x80 | (c & 63));
        length += 4;
      } else {
        // A lone surrogate has no UTF-8 form; TextEncoder writes U+FFFD, and so do we.
        pushByte(0xef);
        pushByte(0xbf);
        pushByte(0xbd);
        length += 3;
      }
    } else {
      pushByte(0xe0 | (c >> 12));
      pushByte(0x80 | ((c >> 6) & 63));
      pushByte(0x80 | (c & 63));
      length += 3;
    }
  }
  return finish(length);
}

/** Buckets per 100 %: a percentage is cut at two decimals (`12.34 %` is 1234 buckets). */
export const BUCKETS = 10_000;

/** The bucket (0..9999) of a non-empty key under `seed`: `murmur3Utf8(key, seed) % 10000`. */
export function bucketOf(key: string, seed: number): number {
  // `>>> 0` and `%` in one function: optimized code keeps the uint32 in a register.
  return (murmur3Utf8Int32(key, seed) >>> 0) % BUCKETS;
}

/**
 * The 32-bit hash seed of a release: `murmur3Utf8(releaseSeed, 0)`, and with a salt
 * `murmur3Utf8(salt, murmur3Utf8(releaseSeed, 0))`. A new salt re-buckets every caller, which
 * is what independent experiments (percentage vs A/B/n) need.
 */
export function deriveSeed(releaseSeed: string, salt?: string): number {
  const base = murmur3Utf8(releaseSeed, 0);
  return salt === undefined ? base : murmur3Utf8(salt, base);
}
