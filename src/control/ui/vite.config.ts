import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// Bundled at build time into dist/ui (served by the admin listener at /ui/): everything the page
// needs ships in the package, nothing is fetched from a CDN.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/ui/',
  logLevel: 'warn',
  build: {
    outDir: fileURLToPath(new URL('../../../dist/ui', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    // One small app: a single chunk is simpler to serve and cache than a split one.
    chunkSizeWarningLimit: 200,
  },
});
