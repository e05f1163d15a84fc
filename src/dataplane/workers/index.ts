/**
 * `--workers N`: one primary process and N workers. The primary holds the one store subscription
 * (ConfigSync and the store keys, as a single process does) and hands every snapshot it serves to
 * every worker, which compiles it, swaps it in and confirms; a write through the admin API is
 * acknowledged once every worker confirmed it (see `ClusterDataPlane.settled`). Each worker reads
 * identity keys from the store itself and keeps its own identity cache and metrics registry.
 *
 * primary.ts: the primary's DataPlane (fork, broadcast, confirmations, lag, drain, metrics).
 * worker.ts: a worker's life. messages.ts: what they say to each other. key-reader.ts: a
 * worker's own store reads. metrics.ts: the primary's gauges of its workers.
 */
export { ClusterDataPlane, WORKER_CONFIRM_MS } from './primary.js';
export { isBehind, registerWorkerMetrics } from './metrics.js';
export { isWorkerProcess, runWorker } from './worker.js';
