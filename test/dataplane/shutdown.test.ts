import { describe, expect, it } from 'vitest';
import { ClientConnections, idleGraceFor, waitForQuiet } from '../../src/dataplane/shutdown.js';

// The runtime-neutral drain rules. The adapters' behaviour through real sockets and the real
// process is in test/dataplane/drain.test.ts and test/e2e/drain-keep-alive.test.ts.

describe('ClientConnections.drain', () => {
  it('never closes a connection with a request in flight, and closes an idle one only after the idle grace since its last response', async () => {
    const connections = new ClientConnections<string>();
    const closedAt = new Map<string, number>();
    for (const name of ['idle', 'busy', 'answered-late']) connections.opened(name);
    connections.requestStarted('busy');
    connections.requestStarted('answered-late');
    let inFlight = 2;
    const startedAt = Date.now();
    const idleGraceMs = 100;
    let lateAnsweredAt = 0;
    const drained = connections.drain({
      startedAt,
      deadline: startedAt + 60_000,
      idleGraceMs,
      close: (name) => closedAt.set(name, Date.now()),
      inFlight: () => inFlight,
    });
    // A response ends after the drain began: its connection gets the whole grace from then on.
    setTimeout(() => {
      lateAnsweredAt = Date.now();
      connections.requestEnded('answered-late');
      inFlight--;
    }, 60);
    // The busy one is answered with `Connection: close` and closed by the runtime, not the drain.
    setTimeout(() => {
      inFlight--;
      connections.forget('busy');
    }, 150);
    expect(await drained).toBe('drained');
    expect(closedAt.has('busy')).toBe(false);
    expect(closedAt.get('idle')! - startedAt).toBeGreaterThanOrEqual(idleGraceMs);
    expect(closedAt.get('answered-late')! - lateAnsweredAt).toBeGreaterThanOrEqual(idleGraceMs);
    expect(connections.size).toBe(0);
  });

  it('a request that arrives within the grace keeps the connection open until it is answered', async () => {
    const connections = new ClientConnections<string>();
    connections.opened('c');
    const closed: string[] = [];
    const startedAt = Date.now();
    let inFlight = 0;
    const drained = connections.drain({ startedAt, deadline: startedAt + 60_000, idleGraceMs: 80, close: (name) => closed.push(name), inFlight: () => inFlight });
    setTimeout(() => {
      inFlight++;
      connections.requestStarted('c');
    }, 20);
    setTimeout(() => {
      expect(closed).toEqual([]);
      // Answered with `Connection: close`: the runtime closes it.
      connections.requestEnded('c');
      inFlight--;
      connections.forget('c');
    }, 200);
    expect(await drained).toBe('drained');
    expect(closed).toEqual([]);
  });

  it('ends at the hard cap with a request still in flight', async () => {
    const connections = new ClientConnections<string>();
    connections.opened('stuck');
    connections.requestStarted('stuck');
    const startedAt = Date.now();
    const outcome = await connections.drain({ startedAt, deadline: startedAt + 100, idleGraceMs: 10, close: () => undefined, inFlight: () => 1 });
    expect(outcome).toBe('cap');
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(100);
  });
});

describe('waitForQuiet', () => {
  it('waits until nothing has started or been in flight for the idle grace', async () => {
    let started = 0;
    let inFlight = 1;
    const t0 = Date.now();
    let lastActivityAt = t0;
    const timers = [30, 60, 90].map((ms) =>
      setTimeout(() => {
        started++;
        lastActivityAt = Date.now();
      }, ms),
    );
    setTimeout(() => {
      inFlight = 0;
      lastActivityAt = Date.now();
    }, 120);
    const outcome = await waitForQuiet({ startedAt: t0, deadline: t0 + 60_000, idleGraceMs: 100, activity: () => started, inFlight: () => inFlight });
    timers.forEach(clearTimeout);
    expect(outcome).toBe('quiet');
    expect(Date.now() - lastActivityAt).toBeGreaterThanOrEqual(100);
  });

  it('ends at the cap when requests keep coming', async () => {
    let started = 0;
    const t0 = Date.now();
    const busy = setInterval(() => started++, 5);
    const outcome = await waitForQuiet({ startedAt: t0, deadline: t0 + 150, idleGraceMs: 100, activity: () => started, inFlight: () => 0 });
    clearInterval(busy);
    expect(outcome).toBe('cap');
  });
});

describe('idleGraceFor', () => {
  it('is one second, or half a shorter cap', () => {
    expect(idleGraceFor(30_000)).toBe(1_000);
    expect(idleGraceFor(1_000)).toBe(500);
    expect(idleGraceFor(0)).toBe(0);
  });
});
