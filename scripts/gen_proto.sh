#!/usr/bin/env bash
# Regenerates quasar/v1 from proto/ (messages, gRPC stubs, typed .pyi stubs). Output dir is $1 (default: repo root).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root}"
bin="$(dirname "$(command -v python)")"
PATH="$bin:$PATH" python -m grpc_tools.protoc -I "$root/proto" \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  "$root"/proto/quasar/v1/*.proto
