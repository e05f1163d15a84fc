#!/usr/bin/env bash
# graygate as variant T of ../shared/bench-anchors/run.sh, in the drop-in mode: header TOKEN ->
# Redis TOKEN_<token> = uid; Redis Grayscale_Range = {"idStart":1,"idEnd":5000}; uid in range ->
# candidate (GRAY_URL), else stable (PROD_URL). That is exactly the anchors' rule.
#
#   npm run build
#   (cd ../shared/bench-anchors && ONLY='A1 D T' DURATION=3s REPS=1 \
#      TARGET_CMD="bash $PWD/bench/anchors-target.sh" TARGET_PORT=8050 TARGET_PROCS=1 bash run.sh)
#
# The harness sets BENCH_REDIS_PORT, PROD_URL and GRAY_URL and TARGET_PORT. Optional:
#   GRAYGATE_WORKERS  passed as --workers (default 1, to compare with the 1-process anchors)
#   GRAYGATE_RUNTIME  node (default) or bun (runs the same CLI under node_modules/.bin/bun)
#   GRAYGATE_NODE_ARGS extra node flags, e.g. --cpu-prof --cpu-prof-dir=/tmp/prof
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${BENCH_REDIS_PORT:?set by run.sh}" "${PROD_URL:?set by run.sh}" "${GRAY_URL:?set by run.sh}" "${TARGET_PORT:?set by run.sh}"
[[ -f $ROOT/dist/cli/main.js ]] || { echo "anchors-target: run 'npm run build' in $ROOT first" >&2; exit 1; }
args=(start --listen "127.0.0.1:$TARGET_PORT" --redis "redis://127.0.0.1:$BENCH_REDIS_PORT"
      --stable "$PROD_URL" --candidate "$GRAY_URL" --log-level warn)
if [[ -n ${GRAYGATE_WORKERS:-} ]]; then args+=(--workers "$GRAYGATE_WORKERS"); fi
case ${GRAYGATE_RUNTIME:-node} in
  node) exec node ${GRAYGATE_NODE_ARGS:-} "$ROOT/dist/cli/main.js" "${args[@]}" ;;
  bun)  exec "$ROOT/node_modules/.bin/bun" "$ROOT/dist/cli/main.js" "${args[@]}" ;;
  *)    echo "anchors-target: GRAYGATE_RUNTIME must be node or bun" >&2; exit 2 ;;
esac
