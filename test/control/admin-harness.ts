import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { stringify } from 'yaml';
import { parseConfig } from '../../src/config/load.js';
import { createNodeDataPlane } from '../../src/dataplane/node/index.js';
import { startGateway, type Gateway } from '../../src/gateway/gateway.js';
import { silentLogger } from '../../src/observe/log.js';

export const ALICE = 'alice-token-0123456789abcdef';
export const BOB = 'bob-token-0123456789abcdef';

export interface ApiReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- test replies are checked field by field
}

export interface AdminGateway {
  readonly gateway: Gateway;
  readonly adminUrl: string;
  readonly proxyUrl: string;
  readonly configPath: string;
  /** One admin API call; `token` defaults to alice's, `null` sends none. */
  api(method: string, url: string, options?: { body?: unknown; rawBody?: string; token?: string | null; headers?: Record<string, string> }): Promise<ApiReply>;
  close(): Promise<void>;
}

/**
 * A real gateway in this process (file store in a temp dir, node data plane on a free port) with
 * the real admin API listening on loopback, tokens alice (inline) and bob (from the environment).
 */
export async function startAdminGateway(routing: Record<string, unknown>, admin: Record<string, unknown> = {}): Promise<AdminGateway> {
  const dir = mkdtempSync(path.join(tmpdir(), 'graygate-admin-'));
  const configPath = path.join(dir, 'graygate.yaml');
  process.env.GG_TEST_BOB_TOKEN = BOB;
  const raw = {
    listen: '127.0.0.1:0',
    log: { level: 'silent' },
    admin: { listen: '127.0.0.1:0', tokens: [{ name: 'alice', token: ALICE }, { name: 'bob', tokenEnv: 'GG_TEST_BOB_TOKEN' }], ...admin },
    ...routing,
  };
  writeFileSync(configPath, stringify(raw));
  const { settings } = parseConfig(raw);
  const gateway = await startGateway({ settings, configPath, logger: silentLogger(), createDataPlane: createNodeDataPlane });
  const adminUrl = `http://127.0.0.1:${gateway.adminAddress!.port}`;
  return {
    gateway,
    adminUrl,
    proxyUrl: `http://127.0.0.1:${gateway.address.port}`,
    configPath,
    async api(method, url, options = {}) {
      const token = options.token === undefined ? ALICE : options.token;
      const hasBody = options.body !== undefined || options.rawBody !== undefined;
      const response = await request(`${adminUrl}${url}`, {
        method: method as 'GET',
        headers: {
          ...(token !== null ? { authorization: `Bearer ${token}` } : {}),
          ...(hasBody ? { 'content-type': 'application/json' } : {}),
          ...options.headers,
        },
        ...(hasBody ? { body: options.rawBody ?? JSON.stringify(options.body) } : {}),
      });
      const text = await response.body.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON: keep the text
      }
      return { status: response.statusCode, headers: response.headers, body };
    },
    async close() {
      await gateway.close(1_000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
