import { afterAll } from 'vitest';
import { killAllTracked } from './helpers/processes.js';

// Runs after the file's own afterAll hooks (vitest runs after-hooks in reverse order, and this
// one is registered first): whatever the file started and did not stop, also after a failed
// test or hook, dies here rather than outliving the file.
afterAll(() => killAllTracked());

// The vitest main process is gone (interrupted, killed) when its IPC channel closes: nothing will
// collect this worker's results, and a pending test's timers would keep it alive for minutes.
// Take the processes along and end.
if (process.connected) {
  process.once('disconnect', () => {
    killAllTracked();
    process.exit(1);
  });
}
