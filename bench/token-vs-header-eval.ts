/**
 * Question: the per-request cost of the seed's identity (TOKEN → cached user id) with the range
 * read from Grayscale_Range, against a trusted header with the same range in the rule, without
 * HTTP around it. Companion to bench/token-vs-header.mjs, whose throughput figures swing with
 * whatever else runs on a shared box; CPU time per evaluation in one process is steadier.
 *
 *   npx tsx bench/token-vs-header-eval.ts      (about 10 s)
 *
 * A private redis-server holds TOKEN_<token> for a pool of 1024 tokens; a real RedisStore looks
 * each up once (cache warm), then both compiled services are evaluated the way the data plane
 * does it (`resolveIdentity` then `decide`) in alternating time-bounded rounds.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { parseRoutingDocument } from '../src/config/load.js';
import { RedisStoreSettings } from '../src/config/schema.js';
import type { IdentityContext } from '../src/identity/source.js';
import { identityCompiler } from '../src/identity/request-identity.js';
import { compileRouting } from '../src/rules/compile.js';
import type { CompiledService } from '../src/rules/snapshot.js';
import { createRedisStore } from '../src/store/redis/redis-store.js';
import { makeFacts, type LiteralFacts } from '../test/helpers/facts.js';

const POOL = 1024;
const ROUNDS = 7;
const ROUND_MS = 300;

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function evaluate(service: CompiledService, facts: LiteralFacts): number {
  const pending = service.resolveIdentity(facts);
  if (pending !== undefined) throw new Error('identity went async in the steady state (cache not warm?)');
  return service.decide(facts).version === 'candidate' ? 1 : 0;
}

/** CPU ns per evaluation for one round of ROUND_MS, and how many went to the candidate. */
function round(service: CompiledService, pool: LiteralFacts[]): { cpuNs: number; candidateShare: number } {
  let evals = 0;
  let candidate = 0;
  const cpuStart = process.cpuUsage();
  const deadline = process.hrtime.bigint() + BigInt(ROUND_MS) * 1_000_000n;
  while (process.hrtime.bigint() < deadline && evals < 50_000_000) {
    for (let i = 0; i < 10_000; i++) candidate += evaluate(service, pool[(evals + i) & (POOL - 1)]!);
    evals += 10_000;
  }
  const cpu = process.cpuUsage(cpuStart);
  return { cpuNs: ((cpu.user + cpu.system) * 1_000) / evals, candidateShare: candidate / evals };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'graygate-token-eval-'));
  const port = await freePort();
  const redis = spawn(process.env.REDIS_SERVER ?? 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: `redis://127.0.0.1:${port}`, pollMs: 60_000 }), { validate: parseRoutingDocument });
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await store.keyReader.readKey('probe', 200);
        break;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    const upstreams = { prod: { servers: ['http://127.0.0.1:9'] }, gray: { servers: ['http://127.0.0.1:10'] } };
    const service = (rule: unknown, source: unknown, storeValue: (key: string) => string | undefined, identityContext: IdentityContext) =>
      compileRouting(
        parseRoutingDocument({ upstreams, identity: { sources: [source] }, services: [{ name: 'app', stable: 'prod', release: { candidate: 'gray', rules: [rule] } }] }, 'bench'),
        1,
        { storeValue, identity: identityCompiler({ context: identityContext }) },
      ).matchService('', '/')!;
    const context: IdentityContext = { readKey: (key, deadlineMs) => store.keyReader.readKey(key, deadlineMs) };
    const range = '{"idStart":1,"idEnd":5000}';
    const token = service({ uidRange: { fromKey: 'Grayscale_Range' } }, { tokenLookup: { cacheTtlMs: 600_000 } }, (key) => (key === 'Grayscale_Range' ? range : undefined), context);
    const header = service({ uidRange: { from: 1, to: 5000 } }, { header: { name: 'x-user-id' } }, () => undefined, {});

    // Ids 1..10240 step 10: half of them in 1..5000, for both pools.
    const ids = Array.from({ length: POOL }, (_, i) => 1 + i * 10);
    const tokens = ids.map((_, i) => `tok${i.toString(36)}x${(i * 7919).toString(36)}`);
    const client = new Redis({ host: '127.0.0.1', port });
    await client.mset(Object.fromEntries(tokens.map((t, i) => [`TOKEN_${t}`, String(ids[i])])));
    client.disconnect();
    const tokenPool = tokens.map((t) => makeFacts({ headers: { token: t } }));
    const headerPool = ids.map((id) => makeFacts({ headers: { 'x-user-id': String(id) } }));
    for (const facts of tokenPool) await token.resolveIdentity(facts); // warm the cache: one lookup each

    for (let i = 0; i < 3; i++) {
      round(token, tokenPool); // warm up: let V8 optimize both
      round(header, headerPool);
    }
    const results = { token: [] as number[], header: [] as number[] };
    let shares = { token: 0, header: 0 };
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? (['token', 'header'] as const) : (['header', 'token'] as const);
      for (const name of order) {
        const result = round(name === 'token' ? token : header, name === 'token' ? tokenPool : headerPool);
        results[name].push(result.cpuNs);
        shares = { ...shares, [name]: result.candidateShare };
      }
    }
    const tokenNs = median(results.token);
    const headerNs = median(results.header);
    const lines = [
      '| identity + rule | CPU ns/eval (median) | min | candidate share | × header cost |',
      '|---|--:|--:|--:|--:|',
      `| token (TOKEN → cached TOKEN_<token>, range from Grayscale_Range) | ${tokenNs.toFixed(0)} | ${Math.min(...results.token).toFixed(0)} | ${shares.token.toFixed(3)} | ${(tokenNs / headerNs).toFixed(2)} |`,
      `| header (x-user-id, range 1..5000 in the rule) | ${headerNs.toFixed(0)} | ${Math.min(...results.header).toFixed(0)} | ${shares.header.toFixed(3)} | 1.00 |`,
    ];
    process.stdout.write(
      `\n${lines.join('\n')}\n\n${ROUNDS} alternating rounds of ${ROUND_MS} ms; resolveIdentity + decide per evaluation, no HTTP. ` +
        `The difference (${(tokenNs - headerNs).toFixed(0)} ns) is what the token path adds to each proxied request.\n`,
    );
  } finally {
    await store.close();
    redis.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
