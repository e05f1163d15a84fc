import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import type http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { startLoad } from '../../helpers/load.js';
import { startBackend, type Backend } from '../../helpers/backend.js';
import { startGatewayProcess, type GatewayProcess } from '../../helpers/gateway-process.js';

/**
 * What the dashboard's browser tests and the screenshot script share: a real gateway process with
 * an admin listener (one token), two real backends, a paced traffic loop of many callers, and
 * Debian's chromium driven by playwright-core.
 */

export const ADMIN_TOKEN = 'ops-dashboard-token-0123456789abcdef';
export const CHROMIUM = process.env.GRAYGATE_CHROMIUM ?? '/usr/bin/chromium';

export interface DashboardGateway {
  readonly gateway: GatewayProcess;
  readonly stable: Backend;
  readonly candidate: Backend;
  /** `http://127.0.0.1:PORT` of the admin listener (the dashboard is at /ui/). */
  readonly adminUrl: string;
  close(): Promise<void>;
}

/** Backends, then the gateway in front of them: service `shop`, stable `shop-v1`, a second upstream `shop-v2`, callers identified by x-user-id. */
export async function startDashboardGateway(
  options: {
    handler?: (name: string) => (req: http.IncomingMessage, res: http.ServerResponse) => boolean | void;
    release?: Record<string, unknown>;
    /** False: no admin.tokens (the API takes requests without a token, on loopback only). */
    tokens?: boolean;
  } = {},
): Promise<DashboardGateway> {
  const [stable, candidate] = await Promise.all([startBackend('stable', options.handler?.('stable')), startBackend('candidate', options.handler?.('candidate'))]);
  const gateway = await startGatewayProcess({
    config: {
      // The access log would write a line per request of the traffic loop; the tests read none.
      log: { access: { enabled: false } },
      admin: { listen: '127.0.0.1:0', tokens: options.tokens === false ? [] : [{ name: 'ops', tokenEnv: 'GG_DASHBOARD_TOKEN' }] },
      upstreams: { 'shop-v1': { servers: [stable.url] }, 'shop-v2': { servers: [candidate.url] } },
      identity: { sources: [{ header: { name: 'x-user-id' } }] },
      services: [{ name: 'shop', stable: 'shop-v1', ...(options.release ? { release: options.release } : {}) }],
    },
    env: { GG_DASHBOARD_TOKEN: ADMIN_TOKEN },
  });
  const listening = await gateway.waitForLog((line) => line.event === 'admin-listening');
  return {
    gateway,
    stable,
    candidate,
    adminUrl: `http://127.0.0.1:${listening.port as number}`,
    async close() {
      await gateway.stop();
      await Promise.all([stable.close(), candidate.close()]);
    },
  };
}

export interface Traffic {
  /** Index of the next answer: pass it to `countsSince` to count only what comes after now. */
  mark(): number;
  /** Answers by version (the backend's name) since `mark`, and failures. */
  countsSince(mark: number): { stable: number; candidate: number; failed: number; total: number };
  stop(): Promise<{ sent: number; failed: number; failures: string[] }>;
}

/**
 * A paced traffic loop through the gateway: `concurrency` workers, each sending one request at a
 * time as a random caller (x-user-id from 1 to 1,000,000, so sticky percentages split them) and
 * pausing `pauseMs` between requests, so it leaves CPU to the gateway and the browser on a shared
 * box. Bounded: it ends by itself after `maxMs` or `maxRequests`. Loopback only.
 */
export function startTraffic(url: string, options: { maxMs: number; maxRequests?: number; concurrency?: number; pauseMs?: number }): Traffic {
  const load = startLoad({
    url,
    maxMs: options.maxMs,
    maxRequests: options.maxRequests ?? 100_000,
    concurrency: options.concurrency ?? 3,
    pauseMs: options.pauseMs ?? 8,
    headers: () => ({ 'x-user-id': String(1 + Math.floor(Math.random() * 1_000_000)) }),
  });
  return {
    mark: () => load.mark(),
    countsSince(mark) {
      const answers = load.answersSince(mark);
      const stable = answers.stable ?? 0;
      const candidate = answers.candidate ?? 0;
      const total = Object.values(answers).reduce((sum, n) => sum + n, 0);
      return { stable, candidate, failed: total - stable - candidate, total };
    },
    async stop() {
      const { sent, failed, failures } = await load.stop();
      return { sent, failed, failures };
    },
  };
}

/** Debian's chromium, headless, with a fresh profile of its own (removed on close); no network beyond loopback is needed. */
export async function launchChromium(viewport = { width: 1440, height: 1000 }): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does it)`);
  const profile = mkdtempSync(path.join(tmpdir(), 'graygate-chromium-'));
  // A persistent context is how playwright takes a profile directory of our choosing: a fresh one.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    viewport,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30_000,
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
