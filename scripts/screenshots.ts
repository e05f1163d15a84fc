/**
 * `npm run screenshots`: the README's dashboard pictures, from the real thing. Starts a gateway
 * process (built dist/, admin listener with a token) in front of two demo backends with some
 * latency and a few candidate errors, runs traffic through it, moves a release through the API
 * so the history has something to show, then signs in with Debian's chromium and saves
 * docs/screenshots/dashboard-overview.png and dashboard-history.png. Bounded: about a minute.
 */
import { mkdirSync } from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN_TOKEN, launchChromium, startDashboardGateway, startTraffic } from '../test/control/ui/harness.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = path.join(root, 'docs/screenshots');
const CHART_FILL_MS = Number(process.env.SCREENSHOT_CHART_MS ?? 40_000);

/** Answers like the test backends, after a few milliseconds; the candidate is a little slower and fails 2 % of requests. */
const backend = (name: string) => (req: http.IncomingMessage, res: http.ServerResponse) => {
  const slow = name === 'candidate' ? 1.6 : 1;
  const delayMs = (3 + Math.random() * 12 + (Math.random() < 0.05 ? 40 : 0)) * slow;
  req.resume();
  setTimeout(() => {
    if (name === 'candidate' && Math.random() < 0.02) {
      res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"simulated"}');
      return;
    }
    const body = JSON.stringify({ version: name });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
  }, delayMs);
  return true;
};

async function admin(adminUrl: string, method: string, url: string, body?: unknown): Promise<{ version?: number }> {
  const response = await fetch(`${adminUrl}${url}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const parsed = (await response.json()) as { version?: number };
  if (!response.ok) throw new Error(`${method} ${url}: ${response.status} ${JSON.stringify(parsed)}`);
  return parsed;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function main(): Promise<void> {
  mkdirSync(out, { recursive: true });
  const demo = await startDashboardGateway({ handler: backend });
  const traffic = startTraffic(demo.gateway.url, { maxMs: CHART_FILL_MS + 60_000, concurrency: 4, pauseMs: 6 });
  const chromium = await launchChromium({ width: 1440, height: 1040 });
  try {
    const page = await chromium.context.newPage();
    await page.goto(`${demo.adminUrl}/`);
    await page.getByLabel('Admin token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('[data-testid="release-state"]').waitFor();

    // A release with a little history: a canary, the testers header, the percentage raised.
    await sleep(CHART_FILL_MS / 3);
    await admin(demo.adminUrl, 'POST', '/v1/services/shop/release/start', { reason: 'canary of shop-v2 for 5 % of users', candidate: 'shop-v2', percentage: 5 });
    await sleep(CHART_FILL_MS / 3);
    await admin(demo.adminUrl, 'POST', '/v1/services/shop/release/set', {
      reason: 'QA can reach the candidate with x-canary: 1',
      rules: [
        { name: 'percentage', percentage: { percent: 5 } },
        { name: 'testers', header: { name: 'x-canary', equals: '1' } },
      ],
    });
    await admin(demo.adminUrl, 'POST', '/v1/services/shop/release/set', { reason: 'error rate flat for 10 minutes: 25 %', percentage: 25 });
    await sleep(CHART_FILL_MS / 3);

    await page.getByLabel('Headers').fill('x-user-id: 42\naccept: application/json');
    await page.getByRole('button', { name: 'Explain' }).click();
    await page.locator('[data-testid="explain-version"]').waitFor();
    await page.screenshot({ path: path.join(out, 'dashboard-overview.png'), fullPage: true });

    await page.getByRole('link', { name: 'History' }).click();
    // What restoring the first canary (5 %, no testers rule) would change: a removal and a change.
    const history = (await admin(demo.adminUrl, 'GET', '/v1/history')) as unknown as { versions: { version: number; reason: string }[] };
    const target = history.versions.find((v) => v.reason.startsWith('canary of shop-v2'))!.version;
    await page.locator(`tr[data-version="${target}"]`).click();
    await page.getByRole('button', { name: `Restoring v${target} would change` }).click();
    await page.locator('.diff-range', { hasText: `→ v${target}` }).waitFor();
    await page.setViewportSize({ width: 1440, height: 560 });
    await page.screenshot({ path: path.join(out, 'dashboard-history.png') });
    process.stdout.write(`saved ${path.relative(root, out)}/dashboard-overview.png and dashboard-history.png\n`);
  } finally {
    await chromium.close();
    const result = await traffic.stop();
    await demo.close();
    process.stdout.write(`traffic: ${result.sent} requests, ${result.failed} not 200 (the candidate's simulated errors)\n`);
  }
}

await main();
