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
# round, against a listener of the driver's own; `cold-s3` the same with an
# S3 output configured. Both contenders are built with shoal-worker's
# Lambda-only features and run on tokio's single-threaded scheduler. The
# ratios come with a 95% bootstrap interval over the paired rounds
# (bench/lib/paired.py).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-5}"
COUNT="${COUNT:-2000}"
COLD_COUNT="${COLD_COUNT:-20}"
# The Cargo profile both contenders are built with.
PROFILE="${PROFILE:-release}"
# The warm scenarios to run (the cold starts always run; empty: none).
PAYLOADS="${PAYLOADS-direct sqs}"

# The emulator comes with the test dependencies.
source ./scripts/install-test-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
# The Lambda-only build of shoal-worker (what scripts/package-lambda.sh
# ships): no queue clients, metrics server or progress bar.
cargo build -q --profile "$PROFILE" -p shoal-worker --no-default-features -F lambda,s3 \
  --example noop --example lambda-baseline --example lambda-bench
bin="$CARGO_TARGET_DIR/$PROFILE/examples"

work="$(mktemp -d)"
rie_pid=""
cleanup() {
  if [ -n "$rie_pid" ]; then kill "$rie_pid" 2>/dev/null || true; wait "$rie_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Both contenders run from copies written the same way at the same time:
# how a file's pages came into the page cache (written by the linker or
# by a copy, and when) moved a cold start by 10% in a side test.
mkdir -p "$work/bin"
cp "$bin/noop" "$work/bin/shoal"
cp "$bin/lambda-baseline" "$work/bin/baseline"
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
  local up=""
  for _ in $(seq 400); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { up=1; break; }
    sleep 0.05
  done
  # A round whose emulator never listened is not a sample: say so loudly.
  [ -n "$up" ] || { echo "the emulator for $1 did not listen within 20 s" >&2; cat "$work/rie-$1.log" >&2; exit 1; }
  "$bin/lambda-bench" invoke "http://127.0.0.1:$port/2015-03-31/functions/function/invocations" \
    "$3" "$COUNT" 200 | sed -n 's/.*median_us=\([0-9.]*\).*/\1/p'
  kill "$rie_pid"
  wait "$rie_pid" 2>/dev/null || true
  rie_pid=""
}

cold_round() {
  "$bin/lambda-bench" cold "$1" "$COLD_COUNT" | sed -n 's/.*median_us=\([0-9.]*\).*/\1/p'
}

# An S3 output configured: both contenders build their S3 client at init.
# No request is made before the first `next`, so the endpoint is never
# reached.
cold_s3_round() {
  SHOAL_OUTPUT=s3://bench-out/thumbs/ AWS_ENDPOINT_URL=http://127.0.0.1:9 \
    AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
    cold_round "$1"
}

samples="$work/samples.txt"
for round in $(seq "$ROUNDS"); do
  for payload in $PAYLOADS; do
    for who in shoal baseline; do
      boot="$work/bin/$who"
      us="$(invoke_round "$who-$payload" "$boot" "$work/$payload.json")"
      echo "$payload $round $who $us" | tee -a "$samples"
    done
  done
  for cold in cold cold-s3; do
    for who in shoal baseline; do
      boot="$work/bin/$who"
      if [ "$cold" = cold ]; then us="$(cold_round "$boot")"; else us="$(cold_s3_round "$boot")"; fi
      echo "$cold $round $who $us" | tee -a "$samples"
    done
  done
done

echo
echo "microseconds, median of round medians; ratio = shoal / baseline"
echo "(targets: per invocation <= 1.05x, cold start <= 1.1x)"
python3 bench/lib/paired.py shoal baseline <"$samples"
