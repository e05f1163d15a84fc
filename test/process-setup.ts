import { afterAll } from 'vitest';
import { killAllTracked } from './helpers/processes.js';

// Runs after the file's own afterAll hooks (vitest runs after-hooks in reverse order, and this
// one is registered first): whatever the file started and did not stop, also after a failed
// test or hook, dies here rather than outliving the file.
afterAll(() => killAllTracked());
