import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { superviseRun } from './helpers/processes.js';

/** Set once dist/ is built: a vitest run started by a test (of the teardown itself) reuses it. */
const BUILT_ENV = 'GG_TEST_DIST_BUILT';

/**
 * Process tests run the real CLI from dist/, so the suite builds it first: `vitest run` alone
 * is then enough, and a stale dist/ can never be what a test exercises. The dashboard's bundle
 * (dist/ui, served by the admin listener) is built too, as `npm run build` does.
 *
 * It also supervises the run's processes: whatever a test started is killed when its worker
 * dies, when the run ends, and when the run is interrupted (see helpers/processes.ts); the
 * returned teardown is the end-of-run sweep.
 */
export default function setup(): () => void {
  const teardown = superviseRun();
  if (process.env[BUILT_ENV] !== '1') {
    const root = fileURLToPath(new URL('..', import.meta.url));
    execFileSync(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', `${root}tsconfig.build.json`], {
      cwd: root,
      stdio: 'inherit',
    });
    execFileSync(process.execPath, [`${root}node_modules/vite/bin/vite.js`, 'build', '-c', `${root}src/control/ui/vite.config.ts`], {
      cwd: root,
      stdio: 'inherit',
    });
    process.env[BUILT_ENV] = '1';
  }
  return teardown;
}
