import type { CreateDataPlane } from '../runtime.js';
import { BunDataPlane } from './server.js';

/** The data plane under Bun: Bun.serve for clients, Bun's fetch for upstreams. */
export const createBunDataPlane: CreateDataPlane = (options) => new BunDataPlane(options);

export { BunDataPlane };
