#!/usr/bin/env bash
# The README's demo: build the world if needed (two products as data: the feed and jobs), start the jobs
# product's remote candidate service and a gateway on embedded defaults, rank member 42's feed and jobs
# through the gRPC client (served by the trainer's release, validated and applied), then stop both with
# SIGTERM (they drain and exit).
set -euo pipefail
VENV="${VENV:-.venv}"
WORLD="${WORLD:-var/world}"
PORT="${PORT:-50051}"
CANDIDATES_PORT="${CANDIDATES_PORT:-50061}"  # engines/jobs.yaml names 127.0.0.1:50061
quasar="$VENV/bin/quasar"

"$quasar" world build --out "$WORLD"
mkdir -p var
"$quasar" candidates serve --root "$WORLD/store" --table jobs_network_lists --port "$CANDIDATES_PORT" \
  >var/demo-candidates.log 2>&1 &
candidates=$!
release=$(ls "$WORLD"/releases/*.yaml | head -n 1)
"$quasar" deploy validate "$release" --world "$WORLD"  # offline: tables, signature, sample scores, warm-up
export QUASAR_ADMIN_TOKEN="demo-admin-token" QUASAR_STATE_DIR="var/demo-state"
rm -rf var/demo-state
"$quasar" serve --world "$WORLD" --port "$PORT" --metrics-port 0 >var/demo-gateway.log 2>&1 &
gateway=$!
trap 'kill -TERM $gateway $candidates 2>/dev/null; wait $gateway $candidates 2>/dev/null || true' EXIT
"$quasar" wait-ready --target "127.0.0.1:$PORT" --timeout-s 120
"$quasar" features search --features-dir "$WORLD/features" --tag candidates
"$quasar" deploy apply "$release" --target "127.0.0.1:$PORT"  # validated on the gateway, then switched
"$quasar" deploy status --target "127.0.0.1:$PORT"
"$quasar" feed --member 42 --target "127.0.0.1:$PORT"
"$quasar" feed --member 42 --workflow jobs --count 10 --target "127.0.0.1:$PORT"
