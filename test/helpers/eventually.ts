/**
 * The least time any wait gives its condition. A wait states how long the condition normally
 * takes (`withinMs`); on a loaded box (two cores shared with other suites and CPU burners) that
 * stretches many times over, and a wait that gave up then would measure the machine, not the
 * property. A condition that never holds still fails, after this long.
 */
export const WAIT_CAP_MS = 30_000;

/**
 * Retries `check` until it stops throwing; then throws its last error once the cap passed: the
 * larger of `withinMs` (the time the condition normally needs) and WAIT_CAP_MS.
 */
export async function eventually<T>(check: () => T | Promise<T>, options: { withinMs?: number; everyMs?: number } = {}): Promise<T> {
  const deadline = Date.now() + Math.max(options.withinMs ?? 0, WAIT_CAP_MS);
  const every = options.everyMs ?? 20;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, every));
    }
  }
}
