import { availableParallelism } from 'node:os';

/** What `--workers` (or GRAYGATE_WORKERS) asks for: a count, or one per core when absent. */
export function workerCount(option: string | undefined): number | string {
  const text = option ?? process.env.GRAYGATE_WORKERS;
  if (text === undefined || text === '' || text === 'auto') return availableParallelism();
  const count = Number(text);
  if (!Number.isInteger(count) || count < 1 || count > 256) return `--workers: expected a whole number from 1 to 256 or "auto", got ${JSON.stringify(text)}`;
  return count;
}
