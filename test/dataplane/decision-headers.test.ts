import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyDecisionHeaders, privateCacheControl } from '../../src/dataplane/decision-headers.js';
import type { Decision } from '../../src/rules/snapshot.js';
import { decision } from '../helpers/decision.js';
import { makeFacts } from '../helpers/facts.js';


describe('privateCacheControl', () => {
  it('drops what addresses shared caches and keeps the rest', () => {
    expect(privateCacheControl(undefined)).toBe('private');
    expect(privateCacheControl('public, max-age=60, s-maxage=600')).toBe('private, max-age=60');
    expect(privateCacheControl('Public,S-MaxAge=5,proxy-revalidate,no-cache')).toBe('private, no-cache');
    expect(privateCacheControl('private="set-cookie, x", max-age=5')).toBe('private, max-age=5');
    expect(privateCacheControl(['no-store', 'public'])).toBe('private, no-store');
    expect(privateCacheControl('')).toBe('private');
  });

  it('always starts with private and never keeps public or s-maxage (property)', () => {
    const directive = fc.constantFrom('public', 'private', 's-maxage=10', 'max-age=3', 'no-cache', 'must-revalidate', 'proxy-revalidate', 'no-store', 'immutable');
    fc.assert(
      fc.property(fc.array(directive, { maxLength: 6 }), (directives) => {
        const out = privateCacheControl(directives.join(', '));
        const names = out.split(', ');
        expect(names[0]).toBe('private');
        expect(names.slice(1).some((name) => /^(public|private|s-maxage|proxy-revalidate)/.test(name))).toBe(false);
        for (const kept of directives.filter((d) => !/^(public|private|s-maxage|proxy-revalidate)/.test(d))) expect(names).toContain(kept);
      }),
    );
  });
});

describe('applyDecisionHeaders', () => {
  it('appends the decision\'s Vary to the upstream\'s, or makes the response private', () => {
    const out: Record<string, string | string[]> = { vary: 'Accept-Encoding', 'cache-control': 'public, max-age=60' };
    applyDecisionHeaders(out, decision({ vary: 'Cookie, x-user-id' }), makeFacts());
    expect(out).toEqual({ vary: 'Accept-Encoding, Cookie, x-user-id', 'cache-control': 'public, max-age=60' });
    const priv: Record<string, string | string[]> = { 'cache-control': 'public, s-maxage=600' };
    applyDecisionHeaders(priv, decision({ cachePrivate: true }), makeFacts());
    expect(priv).toEqual({ 'cache-control': 'private' });
    const untouched: Record<string, string | string[]> = { 'cache-control': 'public' };
    applyDecisionHeaders(untouched, decision({}), makeFacts());
    expect(untouched).toEqual({ 'cache-control': 'public' });
  });

  it('adds a minted anonymous cookie after the upstream\'s own, and keeps that response out of shared caches', () => {
    const facts = makeFacts();
    facts.mintedAnonymousCookie = 'gg_anon=abc; Path=/';
    const out: Record<string, string | string[]> = { 'set-cookie': 'session=1', 'cache-control': 'public, max-age=60' };
    applyDecisionHeaders(out, decision({ vary: 'Cookie' }), facts);
    expect(out).toEqual({ 'set-cookie': ['session=1', 'gg_anon=abc; Path=/'], vary: 'Cookie', 'cache-control': 'private, max-age=60' });
    const bare: Record<string, string | string[]> = {};
    applyDecisionHeaders(bare, decision({}), facts);
    expect(bare).toEqual({ 'set-cookie': 'gg_anon=abc; Path=/', 'cache-control': 'private' });
  });
});
