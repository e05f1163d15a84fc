import { describe, expect, it } from 'vitest';
import { parseRoutingDocument } from '../../src/config/load.js';
import { RoutingDocument } from '../../src/config/schema.js';
import { semanticIssues } from '../../src/config/semantic.js';
import { ConfigError } from '../../src/errors.js';

const upstreams = { 'checkout-v1': { servers: ['http://127.0.0.1:1'] }, 'checkout-v2': { servers: ['http://127.0.0.1:2'] } };
const identity = { sources: [{ header: { name: 'x-user-id' } }] };

function issuesFor(raw: Record<string, unknown>): string[] {
  return semanticIssues(RoutingDocument.parse({ upstreams, identity, ...raw }));
}

function refusal(raw: unknown): ConfigError {
  try {
    parseRoutingDocument(raw);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected the document to be refused');
}

describe('semantic checks', () => {
  it('accepts a sound document, and freezes it', () => {
    const document = parseRoutingDocument({
      upstreams,
      identity,
      services: [{ name: 'checkout', stable: 'checkout-v1', release: { candidate: 'checkout-v2', rules: [{ uidRange: { from: 1, to: 5000 } }] } }],
    });
    expect(Object.isFrozen(document)).toBe(true);
    expect(Object.isFrozen(document.services[0]!.release!.rules)).toBe(true);
  });

  it('names an undefined upstream with its path and the known ones', () => {
    const stableUpstreams = { 'checkout-v1': upstreams['checkout-v1'] };
    expect(
      semanticIssues(
        RoutingDocument.parse({
          upstreams: stableUpstreams,
          services: [
            { name: 'home', stable: 'checkout-v1', match: { pathPrefix: '/home' } },
            { name: 'checkout', stable: 'checkout-v1', release: { candidate: 'checkout-v2' } },
          ],
        }),
      ),
    ).toEqual(['upstream "checkout-v2" is not defined (services[1].release.candidate); known: checkout-v1']);
    expect(issuesFor({ services: [{ name: 'a', stable: 'nope' }] })).toEqual([
      'upstream "nope" is not defined (services[0].stable); known: checkout-v1, checkout-v2',
    ]);
  });

  it('refuses a candidate that is the stable upstream', () => {
    expect(issuesFor({ services: [{ name: 'a', stable: 'checkout-v1', release: { candidate: 'checkout-v1' } }] })).toEqual([
      'services[0].release.candidate: "checkout-v1" is also the stable upstream; a release needs a different upstream',
    ]);
  });

  it('refuses two services with the same name', () => {
    expect(
      issuesFor({
        services: [
          { name: 'a', stable: 'checkout-v1', match: { pathPrefix: '/x' } },
          { name: 'a', stable: 'checkout-v1', match: { pathPrefix: '/y' } },
        ],
      }),
    ).toEqual(['services[1].name: service "a" is already defined (services[0])']);
  });

  it('refuses two services with the same match, trailing slash or host case notwithstanding', () => {
    expect(
      issuesFor({
        services: [
          { name: 'a', stable: 'checkout-v1', match: { host: 'Shop.example.com', pathPrefix: '/api' } },
          { name: 'b', stable: 'checkout-v1', match: { host: 'shop.example.com', pathPrefix: '/api/' } },
          { name: 'c', stable: 'checkout-v1' },
          { name: 'd', stable: 'checkout-v1', match: { pathPrefix: '/' } },
        ],
      }),
    ).toEqual([
      'services[1].match: same host "shop.example.com" and pathPrefix "/api" as services[0] ("a"); this service could never be chosen',
      'services[3].match: same host (any) and pathPrefix "/" as services[2] ("c"); this service could never be chosen',
    ]);
  });

  it('refuses malformed host names', () => {
    expect(issuesFor({ services: [{ name: 'a', stable: 'checkout-v1', match: { host: 'a..com' } }] })[0]).toMatch(
      /^services\[0\]\.match\.host: "a\.\.com" is not a host name/,
    );
    expect(issuesFor({ services: [{ name: 'a', stable: 'checkout-v1', match: { host: '*.example.com' } }] })).toEqual([]);
  });

  it('refuses a server listed twice in one upstream', () => {
    expect(
      semanticIssues(RoutingDocument.parse({ upstreams: { a: { servers: ['http://127.0.0.1:1', 'http://127.0.0.1:1/'] } }, services: [] })),
    ).toEqual(['upstreams.a.servers[1]: "http://127.0.0.1:1/" is listed twice (servers[0])']);
  });

  it('refuses two rules of one release with the same name', () => {
    const rules = [
      { name: 'beta', uidRange: { from: 1, to: 2 } },
      { name: 'beta', header: { name: 'x', present: true } },
    ];
    expect(issuesFor({ services: [{ name: 'a', stable: 'checkout-v1', release: { candidate: 'checkout-v2', rules } }] })).toEqual([
      'services[0].release.rules[1].name: rule name "beta" is already used by rules[0]',
    ]);
  });

  it('refuses a rule that reads the identity when no identity source is configured', () => {
    const document = RoutingDocument.parse({
      upstreams,
      services: [{ name: 'a', stable: 'checkout-v1', release: { candidate: 'checkout-v2', rules: [{ not: { uidRange: { from: 1, to: 2 } } }] } }],
    });
    expect(semanticIssues(document)).toEqual([
      "services[0].release.rules[0].not.uidRange: reads the caller's identity, but identity.sources is empty; add one, e.g. {header: {name: x-user-id}}",
    ]);
  });

  it('lists every issue of a document at once, with a stable code', () => {
    const error = refusal({
      upstreams,
      services: [
        { name: 'a', stable: 'nope' },
        { name: 'a', stable: 'checkout-v1', release: { candidate: 'gone' } },
      ],
    });
    expect(error.code).toBe('GG_CONFIG_INVALID');
    expect(error.issues).toHaveLength(4);
    expect(error.message).toContain('services[1].name');
    expect(error.message).toContain('(services[1].release.candidate)');
  });

  it('reports shape errors before meaning, all of them', () => {
    const error = refusal({ upstreams: { a: { servers: ['ftp://x'] } }, services: [{ name: 'a' }], extra: 1 });
    expect(error.issues).toEqual([
      'upstreams.a.servers[0]: expected an http:// or https:// URL, got "ftp://x"',
      'services[0].stable: required',
      'extra: unknown field "extra"',
    ]);
  });

  it('refuses what is not a document at all', () => {
    expect(refusal(null).issues[0]).toMatch(/expected a routing document/);
    expect(refusal([1]).code).toBe('GG_CONFIG_INVALID');
  });
});
