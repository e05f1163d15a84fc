import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { ADMIN_TOKEN, launchChromium, startDashboardGateway, startTraffic, type DashboardGateway, type Traffic } from '../control/ui/harness.js';

/**
 * The dashboard in Debian's chromium (playwright-core), against a real gateway process with an
 * admin token and two real backends, while a paced traffic loop of random callers runs through
 * the gateway. What routing does is checked by those requests, not by what the page says; the
 * page's own figures are checked to show the same thing.
 */


/** The candidate's share of the requests answered during the next `ms`. */
/**
 * The candidate's share of the next `answers` answers (a count, not a time window: a loaded box
 * answers fewer requests per second, never a different share).
 */
async function candidateShare(traffic: Traffic, answers = 150): Promise<{ share: number; total: number; failed: number }> {
  const mark = traffic.mark();
  await eventually(() => expect(traffic.countsSince(mark).total).toBeGreaterThanOrEqual(answers), { withinMs: 60_000, everyMs: 50 });
  const counts = traffic.countsSince(mark);
  return { share: counts.total ? counts.candidate / counts.total : 0, total: counts.total, failed: counts.failed };
}

/** expect.poll with room for a loaded 2-core box (its default gives up after one second; this is a cap, not a measurement). */
const until = <T>(read: () => Promise<T> | T) => expect.poll(read, { timeout: 60_000, interval: 100 });

const figure = async (page: Page, id: string) => Number((await page.locator(`[data-testid="${id}"]`).textContent()) ?? 'NaN');

describe('the dashboard, in chromium, against a gateway process under traffic', () => {
  let demo: DashboardGateway;
  let browser: Awaited<ReturnType<typeof launchChromium>>;
  let traffic: Traffic;
  let page: Page;

  beforeAll(async () => {
    [demo, browser] = await Promise.all([startDashboardGateway(), launchChromium()]);
    // Bounded: it stops by itself after 100 s even if a test hangs.
    traffic = startTraffic(demo.gateway.url, { maxMs: 900_000, maxRequests: 400_000, concurrency: 3, pauseMs: 8 });
    page = await browser.context.newPage();
  });

  afterAll(async () => {
    const result = await traffic?.stop();
    await browser?.close();
    await demo?.close();
    // Nothing the dashboard did may have failed a request going through the gateway.
    expect(result?.failures).toEqual([]);
  });

  it('serves the page without a token (it holds no secrets), bundled and same-origin only; the API still needs the token', async () => {
    const index = await fetch(`${demo.adminUrl}/ui/`);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(index.headers.get('cache-control')).toBe('no-cache');
    const html = await index.text();
    // Everything the page loads comes from the admin listener itself: no CDN, no external font.
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
    const script = /src="(\/ui\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    expect(script).toBeDefined();
    const bundle = await fetch(`${demo.adminUrl}${script}`);
    expect(bundle.status).toBe(200);
    expect(bundle.headers.get('cache-control')).toContain('immutable');
    expect((await fetch(`${demo.adminUrl}/ui/no-such-file.js`)).status).toBe(404);
    const api = await fetch(`${demo.adminUrl}/v1/status`);
    expect(api.status).toBe(401);
  });

  it('redirects / to /ui/, refuses a wrong token with the API\'s message and lets the right one in', async () => {
    await page.goto(`${demo.adminUrl}/`);
    expect(new URL(page.url()).pathname).toBe('/ui/');
    await page.getByLabel('Admin token').fill('not-one-of-the-admin-tokens-0000');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await until(() => page.locator('.login-error').textContent()).toContain('the bearer token is not one of admin.tokens');
    await until(() => page.locator('[data-testid="release-state"]').count()).toBe(0);

    await page.getByLabel('Admin token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('[data-testid="release-state"]').waitFor();
    expect(await page.locator('[data-testid="release-state"]').textContent()).toBe('idle');
    expect(await page.locator('.service-head h1').textContent()).toBe('shop');

    // The token is kept for the tab: a reload stays signed in.
    await page.reload();
    await page.locator('[data-testid="release-state"]').waitFor();
  });

  it('shows the live chart move while traffic runs', async () => {
    await eventually(async () => expect(await figure(page, 'rps-stable')).toBeGreaterThan(0), { withinMs: 10_000, everyMs: 200 });
    const points = async () => Number(await page.locator('.charts').getAttribute('data-points'));
    const before = await points();
    await eventually(async () => expect(await points()).toBeGreaterThan(before), { withinMs: 5_000, everyMs: 200 });
    expect(await figure(page, 'rps-candidate')).toBe(0);
    expect((await candidateShare(traffic, 60)).share).toBe(0);
  });

  it('starts a canary and moves its percentage with the control: traffic through the gateway shifts', async () => {
    await page.getByLabel('Candidate upstream').selectOption('shop-v2');
    await page.getByTestId('percentage').fill('10');
    await page.getByRole('button', { name: 'Start canary' }).click();
    await until(() => page.getByTestId('release-state').textContent()).toBe('canary');
    await eventually(
      async () => {
        const { share, total } = await candidateShare(traffic);
        expect(total).toBeGreaterThan(100);
        expect(share).toBeGreaterThan(0.04);
        expect(share).toBeLessThan(0.2);
      },
      { withinMs: 10_000 },
    );

    await page.getByTestId('percentage').fill('50');
    await page.getByRole('button', { name: 'Apply percentage' }).click();
    await eventually(
      async () => {
        const { share, total } = await candidateShare(traffic);
        expect(total).toBeGreaterThan(100);
        expect(share).toBeGreaterThan(0.35);
        expect(share).toBeLessThan(0.65);
      },
      { withinMs: 10_000 },
    );
    // The page's own figures show the candidate's traffic (from the gateway's metrics).
    await eventually(
      async () => {
        expect(await figure(page, 'rps-candidate')).toBeGreaterThan(0);
        expect(await figure(page, 'share-candidate')).toBeGreaterThan(25);
        expect(await figure(page, 'share-candidate')).toBeLessThan(75);
      },
      { withinMs: 10_000, everyMs: 200 },
    );
  }, 300_000);

  it('rolls back: every request goes to stable again', async () => {
    await page.getByRole('button', { name: 'Roll back' }).click();
    await until(() => page.getByTestId('release-state').textContent()).toBe('idle');
    await eventually(
      async () => {
        const { share, total } = await candidateShare(traffic, 60);
        expect(total).toBeGreaterThan(50);
        expect(share).toBe(0);
      },
      { withinMs: 5_000 },
    );
    await eventually(async () => expect(await figure(page, 'rps-candidate')).toBe(0), { withinMs: 10_000, everyMs: 200 });
  }, 300_000);

  it('restores the 50 % canary from history with one click: its routing is back', async () => {
    await page.getByRole('link', { name: 'History' }).click();
    const row = page.locator('tr', { hasText: 'set the candidate percentage to 50 %' });
    await row.waitFor();
    const version = Number(await row.getAttribute('data-version'));
    await row.getByRole('button', { name: `Restore version ${version}` }).click();
    // The restore is the newest version, and says which one it restored.
    await until(() => page.locator('tbody tr').first().textContent()).toContain(`restore version ${version}`);
    await until(() => page.locator('.service-list .badge').first().textContent()).toBe('canary');
    await eventually(
      async () => {
        const { share, total } = await candidateShare(traffic);
        expect(total).toBeGreaterThan(100);
        expect(share).toBeGreaterThan(0.35);
        expect(share).toBeLessThan(0.65);
      },
      { withinMs: 10_000 },
    );
  }, 300_000);

  it('goes full (everyone on the candidate) and finishes (everyone on stable) with the controls', async () => {
    await page.getByRole('link', { name: 'shop' }).click();
    await page.getByRole('button', { name: 'Go full' }).click();
    await until(() => page.getByTestId('release-state').textContent()).toBe('full');
    await eventually(async () => expect((await candidateShare(traffic, 60)).share).toBe(1), { withinMs: 5_000 });
    // The drain report of full shows on the page.
    await until(() => page.getByTestId('drain').textContent()).toMatch(/drained|in flight/);

    await page.getByRole('button', { name: 'Finish' }).click();
    await until(() => page.getByTestId('release-state').textContent()).toBe('idle');
    await eventually(async () => expect((await candidateShare(traffic, 60)).share).toBe(0), { withinMs: 5_000 });
  }, 300_000);
});

describe('the dashboard of an admin API without tokens (loopback only)', () => {
  it('opens without a login', async () => {
    const [open, browser] = await Promise.all([startDashboardGateway({ tokens: false }), launchChromium()]);
    try {
      const page = await browser.context.newPage();
      await page.goto(`${open.adminUrl}/ui/`);
      await page.getByTestId('release-state').waitFor();
      expect(await page.getByLabel('Admin token').count()).toBe(0);
      expect(await page.locator('.pill', { hasText: 'no token (loopback)' }).count()).toBe(1);
    } finally {
      await browser.close();
      await open.close();
    }
  });
});
