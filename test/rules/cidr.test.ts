import { isIP } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Cidr, compileCidrList, isIpAddress, parseCidr } from '../../src/rules/cidr.js';

/** Naive oracle: addresses as 128-bit BigInts, IPv4 in the mapped form ::ffff:a.b.c.d. */
function toBigInt(ip: string): bigint {
  const zone = ip.indexOf('%');
  if (zone >= 0) ip = ip.slice(0, zone);
  if (!ip.includes(':')) return (0xffffn << 32n) | ip.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
  let head = ip;
  let v4Tail: string[] = [];
  const lastColon = ip.lastIndexOf(':');
  if (ip.slice(lastColon + 1).includes('.')) {
    const v4 = ip.slice(lastColon + 1).split('.').map(Number);
    v4Tail = [((v4[0]! << 8) | v4[1]!).toString(16), ((v4[2]! << 8) | v4[3]!).toString(16)];
    head = ip.slice(0, lastColon + 1) + 'x';
  }
  const [left, right] = head.split('::') as [string, string | undefined];
  const parse = (part: string) => (part === '' ? [] : part.split(':')).flatMap((g) => (g === 'x' ? v4Tail : [g]));
  const l = parse(left);
  const r = right === undefined ? [] : parse(right);
  const groups = right === undefined ? l : [...l, ...Array(8 - l.length - r.length).fill('0'), ...r];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

function naiveMatch(cidrs: readonly string[], ip: string): boolean {
  if (isIP(ip) === 0) return false;
  const address = toBigInt(ip);
  return cidrs.some((cidr) => {
    const [net, bitsText] = cidr.split('/') as [string, string | undefined];
    const isV4 = !net.includes(':');
    const bits = BigInt(bitsText === undefined ? (isV4 ? 32 : 128) : Number(bitsText)) + (isV4 ? 96n : 0n);
    const mask = bits === 0n ? 0n : ((1n << bits) - 1n) << (128n - bits);
    return (address & mask) === (toBigInt(net) & mask);
  });
}

/** A CIDR with host bits cleared, from an arbitrary address and prefix. */
function networkOf(ip: string, bits: number): string {
  const isV4 = !ip.includes(':');
  const total = isV4 ? 32 : 128;
  const value = isV4 ? toBigInt(ip) & 0xffffffffn : toBigInt(ip);
  const mask = bits === 0 ? 0n : ((1n << BigInt(bits)) - 1n) << BigInt(total - bits);
  const net = value & mask;
  if (isV4) return `${[24n, 16n, 8n, 0n].map((s) => (net >> s) & 255n).join('.')}/${bits}`;
  const groups = [];
  for (let i = 7; i >= 0; i--) groups.push(((net >> BigInt(16 * i)) & 0xffffn).toString(16));
  return `${groups.join(':')}/${bits}`;
}

describe('compileCidrList', () => {
  it('matches IPv4 edges: /0, /32, /24 boundaries', () => {
    const any = compileCidrList(['0.0.0.0/0']);
    expect(any('0.0.0.0')).toBe(true);
    expect(any('255.255.255.255')).toBe(true);
    expect(any('::ffff:8.8.8.8')).toBe(true);
    expect(any('2001:db8::1')).toBe(false); // /0 of IPv4 is every IPv4 address, not IPv6
    const host = compileCidrList(['10.1.2.3/32']);
    expect(host('10.1.2.3')).toBe(true);
    expect(host('10.1.2.4')).toBe(false);
    const net = compileCidrList(['192.168.1.0/24']);
    expect(net('192.168.1.0')).toBe(true);
    expect(net('192.168.1.255')).toBe(true);
    expect(net('192.168.0.255')).toBe(false);
    expect(net('192.168.2.0')).toBe(false);
    const top = compileCidrList(['128.0.0.0/1']); // sign bit of the int32 word
    expect(top('200.1.1.1')).toBe(true);
    expect(top('127.255.255.255')).toBe(false);
  });

  it('matches IPv4-mapped IPv6 against IPv4 CIDRs, in any spelling', () => {
    const match = compileCidrList(['1.2.3.0/24']);
    expect(match('::ffff:1.2.3.4')).toBe(true);
    expect(match('::FFFF:1.2.3.200')).toBe(true);
    expect(match('::ffff:102:304')).toBe(true);
    expect(match('0:0:0:0:0:ffff:1.2.3.4')).toBe(true);
    expect(match('::ffff:1.2.4.4')).toBe(false);
    expect(match('::1.2.3.4')).toBe(false); // IPv4-compatible (deprecated) is not mapped
    expect(compileCidrList(['::ffff:0:0/96'])('9.9.9.9')).toBe(true);
    expect(compileCidrList(['::ffff:10.0.0.0/104'])('10.200.0.1')).toBe(true);
  });

  it('matches IPv6 edges: /0, /128, /64 and zones', () => {
    const any = compileCidrList(['::/0']);
    expect(any('::')).toBe(true);
    expect(any('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff')).toBe(true);
    expect(any('1.2.3.4')).toBe(true); // IPv4 is seen as ::ffff:a.b.c.d
    const host = compileCidrList(['2001:db8::1/128']);
    expect(host('2001:db8::1')).toBe(true);
    expect(host('2001:0db8:0000:0000:0000:0000:0000:0001')).toBe(true);
    expect(host('2001:db8::2')).toBe(false);
    const net = compileCidrList(['2001:db8:1:2::/64']);
    expect(net('2001:db8:1:2:ffff:ffff:ffff:ffff')).toBe(true);
    expect(net('2001:db8:1:3::')).toBe(false);
    expect(compileCidrList(['fe80::/10'])('fe80::1%eth0')).toBe(true);
    expect(compileCidrList(['::1/128'])('::1')).toBe(true);
  });

  it('is false, never a throw, for malformed addresses', () => {
    const match = compileCidrList(['0.0.0.0/0', '::/0']);
    for (const bad of [
      '', ' ', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.4 ', ' 1.2.3.4', '1..2.3', '1.2.3.-4',
      ':::', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', 'g::1', '1:', ':1', '1:2:3:4:5:6:7', '::ffff:1.2.3',
      '::ffff:1.2.3.4.5', '1.2.3.4%eth0', '[::1]', 'localhost', 'x'.repeat(10_000), '1:2:3:4:5:6:7:1.2.3.4',
    ]) {
      expect(match(bad), JSON.stringify(bad)).toBe(false);
    }
  });

  it('agrees with net.isIP on what is an address (property)', () => {
    const candidates = fc.oneof(
      fc.ipV4(),
      fc.ipV6(),
      fc.ipV4Extended(),
      fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.%'.split('')), maxLength: 45 }),
      fc.string(),
    );
    fc.assert(
      fc.property(candidates, (text) => {
        expect(isIpAddress(text)).toBe(isIP(text) !== 0);
      }),
      { numRuns: 20_000 },
    );
  });

  it('agrees with a naive BigInt matcher (property)', () => {
    const cidr = fc.oneof(
      fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 32 })).map(([ip, bits]) => networkOf(ip, bits)),
      fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 128 })).map(([ip, bits]) => networkOf(ip, bits)),
    );
    const address = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4().map((ip) => `::ffff:${ip}`));
    fc.assert(
      fc.property(fc.array(cidr, { minLength: 1, maxLength: 8 }), fc.array(address, { minLength: 1, maxLength: 20 }), (cidrs, ips) => {
        const match = compileCidrList(cidrs);
        for (const ip of ips) expect(match(ip), `${ip} in ${cidrs.join(',')}`).toBe(naiveMatch(cidrs, ip));
        // An address is always inside the /32 or /128 of itself.
        for (const ip of ips) expect(compileCidrList([ip])(ip)).toBe(true);
      }),
      { numRuns: 2_000 },
    );
  });
});

describe('parseCidr and the Cidr schema', () => {
  it('accepts networks and bare addresses', () => {
    expect(parseCidr('10.0.0.0/8')).toMatchObject({ version: 4, prefix: 104 });
    expect(parseCidr('2001:db8::/32')).toMatchObject({ version: 6, prefix: 32 });
    expect(parseCidr('10.1.2.3')).toMatchObject({ version: 4, prefix: 128 });
    expect(parseCidr('::')).toMatchObject({ version: 6, prefix: 128 });
  });

  it('refuses bad CIDRs with a message saying what is wrong', () => {
    expect(() => parseCidr('10.0.0.0/33')).toThrow('an IPv4 prefix is at most /32');
    expect(() => parseCidr('::/129')).toThrow('an IPv6 prefix is at most /128');
    expect(() => parseCidr('10.0.0.0/')).toThrow('the prefix after "/" must be a whole number');
    expect(() => parseCidr('10.0.0.0/08')).toThrow('whole number');
    expect(() => parseCidr('10.0.0/8')).toThrow('expected a CIDR like 10.0.0.0/8');
    expect(() => parseCidr('10.1.2.3/8')).toThrow('write the network address 10.0.0.0/8');
    expect(() => parseCidr('2001:db8::1/32')).toThrow('write the network address 2001:db8::/32');
    expect(() => parseCidr('fe80::1%eth0/128')).toThrow('zone');
    const result = Cidr.safeParse('300.0.0.0/8');
    expect(result.success).toBe(false);
    expect(result.error!.issues[0]!.message).toContain('"300.0.0.0/8"');
  });
});
