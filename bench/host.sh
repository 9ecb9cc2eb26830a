#!/usr/bin/env bash
# Per-invocation overhead of shoal's Runtime API host (`shoal-host serve`)
# against the AWS Lambda Runtime Interface Emulator, each serving the same
# no-op Python function (host/tests/functions/python/noop.py, run by AWS's
# awslambdaric) in one execution environment.
#
#   bench/host.sh                         # 5 rounds of 2000 invocations
#   ROUNDS=9 COUNT=5000 bench/host.sh
#
# Per round and contender: start it, time COUNT sequential invocations
# (after 200 warm-ups) of a small JSON event through Lambda's Invoke API
# over one keep-alive connection (host/examples/invoke-bench.rs), stop
# it; contenders alternate inside each round.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-5}"
COUNT="${COUNT:-2000}"

# The emulator and the Python runtime client come with the test
# dependencies.
source ./scripts/install-test-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
cargo build -q --release -p shoal-host --bin shoal-host --example invoke-bench
host="$CARGO_TARGET_DIR/release/shoal-host"
driver="$CARGO_TARGET_DIR/release/examples/invoke-bench"
functions="$PWD/host/tests/functions/python"

work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
echo '{"key": "photo.jpg", "size": 2048}' >"$work/event.json"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# round WHO: prints the median latency in microseconds.
round() {
  local port api
  port="$(free_port)"
  if [ "$1" = shoal ]; then
    "$host" serve --listen "127.0.0.1:$port" --task-root "$functions" \
      -- "$SHOAL_LAMBDA_PYTHON" -m awslambdaric noop.handler >"$work/$1.log" 2>&1 &
  else
    api="$(free_port)"
    (cd "$functions" && exec "$SHOAL_LAMBDA_RIE" --runtime-interface-emulator-address "127.0.0.1:$port" \
      --runtime-api-address "127.0.0.1:$api" "$SHOAL_LAMBDA_PYTHON" -m awslambdaric noop.handler) \
      >"$work/$1.log" 2>&1 &
  fi
  pid=$!
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  "$driver" "http://127.0.0.1:$port/2015-03-31/functions/function/invocations" \
    "$work/event.json" "$COUNT" 200 | sed -n 's/.*median_us=\([0-9.]*\).*/\1/p'
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
}

declare -A results
for r in $(seq "$ROUNDS"); do
  for who in shoal rie; do
    us="$(round "$who")"
    results[$who]+="$us "
    echo "round $r $who median_us=$us"
  done
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
s="$(echo "${results[shoal]}" | median)"
e="$(echo "${results[rie]}" | median)"
echo
echo "median of round medians (microseconds per invocation)"
awk -v s="$s" -v e="$e" 'BEGIN {printf "shoal-host %9.1f  emulator %9.1f  emulator/shoal-host %.3fx (target >= 1.0: shoal-host as fast or faster)\n", s, e, e / s}'
