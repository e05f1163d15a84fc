import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Process tests run the real CLI from dist/, so the suite builds it first: `vitest run` alone
 * is then enough, and a stale dist/ can never be what a test exercises. The dashboard's bundle
 * (dist/ui, served by the admin listener) is built too, as `npm run build` does.
 */
export default function setup(): void {
  const root = fileURLToPath(new URL('..', import.meta.url));
  execFileSync(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', `${root}tsconfig.build.json`], {
    cwd: root,
    stdio: 'inherit',
  });
  execFileSync(process.execPath, [`${root}node_modules/vite/bin/vite.js`, 'build', '-c', `${root}src/control/ui/vite.config.ts`], {
    cwd: root,
    stdio: 'inherit',
  });
}
