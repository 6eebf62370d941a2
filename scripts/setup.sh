#!/usr/bin/env bash
# Sets up a fresh Debian machine for Quasar: Debian packages the tests need, a venv, the package with
# every extra and the dev tools. Safe to re-run.
set -euo pipefail
PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-.venv}"

apt_packages=()
command -v redis-server >/dev/null || apt_packages+=(redis-server)
if ((${#apt_packages[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${apt_packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_packages[@]}"
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[all,dev]"
echo "setup done: $VENV ($("$VENV/bin/python" --version))"
