import type { CreateDataPlane } from '../runtime.js';
import { NodeDataPlane } from './server.js';

/** The default data plane: node:http for clients, undici pools for upstreams. */
export const createNodeDataPlane: CreateDataPlane = (options) => new NodeDataPlane(options);

export { NodeDataPlane };
