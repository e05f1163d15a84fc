import { Gauge } from 'prom-client';
import type { Registry } from '../../observe/metrics.js';
import type { WorkerServing } from '../runtime.js';
import { WORKER_CONFIRM_MS } from './primary.js';

/** Per-worker routing version and the number of workers behind, in the primary's registry. */
export function registerWorkerMetrics(registry: Registry, workers: () => readonly WorkerServing[]): void {
  new Gauge({
    name: 'graygate_worker_config_version',
    help: 'Routing version each worker process confirmed serving (--workers), by worker pid.',
    labelNames: ['worker'],
    registers: [registry],
    aggregator: 'max',
    collect() {
      // Workers come and go (restarts): only the living ones are shown.
      this.reset();
      for (const worker of workers()) this.labels(String(worker.pid)).set(worker.version ?? 0);
    },
  });
  new Gauge({
    name: 'graygate_workers_behind',
    help: `Worker processes that have not confirmed the newest routing within ${WORKER_CONFIRM_MS} ms (--workers).`,
    registers: [registry],
    aggregator: 'max',
    collect() {
      this.set(workers().filter((worker) => isBehind(worker)).length);
    },
  });
}

/** Behind: it has not confirmed the newest snapshot within the bound (a moment's delay is not). */
export function isBehind(worker: WorkerServing): boolean {
  return !worker.current && worker.behindMs >= WORKER_CONFIRM_MS;
}
