import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { get } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

// Every credential a caller or an operator hands the gateway (login tokens and the store keys
// built from them, a JWT, Authorization and Cookie values, secrets in the query string, the admin
// token, the store's password) must stay out of everything every process writes, in every mode and through every
// fault that makes the gateway talk: lookups that time out (Redis stopped) and a Redis that is
// gone. The log level is trace, the most verbose. Each secret is long and random, and the output
// is searched for every 8 characters in a row of it: logs may show a fingerprint, no part of it.

const bun = path.join(fileURLToPath(new URL('../..', import.meta.url)), 'node_modules/.bin/bun');
const JWT_SECRET = `jwt-signing-${randomBytes(16).toString('hex')}`;

/** A distinctive secret: a tag (for the failure message) and 24 random characters. */
function secret(tag: string): string {
  return `${tag}${randomBytes(18).toString('base64url')}`;
}

interface Secrets {
  readonly all: string[];
  add(tag: string): string;
}

function secretsBag(): Secrets {
  const all: string[] = [];
  return {
    all,
    add(tag) {
      const value = secret(tag);
      all.push(value);
      return value;
    },
  };
}

/** Every secret of which any 8 characters in a row appear in `output`, with the line. */
function leaks(output: string, secrets: readonly string[]): string[] {
  const found: string[] = [];
  for (const value of secrets) {
    let at = -1;
    for (let i = 0; at < 0 && i + 8 <= value.length; i++) at = output.indexOf(value.slice(i, i + 8));
    if (at >= 0) {
      const lineStart = output.lastIndexOf('\n', at) + 1;
      const lineEnd = output.indexOf('\n', at);
      found.push(`${value}: ${output.slice(lineStart, lineEnd < 0 ? undefined : lineEnd).slice(0, 400)}`);
    }
  }
  return found;
}

describe('no secret in any output of any mode', () => {
  let stable: Backend;
  let candidate: Backend;
  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
  });
  afterAll(() => Promise.all([stable?.close(), candidate?.close()]));

  const modes: [string, { args: string[]; runtime?: string }][] = [
    ['node, one process', { args: ['--workers', '1'] }],
    ['node, --workers 2', { args: ['--workers', '2'] }],
    ['bun, one process', { args: ['--workers', '1'], runtime: bun }],
  ];

  it.each(modes)(
    '%s: tokens, store keys, JWTs, Authorization, Cookie and query secrets never reach stdout or stderr',
    async (mode, { args, runtime }) => {
      if (runtime !== undefined) expect(existsSync(bun), `${bun} (npm install installs bun as an optional dependency)`).toBe(true);
      const secrets = secretsBag();
      const adminToken = secrets.add('admin');
      // The store's password travels in its URL (the config file): it is a secret too.
      let redis: RedisServer | undefined = await startRedis({ password: secrets.add('redispw') });
      let gateway: GatewayProcess | undefined;
      try {
        const known = secrets.add('known');
        const garbage = secrets.add('garbage');
        await redis.client.set(`TOKEN_${known}`, '1234');
        await redis.client.set(`TOKEN_${garbage}`, 'not a user id');
        gateway = await startGatewayProcess({
          config: {
            store: { kind: 'redis', url: redis.url, namespace: `secrets-${Date.now()}` },
            admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', tokenEnv: 'GG_TEST_ADMIN_TOKEN' }] },
            log: { level: 'trace', format: 'json' },
            upstreams: { v1: { servers: [stable.url] }, v2: { servers: [candidate.url] } },
            identity: {
              sources: [{ tokenLookup: { header: 'token' } }, { jwt: { secretEnv: 'GG_TEST_JWT_SECRET' } }, { cookie: { name: 'uid' } }, { query: { name: 'uid' } }],
            },
            services: [{ name: 'app', stable: 'v1', release: { candidate: 'v2', state: 'canary', rules: [{ name: 'first', uidRange: { ranges: [{ from: 1, to: 5000 }] } }] } }],
          },
          args,
          runtime,
          env: { GG_TEST_ADMIN_TOKEN: adminToken, GG_TEST_JWT_SECRET: JWT_SECRET },
          readyWithinMs: 30_000,
        });
        const proxy = gateway.url;
        const adminLine = await gateway.waitForLog((line) => line.event === 'admin-listening', { withinMs: 20_000 });
        const admin = `http://127.0.0.1:${String(adminLine.port)}`;

        const jwtFor = async (subject: string) => {
          const jwt = await new SignJWT({ note: secret('claim') }).setProtectedHeader({ alg: 'HS256' }).setSubject(subject).setExpirationTime('5m').sign(new TextEncoder().encode(JWT_SECRET));
          secrets.all.push(jwt, jwt.split('.')[2]!);
          return jwt;
        };
        /** One request carrying a fresh secret in every place a client may put one. */
        const everything = async (tokenTag: string, token = secrets.add(tokenTag)) => {
          const query = secrets.add('query');
          return get(`${proxy}/page?access_token=${query}&uid=77`, {
            token,
            authorization: `Bearer ${await jwtFor('42')}`,
            cookie: `uid=99; session=${secrets.add('cookie')}`,
            'x-api-key': secrets.add('apikey'),
          });
        };

        // Redis up: a known token, unknown ones, a garbage value, a valid and a forged JWT,
        // Basic credentials, the admin API with its token and with a wrong one.
        expect((await get(`${proxy}/x`, { token: known })).status).toBe(200);
        expect((await get(`${proxy}/x`, { token: garbage })).status).toBe(200);
        for (let i = 0; i < 3; i++) expect((await everything('unknown')).status).toBe(200);
        const forged = `${(await jwtFor('7')).slice(0, -6)}AAAAAA`;
        secrets.all.push(forged);
        expect((await get(`${proxy}/x`, { authorization: `Bearer ${forged}` })).status).toBe(200);
        expect((await get(`${proxy}/x`, { authorization: `Basic ${Buffer.from(`user:${secrets.add('basic')}`).toString('base64')}` })).status).toBe(200);
        expect((await get(`${admin}/v1/status`, { authorization: `Bearer ${adminToken}` })).status).toBe(200);
        expect((await get(`${admin}/v1/status`, { authorization: `Bearer ${secrets.add('wrongadmin')}` })).status).toBe(401);
        await gateway.waitForLog((line) => typeof line.msg === 'string' && line.msg.includes('not a user id'), { withinMs: 20_000 });

        // Redis stopped (SIGSTOP): lookups of new tokens time out.
        redis.pause();
        const before = gateway.logs().length;
        await eventually(
          async () => {
            expect((await everything('timeout')).status).toBe(200);
            const failed = gateway!.logs().slice(before).some((line) => typeof line.msg === 'string' && line.msg.startsWith('token lookup failed'));
            if (!failed) throw new Error('no lookup failure logged yet');
          },
          { withinMs: 30_000, everyMs: 100 },
        );
        for (let i = 0; i < 10; i++) expect((await everything('timeout')).status).toBe(200);
        redis.resume();

        // Redis gone: lookups fail, the store reconnects in the background.
        await redis.kill('SIGKILL');
        const killedAt = gateway.logs().length;
        await eventually(
          async () => {
            expect((await everything('down')).status).toBe(200);
            if (!gateway!.logs().slice(killedAt).some((line) => typeof line.msg === 'string' && line.msg.startsWith('token lookup failed'))) throw new Error('no lookup failure logged yet');
          },
          { withinMs: 30_000, everyMs: 100 },
        );
        for (let i = 0; i < 5; i++) expect((await everything('down')).status).toBe(200);

        // Stopping writes its own lines too.
        expect(await gateway.stop('SIGTERM')).toBe(0);
        const output = gateway.output();
        // The paths above were really taken, and logged (so finding nothing means something).
        expect(output).toMatch(/"event":"access"/);
        expect(output).toMatch(/"path":"\/page"/);
        expect(output).toMatch(/token lookup failed/);
        expect(leaks(output, secrets.all)).toEqual([]);
        console.log(`no-secrets ${mode}: ${secrets.all.length} secrets, ${output.split('\n').length} lines of output searched`);
      } finally {
        if (gateway && gateway.child.exitCode === null && gateway.child.signalCode === null) gateway.child.kill('SIGKILL');
        redis?.resume();
        await redis?.stop().catch(() => undefined);
        redis = undefined;
      }
    },
    240_000,
  );
});
