#!/usr/bin/env bash
# Lambda mode overhead: shoal's Lambda mode (the no-op handler) against a
# bare lambda_runtime service_fn doing the same work (read each item's
# object from a folder, nothing else), both behind the same AWS Lambda
# Runtime Interface Emulator.
#
#   bench/lambda.sh                       # 5 rounds of 2000 invocations
#   ROUNDS=9 COUNT=5000 bench/lambda.sh
#
# Per round and contender: start the emulator with the contender as its
# bootstrap, time COUNT sequential invocations (after 200 warm-ups) of
#   direct  a direct invoke of one object, {"key": ...}
#   sqs     an SQS event of 10 records, each a one-item chunk
# and stop it; contenders alternate inside each round. Cold start: process
# start to its first `GET /runtime/invocation/next`, COLD_COUNT times per
# round, against a listener of the driver's own.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-5}"
COUNT="${COUNT:-2000}"
COLD_COUNT="${COLD_COUNT:-20}"

# The emulator comes with the test dependencies.
source ./scripts/install-test-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
cargo build -q --release -p shoal-worker --example noop --example lambda-baseline --example lambda-bench
bin="$CARGO_TARGET_DIR/release/examples"

work="$(mktemp -d)"
rie_pid=""
cleanup() {
  if [ -n "$rie_pid" ]; then kill "$rie_pid" 2>/dev/null || true; wait "$rie_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/input"
head -c 2048 /dev/urandom >"$work/input/photo.jpg"
export SHOAL_INPUT="$work/input"
echo '{"key": "photo.jpg"}' >"$work/direct.json"
python3 - "$work/sqs.json" <<'PY'
import json, sys
records = [{
    "messageId": f"m-{i}", "receiptHandle": f"r-{i}",
    "body": json.dumps({"chunkId": f"c-{i}", "items": [{"key": "photo.jpg"}]}),
    "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764230400000"},
    "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs", "awsRegion": "us-east-1",
} for i in range(10)]
json.dump({"Records": records}, open(sys.argv[1], "w"))
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# invoke_round NAME BOOTSTRAP PAYLOAD: prints the median in microseconds.
invoke_round() {
  local port api
  port="$(free_port)"
  api="$(free_port)"
  "$SHOAL_LAMBDA_RIE" --runtime-interface-emulator-address "127.0.0.1:$port" \
    --runtime-api-address "127.0.0.1:$api" "$2" >"$work/rie-$1.log" 2>&1 &
  rie_pid=$!
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  "$bin/lambda-bench" invoke "http://127.0.0.1:$port/2015-03-31/functions/function/invocations" \
    "$3" "$COUNT" 200 | sed -n 's/.*median_us=\([0-9.]*\).*/\1/p'
  kill "$rie_pid"
  wait "$rie_pid" 2>/dev/null || true
  rie_pid=""
}

cold_round() {
  "$bin/lambda-bench" cold "$1" "$COLD_COUNT" | sed -n 's/.*median_us=\([0-9.]*\).*/\1/p'
}

declare -A results
for round in $(seq "$ROUNDS"); do
  for payload in direct sqs; do
    for who in shoal baseline; do
      if [ "$who" = shoal ]; then boot="$bin/noop"; else boot="$bin/lambda-baseline"; fi
      us="$(invoke_round "$who-$payload" "$boot" "$work/$payload.json")"
      results[$who-$payload]+="$us "
      echo "round $round $payload $who median_us=$us"
    done
  done
  for who in shoal baseline; do
    if [ "$who" = shoal ]; then boot="$bin/noop"; else boot="$bin/lambda-baseline"; fi
    us="$(cold_round "$boot")"
    results[$who-cold]+="$us "
    echo "round $round cold $who median_us=$us"
  done
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
echo "median of round medians (microseconds), ratio = shoal / baseline (target <= 1.05)"
for scenario in direct sqs cold; do
  s="$(echo "${results[shoal-$scenario]}" | median)"
  b="$(echo "${results[baseline-$scenario]}" | median)"
  awk -v n="$scenario" -v s="$s" -v b="$b" 'BEGIN {printf "%-7s shoal %9.1f  baseline %9.1f  ratio %.3fx\n", n, s, b, s / b}'
done
