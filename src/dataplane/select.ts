import type { CreateDataPlane } from './runtime.js';

/**
 * The data plane for the runtime graygate runs on. Imported lazily so that only the chosen
 * adapter's runtime APIs are ever loaded (Bun's adapter comes with the performance issue).
 */
export async function selectDataPlane(): Promise<CreateDataPlane> {
  const { createNodeDataPlane } = await import('./node/index.js');
  return createNodeDataPlane;
}
