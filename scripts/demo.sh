#!/usr/bin/env bash
# The README's demo: build the world if needed, start a gateway on embedded defaults, rank member 42's
# feed through the gRPC client, then stop the gateway with SIGTERM (it drains and exits).
set -euo pipefail
VENV="${VENV:-.venv}"
WORLD="${WORLD:-var/world}"
PORT="${PORT:-50051}"
quasar="$VENV/bin/quasar"

"$quasar" world build --out "$WORLD"
mkdir -p var
"$quasar" serve --world "$WORLD" --port "$PORT" --metrics-port 0 >var/demo-gateway.log 2>&1 &
gateway=$!
trap 'kill -TERM $gateway 2>/dev/null; wait $gateway 2>/dev/null || true' EXIT
"$quasar" wait-ready --target "127.0.0.1:$PORT" --timeout-s 120
"$quasar" feed --member 42 --target "127.0.0.1:$PORT"
