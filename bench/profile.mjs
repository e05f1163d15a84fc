#!/usr/bin/env node
// Question: where does the Node data plane spend its CPU under load with the seed's rule?
//
//   npm run bench:profile                                # build, then ~20 s
//   node bench/profile.mjs --duration 10 --conns 50 [--shape seed|none|typical|large|1mb] [--min-pct 1] [--out bench/results/profile-<time>]
//   (1mb: the seed rule, each request fetching the backends' 1 MiB body from /1mb)
//   node bench/profile.mjs --from some.cpuprofile        # only turn an existing profile into tables
//
// Starts nginx backends (node:http without nginx) and a redis-server with the seed's keys, runs
// graygate (one process, `node --cpu-prof`) with the shape's routing (the suite's, from
// bench/lib/gateways.mjs; seed: TOKEN header → TOKEN_<token> in Redis → uid, range from
// Grayscale_Range), loads it for --duration seconds (wrk -t1, else autocannon), stops it with
// SIGTERM (it drains and exits, which writes the profile), then writes next to the .cpuprofile:
//   - flame.txt: a text flame graph, printed too: the call tree with each frame's inclusive
//     time (itself and all it calls) as a share of the time sampled, children by weight, frames
//     under --min-pct (1 %) pruned. It reads like a flame graph turned on its side and pastes
//     into a note as it is. (No maintained npm package renders a .cpuprofile or folded stacks to
//     a static SVG/HTML offline; for an interactive view open the .cpuprofile in Chrome DevTools
//     or speedscope);
//   - profile.folded: collapsed stacks ("frame;frame;frame microseconds"), the input of any
//     flame-graph renderer (flamegraph.pl, inferno-flamegraph, speedscope.app);
//   - top.txt: the 20 functions with the most self time, overall and within graygate's own code
//     (dist/, i.e. src/), and the same by total (inclusive) time for graygate's code.
// Everything listens on 127.0.0.1, the load is bounded, and every process is stopped at the end.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createRun, loadTool, root, runLoad, startBackends, startRedis } from './lib/harness.mjs';
import { CALLERS, probe, seedRedis, startGateway, stopGateway } from './lib/gateways.mjs';

function parseFlags(argv) {
  const flags = { duration: 10, conns: 50, shape: 'seed', minPct: 1, out: undefined, from: undefined };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = () => argv[++i];
    if (arg === '--duration') flags.duration = Number(next());
    else if (arg === '--conns') flags.conns = Number(next());
    else if (arg === '--shape') flags.shape = next();
    else if (arg === '--min-pct') flags.minPct = Number(next());
    else if (arg === '--out') flags.out = next();
    else if (arg === '--from') flags.from = next();
    else throw new Error(`unknown flag ${arg}`);
  }
  if (flags.shape !== '1mb' && !Object.hasOwn(CALLERS, flags.shape)) throw new Error(`--shape: one of ${Object.keys(CALLERS).join(', ')}, 1mb`);
  if (!(flags.minPct >= 0)) throw new Error('--min-pct: a share in %, ≥ 0');
  return flags;
}

async function record(flags, outDir) {
  const run = createRun('graygate-profile');
  const [backends, redis] = await Promise.all([startBackends(run), startRedis(run)]);
  seedRedis(redis);
  // 1mb: the seed's routing; only the path differs.
  const kind = flags.shape === '1mb' ? 'seed' : flags.shape;
  const urlPath = flags.shape === '1mb' ? '/1mb' : '/';
  const gateway = await startGateway(run, { kind, backends, redis, nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${outDir}`] });
  const { headers } = CALLERS[kind];
  await probe(gateway.port, CALLERS[kind]);
  runLoad(gateway.port, headers, { duration: 2, conns: flags.conns, path: urlPath }); // warm-up (JIT, token cache, pools)
  const r = runLoad(gateway.port, headers, { duration: flags.duration, conns: flags.conns, path: urlPath });
  process.stderr.write(`load (${loadTool()} -c${flags.conns}, ${flags.shape}, ${flags.duration} s): ${Math.round(r.rps)} req/s, p99 ${r.p99.toFixed(2)} ms, errors ${r.errors}\n`);
  // SIGTERM: graygate drains and exits 0, and Node writes the profile on the way out.
  await stopGateway(gateway);
  run.stopAll();
  const file = readdirSync(outDir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error(`no .cpuprofile in ${outDir}: the gateway did not exit cleanly`);
  return { file: path.join(outDir, file), load: r };
}

/**
 * A text flame graph: the call tree, each frame with its inclusive time (its own samples and
 * those of everything it called) as a share of all time sampled, heaviest child first, frames
 * under `minPct` pruned. Frames with the same label under one parent are merged (V8 may split a
 * function into several nodes, e.g. by the line it was called from).
 */
function flameGraph(profile, selfUs, label, minPct) {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const tree = { name: '(all samples)', us: 0, children: new Map() };
  // Adds node `id` and its subtree into `into`, and returns the time added.
  const add = (into, id) => {
    let us = selfUs.get(id) ?? 0;
    for (const childId of nodes.get(id).children ?? []) {
      const name = label(nodes.get(childId));
      let child = into.children.get(name);
      if (!child) into.children.set(name, (child = { name, us: 0, children: new Map() }));
      us += add(child, childId);
    }
    into.us += us;
    return us;
  };
  const called = new Set(profile.nodes.flatMap((n) => n.children ?? []));
  add(tree, profile.nodes.find((n) => !called.has(n.id)).id); // (root): its children are the top frames
  const lines = [];
  const walk = (node, depth) => {
    for (const child of [...node.children.values()].sort((a, b) => b.us - a.us)) {
      const pct = (100 * child.us) / tree.us;
      if (pct < minPct) continue;
      lines.push(`${pct.toFixed(1).padStart(5)} %  ${(child.us / 1000).toFixed(0).padStart(6)} ms  ${'  '.repeat(depth)}${child.name}`);
      walk(child, depth + 1);
    }
  };
  walk(tree, 0);
  return [`Flame graph (inclusive time of each frame, as a share of the ${(tree.us / 1000).toFixed(0)} ms sampled; frames under ${minPct} % left out)`, ...lines].join('\n');
}

/** Folded stacks, top tables and the text flame graph from a V8 .cpuprofile. */
function analyse(profileFile, outDir, load, minPct) {
  const profile = JSON.parse(readFileSync(profileFile, 'utf8'));
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const child of n.children ?? []) parent.set(child, n.id);
  const selfUs = new Map();
  profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const distRoot = path.join(root, 'dist') + path.sep;
  const where = (cf) => {
    const url = cf.url.replace(/^file:\/\//, '');
    if (url.startsWith(distRoot)) return { own: true, file: url.slice(distRoot.length) };
    const nm = url.lastIndexOf('node_modules/');
    if (nm >= 0) return { own: false, file: url.slice(nm + 'node_modules/'.length) };
    return { own: false, file: url || '(native)' };
  };
  const label = (n) => {
    const cf = n.callFrame;
    const { file } = where(cf);
    return `${cf.functionName || '(anonymous)'} ${file}${cf.url ? `:${cf.lineNumber + 1}` : ''}`;
  };
  // Folded stacks.
  const folded = new Map();
  const stackOf = (id) => {
    const frames = [];
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const n = nodes.get(at);
      if (n.callFrame.functionName === '(root)') break;
      frames.push(label(n).replace(/;/g, ':'));
    }
    return frames.reverse().join(';');
  };
  for (const [id, us] of selfUs) {
    if (us === 0) continue;
    const stack = stackOf(id) || '(root)';
    folded.set(stack, (folded.get(stack) ?? 0) + us);
  }
  writeFileSync(path.join(outDir, 'profile.folded'), [...folded].map(([s, us]) => `${s} ${us}`).join('\n') + '\n');
  // Self and total time per function (a function recursing on itself counts once in total).
  const self = new Map();
  const total = new Map();
  const own = new Set();
  let sum = 0;
  for (const [id, us] of selfUs) {
    sum += us;
    const n = nodes.get(id);
    const key = label(n);
    self.set(key, (self.get(key) ?? 0) + us);
    if (where(n.callFrame).own) own.add(key);
    const seen = new Set();
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const k = label(nodes.get(at));
      if (seen.has(k)) continue;
      seen.add(k);
      if (where(nodes.get(at).callFrame).own) own.add(k);
      total.set(k, (total.get(k) ?? 0) + us);
    }
  }
  const pct = (us) => ((100 * us) / sum).toFixed(1).padStart(5);
  const table = (title, map, filter) => {
    const rows = [...map].filter(([k]) => filter(k)).sort((a, b) => b[1] - a[1]).slice(0, 20);
    return [`${title}`, '   ms      %   function (file:line)', ...rows.map(([k, us]) => `${(us / 1000).toFixed(0).padStart(5)}  ${pct(us)}   ${k}`)].join('\n');
  };
  const ownSelf = [...self].filter(([k]) => own.has(k)).reduce((a, [, us]) => a + us, 0);
  const text = [
    `profile: ${path.relative(root, profileFile)}; ${(sum / 1000).toFixed(0)} ms sampled${load ? `; load ${Math.round(load.rps)} req/s, ${load.requests} requests measured (plus warm-up)` : ''}`,
    `self time in graygate's own code (dist/): ${pct(ownSelf)} %`,
    '',
    table('Top 20 by self time, everything', self, () => true),
    '',
    table("Top 20 by self time, graygate's own code (dist/)", self, (k) => own.has(k)),
    '',
    table("Top 20 by total (inclusive) time, graygate's own code (dist/)", total, (k) => own.has(k)),
    '',
  ].join('\n');
  writeFileSync(path.join(outDir, 'top.txt'), text);
  const flame = flameGraph(profile, selfUs, label, minPct);
  writeFileSync(path.join(outDir, 'flame.txt'), `${flame}\n`);
  return `${text}\n${flame}\n`;
}

async function main() {
  const flags = parseFlags(process.argv.slice(2));
  const outDir = flags.out ?? path.join(root, 'bench/results', `profile-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(outDir, { recursive: true });
  const recorded = flags.from ? { file: path.resolve(flags.from), load: undefined } : await record(flags, outDir);
  process.stdout.write(analyse(recorded.file, outDir, recorded.load, flags.minPct));
  const written = (name) => path.relative(root, path.join(outDir, name));
  process.stdout.write(`\nwritten: ${written('flame.txt')} (text flame graph), ${written('profile.folded')} (collapsed stacks, µs), ${written('top.txt')}\n`);
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exit(1);
});
