import type { Decision } from '../../src/rules/snapshot.js';

/** A candidate decision of service `s` for header tests; `overrides` sets what a test is about. */
export const decision = (overrides: Partial<Decision>): Decision => ({
  service: 's',
  version: 'candidate',
  upstream: 'v2',
  candidate: 'v2',
  reason: 'rule 1',
  dependsOnCaller: true,
  vary: undefined,
  cachePrivate: false,
  ...overrides,
});
