#!/usr/bin/env bash
# Question: how does graygate (the anchors' seed rule, drop-in mode) compare with nginx proxy_pass
# (A1) and the recipe as published (B1, B2: its faster worker count counts) on Node and on Bun,
# with 1 and 2 workers?
#
#   npm run build && bash bench/anchors-runtimes.sh        # about 6 min with the defaults
#   SHAPES='node:1 bun:1' DURATION=3s REPS=1 bash bench/anchors-runtimes.sh
#
# One anchors run (../shared/bench-anchors/run.sh, or $ANCHORS) per shape, each measuring A1, B1, B2
# and graygate as variant T in the same run, so every ratio compares figures from one run. Prints
# one table: req/s, p99, gateway CPU µs/request, and the ratios to A1 and B1 per mode.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/bench-anchors}
SHAPES=${SHAPES:-node:1 node:2 bun:1 bun:2}
export DURATION=${DURATION:-5s} REPS=${REPS:-1}
[[ -f $ANCHORS/run.sh ]] || { echo "no anchors harness at $ANCHORS (set ANCHORS)" >&2; exit 1; }
OUT=$(mktemp -d)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for shape in $SHAPES; do
  runtime=${shape%%:*} workers=${shape##*:}
  echo "== graygate on $runtime, --workers $workers" >&2
  (cd "$ANCHORS" && ONLY='A1 B1 B2 T' GRAYGATE_RUNTIME=$runtime GRAYGATE_WORKERS=$workers TARGET_PROCS=$workers \
     TARGET_DESC="graygate $runtime --workers $workers" TARGET_CMD="bash $ROOT/bench/anchors-target.sh" \
     TARGET_PORT=${TARGET_PORT:-8050} bash run.sh >"$OUT/$shape.table" 2>"$OUT/$shape.log") \
    || { echo "anchors run for $shape failed; see $OUT/$shape.log" >&2; continue; }
  cp "$ANCHORS/run/results.tsv" "$OUT/$shape.tsv"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
node - "$OUT" $SHAPES <<'JS'
const fs = require('node:fs');
const [dir, ...shapes] = process.argv.slice(2);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN; };
console.log('| graygate | mode | req/s | p99 ms | CPU µs/req | × nginx (A1) | × recipe (faster of B1, B2) | A1 p99 ms | p99 × A1 |');
console.log('|---|---|--:|--:|--:|--:|--:|--:|--:|');
for (const shape of shapes) {
  const file = `${dir}/${shape}.tsv`;
  if (!fs.existsSync(file)) { console.log(`| ${shape} | (run failed) |||||||`); continue; }
  const rows = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split('\t'))
    .filter((r) => r[13] === 'ok').map((r) => ({ v: r[0], mode: r[1], rps: +r[3], p99: +r[5], req: +r[6], cpu: +r[9] }));
  for (const mode of ['gray', 'prod']) {
    const of = (v) => rows.filter((r) => r.v === v && r.mode === mode);
    const rps = (v) => median(of(v).map((r) => r.rps));
    const t = of('T');
    const cpu = median(t.map((r) => (r.cpu * 1e6) / r.req));
    const a1p99 = median(of('A1').map((r) => r.p99));
    const tp99 = median(t.map((r) => r.p99));
    console.log(`| ${shape} | ${mode} | ${rps('T').toFixed(0)} | ${tp99.toFixed(1)} | ${cpu.toFixed(0)} | ${(rps('T') / rps('A1')).toFixed(2)} | ${(rps('T') / Math.max(rps('B1'), rps('B2') || 0)).toFixed(2)} | ${a1p99.toFixed(1)} | ${(tp99 / a1p99).toFixed(1)} |`);
  }
}
JS
rm -rf "$OUT"
