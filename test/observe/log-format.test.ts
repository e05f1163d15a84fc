import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const logModule = fileURLToPath(new URL('../../dist/observe/log.js', import.meta.url));

/** Runs createLogger (the built one, as the CLI does) in a child process whose stdout is a pipe. */
function logOnce(format: string): string {
  const script = `
    const { createLogger } = await import(${JSON.stringify(logModule)});
    const logger = createLogger({ format: ${JSON.stringify(format)} });
    logger.info({ event: 'access', service: 'shop', status: 200 }, 'request');
    logger.flush();
    setTimeout(() => {}, 100);
  `;
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  expect(run.status, run.stderr).toBe(0);
  return run.stdout;
}

describe('log.format', () => {
  it('json writes one JSON object per line', () => {
    const lines = logOnce('json').trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 30, msg: 'request', event: 'access', service: 'shop', status: 200 });
  });

  it('pretty writes a human-readable line (pino-pretty), not JSON', () => {
    const text = logOnce('pretty');
    expect(text).toMatch(/INFO.*request/);
    expect(text).toMatch(/service: "shop"/);
    expect(() => JSON.parse(text.trim().split('\n')[0]!)).toThrow();
  });

  it('auto writes JSON when stdout is not a terminal (a pipe, a file, a log collector)', () => {
    expect(JSON.parse(logOnce('auto').trim())).toMatchObject({ msg: 'request' });
  });
});
