import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Process tests run the real CLI from dist/, so the suite builds it first: `vitest run` alone
 * is then enough, and a stale dist/ can never be what a test exercises.
 */
export default function setup(): void {
  const root = fileURLToPath(new URL('..', import.meta.url));
  execFileSync(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', `${root}tsconfig.build.json`], {
    cwd: root,
    stdio: 'inherit',
  });
}
