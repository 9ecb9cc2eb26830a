#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, idempotently:
#   promtool     Debian package prometheus: checks the /metrics exposition
#   moto_server  moto[server] from PyPI (S3 and SQS), in a virtualenv cached
#                outside the clone and keyed by version
# Source it to get SHOAL_MOTO_SERVER exported; run it to just install.
set -euo pipefail

SHOAL_CACHE="${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}"
MOTO_VERSION=5.2.5

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}"
  $SUDO apt-get update -qq
  # The prometheus package would start a server; tests only need promtool.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl stop prometheus >/dev/null 2>&1 || true
  fi
fi

moto_venv="$SHOAL_CACHE/tools/moto-$MOTO_VERSION"
if [ ! -x "$moto_venv/bin/moto_server" ]; then
  echo "installing moto[server]==$MOTO_VERSION into $moto_venv"
  rm -rf "$moto_venv"
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install -q "moto[server]==$MOTO_VERSION"
fi
export SHOAL_MOTO_SERVER="$moto_venv/bin/moto_server"
