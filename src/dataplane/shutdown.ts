/**
 * Draining client connections without losing a request, for every runtime adapter.
 *
 * A keep-alive client sends its next request as soon as the previous response ended, on the
 * same connection, without waiting for anything. Closing such a connection at shutdown because
 * it is idle *now* races that request: the client already sent it, the server closed, nobody
 * answers (FIN or RST). So during a drain:
 *
 * - every response carries `Connection: close` (the adapters add it while `draining`), so the
 *   client opens no further request on that connection and the runtime closes it after the
 *   response;
 * - a connection is closed by the drain only once it has been idle, with no request, for
 *   `idleGraceMs`, counted from its last response or from the start of the drain, whichever is
 *   later: long enough for a request already on its way to arrive and be answered with `close`;
 * - requests in flight finish; the hard cap (`graceMs`) still ends the drain.
 */

/** How long an idle keep-alive connection is left open during a drain when `graceMs` allows it. */
export const DRAIN_IDLE_GRACE_MS = 1_000;
/** How often the drain looks at the connections. */
const TICK_MS = 25;

/**
 * The idle grace for a drain with hard cap `graceMs`: one second (a request already sent reaches
 * the gateway well within it, even on a busy machine), or half the cap when the cap is shorter.
 */
export function idleGraceFor(graceMs: number): number {
  return Math.max(0, Math.min(DRAIN_IDLE_GRACE_MS, Math.floor(graceMs / 2)));
}

interface ConnectionState {
  /** Requests read from it and not yet answered in full. */
  busy: number;
  /** When its last response ended (0: none since it opened). */
  idleSince: number;
}

/**
 * The client connections of one server, with whether each has a request in flight. The adapter
 * reports the events; the drain reads the states. Per request this is one map lookup and two
 * integer updates: no allocation.
 */
export class ClientConnections<C> {
  private readonly states = new Map<C, ConnectionState>();

  get size(): number {
    return this.states.size;
  }

  opened(connection: C): void {
    this.states.set(connection, { busy: 0, idleSince: 0 });
  }

  /** The connection is gone, or has left HTTP (an upgrade): the drain no longer closes it. */
  forget(connection: C): void {
    this.states.delete(connection);
  }

  requestStarted(connection: C): void {
    const state = this.states.get(connection);
    if (state !== undefined) state.busy++;
  }

  requestEnded(connection: C): void {
    const state = this.states.get(connection);
    if (state === undefined || state.busy === 0) return;
    state.busy--;
    if (state.busy === 0) state.idleSince = Date.now();
  }

  /**
   * Drains: closes (with `close`) each connection once it has been idle for `idleGraceMs` since
   * its last response or `startedAt`; resolves `'drained'` when no connection and no request
   * `inFlight` is left, or `'cap'` at `deadline`.
   */
  async drain(options: {
    startedAt: number;
    deadline: number;
    idleGraceMs: number;
    close: (connection: C) => void;
    inFlight: () => number;
  }): Promise<'drained' | 'cap'> {
    const { startedAt, deadline, idleGraceMs, close, inFlight } = options;
    for (;;) {
      const now = Date.now();
      for (const [connection, state] of this.states) {
        if (state.busy === 0 && now - Math.max(startedAt, state.idleSince) >= idleGraceMs) {
          this.states.delete(connection);
          close(connection);
        }
      }
      if (this.states.size === 0 && inFlight() === 0) return 'drained';
      if (now >= deadline) return 'cap';
      await sleep(Math.min(TICK_MS, deadline - now));
    }
  }
}

/**
 * For a runtime that tells neither which connection a request came on nor lets one idle
 * connection be closed (Bun.serve: `stop()` closes every idle connection at once): waits until
 * nothing is in flight and no request has started or ended for `idleGraceMs` (counted from
 * `startedAt` at the earliest). Then every connection still open has been idle that long, and
 * closing them all is the per-connection rule above. Resolves `'cap'` at `deadline`.
 *
 * `activity` is a number that changes whenever a request starts (a counter the adapter bumps);
 * `inFlight` counts requests whose response has not ended.
 */
export async function waitForQuiet(options: {
  startedAt: number;
  deadline: number;
  idleGraceMs: number;
  activity: () => number;
  inFlight: () => number;
}): Promise<'quiet' | 'cap'> {
  const { startedAt, deadline, idleGraceMs, activity, inFlight } = options;
  let lastActivity = activity();
  // Quiet is counted from the first tick that saw it, not the last that saw activity: the activity
  // may have gone on until just before this tick, and the grace must not come up short.
  let quietSince: number | undefined = startedAt;
  for (;;) {
    const now = Date.now();
    const current = activity();
    if (current !== lastActivity || inFlight() > 0) {
      lastActivity = current;
      quietSince = undefined;
    } else if (quietSince === undefined) {
      quietSince = now;
    } else if (now - quietSince >= idleGraceMs) {
      return 'quiet';
    }
    if (now >= deadline) return 'cap';
    await sleep(Math.min(TICK_MS, deadline - now));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}
