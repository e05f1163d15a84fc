import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { bucketOf, deriveSeed } from '../../src/rules/hash.js';
import { versionFor } from '../helpers/load.js';
import { launchChromium, startDashboardGateway } from '../control/ui/harness.js';

const until = <T>(read: () => Promise<T> | T) => expect.poll(read, { timeout: 60_000, interval: 100 });

/** The dashboard shows the impact of a percentage set but not applied, counted on the callers the gateway served. */
describe('the dashboard shows the impact of a pending change', () => {
  it('a 10 → 20 % move says how many of the callers seen would change version, and writes nothing', async () => {
    const [demo, browser] = await Promise.all([
      startDashboardGateway({ tokens: false, release: { candidate: 'shop-v2', state: 'canary', rules: [{ name: 'percentage', percentage: { percent: 10 } }] } }),
      launchChromium(),
    ]);
    try {
      const ids = Array.from({ length: 300 }, (_, i) => `dash-${i}`);
      for (let i = 0; i < ids.length; i += 20) await Promise.all(ids.slice(i, i + 20).map((id) => versionFor(demo.gateway.url, { 'x-user-id': id })));
      const seed = deriveSeed('shop');
      const moving = ids.filter((id) => bucketOf(id, seed) >= 1_000 && bucketOf(id, seed) < 2_000).length;
      const before = (await (await request(`${demo.adminUrl}/v1/config`)).body.json()) as { version: number };

      const page = await browser.context.newPage();
      await page.goto(`${demo.adminUrl}/ui/#/service/shop`);
      await page.getByTestId('percentage').waitFor({ timeout: 60_000 });
      await page.getByTestId('percentage').fill('20');
      await until(async () => page.getByTestId('impact').textContent()).toContain(`Impact at 20 %: ${moving} of 300 caller(s) seen in the last 15 min would change version (${moving} to the candidate, 0 back to stable)`);
      await page.getByTestId('percentage').fill('10');
      await until(async () => page.getByTestId('impact').textContent()).toContain('Impact at 10 %: 0 of 300 caller(s)');
      // Nothing was applied: the routing version is the one before.
      const after = (await (await request(`${demo.adminUrl}/v1/config`)).body.json()) as { version: number };
      expect(after.version).toBe(before.version);
    } finally {
      await browser.close();
      await demo.close();
    }
  }, 180_000);
});
