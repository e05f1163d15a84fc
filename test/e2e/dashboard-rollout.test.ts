import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { launchChromium, startDashboardGateway } from '../control/ui/harness.js';

const until = <T>(read: () => Promise<T> | T) => expect.poll(read, { timeout: 60_000, interval: 100 });

/** The dashboard's rollout card, in chromium, against a gateway process running a rollout. */
describe('the dashboard shows a rollout', () => {
  it('step progress, status and why, and the evidence against each bound', async () => {
    const [demo, browser] = await Promise.all([startDashboardGateway({ tokens: false }), launchChromium()]);
    try {
      // A first step that stays inconclusive (no traffic), then a gate: the card shows step 1 of 2 with its evidence.
      const plan = { steps: [{ percent: 10, holdMs: 600_000 }, { gate: true }] };
      const response = await request(`${demo.adminUrl}/v1/services/shop/rollout/start`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ reason: 'dashboard test', candidate: 'shop-v2', plan }),
      });
      expect(response.statusCode).toBe(200);
      await response.body.dump();
      const page = await browser.context.newPage();
      await page.goto(`${demo.adminUrl}/ui/#/service/shop`);
      await page.getByTestId('rollout-status').waitFor({ timeout: 60_000 });
      await until(async () => page.getByTestId('rollout-status').textContent()).toBe('running');
      expect(await page.getByTestId('rollout-step').textContent()).toBe('1 of 2');
      expect(await page.getByTestId('rollout-step-1').getAttribute('class')).toContain('current');
      // The samples check comes first: too few requests of either version, so the step holds.
      const samplesRow = page.getByTestId('rollout-evidence').locator('tbody tr').first();
      await until(async () => (await samplesRow.count()) > 0 && (await samplesRow.textContent())).toMatch(/^samplesinconclusive/);
      // Each check shows the candidate's figure beside stable's in the same window, and the bound.
      expect(await page.getByTestId('rollout-evidence').locator('thead').textContent()).toBe('checkoutcomecandidatestableboundsamples (cand/stable)');
      // An abort through the API shows on the card at the next poll, with its reason.
      const abort = await request(`${demo.adminUrl}/v1/services/shop/rollout/abort`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'stop here' }) });
      await abort.body.dump();
      await until(async () => page.getByTestId('rollout-status').textContent()).toBe('aborted');
      expect(await page.getByTestId('rollout-reason').textContent()).toBe('stop here');
    } finally {
      await browser.close();
      await demo.close();
    }
  });
});
