import type { CreateDataPlane } from './runtime.js';

/** The runtime graygate runs on, as far as the data plane is concerned. */
export function runtimeName(): 'bun' | 'node' {
  return (globalThis as { Bun?: unknown }).Bun !== undefined ? 'bun' : 'node';
}

/**
 * The data plane for the runtime graygate runs on: Bun.serve + fetch under Bun, node:http +
 * undici under Node. Imported lazily so that only the chosen adapter's runtime APIs are loaded.
 */
export async function selectDataPlane(): Promise<CreateDataPlane> {
  if (runtimeName() === 'bun') {
    const { createBunDataPlane } = await import('./bun/index.js');
    return createBunDataPlane;
  }
  const { createNodeDataPlane } = await import('./node/index.js');
  return createNodeDataPlane;
}
