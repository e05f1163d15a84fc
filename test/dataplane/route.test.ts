import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { classifyUpstreamError, ServerHealth, type UpstreamFailure } from '../../src/dataplane/balancer.js';
import { errorAnswer, rawErrorResponse, reasonPhrase } from '../../src/dataplane/error-response.js';
import { decideOrStable, hasRequestBody, nextStep } from '../../src/dataplane/route.js';
import { parseRoutingDocument } from '../../src/config/load.js';
import { ErrorCodes, type ErrorCode } from '../../src/errors.js';
import { identityCompiler } from '../../src/identity/request-identity.js';
import { IdentitySample } from '../../src/observe/identity-sample.js';
import { compileRouting } from '../../src/rules/compile.js';
import type { RequestFacts } from '../../src/rules/facts.js';
import type { CompiledService } from '../../src/rules/snapshot.js';
import { makeFacts } from '../helpers/facts.js';

// The decisions every runtime shares: the attempt policy, the body test, the error answer, and
// when an ejection counts. The adapters' suites run them through the real processes.

const failures: UpstreamFailure[] = ['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ECONNRESET', 'UND_ERR_SOCKET', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'HPE_INVALID', 'UND_ERR_CLOSED'].map((code) =>
  classifyUpstreamError({ code }),
);

describe('the attempt policy (nextStep)', () => {
  const state = fc.record({
    failure: fc.constantFrom(...failures),
    responseStarted: fc.boolean(),
    replayable: fc.boolean(),
    resetRetried: fc.boolean(),
    serversLeft: fc.boolean(),
    canMoveToStable: fc.boolean(),
  });
  const step = (s: { failure: UpstreamFailure; responseStarted: boolean; replayable: boolean; resetRetried: boolean; serversLeft: boolean; canMoveToStable: boolean }) =>
    nextStep(s.failure, s.responseStarted, s.replayable, s.resetRetried, s.serversLeft, s.canMoveToStable);

  it('never retries once the response has started, nor a request that cannot be sent again', () => {
    fc.assert(fc.property(state, (s) => !(s.responseStarted || !s.replayable) || step(s) === 'fail'));
  });

  it('moves to another server or stable only after a connect failure (nothing was sent), servers of the upstream first', () => {
    fc.assert(
      fc.property(state, (s) => {
        const next = step(s);
        if (next === 'next-server') return s.failure.isConnectFailure && s.serversLeft;
        if (next === 'stable') return s.failure.isConnectFailure && !s.serversLeft && s.canMoveToStable;
        return true;
      }),
    );
  });

  it('sends again to the same server only after a reset, once', () => {
    fc.assert(fc.property(state, (s) => step(s) !== 'retry-server' || (s.failure.code === 'GG_UPSTREAM_RESET' && !s.failure.isConnectFailure && !s.resetRetried)));
  });

  it('fails a timeout waiting for the response: the request may have had its effect', () => {
    const timeout = classifyUpstreamError({ code: 'UND_ERR_HEADERS_TIMEOUT' });
    expect(nextStep(timeout, false, true, false, true, true)).toBe('fail');
  });
});

describe('hasRequestBody', () => {
  it('reads the framing headers, whatever the method', () => {
    expect(hasRequestBody(undefined, '13')).toBe(true);
    expect(hasRequestBody('chunked', undefined)).toBe(true);
    expect(hasRequestBody(undefined, '0')).toBe(false);
    expect(hasRequestBody(undefined, undefined)).toBe(false);
    expect(hasRequestBody(null, null)).toBe(false);
  });
});

describe('the error answer', () => {
  it('takes every status from the error table and names the code in the body', () => {
    for (const code of Object.keys(ErrorCodes) as ErrorCode[]) {
      const answer = errorAnswer(code, 'why', false);
      expect(answer.status).toBe(ErrorCodes[code].status);
      expect(reasonPhrase(answer.status), `${code}: reason phrase of ${answer.status}`).not.toBe('');
      expect(JSON.parse(answer.body)).toEqual({ error: { code, message: 'why' } });
      expect(answer.headers['content-length']).toBe(String(Buffer.byteLength(answer.body)));
      expect(answer.headers.connection).toBeUndefined();
    }
  });

  it('writes a whole response for a raw socket, closing the connection', () => {
    const text = rawErrorResponse('GG_HEADERS_TOO_LARGE', 'the request headers are too large');
    expect(text).toMatch(/^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
    expect(text).toMatch(/\r\nconnection: close\r\n/);
    const [, body] = text.split('\r\n\r\n');
    expect(JSON.parse(body!)).toEqual({ error: { code: 'GG_HEADERS_TOO_LARGE', message: 'the request headers are too large' } });
  });
});

describe('passive health', () => {
  it('counts an ejection once: failures while a server is ejected neither eject it again nor prolong it', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 50 }), (threshold, failures) => {
        const health = new ServerHealth();
        const policy = { ejectAfterFailures: threshold, ejectForMs: 10_000 };
        let ejections = 0;
        for (let i = 0; i < failures; i++) if (health.recordConnectFailure(1_000 + i, policy)) ejections++;
        expect(ejections).toBe(failures >= threshold ? 1 : 0);
        if (failures >= threshold) expect(health.ejectedUntil).toBe(1_000 + threshold - 1 + 10_000);
      }),
    );
  });

  it('ejects again after the ejection ended and the threshold is reached anew', () => {
    const health = new ServerHealth();
    const policy = { ejectAfterFailures: 2, ejectForMs: 100 };
    expect(health.recordConnectFailure(0, policy)).toBe(false);
    expect(health.recordConnectFailure(1, policy)).toBe(true);
    expect(health.recordConnectFailure(50, policy)).toBe(false);
    expect(health.recordConnectFailure(200, policy)).toBe(false);
    expect(health.recordConnectFailure(201, policy)).toBe(true);
  });
});

describe('decideOrStable', () => {
  const snapshot = compileRouting(
    parseRoutingDocument({
      upstreams: { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] } },
      identity: { sources: [{ header: { name: 'x-user-id' } }] },
      services: [{ name: 'shop', stable: 'v1', release: { candidate: 'v2', rules: [{ name: 'first-users', uidRange: { from: 1, to: 100 } }] } }],
    }),
    1,
    { identity: identityCompiler() },
  );
  const shop = snapshot.matchService('shop.example', '/')!;

  /** A sample whose recording fails, as a bug or an exhausted heap would make it. */
  class FailingSample extends IdentitySample {
    override offer(_service: CompiledService, _facts: RequestFacts): void {
      throw new Error('sample broke');
    }
  }

  it('keeps the decision when recording the caller fails, and reports that fault under its own name', () => {
    const faults: string[] = [];
    const host = { identitySample: new FailingSample(), fault: (key: string) => faults.push(key) };
    const facts = makeFacts({ userId: '50' });
    const decision = decideOrStable(host, shop, facts);
    expect(decision.version).toBe('candidate');
    expect(decision.reason).toBe('first-users');
    expect(faults).toEqual(['identity-sample']);
  });

  it('routes to stable, reported as a failure to decide, when deciding itself throws', () => {
    const faults: string[] = [];
    const host = { identitySample: undefined, fault: (key: string) => faults.push(key) };
    const broken = { ...shop, decide: () => { throw new Error('rules broke'); } } as CompiledService;
    expect(decideOrStable(host, broken, makeFacts({ userId: '50' }))).toBe(shop.stableDecision);
    expect(faults).toEqual(['decide']);
  });
});
