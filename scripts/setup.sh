#!/usr/bin/env bash
# Sets up a fresh Debian machine for Quasar: Debian packages the tests need, a venv, the package with
# every extra and the dev tools. Safe to re-run.
set -euo pipefail
PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-.venv}"

apt_packages=()
command -v redis-server >/dev/null || apt_packages+=(redis-server)
dpkg -s libb64-0d >/dev/null 2>&1 || apt_packages+=(libb64-0d)  # perf_analyzer links it
command -v h2load >/dev/null || apt_packages+=(nghttp2-client)  # benchmarks/workers_throughput.py drives gRPC with it
# The Triton test server's venv is made from Debian's Python 3.11 (see below).
dpkg -s python3.11-venv >/dev/null 2>&1 || apt_packages+=(python3.11-venv)
if ((${#apt_packages[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${apt_packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_packages[@]}"
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[all,dev]"

# perf_analyzer: the registry's perf-analyzer package is an empty stub, and the newest tritonclient wheel
# whose bundled binary runs on Debian 12's glibc 2.36 is 2.50.0. It cannot share the venv with the
# tritonclient Quasar uses, so it goes to a prefix of its own; a wrapper in the venv puts the CUDA runtime
# library (from the nvidia-cuda-runtime-cu12 wheel, needed even on CPU) on its library path.
perf_prefix="$VENV/perf-analyzer"
if [ ! -x "$perf_prefix/bin/perf_analyzer" ]; then
  "$VENV/bin/python" -m pip install -q --no-deps --target "$perf_prefix" "tritonclient==2.50.0"
fi
cudart_dir="$("$VENV/bin/python" -c 'import nvidia.cuda_runtime as m; print(list(m.__path__)[0] + "/lib")')"
rm -f "$VENV/bin/perf_analyzer"
cat >"$VENV/bin/perf_analyzer" <<WRAPPER
#!/usr/bin/env bash
LD_LIBRARY_PATH="$cudart_dir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$(cd "$perf_prefix/bin" && pwd)/perf_analyzer" "\$@"
WRAPPER
chmod +x "$VENV/bin/perf_analyzer"

# The Triton test server (tests/peers/triton_server.py) runs from its own venv: PyTriton's Python-backend
# stub needs a Python whose standard library matches it, which Debian's /usr/bin/python3.11 has and
# pyenv's does not. Nothing of Quasar is installed there.
TRITON_VENV="${TRITON_VENV:-.venv-triton}"
[ -x "$TRITON_VENV/bin/python" ] || /usr/bin/python3.11 -m venv "$TRITON_VENV"
"$TRITON_VENV/bin/python" -m pip install -q --upgrade pip
"$TRITON_VENV/bin/python" -m pip install -q "nvidia-pytriton>=0.7,<0.8" "numpy>=1.26,<3" "onnxruntime>=1.18,<2"
echo "triton test venv: $TRITON_VENV ($("$TRITON_VENV/bin/python" --version))"
echo "setup done: $VENV ($("$VENV/bin/python" --version))"
