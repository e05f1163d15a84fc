import { z } from 'zod';

/**
 * CIDR lists for client-IP rules, prepared as integer masks at compile time.
 *
 * Every address is seen in one form: IPv6 as four 32-bit words, and IPv4 `a.b.c.d` as the
 * IPv4-mapped IPv6 address `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2). So `::ffff:1.2.3.4` (what a
 * dual-stack Node socket reports for an IPv4 peer) matches `1.2.3.0/24`, and `::ffff:0:0/96`
 * or `::/0` match plain IPv4 callers too. A list is split into IPv4 entries (one word: net and
 * mask) and IPv6 entries (four words each) so the common IPv4 case compares one word per entry.
 *
 * Words are kept as signed int32 (`Int32Array`) because `&` yields int32: comparing
 * `(word & mask) === net` then needs no `>>> 0` per step.
 */

/** A parsed CIDR: `words` is the network in the mapped IPv6 form; `prefix` counts from bit 0 of that form. */
export interface ParsedCidr {
  /** The address family the text was written in. */
  readonly version: 4 | 6;
  /** Network address as four int32 words (IPv4 as `::ffff:a.b.c.d`). */
  readonly words: Int32Array;
  /** Prefix length in the 128-bit mapped form (an IPv4 `/24` is `120`). */
  readonly prefix: number;
  /** The text as written, for messages. */
  readonly text: string;
}

const MAPPED_WORD2 = 0xffff; // third word of an IPv4-mapped IPv6 address

/** Mask with the top `bits` bits set (0..32), as int32. */
function maskOf(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? -1 : (-1 << (32 - bits)) | 0;
}

// Scratch space for per-call parsing: matchers are synchronous and JavaScript is single
// threaded, so one module-level buffer is never used by two calls at once.
const scratchWords = new Int32Array(4);
const scratchGroups = new Int32Array(8);

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48; // 0-9
  if (c >= 97 && c <= 102) return c - 87; // a-f
  if (c >= 65 && c <= 70) return c - 55; // A-F
  return -1;
}

/**
 * Dotted-quad IPv4 in `text[start, end)` as an int32, or `undefined` when malformed. Leading
 * zeros are refused (`010` reads as octal in some parsers, decimal in others).
 */
function parseV4(text: string, start: number, end: number): number | undefined {
  let value = 0;
  let parts = 0;
  let i = start;
  while (parts < 4) {
    const partStart = i;
    let part = 0;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) break;
      part = part * 10 + (c - 48);
      i++;
    }
    const digits = i - partStart;
    if (digits === 0 || digits > 3 || part > 255) return undefined;
    if (digits > 1 && text.charCodeAt(partStart) === 48) return undefined;
    value = (value << 8) | part;
    parts++;
    if (parts < 4) {
      if (i >= end || text.charCodeAt(i) !== 46 /* . */) return undefined;
      i++;
    }
  }
  return i === end ? value | 0 : undefined;
}

/** IPv6 in `text[start, end)` into `out` (four int32 words); false when malformed. */
function parseV6(text: string, start: number, end: number, out: Int32Array): boolean {
  const groups = scratchGroups;
  let count = 0;
  let gap = -1; // group index where `::` stands
  let i = start;
  if (end - start >= 2 && text.charCodeAt(i) === 58 && text.charCodeAt(i + 1) === 58) {
    gap = 0;
    i += 2;
  }
  while (i < end) {
    let j = i;
    let value = 0;
    while (j < end) {
      const h = hexValue(text.charCodeAt(j));
      if (h < 0) break;
      value = (value << 4) | h;
      j++;
    }
    if (j === i) return false; // empty group: ':::' or a stray ':'
    if (j < end && text.charCodeAt(j) === 46 /* . */) {
      // Embedded IPv4 (`::ffff:1.2.3.4`): the last two groups, and the end of the address.
      if (count > 6) return false;
      const v4 = parseV4(text, i, end);
      if (v4 === undefined) return false;
      groups[count++] = v4 >>> 16;
      groups[count++] = v4 & 0xffff;
      i = end;
      break;
    }
    if (j - i > 4 || count === 8) return false;
    groups[count++] = value;
    if (j === end) {
      i = j;
      break;
    }
    if (text.charCodeAt(j) !== 58 /* : */) return false;
    j++;
    if (j < end && text.charCodeAt(j) === 58) {
      if (gap >= 0) return false; // two '::'
      gap = count;
      j++;
    } else if (j === end) {
      return false; // trailing single ':'
    }
    i = j;
  }
  if (gap >= 0) {
    if (count > 7) return false; // '::' must stand for at least one group
    const tail = count - gap;
    for (let k = 0; k < tail; k++) groups[7 - k] = groups[count - 1 - k]!;
    for (let k = gap; k < 8 - tail; k++) groups[k] = 0;
  } else if (count !== 8) {
    return false;
  }
  for (let w = 0; w < 4; w++) out[w] = (groups[2 * w]! << 16) | groups[2 * w + 1]!;
  return true;
}

/**
 * Parses an IPv4 or IPv6 address into `out` as four int32 words (IPv4 in the mapped form).
 * Returns 4 or 6 for the family written, 0 when malformed. A zone (`fe80::1%eth0`) is ignored.
 */
function parseAddressInto(text: string, out: Int32Array): 0 | 4 | 6 {
  const length = text.length;
  if (length === 0 || length > 64) return 0;
  let end = length;
  let isV6 = false;
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c === 58 /* : */) isV6 = true;
    else if (c === 37 /* % */) {
      end = i;
      break;
    }
  }
  if (isV6) return parseV6(text, 0, end, out) && isZone(text, end + 1, length) ? 6 : 0;
  if (end !== length) return 0; // a zone on an IPv4 address is not a thing
  const v4 = parseV4(text, 0, end);
  if (v4 === undefined) return 0;
  out[0] = 0;
  out[1] = 0;
  out[2] = MAPPED_WORD2;
  out[3] = v4;
  return 4;
}

/** A zone after `%` as `net.isIP` accepts it: none at all, or one or more of [0-9A-Za-z.:-]. */
function isZone(text: string, start: number, length: number): boolean {
  if (start > length) return true; // no '%'
  if (start === length) return false;
  for (let i = start; i < length; i++) {
    const c = text.charCodeAt(i);
    const ok = (c >= 48 && c <= 58) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 46;
    if (!ok) return false;
  }
  return true;
}

/** True when `text` is an IPv4 or IPv6 address graygate can match (never throws). */
export function isIpAddress(text: string): boolean {
  return parseAddressInto(text, scratchWords) !== 0;
}

/** Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a /32 or /128); throws an `Error` saying what is wrong. */
export function parseCidr(text: string): ParsedCidr {
  const shape = `expected a CIDR like 10.0.0.0/8 or 2001:db8::/32, got ${JSON.stringify(text)}`;
  if (typeof text !== 'string') throw new Error(shape);
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  if (address.includes('%')) throw new Error(`${shape}: a zone (%...) is not allowed in a CIDR`);
  const words = new Int32Array(4);
  const version = parseAddressInto(address, words);
  if (version === 0) throw new Error(shape);
  const maxBits = version === 4 ? 32 : 128;
  let bits = maxBits;
  if (slash >= 0) {
    const prefixText = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText)) throw new Error(`${shape}: the prefix after "/" must be a whole number`);
    bits = Number(prefixText);
    if (bits > maxBits) throw new Error(`${shape}: an IPv${version} prefix is at most /${maxBits}`);
  }
  const prefix = version === 4 ? 96 + bits : bits;
  const network = new Int32Array(4);
  for (let w = 0; w < 4; w++) network[w] = words[w]! & maskOf(prefix - 32 * w);
  for (let w = 0; w < 4; w++) {
    if (network[w] !== words[w]) {
      throw new Error(
        `${JSON.stringify(text)} has bits set after the /${bits} prefix; write the network address ${formatNetwork(network, version)}/${bits}`,
      );
    }
  }
  return { version, words: network, prefix, text };
}

function formatNetwork(words: Int32Array, version: 4 | 6): string {
  if (version === 4) {
    const v = words[3]! >>> 0;
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const groups: string[] = [];
  for (let w = 0; w < 4; w++) groups.push(((words[w]! >>> 16) & 0xffff).toString(16), (words[w]! & 0xffff).toString(16));
  // Compress the longest run of zero groups, as RFC 5952 §4.2 asks.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLength).join(':')}`;
}

/** A CIDR in config (`10.0.0.0/8`, `2001:db8::/32`, or a single address); the message says what is wrong. */
export const Cidr = z
  .string()
  .superRefine((text, ctx) => {
    try {
      parseCidr(text);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
    }
  })
  .meta({ description: 'An IPv4 or IPv6 network in CIDR notation (10.0.0.0/8, 2001:db8::/32), or a single address.' });

/**
 * Compiles CIDRs into a predicate over client IPs. The predicate parses the IP per call without
 * allocating and returns false for malformed input (it never throws); `compileCidrList` throws
 * the `parseCidr` message for a bad CIDR.
 */
export function compileCidrList(cidrs: readonly string[]): (ip: string) => boolean {
  const parsed = cidrs.map(parseCidr);
  // Entries inside the mapped IPv4 space with a prefix of at least 96 need only the last word.
  const v4 = parsed.filter((c) => c.prefix >= 96 && c.words[0] === 0 && c.words[1] === 0 && c.words[2] === MAPPED_WORD2);
  const v6 = parsed.filter((c) => !v4.includes(c));
  const v4Net = Int32Array.from(v4, (c) => c.words[3]!);
  const v4Mask = Int32Array.from(v4, (c) => maskOf(c.prefix - 96));
  const v6Net = new Int32Array(v6.length * 4);
  const v6Mask = new Int32Array(v6.length * 4);
  v6.forEach((c, k) => {
    for (let w = 0; w < 4; w++) {
      v6Net[4 * k + w] = c.words[w]!;
      v6Mask[4 * k + w] = maskOf(c.prefix - 32 * w);
    }
  });
  const v4Count = v4Net.length;
  const v6Length = v6Net.length;
  const words = scratchWords;
  return (ip) => {
    const version = parseAddressInto(ip, words);
    if (version === 0) return false;
    const isMapped = words[0] === 0 && words[1] === 0 && words[2] === MAPPED_WORD2;
    if (isMapped) {
      const w3 = words[3]!;
      for (let k = 0; k < v4Count; k++) if ((w3 & v4Mask[k]!) === v4Net[k]) return true;
    }
    for (let k = 0; k < v6Length; k += 4) {
      if (
        (words[0]! & v6Mask[k]!) === v6Net[k] &&
        (words[1]! & v6Mask[k + 1]!) === v6Net[k + 1] &&
        (words[2]! & v6Mask[k + 2]!) === v6Net[k + 2] &&
        (words[3]! & v6Mask[k + 3]!) === v6Net[k + 3]
      ) {
        return true;
      }
    }
    return false;
  };
}
