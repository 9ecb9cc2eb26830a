#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain. Idempotent: a
# machine that already has everything installs nothing.
#   promtool  (Debian package prometheus): checks the /metrics exposition
set -euo pipefail

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
