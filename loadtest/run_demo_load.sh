#!/usr/bin/env bash
# One command: build the demo world if needed, start a demo gateway, wait for grpc.health.v1 SERVING, run
# a headless Locust load against it (CSV + HTML reports in loadtest/reports/), then stop the gateway with
# SIGTERM (it drains in-flight calls). Exits with Locust's code: 1 when any request failed.
#
#   loadtest/run_demo_load.sh                       # 20 users, ramp 5/s, 60 s
#   USERS=50 SPAWN_RATE=10 RUN_TIME=2m loadtest/run_demo_load.sh --deadline-ms 500
#
# Extra arguments go to Locust (e.g. the traffic options in `locust -f loadtest/locustfile.py --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
WORLD="${WORLD:-var/world}"
PORT="${PORT:-50051}"
USERS="${USERS:-20}"
SPAWN_RATE="${SPAWN_RATE:-5}"
RUN_TIME="${RUN_TIME:-60s}"
REPORTS="${REPORTS:-loadtest/reports}"
NAME="${NAME:-demo-$(date +%Y%m%d-%H%M%S)}"
quasar="$VENV/bin/quasar"
locust="$VENV/bin/locust"

"$quasar" world build --out "$WORLD"
mkdir -p var "$REPORTS"
# The gateway runs as configured for production (access log included); QUASAR_* variables change it.
"$quasar" serve --world "$WORLD" --port "$PORT" --metrics-port 0 >var/load-gateway.log 2>&1 &
gateway=$!
trap 'kill -TERM $gateway 2>/dev/null; wait $gateway 2>/dev/null || true' EXIT
"$quasar" wait-ready --target "127.0.0.1:$PORT" --timeout-s 120

status=0
"$locust" -f loadtest/locustfile.py --headless -u "$USERS" -r "$SPAWN_RATE" -t "$RUN_TIME" \
  --host "127.0.0.1:$PORT" --world "$WORLD" \
  --csv "$REPORTS/$NAME" --html "$REPORTS/$NAME.html" "$@" || status=$?
echo "reports: $REPORTS/${NAME}_stats.csv, $REPORTS/$NAME.html; gateway log: var/load-gateway.log"
exit "$status"
