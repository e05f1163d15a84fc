import { describe, expect, it } from 'vitest';
import { formatIssues } from '../../src/config/issues.js';
import { RoutingDocument } from '../../src/config/schema.js';
import { buildIdentityChain } from '../../src/identity/chain.js';
import { clientIpIdentity } from '../../src/identity/client-ip.js';
import { makeFacts } from '../helpers/facts.js';

describe('clientIp identity', () => {
  it('refuses unknown keys, naming the path', () => {
    const result = RoutingDocument.safeParse({ upstreams: {}, services: [], identity: { sources: [{ clientIp: { header: 'x' } }] } }, { reportInput: true });
    expect(formatIssues(result.error!)[0]).toMatch(/^identity\.sources\[0\]\.clientIp(\.header)?: .*header/);
  });

  it('uses the client IP as the id; IPv4-mapped peers get their IPv4 form', () => {
    const resolver = clientIpIdentity.create({}, {});
    const truth: [string, string | undefined][] = [
      ['203.0.113.7', '203.0.113.7'],
      ['::ffff:203.0.113.7', '203.0.113.7'],
      ['2001:db8::1', '2001:db8::1'],
      ['::ffff:cb00:7107', '::ffff:cb00:7107'],
      ['', undefined],
      ['unknown', undefined],
    ];
    for (const [clientIp, expected] of truth) expect(resolver(makeFacts({ clientIp })), clientIp).toBe(expected);
    expect(clientIpIdentity.inputs({})).toEqual([{ kind: 'clientIp' }]);
  });

  it('works in a chain built from the document', () => {
    const document = RoutingDocument.parse({ upstreams: {}, services: [], identity: { sources: [{ clientIp: {} }] } });
    const chain = buildIdentityChain(document.identity.sources);
    const facts = makeFacts({ clientIp: '10.1.2.3' });
    chain.resolve(facts);
    expect([facts.userId, facts.numericUserId, facts.identitySource]).toEqual(['10.1.2.3', undefined, 'clientIp']);
  });
});
