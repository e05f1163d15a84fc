import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { describeValue, formatIssues, formatPath } from '../../src/config/issues.js';
import { RoutingDocument, Settings } from '../../src/config/schema.js';

function issuesOf(schema: z.ZodType, raw: unknown): string[] {
  const result = schema.safeParse(raw, { reportInput: true });
  if (result.success) throw new Error('expected the input to be refused');
  return formatIssues(result.error);
}

const upstreams = { v1: { servers: ['http://127.0.0.1:1'] } };
const withRules = (rules: unknown[]) => ({
  upstreams,
  services: [{ name: 'shop', stable: 'v1' }, { name: 'cart', stable: 'v1', release: { candidate: 'v1', rules } }],
});

describe('formatIssues', () => {
  it('names nested rule paths through all / any / not', () => {
    const issues = issuesOf(
      RoutingDocument,
      withRules([
        { uidRange: { from: 1, to: 2 } },
        { uidRange: { from: 1, to: 2 } },
        { all: [{ header: { name: 'x', present: true } }, { any: [{ not: { uidRange: { from: '5k', to: 3 } } }] }] },
      ]),
    );
    expect(issues).toEqual(['services[1].release.rules[2].all[1].any[0].not.uidRange.from: expected integer, got "5k"']);
  });

  it('writes record keys as fields, and quotes keys that are not plain names', () => {
    expect(issuesOf(RoutingDocument, { upstreams: { 'checkout-v1': { servers: [] } }, services: [] })).toEqual([
      'upstreams.checkout-v1.servers: expected at least 1 item',
    ]);
    expect(issuesOf(RoutingDocument, { upstreams: { 'a.b': { servers: [] } }, services: [] })).toEqual(['upstreams["a.b"].servers: expected at least 1 item']);
    const bad = issuesOf(RoutingDocument, { upstreams: { 'bad name': { servers: ['http://127.0.0.1:1'] } }, services: [] });
    expect(bad).toHaveLength(1);
    expect(bad[0]).toMatch(/^upstreams\["bad name"\]: invalid name "bad name": expected a name of letters/);
  });

  it('reports each unknown field on its own line, at its own path', () => {
    expect(issuesOf(RoutingDocument, { upstreams: { v1: { servers: ['http://127.0.0.1:1'], foo: 1, bar: 2 } }, services: [], baz: true })).toEqual([
      'upstreams.v1.foo: unknown field "foo"',
      'upstreams.v1.bar: unknown field "bar"',
      'baz: unknown field "baz"',
    ]);
  });

  it('shows the expected type and the value given, and "required" for a missing field', () => {
    expect(issuesOf(Settings, { proxy: { preserveHost: 'yes' } })).toEqual(['proxy.preserveHost: expected boolean, got "yes"']);
    expect(issuesOf(RoutingDocument, { upstreams })).toEqual(['services: required']);
    expect(issuesOf(Settings, { log: { level: 'loud' } })).toEqual(['log.level: expected one of "fatal", "error", "warn", "info", "debug", "trace", "silent", got "loud"']);
    expect(issuesOf(Settings, { proxy: { keepAliveTimeoutMs: 1.5 } })).toEqual(['proxy.keepAliveTimeoutMs: expected integer, got 1.5']);
    expect(issuesOf(Settings, { trustedProxies: ['x'] })).toEqual(['trustedProxies[0]: expected an IP address or CIDR like 10.0.0.0/8, got "x"']);
    expect(issuesOf(Settings, { store: { kind: 'etcd' } })).toEqual(['store.kind: expected "file" or "redis", got "etcd"']);
    expect(issuesOf(Settings, { store: {} })).toEqual(['store.kind: required (expected "file" or "redis")']);
  });

  it('never prints a huge input whole', () => {
    const huge = 'x'.repeat(100_000);
    const [line] = issuesOf(Settings, { proxy: { preserveHost: huge } });
    expect(line!.length).toBeLessThan(200);
    expect(line).toContain('…');
    expect(describeValue({ a: huge })).toHaveLength(80);
  });

  it('removes duplicate lines', () => {
    const error = new z.ZodError([
      { code: 'custom', path: ['a'], message: 'same', input: 1 },
      { code: 'custom', path: ['a'], message: 'same', input: 1 },
    ]);
    expect(formatIssues(error)).toEqual(['a: same']);
  });

  it('prefixes paths when asked', () => {
    const result = RoutingDocument.shape.services.safeParse([{ name: 'x' }], { reportInput: true });
    expect(formatIssues(result.error!, 'body.services')).toEqual(['body.services[0].stable: required']);
    expect(formatPath(['a', 0, 'b c', 'd'])).toBe('a[0]["b c"].d');
  });
});
