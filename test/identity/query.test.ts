import { describe, expect, it } from 'vitest';
import { formatIssues } from '../../src/config/issues.js';
import { RoutingDocument } from '../../src/config/schema.js';
import { buildIdentityChain } from '../../src/identity/chain.js';
import { queryIdentity } from '../../src/identity/query.js';
import { documentWithIdentity } from '../helpers/documents.js';
import { makeFacts } from '../helpers/facts.js';


describe('query identity', () => {
  it('refuses a config without a parameter name, naming the path', () => {
    const result = RoutingDocument.safeParse(documentWithIdentity({ query: { name: '' } }), { reportInput: true });
    expect(result.success).toBe(false);
    expect(formatIssues(result.error!)).toEqual(['identity.sources[0].query.name: expected a query parameter name']);
    const missing = RoutingDocument.safeParse(documentWithIdentity({ query: {} }), { reportInput: true });
    expect(formatIssues(missing.error!)[0]).toMatch(/^identity\.sources\[0\]\.query\.name: /);
  });

  it('takes the first value of the parameter; empty, absent or oversized is no identity', () => {
    const resolver = queryIdentity.create({ name: 'uid' }, {});
    expect(resolver(makeFacts({ query: { uid: '42' } }))).toBe('42');
    expect(resolver(makeFacts({ query: { uid: '' } }))).toBeUndefined();
    expect(resolver(makeFacts({ query: { UID: '42' } }))).toBeUndefined();
    expect(resolver(makeFacts({ query: { uid: 'x'.repeat(257) } }))).toBeUndefined();
    expect(resolver(makeFacts())).toBeUndefined();
    expect(queryIdentity.inputs({ name: 'uid' })).toEqual([{ kind: 'query', name: 'uid' }]);
  });

  it('works in a chain built from the document, setting the numeric id', () => {
    const document = RoutingDocument.parse({ upstreams: {}, services: [], identity: { sources: [{ header: { name: 'x-user-id' } }, { query: { name: 'uid' } }] } });
    const chain = buildIdentityChain(document.identity.sources);
    const facts = makeFacts({ query: { uid: '42' } });
    expect(chain.resolve(facts)).toBeUndefined(); // synchronous
    expect([facts.userId, facts.numericUserId, facts.identitySource]).toEqual(['42', 42, 'query:uid']);
  });
});
