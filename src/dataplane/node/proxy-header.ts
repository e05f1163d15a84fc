import net from 'node:net';
import { unwrapMappedIpv4 } from '../headers.js';

/**
 * The PROXY protocol header (HAProxy's spec, versions 1 and 2), as an L4 load balancer puts it in
 * front of the bytes of a TCP connection to say who the client is. This file only reads bytes;
 * `proxy-protocol.ts` decides whom to believe.
 *
 * - v1: one text line, `PROXY TCP4|TCP6 <src> <dst> <srcport> <dstport>\r\n` or
 *   `PROXY UNKNOWN …\r\n`, at most 107 bytes with the CRLF (the spec's own bound).
 * - v2: a 12-byte binary signature, version/command, family/transport, a 16-bit length, the
 *   addresses, then TLVs (skipped: nothing graygate routes on lives there).
 */

/** The v2 signature: `\r\n\r\n\0\r\nQUIT\n`. No HTTP request or TLS record starts this way. */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** The spec's bound for a v1 line, CRLF included. */
export const V1_MAX_BYTES = 107;
/**
 * The largest v2 header accepted (16-byte fixed part included). The spec allows 64 KiB of TLVs;
 * load balancers send tens of bytes (AWS: a VPC endpoint id; SSL TLVs a few hundred), and a bound
 * keeps a connection that has not said who it is from holding much memory.
 */
export const V2_MAX_BYTES = 4_096;

/** What a header says about the client: its address and port, as the load balancer saw them. */
export interface ProxiedSource {
  /** IPv4 dotted, or IPv6 (an IPv4-mapped IPv6 address is given as the IPv4 one). */
  readonly address: string;
  readonly port: number;
}

export type ProxyHeaderParse =
  /** The bytes so far are a prefix of a header (or of its signature): wait for more. */
  | { readonly kind: 'incomplete' }
  /** The bytes cannot start a PROXY header (e.g. an HTTP request or a TLS hello). */
  | { readonly kind: 'absent' }
  /** They start like one but are not a valid one; `reason` is for a log line. */
  | { readonly kind: 'invalid'; readonly version: 1 | 2; readonly reason: string }
  /**
   * A whole header of `length` bytes. `source` is the client it names; undefined when the header
   * says to use the connection's own addresses (v2 LOCAL, as health checks send; v1 UNKNOWN; v2
   * UNSPEC or UNIX family).
   */
  | { readonly kind: 'header'; readonly version: 1 | 2; readonly length: number; readonly source: ProxiedSource | undefined };

const INCOMPLETE: ProxyHeaderParse = Object.freeze({ kind: 'incomplete' });
const ABSENT: ProxyHeaderParse = Object.freeze({ kind: 'absent' });

/** How many leading bytes of `data` equal `prefix`'s (up to the shorter length). */
function matchingPrefix(data: Buffer, prefix: Buffer): number {
  const n = Math.min(data.length, prefix.length);
  let i = 0;
  while (i < n && data[i] === prefix[i]) i++;
  return i;
}

/**
 * Reads a PROXY header at the start of `data` (the bytes received so far on a connection).
 * Never throws; pure. Called once per chunk until it answers something other than `incomplete`.
 */
export function parseProxyHeader(data: Buffer): ProxyHeaderParse {
  if (data.length === 0) return INCOMPLETE;
  if (data[0] === V2_SIGNATURE[0]) {
    const same = matchingPrefix(data, V2_SIGNATURE);
    if (same < Math.min(data.length, V2_SIGNATURE.length)) return ABSENT;
    if (same < V2_SIGNATURE.length) return INCOMPLETE;
    return parseV2(data);
  }
  if (data[0] === V1_PREFIX[0]) {
    const same = matchingPrefix(data, V1_PREFIX);
    if (same < Math.min(data.length, V1_PREFIX.length)) return ABSENT;
    if (same < V1_PREFIX.length) return INCOMPLETE;
    return parseV1(data);
  }
  return ABSENT;
}

function invalid(version: 1 | 2, reason: string): ProxyHeaderParse {
  return { kind: 'invalid', version, reason };
}

// ---- v1 ---------------------------------------------------------------------------------------

function parseV1(data: Buffer): ProxyHeaderParse {
  const limit = Math.min(data.length, V1_MAX_BYTES);
  let end = -1;
  for (let i = V1_PREFIX.length; i < limit; i++) {
    const c = data[i]!;
    if (c === 0x0d) {
      end = i;
      break;
    }
    // Letters, digits, '.', ':' and spaces are all a v1 line holds (UNKNOWN's tail may hold any
    // printable text): anything else is not a header, however long we waited.
    if (c < 0x20 || c > 0x7e) return invalid(1, 'a control or non-ASCII byte in the v1 line');
  }
  if (end < 0) return data.length >= V1_MAX_BYTES ? invalid(1, `no CRLF within ${V1_MAX_BYTES} bytes`) : INCOMPLETE;
  if (end + 1 >= data.length) return INCOMPLETE;
  if (data[end + 1] !== 0x0a) return invalid(1, 'CR not followed by LF');
  const length = end + 2;
  const line = data.toString('latin1', V1_PREFIX.length, end);
  // UNKNOWN: the receiver must ignore the rest of the line and use the connection's addresses.
  if (line === 'UNKNOWN' || line.startsWith('UNKNOWN ')) return { kind: 'header', version: 1, length, source: undefined };
  const parts = line.split(' ');
  if (parts.length !== 5) return invalid(1, 'expected "TCP4|TCP6 <src> <dst> <srcport> <dstport>"');
  const [protocol, source, destination, sourcePort, destinationPort] = parts as [string, string, string, string, string];
  const isValidAddress = protocol === 'TCP4' ? net.isIPv4 : protocol === 'TCP6' ? net.isIPv6 : undefined;
  if (isValidAddress === undefined) return invalid(1, `unknown protocol "${protocol}"`);
  if (!isPlainAddress(source) || !isPlainAddress(destination) || !isValidAddress(source) || !isValidAddress(destination)) {
    return invalid(1, `an address is not ${protocol === 'TCP4' ? 'IPv4' : 'IPv6'}`);
  }
  const port = parsePort(sourcePort);
  if (port < 0 || parsePort(destinationPort) < 0) return invalid(1, 'a port is not a number in 0..65535');
  return { kind: 'header', version: 1, length, source: { address: unwrapMappedIpv4(source.toLowerCase()), port } };
}

/** Hex digits, '.' and ':' only: an address, not one with a zone (`fe80::1%eth0`) that net.isIPv6 also takes. */
function isPlainAddress(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const ok = (c >= 48 && c <= 58) /* 0-9 : */ || c === 46 || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
    if (!ok) return false;
  }
  return true;
}

/** A decimal port 0..65535 without leading zeros; -1 when it is not one. */
function parsePort(text: string): number {
  if (text.length === 0 || text.length > 5 || (text.length > 1 && text.charCodeAt(0) === 48)) return -1;
  let value = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    value = value * 10 + (c - 48);
  }
  return value <= 65_535 ? value : -1;
}

// ---- v2 ---------------------------------------------------------------------------------------

const V2_FIXED_BYTES = 16;
const COMMAND_LOCAL = 0x0;
const COMMAND_PROXY = 0x1;
const FAMILY_UNSPEC = 0x0;
const FAMILY_INET = 0x1;
const FAMILY_INET6 = 0x2;
const FAMILY_UNIX = 0x3;

function parseV2(data: Buffer): ProxyHeaderParse {
  if (data.length > 12) {
    const versionCommand = data[12]!;
    if (versionCommand >> 4 !== 0x2) return invalid(2, `version ${versionCommand >> 4}, expected 2`);
    const command = versionCommand & 0x0f;
    if (command !== COMMAND_LOCAL && command !== COMMAND_PROXY) return invalid(2, `unknown command ${command}`);
  }
  if (data.length > 13) {
    const family = data[13]! >> 4;
    const transport = data[13]! & 0x0f;
    if (family > FAMILY_UNIX) return invalid(2, `unknown address family ${family}`);
    if (transport > 0x2) return invalid(2, `unknown transport ${transport}`);
  }
  if (data.length < V2_FIXED_BYTES) return INCOMPLETE;
  const length = V2_FIXED_BYTES + data.readUInt16BE(14);
  if (length > V2_MAX_BYTES) return invalid(2, `a ${length}-byte header, over the ${V2_MAX_BYTES}-byte limit`);
  if (data.length < length) return INCOMPLETE;
  if ((data[12]! & 0x0f) === COMMAND_LOCAL) return { kind: 'header', version: 2, length, source: undefined };
  const family = data[13]! >> 4;
  const body = length - V2_FIXED_BYTES;
  if (family === FAMILY_INET) {
    if (body < 12) return invalid(2, `an IPv4 address block of ${body} bytes, expected at least 12`);
    const address = `${data[16]}.${data[17]}.${data[18]}.${data[19]}`;
    return { kind: 'header', version: 2, length, source: { address, port: data.readUInt16BE(24) } };
  }
  if (family === FAMILY_INET6) {
    if (body < 36) return invalid(2, `an IPv6 address block of ${body} bytes, expected at least 36`);
    return { kind: 'header', version: 2, length, source: { address: formatIpv6(data, 16), port: data.readUInt16BE(48) } };
  }
  if (family === FAMILY_UNIX && body < 216) return invalid(2, `a UNIX address block of ${body} bytes, expected at least 216`);
  // UNSPEC, or a UNIX socket path: no IP to route on; the connection's own address stands.
  return { kind: 'header', version: 2, length, source: undefined };
}

/**
 * The 16 bytes at `offset` as RFC 5952 text (lower case, the longest run of two or more zero
 * groups compressed, the first of equals). IPv4-mapped addresses come out as plain IPv4, the form
 * the rest of graygate uses for them.
 */
export function formatIpv6(data: Buffer, offset: number): string {
  let zeroPrefix = true;
  for (let i = 0; i < 10; i++) if (data[offset + i] !== 0) zeroPrefix = false;
  if (zeroPrefix && data[offset + 10] === 0xff && data[offset + 11] === 0xff) {
    return `${data[offset + 12]}.${data[offset + 13]}.${data[offset + 14]}.${data[offset + 15]}`;
  }
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(data.readUInt16BE(offset + 2 * i));
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number) => groups.slice(from, to).map((group) => group.toString(16)).join(':');
  return bestStart < 0 ? hex(0, 8) : `${hex(0, bestStart)}::${hex(bestStart + bestLength, 8)}`;
}
