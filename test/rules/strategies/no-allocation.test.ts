import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../..', import.meta.url));
const url = (path: string) => JSON.stringify(new URL(path, new URL(`file://${root}/`)).href);

/**
 * Runs in a separate node with --expose-gc: per matcher, force a GC, read heapUsed, run 20k
 * calls, read it again, and keep the window only if no GC started inside it (then the growth is
 * exactly what was allocated). A control that keeps one object per call proves the method sees
 * allocations. See bench/rules-eval.ts for the same method on whole evaluations.
 */
const script = `
import { performance, PerformanceObserver } from 'node:perf_hooks';
import { makeFacts } from ${url('test/helpers/facts.ts')};
import { strategies } from ${url('src/rules/strategies/index.ts')};
import { RoutingDocument } from ${url('src/config/schema.ts')};
import { compileCidrList } from ${url('src/rules/cidr.ts')};
const starts = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) starts.push(e.startTime); }).observe({ entryTypes: ['gc'] });
const settle = () => new Promise((resolve) => setTimeout(resolve, 30));
let sink;
async function bytesPerCall(body) {
  for (let i = 0; i < 200000; i++) body(i);
  let best = Infinity;
  for (let attempt = 0; attempt < 8 && best > 0.5; attempt++) {
    globalThis.gc();
    await settle();
    const opened = performance.now();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 20000; i++) body(i);
    const after = process.memoryUsage().heapUsed;
    const closed = performance.now();
    await settle();
    if (starts.some((s) => s >= opened && s <= closed)) continue;
    best = Math.min(best, (after - before) / 20000);
  }
  return best;
}
const configs = {
  uidList: { ids: Array.from({ length: 1000 }, (_, i) => i * 3) },
  uidModulo: { modulo: 100, remainders: [0, 1, 2] },
  percentage: { percent: 37.5 },
  cookie: { name: 'beta', prefix: 'ios-' },
  query: { name: 'beta', regex: '^v[0-9]+$' },
  cidr: { cidrs: ['10.0.0.0/8', '2001:db8::/32', '192.168.7.0/24'] },
  timeWindow: { from: '2000-01-01T00:00:00Z', to: '2999-01-01T00:00:00Z' },
};
const facts = Array.from({ length: 1024 }, (_, i) => makeFacts({
  userId: i % 7 === 0 ? 'user-' + i : String(i * 7919),
  cookies: { beta: i % 2 ? 'ios-' + i : 'android' },
  query: { beta: 'v' + i },
  clientIp: i % 3 === 0 ? '2001:db8::' + i.toString(16) : i % 3 === 1 ? '::ffff:10.0.' + (i & 255) + '.1' : '192.168.' + (i & 255) + '.9',
}));
const result = {};
for (const [kind, config] of Object.entries(configs)) {
  const document = RoutingDocument.parse({ upstreams: {}, services: [{ name: 's', stable: 'v1', release: { candidate: 'v2', rules: [{ [kind]: config }] } }] });
  const matcher = strategies[kind].compile(document.services[0].release.rules[0][kind], { storeValue: () => undefined, releaseSeed: 's' });
  result[kind] = await bytesPerCall((i) => { sink = matcher(facts[i & 1023]); });
}
const inList = compileCidrList(['10.0.0.0/8']);
result.malformedIp = await bytesPerCall((i) => { sink = inList(i & 1 ? 'garbage' : '1:2:3'); });
result.control = await bytesPerCall((i) => { sink = { i }; });
process.stdout.write(JSON.stringify(result));
`;

describe('matchers on the hot path', () => {
  it('allocate nothing per call (heap growth in GC-free windows, in a separate process)', async () => {
    const { stdout } = await run(process.execPath, ['--expose-gc', '--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, timeout: 60_000 });
    const bytes = JSON.parse(stdout) as Record<string, number>;
    expect(bytes.control, 'the method must see a 1-object allocation').toBeGreaterThanOrEqual(16);
    for (const kind of ['uidList', 'uidModulo', 'percentage', 'cookie', 'query', 'cidr', 'malformedIp']) {
      expect(bytes[kind], `${kind}: bytes per call`).toBeLessThan(0.5);
    }
    // The one known exception: Date.now() returns a boxed 16-byte number on Node 20 (V8 11.3
    // does not inline it; performance.now() boxes too). Anything beyond that one box fails.
    expect(bytes.timeWindow, 'timeWindow: bytes per call').toBeLessThan(16.5);
  });
});
