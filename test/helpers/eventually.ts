/** Retries `check` until it stops throwing or `withinMs` passes; then throws its last error. */
export async function eventually<T>(check: () => T | Promise<T>, options: { withinMs?: number; everyMs?: number } = {}): Promise<T> {
  const deadline = Date.now() + (options.withinMs ?? 5_000);
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
