import type http from 'node:http';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startLoad, versionFor, type Load } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { graygate } from '../control/cli-runner.js';

/**
 * Progressive rollouts through real gateway processes on a real Redis, real backends (one that
 * answers 500 on demand) and a real notification webhook. Holds are short and every wait is a
 * condition with a generous cap: nothing here times the machine.
 */
describe('progressive rollout across a fleet', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let broken: Backend;
  let hook: Backend;
  const notifications: Record<string, any>[] = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  const gateways: GatewayProcess[] = [];
  const adminUrls: string[] = [];
  const loads: Load[] = [];

  // Few samples make short steps; latency bounds are wide, as two loopback backends on a loaded
  // box differ in latency by noise alone.
  const few = { candidate: 20, stable: 20 };
  const analysis = { minSamples: few, errors: { minSamples: few }, latency: { p50Ratio: 1000, p99Ratio: 1000, minSamples: few } };
  const service = (name: string) => ({ name, match: { pathPrefix: `/${name}` }, stable: 'app-v1' });
  const config = () => ({
    store: { kind: 'redis', url: redis.url, namespace: 'rollout-e2e', pollMs: 1_000 },
    admin: { listen: '127.0.0.1:0' },
    upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] }, 'app-v2-broken': { servers: [broken.url] } },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [
      { ...service('good'), rollout: { steps: [{ percent: 20, holdMs: 1_000 }, { percent: 50, holdMs: 1_000 }], analysis, notify: { url: hook.url } } },
      service('bad'),
      service('hold'),
      service('manual'),
      service('fleet'),
    ],
  });

  const api = async (at: number, method: string, path: string, body?: unknown) => {
    const response = await request(`${adminUrls[at]}${path}`, {
      method: method as 'GET',
      headers: body !== undefined ? { 'content-type': 'application/json' } : {},
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await response.body.text();
    return { status: response.statusCode, body: (text.startsWith('{') ? JSON.parse(text) : text) as any }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  const randomUser = () => ({ 'x-user-id': String(1 + Math.floor(Math.random() * 1_000_000)) });
  const loadOn = (at: number, name: string) => {
    const load = startLoad({ url: `${gateways[at]!.url}/${name}`, maxMs: 120_000, concurrency: 2, pauseMs: 5, headers: randomUser });
    loads.push(load);
    return load;
  };
  /** The gateway that drives rollouts now (its graygate_rollout_driver is 1); there is one while a rollout is in progress. */
  const driverIndex = async () =>
    eventually(async () => {
      for (let at = 0; at < gateways.length; at++) {
        const gateway = gateways[at]!;
        if (gateway.child.exitCode !== null || gateway.child.signalCode !== null) continue;
        if (/^graygate_rollout_driver 1$/m.test((await api(at, 'GET', '/metrics')).body as string)) return at;
      }
      throw new Error('no gateway drives rollouts');
    });

  beforeAll(async () => {
    [redis, stable, candidate, broken] = await Promise.all([
      startRedis(),
      startBackend('stable'),
      startBackend('candidate'),
      startBackend('candidate', (_req: http.IncomingMessage, res: http.ServerResponse) => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ version: 'candidate', error: 'injected' }));
        return true;
      }),
    ]);
    hook = await startBackend('hook', (req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        notifications.push(JSON.parse(body) as Record<string, unknown>);
        res.writeHead(200).end('ok');
      });
      return true;
    });
    // One process each: the box is shared, and these tests are about the fleet's driver, not workers.
    for (let i = 0; i < 2; i++) {
      const gateway = await startGatewayProcess({ config: config(), workers: 1 });
      gateways.push(gateway);
      const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
      adminUrls.push(`http://127.0.0.1:${String(line.port)}`);
    }
  });

  afterAll(async () => {
    await Promise.all(loads.map((load) => load.stop()));
    await Promise.all(gateways.map((gateway) => gateway.stop()));
    await Promise.all([stable?.close(), candidate?.close(), broken?.close(), hook?.close()]);
    await redis?.stop();
  });

  it('a good candidate goes through every step to full, with zero failed requests, the evidence recorded and notified', async () => {
    const at = 0;
    const load = loadOn(at, 'good');
    const started = await api(at, 'POST', '/v1/services/good/rollout/start', { reason: 'ship v2', candidate: 'app-v2' });
    expect(started.status).toBe(200);
    expect(started.body.run).toMatchObject({ status: 'running', step: 0, candidate: 'app-v2' });
    const done = await eventually(async () => {
      const status = await api(at, 'GET', '/v1/services/good/rollout');
      expect(status.body.run.status).toBe('done');
      return status.body;
    }, { withinMs: 60_000 });
    expect(done.state).toBe('full');
    const passed = done.run.records.filter((record: { event: string }) => record.event === 'passed');
    expect(passed.map((record: { step: number }) => record.step)).toEqual([0, 1]);
    for (const record of passed) {
      const errors = record.evidence.find((e: { metric: string }) => e.metric === 'errors');
      expect(errors).toMatchObject({ outcome: 'pass' });
      expect(errors.samples.candidate).toBeGreaterThanOrEqual(20);
      expect(errors.samples.stable).toBeGreaterThanOrEqual(20);
    }
    // Everyone on the candidate now, on both gateways.
    for (const gateway of gateways) await eventually(async () => expect(await versionFor(`${gateway.url}/good`, randomUser())).toBe('candidate'));
    const result = await load.stop();
    expect(result.failures).toEqual([]);
    expect(result.byVersion.candidate).toBeGreaterThan(0);
    await eventually(() => expect(notifications.filter((n) => n.service === 'good').map((n) => n.event)).toEqual(expect.arrayContaining(['start', 'step', 'done'])));
    const doneNote = notifications.find((n) => n.service === 'good' && n.event === 'done')!;
    expect(doneNote.text).toContain('app-v2');
    // The history keeps every move with who made it.
    const history = await api(at, 'GET', '/v1/history');
    expect(history.body.versions.filter((v: { actor: string; reason: string }) => v.actor === 'graygate rollout' && v.reason.startsWith('good:')).length).toBeGreaterThanOrEqual(2);
  });

  it('a failing candidate is rolled back at once, saying which metric, its value, the bound and the samples, everywhere; a new start begins at step 1', async () => {
    const load = loadOn(1, 'bad');
    const plan = { steps: [{ percent: 50, holdMs: 600_000 }, { percent: 100, holdMs: 1_000 }], analysis, notify: { url: hook.url } };
    expect((await api(1, 'POST', '/v1/services/bad/rollout/start', { reason: 'ship broken v2', candidate: 'app-v2-broken', plan })).status).toBe(200);
    const ended = await eventually(async () => {
      const status = await api(1, 'GET', '/v1/services/bad/rollout');
      expect(status.body.run.status).toBe('rolled-back');
      return status.body;
    }, { withinMs: 60_000 });
    await load.stop();
    // The gateway that drove it (and so logged, counted and notified the rollback).
    const at = await eventually(() => {
      const found = gateways.findIndex((gateway) => gateway.logs().some((line) => line.event === 'rollout-rollback' && line.service === 'bad'));
      if (found < 0) throw new Error('no gateway logged the rollback');
      return found;
    });
    expect(ended.state).toBe('idle');
    expect(ended.run.step).toBe(0);
    expect(ended.run.reason).toContain('errors failed');
    const record = ended.run.records.at(-1);
    expect(record.event).toBe('rollback');
    const errors = record.evidence.find((e: { metric: string }) => e.metric === 'errors');
    expect(errors.outcome).toBe('fail');
    expect(errors.candidate).toBeGreaterThan(errors.bound);
    // Stable's figure in the same window: its backend never errs, so its rate is 0, and the bound
    // is built from it (stable + 0.5 points at least).
    expect(errors.stable).toBe(0);
    expect(errors.bound).toBeGreaterThanOrEqual(errors.stable + 0.005);
    expect(record.evidence.find((e: { metric: string }) => e.metric === 'samples')).toMatchObject({ stable: errors.samples.stable });
    // A fail needs no minimum sample count (the test is valid from the first request; only a pass
    // waits for minSamples): the record says how many it judged on, at least one candidate request.
    expect(errors.samples.candidate).toBeGreaterThan(0);
    // Stable serves everyone again.
    for (const gateway of gateways) await eventually(async () => expect(await versionFor(`${gateway.url}/bad`, randomUser())).toBe('stable'));
    // The CLI, the metrics, the log and the notification say why.
    const cli = await graygate(['rollout', 'status', 'bad', '--url', adminUrls[at]!]);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toContain('rolled-back');
    expect(cli.stdout).toMatch(/errors fail: candidate [\d.]+ %, stable 0 %, bound [\d.]+ %, samples \d+\/\d+ — /);
    const metrics = await api(at, 'GET', '/metrics');
    expect(metrics.body).toMatch(/graygate_rollout_status\{service="bad",status="rolled-back"\} 1/);
    expect(metrics.body).toMatch(/graygate_rollout_moves_total\{service="bad",event="rollback"\} 1/);
    const logged = await gateways[at]!.waitForLog((line) => line.event === 'rollout-rollback' && line.service === 'bad');
    expect(JSON.stringify(logged.evidence)).toContain('"metric":"errors"');
    expect((logged.evidence as { metric: string; stable: number | null }[]).find((e) => e.metric === 'errors')!.stable).toBe(0);
    // The version the rollback wrote keeps the same evidence in history.
    const history = await api(at, 'GET', '/v1/history');
    const kept = history.body.versions.find((v: { actor: string; reason: string }) => v.actor === 'graygate rollout' && v.reason.startsWith('bad: rolled back'));
    const version = (await api(at, 'GET', `/v1/history/${kept.version}`)).body;
    const keptRun = version.document.services.find((s: { name: string }) => s.name === 'bad').rolloutRun;
    expect(keptRun.records.at(-1).evidence.find((e: { metric: string }) => e.metric === 'errors')).toMatchObject({ outcome: 'fail', stable: 0 });
    await eventually(() => expect(notifications.some((n) => n.service === 'bad' && n.event === 'rollback')).toBe(true));
    const note = notifications.find((n) => n.service === 'bad' && n.event === 'rollback')!;
    expect(note.text).toContain('ROLLED BACK');
    expect(note.text).toMatch(/errors: candidate [\d.]+ % against stable 0 %, bound [\d.]+ %/);
    expect(note.evidence.some((e: { metric: string; outcome: string }) => e.metric === 'errors' && e.outcome === 'fail')).toBe(true);

    // Abort with nothing in progress: 409, nothing written.
    const before = await api(at, 'GET', '/v1/config');
    const abort = await api(at, 'POST', '/v1/services/bad/rollout/abort', { reason: 'nothing to abort' });
    expect(abort.status).toBe(409);
    expect(abort.body.error.code).toBe('GG_ROLLOUT_NOT_RUNNING');
    expect((await api(at, 'GET', '/v1/config')).body.version).toBe(before.body.version);

    // A new start after the rollback begins at step 1 (index 0), as a new run.
    const again = await api(at, 'POST', '/v1/services/bad/rollout/start', { reason: 'try again', candidate: 'app-v2', plan: { ...plan, notify: undefined } });
    expect(again.status).toBe(200);
    expect(again.body.run).toMatchObject({ step: 0, status: 'running' });
    expect(again.body.run.id).not.toBe(ended.run.id);
    expect((await api(at, 'POST', '/v1/services/bad/rollout/abort', { reason: 'done with the test' })).status).toBe(200);
  });

  it('abort during a hold sends everyone back to stable at once', async () => {
    const at = 0;
    const plan = { steps: [{ percent: 100, holdMs: 600_000 }], analysis };
    expect((await api(at, 'POST', '/v1/services/hold/rollout/start', { reason: 'long hold', candidate: 'app-v2', plan })).status).toBe(200);
    await eventually(async () => expect(await versionFor(`${gateways[at]!.url}/hold`, randomUser())).toBe('candidate'));
    const aborted = await api(at, 'POST', '/v1/services/hold/rollout/abort', { reason: 'stop now' });
    expect(aborted.status).toBe(200);
    expect(aborted.body.run).toMatchObject({ status: 'aborted', step: 0 });
    // The gateway that took the abort serves it as it answers: no wait for the hold.
    for (let i = 0; i < 20; i++) expect(await versionFor(`${gateways[at]!.url}/hold`, randomUser())).toBe('stable');
    const status = await api(at, 'GET', '/v1/services/hold/rollout');
    expect(status.body.state).toBe('idle');
    expect(status.body.run.records.at(-1)).toMatchObject({ event: 'abort', by: 'anonymous', reason: 'stop now' });
  });

  it('a manual change during a rollout pauses it, says why, and is not overwritten', async () => {
    const at = 0;
    const plan = { steps: [{ percent: 30, holdMs: 600_000 }], analysis };
    expect((await api(at, 'POST', '/v1/services/manual/rollout/start', { reason: 'rollout', candidate: 'app-v2', plan })).status).toBe(200);
    const manual = await api(at === 0 ? 1 : 0, 'POST', '/v1/services/manual/release/set', { reason: 'hand tuning', percentage: 5 });
    expect(manual.status).toBe(200);
    const paused = await eventually(async () => {
      const status = await api(at, 'GET', '/v1/services/manual/rollout');
      expect(status.body.run.status).toBe('paused');
      return status.body;
    });
    expect(paused.run.reason).toContain('changed outside the rollout');
    expect(paused.run.reason).toContain('hand tuning');
    // Held at the operator's routing, well past a few driver ticks.
    await eventually(async () => {
      const release = (await api(at, 'GET', '/v1/services/manual/release')).body.release;
      expect(release.rules.find((rule: { name: string }) => rule.name === 'percentage').percentage.percent).toBe(5);
      expect((await api(at, 'GET', '/v1/services/manual/rollout')).body.run.records.filter((r: { event: string }) => r.event === 'pause')).toHaveLength(1);
    });
    // Resume puts the step's routing back.
    expect((await api(at, 'POST', '/v1/services/manual/rollout/resume', { reason: 'carry on' })).status).toBe(200);
    const release = (await api(at, 'GET', '/v1/services/manual/release')).body.release;
    expect(release.rules.find((rule: { name: string }) => rule.name === 'percentage').percentage.percent).toBe(30);
    expect((await api(at, 'POST', '/v1/services/manual/rollout/abort', { reason: 'end of test' })).status).toBe(200);
  });

  it('the driving gateway killed mid-rollout: another resumes at the stored step (not step 1, not full), with zero failed requests', async () => {
    const plan = { steps: [{ percent: 10, holdMs: 500 }, { gate: true }, { percent: 60, holdMs: 500 }], analysis };
    const loadsOn = [0, 1].map((i) => {
      const load = startLoad({ url: `${gateways[i]!.url}/fleet`, maxMs: 120_000, concurrency: 2, pauseMs: 5, headers: randomUser });
      loads.push(load);
      return load;
    });
    expect((await api(0, 'POST', '/v1/services/fleet/rollout/start', { reason: 'fleet', candidate: 'app-v2', plan })).status).toBe(200);
    const at = await driverIndex();
    const other = at === 0 ? 1 : 0;
    const steady = loadsOn[other]!;
    await eventually(async () => expect((await api(other, 'GET', '/v1/services/fleet/rollout')).body.run.step).toBe(1), { withinMs: 60_000 });
    await loadsOn[at]!.stop();
    const since = gateways[other]!.logs().length;
    await gateways[at]!.kill();
    await gateways[other]!.waitForLog((line) => line.event === 'rollout-driver', { since });
    const resumed = await api(other, 'GET', '/v1/services/fleet/rollout');
    expect(resumed.body.run).toMatchObject({ status: 'running', step: 1 });
    expect(resumed.body.state).toBe('canary');
    // The survivor drives: promote past the gate, and it judges and finishes the last step.
    expect((await api(other, 'POST', '/v1/services/fleet/rollout/promote', { reason: 'gate ok' })).status).toBe(200);
    const done = await eventually(async () => {
      const status = await api(other, 'GET', '/v1/services/fleet/rollout');
      expect(status.body.run.status).toBe('done');
      return status.body;
    }, { withinMs: 60_000 });
    expect(done.state).toBe('full');
    expect(done.run.records.filter((r: { event: string }) => r.event === 'start')).toHaveLength(1);
    const result = await steady.stop();
    expect(result.failures).toEqual([]);
  });
});
