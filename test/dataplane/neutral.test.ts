import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { classifyUpstreamError, isRetryableRequest, RoundRobin, ServerHealth } from '../../src/dataplane/balancer.js';
import {
  buildClientResponseHeaders,
  buildUpstreamRequestHeaders,
  checkRequestFraming,
  HOP_BY_HOP,
  trustedClientIp,
  unwrapMappedIpv4,
} from '../../src/dataplane/headers.js';
import { compileCidrList } from '../../src/rules/cidr.js';

// The runtime-neutral parts of the data plane, which the Bun adapter will share.

const headerName = fc.constantFrom(
  'Connection',
  'connection',
  'Keep-Alive',
  'TE',
  'Trailer',
  'Transfer-Encoding',
  'Upgrade',
  'Proxy-Connection',
  'Proxy-Authorization',
  'X-Forwarded-For',
  'Forwarded',
  'X-Custom',
  'x-other',
  'Accept',
  'Content-Length',
  'Host',
);
const headerValue = fc.constantFrom('a', 'x-custom', 'close, x-other', 'keep-alive', '1.2.3.4', '5', 'Accept');

describe('upstream request headers', () => {
  it('never carry a hop-by-hop header or one named in Connection, and carry exactly one Host and X-Forwarded-For', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(headerName, headerValue), { maxLength: 12 }), fc.boolean(), (pairs, trusted) => {
        const raw = pairs.flat();
        const named = new Set(
          pairs
            .filter(([n]) => n.toLowerCase() === 'connection')
            .flatMap(([, v]) => v.split(',').map((t) => t.trim().toLowerCase())),
        );
        const out = buildUpstreamRequestHeaders(raw, { peerIp: '9.9.9.9', peerIsTrusted: trusted, proto: 'http' }, { preserveHost: true, originHost: 'o:1', bodyUntouched: true });
        const names = out.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
        for (const name of names) {
          expect(HOP_BY_HOP.has(name)).toBe(false);
          if (name !== 'host' && !name.startsWith('x-forwarded-')) expect(named.has(name)).toBe(false);
        }
        expect(names.filter((n) => n === 'host')).toHaveLength(1);
        expect(names.filter((n) => n === 'x-forwarded-for')).toHaveLength(1);
        expect(names.filter((n) => n === 'content-length').length).toBeLessThanOrEqual(1);
        const xff = out[out.indexOf('x-forwarded-for') + 1]!;
        expect(xff.endsWith('9.9.9.9')).toBe(true);
        if (!trusted) {
          expect(xff).toBe('9.9.9.9');
          expect(names).not.toContain('forwarded');
        }
      }),
    );
  });

  it('drop hop-by-hop and Connection-named headers from responses', () => {
    const out = buildClientResponseHeaders({ connection: 'x-a, close', 'x-a': '1', 'x-b': '2', 'transfer-encoding': 'chunked', 'set-cookie': ['a=1', 'b=2'] });
    expect(out).toEqual({ 'x-b': '2', 'set-cookie': ['a=1', 'b=2'] });
  });
});

describe('request framing guard', () => {
  it('accepts plain framings', () => {
    expect(checkRequestFraming(['Host', 'a'])).toBeUndefined();
    expect(checkRequestFraming(['Content-Length', '10'])).toBeUndefined();
    expect(checkRequestFraming(['transfer-encoding', 'chunked'])).toBeUndefined();
    expect(checkRequestFraming(['Transfer-Encoding', 'Chunked'])).toBeUndefined();
  });
  it('refuses every ambiguous one', () => {
    for (const raw of [
      ['Content-Length', '1', 'Transfer-Encoding', 'chunked'],
      ['Content-Length', '1', 'content-length', '1'],
      ['Content-Length', '1, 1'],
      ['Content-Length', '-1'],
      ['Transfer-Encoding', 'chunked\t'],
      ['Transfer-Encoding', 'chunked, identity'],
      ['Transfer-Encoding', 'xchunked'],
      ['Transfer-Encoding', 'chunked', 'Transfer-Encoding', 'chunked'],
    ]) {
      expect(checkRequestFraming(raw), raw.join(' ')).toBeTypeOf('string');
    }
  });
});

describe('client IP', () => {
  const isTrusted = compileCidrList(['10.0.0.0/8', '127.0.0.1']);
  it('is the peer when the peer is not trusted, whatever X-Forwarded-For says', () => {
    expect(trustedClientIp('203.0.113.9', false, '1.1.1.1', isTrusted)).toBe('203.0.113.9');
  });
  it('is the right-most untrusted X-Forwarded-For entry via trusted proxies', () => {
    expect(trustedClientIp('127.0.0.1', true, '6.6.6.6, 198.51.100.4, 10.0.0.2', isTrusted)).toBe('198.51.100.4');
    expect(trustedClientIp('127.0.0.1', true, '10.0.0.3, 10.0.0.2', isTrusted)).toBe('10.0.0.3');
    expect(trustedClientIp('127.0.0.1', true, undefined, isTrusted)).toBe('127.0.0.1');
    expect(trustedClientIp('127.0.0.1', true, ' ::ffff:198.51.100.4 ,', isTrusted)).toBe('198.51.100.4');
  });
  it('unwraps IPv4-mapped IPv6 peers only', () => {
    expect(unwrapMappedIpv4('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(unwrapMappedIpv4('::ffff:a0b')).toBe('::ffff:a0b');
    expect(unwrapMappedIpv4('2001:db8::1')).toBe('2001:db8::1');
  });
});

describe('round robin with passive health', () => {
  const servers = (n: number) => Array.from({ length: n }, () => ({ health: new ServerHealth() }));

  it('spreads requests evenly over healthy servers', () => {
    const rr = new RoundRobin(servers(3), { ejectAfterFailures: 1, ejectForMs: 1000 });
    const counts = [0, 0, 0];
    for (let i = 0; i < 300; i++) counts[rr.pick(0)]!++;
    expect(counts).toEqual([100, 100, 100]);
  });

  it('ejects after N consecutive failures, for ejectForMs, and a success resets the count', () => {
    const list = servers(2);
    const policy = { ejectAfterFailures: 2, ejectForMs: 1000 };
    const rr = new RoundRobin(list, policy);
    list[0]!.health.recordConnectFailure(0, policy);
    list[0]!.health.recordSuccess();
    list[0]!.health.recordConnectFailure(0, policy);
    expect(list[0]!.health.isAvailable(0)).toBe(true);
    list[0]!.health.recordConnectFailure(10, policy);
    expect(list[0]!.health.isAvailable(10)).toBe(false);
    for (let i = 0; i < 10; i++) expect(rr.pick(500)).toBe(1);
    expect(list[0]!.health.isAvailable(1010)).toBe(true);
    expect(rr.hasAvailable(500)).toBe(true);
  });

  it('never returns a tried server, returns an ejected one when nothing else is left, -1 when all were tried', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }), (n, ejected) => {
        const list = servers(n);
        list.forEach((s, i) => {
          if (ejected[i]) s.health.ejectedUntil = 100;
        });
        const rr = new RoundRobin(list, { ejectAfterFailures: 1, ejectForMs: 100 });
        const tried = new Set<number>();
        for (let k = 0; k < n; k++) {
          const i = rr.pick(50, tried);
          expect(i).toBeGreaterThanOrEqual(0);
          expect(tried.has(i)).toBe(false);
          // Healthy servers come before ejected ones.
          const healthyLeft = list.some((s, j) => !tried.has(j) && s.health.isAvailable(50));
          if (healthyLeft) expect(list[i]!.health.isAvailable(50)).toBe(true);
          tried.add(i);
        }
        expect(rr.pick(50, tried)).toBe(-1);
      }),
    );
  });
});

describe('retry and error mapping', () => {
  it('retries only idempotent methods without a body', () => {
    expect(isRetryableRequest('GET', false)).toBe(true);
    expect(isRetryableRequest('DELETE', false)).toBe(true);
    expect(isRetryableRequest('PUT', true)).toBe(false);
    expect(isRetryableRequest('POST', false)).toBe(false);
    expect(isRetryableRequest('PATCH', false)).toBe(false);
  });

  it('maps every undici and socket error code to a coded 5xx', () => {
    const table: [string, string, boolean][] = [
      ['ECONNREFUSED', 'GG_UPSTREAM_CONNECT', true],
      ['EHOSTUNREACH', 'GG_UPSTREAM_CONNECT', true],
      ['ENOTFOUND', 'GG_UPSTREAM_CONNECT', true],
      ['UND_ERR_CONNECT_TIMEOUT', 'GG_UPSTREAM_TIMEOUT', true],
      ['UND_ERR_HEADERS_TIMEOUT', 'GG_UPSTREAM_TIMEOUT', false],
      ['UND_ERR_BODY_TIMEOUT', 'GG_UPSTREAM_TIMEOUT', false],
      ['UND_ERR_SOCKET', 'GG_UPSTREAM_RESET', false],
      ['ECONNRESET', 'GG_UPSTREAM_RESET', false],
      ['UND_ERR_RES_CONTENT_LENGTH_MISMATCH', 'GG_UPSTREAM_RESET', false],
      ['HPE_INVALID_CONSTANT', 'GG_UPSTREAM_RESET', false],
      ['UND_ERR_CLOSED', 'GG_UPSTREAM_UNAVAILABLE', false],
      ['UND_ERR_DESTROYED', 'GG_UPSTREAM_UNAVAILABLE', false],
      ['UND_ERR_INVALID_ARG', 'GG_BAD_REQUEST', false],
    ];
    for (const [code, expected, connect] of table) {
      const failure = classifyUpstreamError(Object.assign(new Error('x'), { code }));
      expect(failure.code, code).toBe(expected);
      expect(failure.isConnectFailure, code).toBe(connect);
    }
    expect(classifyUpstreamError(new Error('no code')).code).toBe('GG_UPSTREAM_RESET');
  });
});
