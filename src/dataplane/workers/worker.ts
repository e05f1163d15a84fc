import cluster from 'node:cluster';
import { createLogger, type Logger } from '../../observe/log.js';
import { impactInProcess } from '../../observe/impact.js';
import { compileRouting } from '../../rules/compile.js';
import type { RoutingSnapshot } from '../../rules/snapshot.js';
import type { CreateDataPlane } from '../runtime.js';
import { createServing, type Serving } from '../serving.js';
import { useTicketKeys } from '../node/ticket-keys.js';
import { openKeyReader, type KeyReader } from './key-reader.js';
import { isMessage, STATS_EVERY_MS, type RoutingMessage, type StartMessage, type ToPrimary, type ToWorker } from './messages.js';

export function isWorkerProcess(): boolean {
  return cluster.isWorker;
}

/**
 * A worker's life: wait for the primary's settings and routing, open its own store reads for
 * identity lookups, compile, listen on the shared address, swap snapshots as the primary sends
 * them (confirming each), drain when told. Signals are the primary's business (Ctrl-C reaches the
 * whole process group); a worker whose primary is gone exits.
 */
export function runWorker(createDataPlane: CreateDataPlane): Promise<number> {
  const ignore = () => undefined;
  process.on('SIGINT', ignore);
  process.on('SIGTERM', ignore);
  return new Promise((resolve) => {
    let serving: Serving | undefined;
    /** The snapshot this worker serves (the impact query's default "from"). */
    let currentSnapshot: RoutingSnapshot | undefined;
    let keyReader: KeyReader | undefined;
    let logger: Logger | undefined;
    /** The newest routing received before this worker could compile (its store reads were opening). */
    let pending: RoutingMessage | undefined;
    let starting = false;
    let servedSeq = 0;
    let statsTimer: NodeJS.Timeout | undefined;
    let lastStats = '';
    let lastFiguresTotal = -1;
    let stopping = false;
    const send = (message: ToPrimary) => {
      if (process.connected) process.send!(message);
    };
    const install = (routing: RoutingMessage) => {
      const { dataPlane, identity } = serving!;
      if (routing.seq > servedSeq) {
        const values = new Map(routing.values);
        try {
          currentSnapshot = compileRouting(routing.document, routing.version, { storeValue: (key) => values.get(key), identity });
          dataPlane.setSnapshot(currentSnapshot);
          servedSeq = routing.seq;
        } catch (error) {
          // The primary compiled this document already; failing here would be a bug: keep serving
          // the last one, and the primary, seeing no confirmation, reports this worker as behind.
          logger!.error({ err: error, version: routing.version }, `worker ${process.pid}: could not compile routing version ${routing.version}; the last one stays`);
          return;
        }
      }
      // Confirmed only once the snapshot is in place: every request this worker reads from now on uses it.
      send({ type: 'gg:served', seq: servedSeq, version: routing.version });
    };
    const stop = (code: number) => {
      if (stopping) return;
      stopping = true;
      clearInterval(statsTimer);
      serving?.identitySample.close();
      logger?.flush();
      const closed = keyReader ? keyReader.close().catch(() => undefined) : Promise.resolve();
      void closed.then(() => {
        resolve(code);
        // The IPC channel keeps the event loop alive; the primary waits for this exit.
        setImmediate(() => process.exit(code));
      });
    };
    const start = async (m: StartMessage) => {
      starting = true;
      if (pending === undefined || m.routing.seq > pending.seq) pending = m.routing;
      // Every line says which worker wrote it: with N workers one stdout carries N streams.
      logger = createLogger({ level: m.settings.log.level, format: m.settings.log.format }).child({ worker: process.pid });
      try {
        keyReader = await openKeyReader(m.settings, logger);
      } catch (error) {
        send({ type: 'gg:start-failed', message: `cannot open the store for token lookups: ${(error as Error)?.message ?? String(error)}` });
        return stop(1);
      }
      if (stopping) return;
      if (m.tlsTicketKeys !== undefined) useTicketKeys(m.tlsTicketKeys);
      try {
        serving = createServing({ settings: m.settings, logger, createDataPlane, readKey: keyReader.readKey });
      } catch (error) {
        // A data plane that cannot be built (a TLS file that went bad since the primary checked it).
        send({ type: 'gg:start-failed', message: (error as Error)?.message ?? String(error) });
        return stop(1);
      }
      install(pending);
      pending = undefined;
      const dataPlane = serving.dataPlane;
      dataPlane.listen().then(
        (address) => {
          send({ type: 'gg:listening', ...address });
          statsTimer = setInterval(() => {
            const stats = dataPlane.stats();
            // Sent on change only; the per-upstream figures are part of what changes.
            const text = `${stats.openConnections}/${stats.inFlightRequests}/${JSON.stringify(stats.upstreams)}`;
            // The rollout analysis's figures, when a request was counted since the last ones.
            const total = serving!.figures.total();
            if (total !== lastFiguresTotal) {
              lastFiguresTotal = total;
              send({ type: 'gg:figures', figures: serving!.figures.snapshot() });
            }
            if (text === lastStats) return;
            lastStats = text;
            send({ type: 'gg:stats', stats });
          }, STATS_EVERY_MS);
          statsTimer.unref();
        },
        (error: unknown) => {
          send({ type: 'gg:start-failed', message: (error as Error)?.message ?? String(error) });
          stop(1);
        },
      );
    };
    process.on('disconnect', () => {
      // The primary is gone (killed): finish what is in flight quickly and leave.
      if (serving) void serving.dataPlane.drain(1_000).then(() => stop(0), () => stop(1));
      else stop(0);
    });
    process.on('message', (message: unknown) => {
      if (!isMessage(message)) return;
      const m = message as ToWorker;
      switch (m.type) {
        case 'gg:start':
          if (!starting) void start(m);
          break;
        case 'gg:routing':
          if (serving) install(m);
          else if (pending === undefined || m.seq > pending.seq) pending = m;
          break;
        case 'gg:metrics': {
          const id = m.id;
          if (serving === undefined) {
            send({ type: 'gg:metrics', id, metrics: [] });
            break;
          }
          serving.registry.getMetricsAsJSON().then(
            (metrics) => send({ type: 'gg:metrics', id, metrics }),
            (error: unknown) => {
              logger?.warn({ err: error }, 'could not collect this worker\'s metrics');
              send({ type: 'gg:metrics', id, metrics: [] });
            },
          );
          break;
        }
        case 'gg:impact': {
          const id = m.id;
          try {
            const impact = impactInProcess(serving?.identitySample, serving ? currentSnapshot : undefined, { ...(m.from ? { from: m.from } : {}), to: m.to });
            send({ type: 'gg:impact', id, impact });
          } catch (error) {
            send({ type: 'gg:impact', id, error: (error as Error)?.message ?? String(error) });
          }
          break;
        }
        case 'gg:drain': {
          if (!serving) return stop(0);
          const dataPlane = serving.dataPlane;
          send({ type: 'gg:stats', stats: dataPlane.stats(), draining: true });
          void dataPlane.drain(m.graceMs).then(
            () => {
              send({ type: 'gg:figures', figures: serving!.figures.snapshot() });
              send({ type: 'gg:stats', stats: dataPlane.stats() });
              stop(0);
            },
            (error: unknown) => {
              logger?.error({ err: error }, 'worker drain failed');
              stop(1);
            },
          );
          break;
        }
      }
    });
    // Only now: a message sent before this process listened for messages would be lost.
    send({ type: 'gg:ready' });
  });
}
