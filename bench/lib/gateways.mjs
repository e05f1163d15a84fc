// graygate gateways for the bench scripts: the routing config of each release shape (none, seed,
// typical, large), the caller each shape is measured with, and starting, probing and stopping a
// gateway process (Node or Bun, N workers). Shared by suite.mjs, release-overhead.mjs and
// profile.mjs so that the shapes they measure are the same. Everything listens on 127.0.0.1.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { request } from 'undici';
import { cliPath, freePort, groupPids, root, waitPort } from './harness.mjs';

/** The seed's token; seedRedis maps it to user 1234, inside the range 1..5000. */
export const TOKEN = 'HGdsakGDKSFGkgcshalGF';

export const bunPath = path.join(root, 'node_modules/.bin/bun');

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The seed's keys in a redis from startRedis: the range 1..5000 and the token of user 1234. */
export function seedRedis(redis) {
  redis.cli('SET', 'Grayscale_Range', '{"idStart":1,"idEnd":5000}');
  redis.cli('SET', `TOKEN_${TOKEN}`, '1234');
}

/**
 * The caller each routing config is measured with: its headers, and the backend it must reach
 * (`expect`, when the rules fix it) before a gateway is measured.
 */
export const CALLERS = {
  none: { headers: {}, expect: 'prod' },
  // The token's user (1234) is in the range: the candidate.
  seed: { headers: { TOKEN }, expect: 'gray' },
  // uid 1234: not in the deny list, no beta header, so the percentage rule decides.
  typical: { headers: { 'x-user-id': '1234' } },
  // uid 1235 is not in the list (multiples of 3), 127.0.0.1 is in no CIDR, no flag header:
  // every rule is evaluated.
  large: { headers: { 'x-user-id': '1235' }, expect: 'prod' },
};

/**
 * The routing part of a gateway config (upstreams, identity, store, services) for a shape:
 *
 *   none      no release (a service with only `stable`)
 *   seed      the seed's rule: TOKEN header → TOKEN_<token> in Redis (cache warm) → uid,
 *             range from the Grayscale_Range key (needs `redis`, with seedRedis's keys)
 *   typical   header identity + 3 rules (uidList of 50, header, 5 % percentage)
 *   large     header identity + 10 header rules, 50 CIDRs, a uidList of 100k ids
 */
export function routingConfig(kind, backends, redis) {
  const upstreams = { prod: { servers: [backends.stable] }, gray: { servers: [backends.candidate] } };
  const service = (release) => [{ name: 'app', stable: 'prod', ...(release ? { release: { candidate: 'gray', rules: release } } : {}) }];
  switch (kind) {
    case 'none':
      return { upstreams, services: service() };
    case 'seed':
      if (!redis) throw new Error('the seed shape needs a redis (startRedis + seedRedis)');
      return {
        store: { kind: 'redis', url: redis.url, namespace: `bench-${Math.random().toString(36).slice(2, 8)}` },
        upstreams,
        identity: { sources: [{ tokenLookup: {} }] },
        services: service([{ name: 'gray-range', uidRange: { fromKey: 'Grayscale_Range' } }]),
      };
    case 'typical':
      return {
        upstreams,
        identity: { sources: [{ header: { name: 'x-user-id' } }] },
        services: service([
          { name: 'deny-vip', to: 'stable', uidList: { ids: Array.from({ length: 50 }, (_, i) => 900_000 + i) } },
          { name: 'beta-header', header: { name: 'x-beta', equals: 'on' } },
          { name: 'five-percent', percentage: { percent: 5 } },
        ]),
      };
    case 'large': {
      const cidrs = Array.from({ length: 50 }, (_, i) => (i % 5 === 4 ? `2001:db8:${i.toString(16)}::/48` : `10.${i}.0.0/16`));
      return {
        upstreams,
        identity: { sources: [{ header: { name: 'x-user-id' } }] },
        services: service([
          ...Array.from({ length: 10 }, (_, i) => ({ name: `header-${i}`, header: { name: `x-flag-${i}`, oneOf: ['a', 'b', 'c'] } })),
          { name: 'offices', cidr: { cidrs } },
          { name: 'allow-list', uidList: { ids: Array.from({ length: 100_000 }, (_, i) => i * 3) } },
        ]),
      };
    }
  }
  throw new Error(`unknown routing config ${kind}`);
}

/**
 * Starts `graygate start` for one routing config under Node or Bun with `workers` workers, and
 * waits until it listens (and, with several workers, until all have started). `nodeArgs` go
 * before the CLI (e.g. --cpu-prof); `cpus` (a taskset list, e.g. "1") pins it and its workers to
 * those cores; `cli` runs another build's CLI (default: this checkout's dist/); `settings` are
 * added to the config (e.g. a `tls` listener, whose port the caller chose); `extraArgs` go after
 * the CLI's own (e.g. `--data-plane openresty`). Returns `{ port, pgid, child, workers }`.
 */
export async function startGateway(run, { runtime = 'node', workers = 1, kind, backends, redis, nodeArgs = [], cpus, cli = cliPath, settings = {}, extraArgs = [] }) {
  const port = await freePort();
  const config = path.join(run.dir, `gw-${runtime}-${workers}-${kind}-${port}.json`);
  writeFileSync(
    config,
    JSON.stringify({ listen: `127.0.0.1:${port}`, log: { level: 'warn' }, proxy: { keepAliveTimeoutMs: 120_000 }, ...settings, ...routingConfig(kind, backends, redis) }),
  );
  const command = runtime === 'bun' ? bunPath : process.execPath;
  const args = [...nodeArgs, cli, 'start', '--config', config, '--workers', String(workers), ...extraArgs];
  // taskset execs the command: the process (and its group) stays the same.
  const child = cpus === undefined ? run.start(`graygate ${runtime} -w${workers} ${kind}`, command, args) : run.start(`graygate ${runtime} -w${workers} ${kind}`, 'taskset', ['-c', cpus, command, ...args]);
  await waitPort(port, 60_000);
  // With --workers N the port is open once the first worker listens: wait for all N.
  const deadline = Date.now() + 30_000;
  while (workers > 1 && groupPids(child.pid).length < workers + 1 && Date.now() < deadline) await sleep(100);
  await sleep(workers > 1 ? 500 : 0);
  return { port, pgid: child.pid, child, workers };
}

/**
 * One request must get the expected answer before a gateway is measured. The first ones may
 * not yet (the range key or the routing is still reaching the workers): retry for up to 15 s.
 * `spec`: `{ headers, expect?, path? }`.
 */
export async function probe(port, spec) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    let problem;
    try {
      const response = await request(`http://127.0.0.1:${port}${spec.path ?? '/'}`, { headers: spec.headers, headersTimeout: 10_000, bodyTimeout: 10_000 });
      const body = await response.body.text();
      if (response.statusCode !== 200) problem = `status ${response.statusCode}`;
      else if (spec.expect && (spec.path ?? '/') === '/' && body.trim() !== spec.expect) problem = `got ${body.trim()}, expected ${spec.expect}`;
    } catch (error) {
      problem = error.message;
    }
    if (problem === undefined) return;
    if (Date.now() > deadline) throw new Error(`probe: ${problem}`);
    await sleep(200);
  }
}

/** SIGTERM to the gateway's process group; SIGKILL if it has not exited within 10 s. */
export async function stopGateway(gateway) {
  gateway.child.stopping = true;
  const exited = gateway.child.exitCode !== null ? Promise.resolve() : new Promise((resolve) => gateway.child.once('exit', resolve));
  try {
    process.kill(-gateway.pgid, 'SIGTERM');
  } catch {}
  await Promise.race([exited, sleep(10_000)]);
  try {
    process.kill(-gateway.pgid, 'SIGKILL');
  } catch {}
}
