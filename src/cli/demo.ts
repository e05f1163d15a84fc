import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { loadConfigFile } from '../config/load.js';
import { selectDataPlane } from '../dataplane/select.js';
import { startDemoBackend } from '../demo/backends.js';
import { startGateway } from '../gateway/gateway.js';
import { createLogger } from '../observe/log.js';

/** The demo's config: comments explain what to edit while it runs. */
function demoConfig(port: number, adminPort: number, stableUrl: string, candidateUrl: string): string {
  return `# graygate demo config. Edit it while the demo runs: a valid edit applies live,
# an invalid one is refused (see the log) and the last good rules stay.
listen: 127.0.0.1:${port}
log:
  level: warn
# The admin API, the CLI's server and the dashboard (/ui/). No token: loopback only.
admin:
  listen: 127.0.0.1:${adminPort}

upstreams:
  shop-v1:
    servers: [${stableUrl}]
  shop-v2:
    servers: [${candidateUrl}]

# Who is calling: the x-user-id header, else the uid cookie.
identity:
  sources:
    - header: { name: x-user-id }
    - cookie: { name: uid }

services:
  - name: shop
    stable: shop-v1
    release:
      candidate: shop-v2
      state: canary        # idle: everyone on stable; full: everyone on the candidate
      rules:               # the first matching rule decides; no match goes to stable
        - name: testers
          header: { name: x-canary, equals: "1" }
        - name: first-users
          uidRange: { from: 1, to: 100 }
`;
}

/** `graygate demo`: two demo backends, the gateway on the embedded store, and what to paste. */
export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('Start two demo backends (stable and candidate) and a gateway in front of them, then print curl commands to try.')
    .option('-p, --port <port>', 'gateway port (0 picks a free one)', '8080')
    .option('--admin-port <port>', 'admin API and dashboard port (default 9901; 0 when --port is 0)')
    .option('--dir <dir>', 'where to write the demo config (default: a new temp directory)')
    .action(async (options: { port: string; adminPort?: string; dir?: string }) => {
      const port = Number(options.port);
      const adminPort = Number(options.adminPort ?? (port === 0 ? '0' : '9901'));
      for (const [flag, value] of [['--port', port], ['--admin-port', adminPort]] as const) {
        if (!Number.isInteger(value) || value < 0 || value > 65535) {
          process.stderr.write(`graygate demo: ${flag}: expected a port number, got ${JSON.stringify(flag === '--port' ? options.port : options.adminPort)}\n`);
          process.exitCode = 2;
          return;
        }
      }
      const [stable, candidate] = await Promise.all([startDemoBackend('stable', 'shop-v1'), startDemoBackend('candidate', 'shop-v2')]);
      const dir = options.dir ?? mkdtempSync(path.join(tmpdir(), 'graygate-demo-'));
      const configPath = path.resolve(dir, 'graygate.yaml');
      writeFileSync(configPath, demoConfig(port, adminPort, stable.url, candidate.url));
      const config = await loadConfigFile(configPath);
      const logger = createLogger({ level: config.settings.log.level, format: config.settings.log.format });
      let gateway;
      try {
        gateway = await startGateway({ settings: config.settings, configPath, logger, createDataPlane: await selectDataPlane() });
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        process.stderr.write(
          code === 'EADDRINUSE'
            ? `graygate demo: a port is in use (gateway ${port}, admin ${adminPort}); try --port 0 or other ports.\n`
            : `graygate demo: ${(error as Error).message}\n`,
        );
        await Promise.all([stable.close(), candidate.close()]);
        process.exitCode = 1;
        return;
      }
      const url = `http://127.0.0.1:${gateway.address.port}`;
      const admin = `http://127.0.0.1:${gateway.adminAddress!.port}`;
      process.stdout.write(`graygate demo is running (event: listening, port: ${gateway.address.port})

  gateway    ${url}
  stable     ${stable.url}   (upstream shop-v1)
  candidate  ${candidate.url}   (upstream shop-v2)
  config     ${configPath}
  dashboard  ${admin}/ui/   (admin API ${admin}, metrics ${admin}/metrics)

Try it:
  curl -s ${url}/                          # stable: an anonymous caller
  curl -s -H 'x-user-id: 42' ${url}/       # candidate: user 42 is in the range 1..100
  curl -s -H 'x-user-id: 4242' ${url}/     # stable: user 4242 is outside it
  curl -s -H 'x-canary: 1' ${url}/         # candidate: the testers header

Change a rule live, no restart: shrink the range to users 1..10, then ask as user 42 again:
  sed -i 's/to: 100/to: 10/' ${configPath}
  curl -s -H 'x-user-id: 42' ${url}/       # stable now

Everyone to the candidate:  sed -i 's/state: canary/state: full/' ${configPath}
Back to everyone on stable: sed -i 's/state: full/state: idle/' ${configPath}

Or drive the release from the CLI (or the dashboard), with history and rollback:
  npx graygate status --url ${admin}
  npx graygate release rollback shop --url ${admin} --reason 'demo'

Ctrl-C stops the demo.
`);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await gateway.close(2_000);
      await Promise.all([stable.close(), candidate.close()]);
      process.stdout.write('graygate demo stopped.\n');
    });
}
