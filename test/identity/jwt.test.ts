import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { formatIssues } from '../../src/config/issues.js';
import { RoutingDocument } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import { Registry } from 'prom-client';
import { jwtIdentity, jwtStats } from '../../src/identity/jwt.js';
import type { IdentityContext, IdentityResolver } from '../../src/identity/source.js';
import { documentWithIdentity } from '../helpers/documents.js';
import { registerIdentityMetrics } from '../../src/observe/metrics.js';
import { eventually } from '../helpers/eventually.js';
import { makeFacts, type FactsInit } from '../helpers/facts.js';

const SECRET = 'a-test-secret-that-is-32-bytes-long!';
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const otherEc = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const pem = (key: KeyObject) => key.export({ type: 'spki', format: 'pem' }).toString();

const dir = mkdtempSync(join(tmpdir(), 'graygate-jwt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function issuesOf(config: unknown): string[] {
  const result = RoutingDocument.safeParse(documentWithIdentity({ jwt: config }), { reportInput: true });
  return result.success ? [] : formatIssues(result.error);
}

/** Parses through the real document schema, then creates the resolver. */
function create(config: unknown, context: IdentityContext = {}): IdentityResolver {
  const parsed = RoutingDocument.parse(documentWithIdentity({ jwt: config })).identity.sources[0]!.jwt!;
  return jwtIdentity.create(parsed, context);
}

async function resolve(resolver: IdentityResolver, init: FactsInit): Promise<string | undefined> {
  return await resolver(makeFacts(init));
}

const now = () => Math.floor(Date.now() / 1000);

async function sign(alg: 'HS256' | 'RS256' | 'ES256', key: KeyObject | Uint8Array, claims: Record<string, unknown> = { sub: 'user-1' }, kid?: string) {
  return new SignJWT(claims).setProtectedHeader({ alg, ...(kid ? { kid } : {}) }).setIssuedAt().setExpirationTime('10m').sign(key);
}
const secretBytes = new TextEncoder().encode(SECRET);
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

describe('jwt identity config', () => {
  it('refuses bad configs with the path of the field', () => {
    const at = 'identity.sources[0].jwt';
    expect(issuesOf({})).toEqual([`${at}: give one key: secret, secretEnv, publicKey or jwksFile`]);
    expect(issuesOf({ secret: 'short' })).toEqual([`${at}.secret: an HS256 secret has at least 32 bytes (RFC 7518 §3.2)`]);
    expect(issuesOf({ secret: SECRET, jwksFile: '/x' })).toEqual([`${at}: give only one key, got secret and jwksFile`]);
    expect(issuesOf({ publicKey: 'not a pem' })[0]).toMatch(/^identity\.sources\[0\]\.jwt\.publicKey: expected a PEM public key/);
    expect(issuesOf({ secret: SECRET, algorithms: ['RS256'] })).toEqual([`${at}.algorithms[0]: RS256 does not fit a shared secret`]);
    expect(issuesOf({ secret: SECRET, header: 'x-token', cookie: 'token' })).toEqual([`${at}.cookie: give header or cookie, not both`]);
    expect(issuesOf({ secret: SECRET, algorithms: ['none'] })[0]).toMatch(/^identity\.sources\[0\]\.jwt\.algorithms\[0\]: /);
    const ed = generateKeyPairSync('ed25519');
    expect(issuesOf({ publicKey: pem(ed.publicKey) })).toEqual([`${at}.publicKey: expected an RSA or P-256 EC public key, got ed25519`]);
  });

  it('refuses at create a JWKS file it cannot read and an unset secret variable', () => {
    expect(() => create({ jwksFile: join(dir, 'missing.json') })).toThrow(ConfigError);
    expect(() => create({ jwksFile: join(dir, 'missing.json') })).toThrow(/jwksFile: cannot read a JWKS/);
    expect(() => create({ secretEnv: 'GRAYGATE_TEST_UNSET_SECRET' })).toThrow(/GRAYGATE_TEST_UNSET_SECRET is not set/);
  });
});

describe('jwt identity', () => {
  it('takes the id from a valid HS256 token, then answers from the cache synchronously', async () => {
    const resolver = create({ secret: SECRET });
    const token = await sign('HS256', secretBytes);
    const first = resolver(makeFacts(bearer(token)));
    expect(first).toBeInstanceOf(Promise);
    expect(await first).toBe('user-1');
    expect(resolver(makeFacts(bearer(token)))).toBe('user-1');
    expect(resolver(makeFacts({ headers: { authorization: `bearer ${token}` } }))).toBeInstanceOf(Promise); // another raw value, verified once
  });

  it('verifies each token once, however many requests carry it at the same time', async () => {
    const resolver = create({ secret: SECRET });
    const token = await sign('HS256', secretBytes);
    const a = resolver(makeFacts(bearer(token)));
    const b = resolver(makeFacts(bearer(token)));
    expect(a).toBe(b);
    expect(await a).toBe('user-1');
  });

  it('counts cache hits, checked signatures and refusals per context, and the metrics report them', async () => {
    const context: IdentityContext = {};
    const resolver = create({ secret: SECRET }, context);
    const token = await sign('HS256', secretBytes);
    expect(await resolve(resolver, bearer(token))).toBe('user-1');
    expect(resolver(makeFacts(bearer(token)))).toBe('user-1');
    expect(await resolve(resolver, bearer(await sign('HS256', new TextEncoder().encode('another-secret-that-is-32-bytes-long'))))).toBeUndefined();
    expect(resolver(makeFacts(bearer(new UnsecuredJWT({ sub: 'x' }).encode())))).toBeUndefined();
    expect(resolver(makeFacts(bearer('not-a-jwt')))).toBeUndefined();
    // A new config for the same gateway (same context) keeps counting.
    const again = create({ secret: SECRET, claim: 'nope' }, context);
    expect(await resolve(again, bearer(token))).toBeUndefined();
    expect(jwtStats(context)).toEqual({ hits: 1, verified: 1, rejected: 2, refused: 2 });
    expect(jwtStats({})).toEqual({ hits: 0, verified: 0, rejected: 0, refused: 0 });

    const registry = new Registry();
    registerIdentityMetrics(registry, context);
    const text = await registry.metrics();
    expect(text).toContain('graygate_identity_lookups_total{source="jwt",result="hit"} 1');
    expect(text).toContain('graygate_identity_lookups_total{source="jwt",result="miss"} 3');
    expect(text).toContain('graygate_identity_lookups_total{source="jwt",result="invalid"} 4');
  });

  it('takes the id from valid RS256 and ES256 tokens with a PEM public key', async () => {
    expect(await resolve(create({ publicKey: pem(rsa.publicKey) }), bearer(await sign('RS256', rsa.privateKey)))).toBe('user-1');
    expect(await resolve(create({ publicKey: pem(ec.publicKey) }), bearer(await sign('ES256', ec.privateKey)))).toBe('user-1');
  });

  it('takes keys from a JWKS file, chosen by kid', async () => {
    const file = join(dir, 'jwks.json');
    const keys = [
      { ...(await exportJWK(rsa.publicKey)), kid: 'r1', alg: 'RS256', use: 'sig' },
      { ...(await exportJWK(ec.publicKey)), kid: 'e1', alg: 'ES256', use: 'sig' },
    ];
    writeFileSync(file, JSON.stringify({ keys }));
    const resolver = create({ jwksFile: file });
    expect(await resolve(resolver, bearer(await sign('RS256', rsa.privateKey, { sub: 'r' }, 'r1')))).toBe('r');
    expect(await resolve(resolver, bearer(await sign('ES256', ec.privateKey, { sub: 'e' }, 'e1')))).toBe('e');
    expect(await resolve(resolver, bearer(await sign('ES256', otherEc.privateKey, { sub: 'x' }, 'e1')))).toBeUndefined();
  });

  it('gives no identity for a bad signature, alg none, an expired or not-yet-valid token', async () => {
    const hs = create({ secret: SECRET });
    const es = create({ publicKey: pem(ec.publicKey) });
    const wrongSecret = await sign('HS256', new TextEncoder().encode('another-secret-that-is-32-bytes-long'));
    expect(await resolve(hs, bearer(wrongSecret))).toBeUndefined();
    expect(await resolve(es, bearer(await sign('ES256', otherEc.privateKey)))).toBeUndefined();
    // A valid token with one flipped signature character.
    const good = await sign('HS256', secretBytes);
    const tampered = good.slice(0, -2) + (good.at(-2) === 'A' ? 'B' : 'A') + good.at(-1);
    expect(await resolve(hs, bearer(tampered))).toBeUndefined();
    // A payload changed under a valid signature.
    const [h, , s] = good.split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify({ sub: 'admin', exp: now() + 600 })).toString('base64url')}.${s}`;
    expect(await resolve(hs, bearer(forged))).toBeUndefined();
    // alg none: refused before any verification, synchronously.
    const unsigned = new UnsecuredJWT({ sub: 'user-1' }).setExpirationTime('10m').encode();
    expect(hs(makeFacts(bearer(unsigned)))).toBeUndefined();
    expect(es(makeFacts(bearer(unsigned)))).toBeUndefined();
    // Algorithm confusion: HS256 signed with the public key's PEM as the secret.
    const confused = await sign('HS256', new TextEncoder().encode(pem(ec.publicKey)));
    expect(es(makeFacts(bearer(confused)))).toBeUndefined();
    const expired = await new SignJWT({ sub: 'user-1' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime(now() - 10).sign(secretBytes);
    expect(await resolve(hs, bearer(expired))).toBeUndefined();
    const early = await new SignJWT({ sub: 'user-1' }).setProtectedHeader({ alg: 'HS256' }).setNotBefore(now() + 600).sign(secretBytes);
    expect(await resolve(hs, bearer(early))).toBeUndefined();
    // Garbage and missing tokens.
    for (const init of [{}, bearer('x.y.z'), bearer('not-a-jwt'), { headers: { authorization: `Basic ${good}` } }, { headers: { authorization: good } }]) {
      expect(await resolve(hs, init), JSON.stringify(init)).toBeUndefined();
    }
  });

  it('accepts exp within the clock tolerance, and checks issuer and audience', async () => {
    const justExpired = await new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime(now() - 5).sign(secretBytes);
    expect(await resolve(create({ secret: SECRET, clockToleranceSeconds: 60 }), bearer(justExpired))).toBe('u');
    const token = await new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'HS256' }).setIssuer('idp').setAudience('shop').setExpirationTime('5m').sign(secretBytes);
    expect(await resolve(create({ secret: SECRET, issuer: 'idp', audience: 'shop' }), bearer(token))).toBe('u');
    expect(await resolve(create({ secret: SECRET, issuer: 'other' }), bearer(token))).toBeUndefined();
    expect(await resolve(create({ secret: SECRET, audience: 'other' }), bearer(token))).toBeUndefined();
  });

  it('reads a configured claim, a cookie or another header; ids are canonical strings', async () => {
    const token = await sign('HS256', secretBytes, { sub: 'user-1', uid: 42, bad: 4.5, empty: '' });
    expect(await resolve(create({ secret: SECRET, claim: 'uid' }), bearer(token))).toBe('42');
    expect(await resolve(create({ secret: SECRET, claim: 'bad' }), bearer(token))).toBeUndefined();
    expect(await resolve(create({ secret: SECRET, claim: 'empty' }), bearer(token))).toBeUndefined();
    expect(await resolve(create({ secret: SECRET, claim: 'missing' }), bearer(token))).toBeUndefined();
    expect(await resolve(create({ secret: SECRET, cookie: 'session' }), { cookies: { session: token } })).toBe('user-1');
    expect(await resolve(create({ secret: SECRET, header: 'X-Token' }), { headers: { 'x-token': token } })).toBe('user-1');
    expect(await resolve(create({ secret: SECRET, header: 'X-Token' }), { headers: { 'x-token': `Bearer ${token}` } })).toBe('user-1');
    expect(jwtIdentity.inputs(RoutingDocument.parse(documentWithIdentity({ jwt: { secret: SECRET } })).identity.sources[0]!.jwt!)).toEqual([
      { kind: 'header', name: 'authorization' },
    ]);
  });

  it('reads the secret from an environment variable', async () => {
    process.env.GRAYGATE_TEST_JWT_SECRET = SECRET;
    try {
      expect(await resolve(create({ secretEnv: 'GRAYGATE_TEST_JWT_SECRET' }), bearer(await sign('HS256', secretBytes)))).toBe('user-1');
    } finally {
      delete process.env.GRAYGATE_TEST_JWT_SECRET;
    }
  });

  it('does not keep a cached identity past the token expiry', async () => {
    const resolver = create({ secret: SECRET });
    const exp = now() + 2;
    const token = await new SignJWT({ sub: 'brief' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime(exp).sign(secretBytes);
    expect(await resolve(resolver, bearer(token))).toBe('brief');
    expect(resolver(makeFacts(bearer(token)))).toBe('brief');
    await eventually(async () => expect(await resolve(resolver, bearer(token))).toBeUndefined(), { withinMs: 6_000, everyMs: 100 });
    expect(Date.now()).toBeGreaterThanOrEqual(exp * 1000);
  });
});
