import { describe, expect, it } from 'vitest';
import { RolloutPlan } from '../../src/config/schema.js';

/** A plan's external checks: one kind each (a Prometheus query or a webhook), the other left out. */
describe('rollout plan checks', () => {
  const steps = [{ percent: 10, holdMs: 1_000 }];
  const prometheus = { url: 'http://127.0.0.1:9090', query: 'sum(up)', op: '>=', threshold: 1 };

  it('takes a Prometheus check or a webhook check on its own, with the defaults filled in', () => {
    const plan = RolloutPlan.parse({ steps, checks: [{ prometheus }, { name: 'smoke', webhook: { url: 'http://127.0.0.1:8080/run' } }] });
    expect(plan.checks[0]).toEqual({ prometheus, timeoutMs: 5_000, everyMs: 10_000 });
    expect(plan.checks[1]).toEqual({ name: 'smoke', webhook: { url: 'http://127.0.0.1:8080/run' }, timeoutMs: 5_000, everyMs: 10_000 });
  });

  it('refuses a check with both kinds or with neither, naming the kinds', () => {
    const both = RolloutPlan.safeParse({ steps, checks: [{ prometheus, webhook: { url: 'http://127.0.0.1:8080/run' } }] });
    expect(both.success).toBe(false);
    expect(both.error!.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`)).toEqual(['checks.0: expected exactly one check kind, got prometheus and webhook']);
    const neither = RolloutPlan.safeParse({ steps, checks: [{ name: 'nothing' }] });
    expect(neither.success).toBe(false);
    expect(neither.error!.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`)).toEqual(['checks.0: expected one check kind: prometheus, webhook']);
  });
});
